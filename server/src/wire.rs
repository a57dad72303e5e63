//! `activemirror.v1.Event` read straight from the request's bytes into the validator's input.
//!
//! The gRPC `Write` path receives a batch as [`RawEventBatch`]: each event's bytes as they
//! arrived, sliced from the request without copying. [`event_input`] then reads one event's
//! fields into [`EventInput`], borrowing every string from those bytes, so the ids, the
//! timestamp and the status the validator only parses are never allocated, and the attributes
//! go straight into their map. prost's generated `pb::Event` would allocate each of them first
//! (the tests keep that path as the reference this one must match).
//!
//! The decoding follows prost's rules for the same message exactly (tested against it on
//! arbitrary bytes): the last value of a field repeated on the wire wins, unknown fields and
//! groups are skipped, a known field with the wrong wire type, a truncated field, an overlong
//! varint or a string that is not UTF-8 is an error.

use std::borrow::Cow;
use std::collections::BTreeMap;

use engine::segments::Text;
use engine::EventInput;

/// An `EventBatch` as received: wire-compatible with `activemirror.v1.EventBatch` (field 1,
/// the events, length-delimited), each event's bytes kept undecoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawEventBatch {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub events: Vec<bytes::Bytes>,
}

/// Why an event's bytes do not decode: the field (or `(message)` for the framing) and what is
/// wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub field: &'static str,
    pub message: String,
}

impl WireError {
    fn framing(message: impl Into<String>) -> Self {
        WireError { field: "(message)", message: message.into() }
    }
}

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// Nesting of groups allowed inside an event (prost allows 100 levels of messages in all;
/// the batch and the event take two).
const MAX_DEPTH: u32 = 98;

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            if i == 9 && b > 1 {
                return Err(WireError::framing("invalid varint"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(WireError::framing(if self.buf.len() < 10 { "buffer underflow" } else { "invalid varint" }))
    }

    /// A field's key: its number and wire type.
    fn key(&mut self) -> Result<(u32, u8), WireError> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| WireError::framing(format!("invalid key value: {key}")))?;
        let wire = (key & 7) as u8;
        if wire > FIXED32 {
            return Err(WireError::framing(format!("invalid wire type value: {wire}")));
        }
        if key >> 3 == 0 {
            return Err(WireError::framing("invalid tag value: 0"));
        }
        Ok((key >> 3, wire))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        let n = usize::try_from(n).ok().filter(|&n| n <= self.buf.len());
        let n = n.ok_or_else(|| WireError::framing("buffer underflow"))?;
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn delimited(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.varint()?;
        self.take(n)
    }

    /// Skip an unknown field's value (a group up to its matching end).
    fn skip(&mut self, tag: u32, wire: u8, depth: u32) -> Result<(), WireError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            FIXED32 => self.take(4).map(drop),
            LEN => self.delimited().map(drop),
            START_GROUP => {
                if depth == 0 {
                    return Err(WireError::framing("recursion limit reached"));
                }
                loop {
                    let (inner, inner_wire) = self.key()?;
                    if inner_wire == END_GROUP {
                        if inner != tag {
                            return Err(WireError::framing("unexpected end group tag"));
                        }
                        return Ok(());
                    }
                    self.skip(inner, inner_wire, depth - 1)?;
                }
            }
            _ => Err(WireError::framing("unexpected end group tag")),
        }
    }
}

fn expect(field: &'static str, wire: u8, want: u8) -> Result<(), WireError> {
    if wire == want {
        Ok(())
    } else {
        Err(WireError { field, message: format!("invalid wire type: {wire} (expected {want})") })
    }
}

fn string<'a>(field: &'static str, r: &mut Reader<'a>, wire: u8) -> Result<&'a str, WireError> {
    expect(field, wire, LEN)?;
    let bytes = r.delimited()?;
    // simdutf8: the same check as `std::str::from_utf8`, several times faster on long text.
    simdutf8::basic::from_utf8(bytes)
        .map_err(|_| WireError { field, message: "invalid string value: not UTF-8".into() })
}

fn int64(field: &'static str, r: &mut Reader<'_>, wire: u8) -> Result<i64, WireError> {
    expect(field, wire, VARINT)?;
    Ok(r.varint()? as i64)
}

fn double(field: &'static str, r: &mut Reader<'_>, wire: u8) -> Result<f64, WireError> {
    expect(field, wire, FIXED64)?;
    let b = r.take(8)?;
    let mut le = [0u8; 8];
    le.copy_from_slice(b);
    Ok(f64::from_le_bytes(le))
}

/// One attributes map entry: its key (field 1) and value (field 2), empty when absent.
fn map_entry(bytes: &[u8]) -> Result<(&str, &str), WireError> {
    let mut r = Reader { buf: bytes };
    let (mut key, mut value) = ("", "");
    while !r.is_empty() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => key = string("attributes", &mut r, wire)?,
            2 => value = string("attributes", &mut r, wire)?,
            _ => r.skip(tag, wire, MAX_DEPTH - 1)?,
        }
    }
    Ok((key, value))
}

fn some(s: &str) -> Option<Cow<'_, str>> {
    Some(Cow::Borrowed(s))
}

fn present(s: &str) -> Option<Cow<'_, str>> {
    (!s.is_empty()).then_some(Cow::Borrowed(s))
}

/// Read one `activemirror.v1.Event` into the validator's input, as prost's generated
/// `pb::Event` would hold it: proto3 cannot tell an empty string from a missing one, so empty
/// strings of non-optional fields count as absent.
pub fn event_input(bytes: &[u8]) -> Result<EventInput<'_>, WireError> {
    let mut r = Reader { buf: bytes };
    let mut e = EventInput::default();
    // Non-optional strings: the last value on the wire, absent when empty.
    let (mut tenant, mut trace_id, mut span_id, mut agent_id, mut kind) = ("", "", "", "", "");
    let mut attributes: BTreeMap<Text, Text> = BTreeMap::new();
    while !r.is_empty() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => tenant = string("tenant", &mut r, wire)?,
            2 => trace_id = string("trace_id", &mut r, wire)?,
            3 => span_id = string("span_id", &mut r, wire)?,
            4 => e.parent_span_id = some(string("parent_span_id", &mut r, wire)?),
            5 => agent_id = string("agent_id", &mut r, wire)?,
            6 => e.session_id = some(string("session_id", &mut r, wire)?),
            7 => e.timestamp = some(string("timestamp", &mut r, wire)?),
            8 => e.timestamp_ns = Some(int64("timestamp_ns", &mut r, wire)?),
            9 => kind = string("kind", &mut r, wire)?,
            10 => e.name = some(string("name", &mut r, wire)?),
            11 => e.content = some(string("content", &mut r, wire)?),
            12 => e.intent = some(string("intent", &mut r, wire)?),
            13 => e.confidence = Some(double("confidence", &mut r, wire)?),
            14 => e.duration_ms = Some(double("duration_ms", &mut r, wire)?),
            15 => e.status = some(string("status", &mut r, wire)?),
            16 => e.error_message = some(string("error_message", &mut r, wire)?),
            17 => e.model = some(string("model", &mut r, wire)?),
            18 => e.input_tokens = Some(int64("input_tokens", &mut r, wire)?),
            19 => e.output_tokens = Some(int64("output_tokens", &mut r, wire)?),
            20 => e.cost_usd = Some(double("cost_usd", &mut r, wire)?),
            21 => {
                expect("attributes", wire, LEN)?;
                let (k, v) = map_entry(r.delimited()?)?;
                attributes.insert(Text::from(k), Text::from(v));
            }
            _ => r.skip(tag, wire, MAX_DEPTH)?,
        }
    }
    e.tenant = present(tenant);
    e.trace_id = present(trace_id);
    e.span_id = present(span_id);
    e.agent_id = present(agent_id);
    e.kind = present(kind);
    e.attributes = (!attributes.is_empty()).then_some(attributes);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::pb;
    use proptest::prelude::*;

    /// The reference: the event as prost decodes it, in the validator's input shape, with
    /// proto3's rule (an empty string of a non-optional field counts as absent).
    fn prost_input(e: pb::Event) -> EventInput<'static> {
        let s = |v: String| (!v.is_empty()).then_some(Cow::Owned(v));
        EventInput {
            tenant: s(e.tenant),
            trace_id: s(e.trace_id),
            span_id: s(e.span_id),
            parent_span_id: e.parent_span_id.map(Cow::Owned),
            agent_id: s(e.agent_id),
            session_id: e.session_id.map(Cow::Owned),
            timestamp: e.timestamp.map(Cow::Owned),
            timestamp_ns: e.timestamp_ns,
            kind: s(e.kind),
            name: e.name.map(Cow::Owned),
            content: e.content.map(Cow::Owned),
            intent: e.intent.map(Cow::Owned),
            confidence: e.confidence,
            duration_ms: e.duration_ms,
            status: e.status.map(Cow::Owned),
            error_message: e.error_message.map(Cow::Owned),
            model: e.model.map(Cow::Owned),
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            cost_usd: e.cost_usd,
            attributes: (!e.attributes.is_empty())
                .then(|| e.attributes.into_iter().map(|(k, v)| (Text::from(k), Text::from(v))).collect()),
        }
    }

    /// The input as the generated code gives it, or prost's error.
    fn via_prost(bytes: &[u8]) -> Result<String, ()> {
        <pb::Event as prost::Message>::decode(bytes).map(|e| format!("{:?}", prost_input(e))).map_err(drop)
    }

    fn via_wire(bytes: &[u8]) -> Result<String, ()> {
        event_input(bytes).map(|e| format!("{e:?}")).map_err(drop)
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-f0-9]{0,32}", "\\PC{0,12}", "[a-z_]{1,8}"]
    }

    fn event() -> impl Strategy<Value = pb::Event> {
        let strings = (text(), text(), text(), proptest::option::of(text()), text(), proptest::option::of(text()));
        let more = (
            proptest::option::of(text()),
            proptest::option::of(any::<i64>()),
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
        );
        let nums = (
            proptest::option::of(any::<f64>()),
            proptest::option::of(any::<f64>()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<f64>()),
            proptest::collection::btree_map(prop_oneof![text(), "k[0-2]"], text(), 0..4),
        );
        (strings, more, nums).prop_map(|(s, m, n)| pb::Event {
            tenant: s.0,
            trace_id: s.1,
            span_id: s.2,
            parent_span_id: s.3,
            agent_id: s.4,
            session_id: s.5,
            timestamp: m.0,
            timestamp_ns: m.1,
            kind: m.2,
            name: m.3,
            content: m.4,
            intent: m.5,
            confidence: n.0,
            duration_ms: n.1,
            status: n.2,
            error_message: n.3,
            model: n.4,
            input_tokens: n.5,
            output_tokens: n.6,
            cost_usd: n.7,
            attributes: n.8,
        })
    }

    /// One field on the wire: a key and a value of any wire type, known tags included, so that
    /// repeated fields, wrong wire types and unknown fields all occur.
    fn field() -> impl Strategy<Value = Vec<u8>> {
        let tag = prop_oneof![1u32..=22, 23u32..1000, Just((1 << 29) - 1)];
        (tag, 0u8..6, any::<u64>(), proptest::collection::vec(any::<u8>(), 0..12)).prop_map(|(tag, wire, n, b)| {
            let mut out = Vec::new();
            prost::encoding::encode_varint(u64::from(tag << 3 | u32::from(wire)), &mut out);
            match wire {
                VARINT => prost::encoding::encode_varint(n, &mut out),
                FIXED64 => out.extend_from_slice(&n.to_le_bytes()),
                FIXED32 => out.extend_from_slice(&(n as u32).to_le_bytes()),
                LEN => {
                    prost::encoding::encode_varint(b.len() as u64, &mut out);
                    out.extend_from_slice(&b);
                }
                START_GROUP => {
                    out.extend_from_slice(&b[..b.len().min(2)]);
                    prost::encoding::encode_varint(u64::from(tag << 3 | u32::from(END_GROUP)), &mut out);
                }
                _ => {}
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn reads_every_event_as_prost_does(e in event()) {
            let bytes = prost::Message::encode_to_vec(&e);
            prop_assert_eq!(via_wire(&bytes), Ok(format!("{:?}", prost_input(e))));
        }

        /// Fields in any order, repeated, of the wrong wire type, unknown, or cut short: the
        /// same input as prost's, or an error where prost errs.
        #[test]
        fn arbitrary_fields_decode_as_prost_decodes(
            e in event(),
            extra in proptest::collection::vec(field(), 0..6),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = Vec::new();
            for f in &extra[..extra.len() / 2] {
                bytes.extend_from_slice(f);
            }
            bytes.extend(prost::Message::encode_to_vec(&e));
            for f in &extra[extra.len() / 2..] {
                bytes.extend_from_slice(f);
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            prop_assert_eq!(via_wire(&bytes), via_prost(&bytes));
        }

        /// Two events one after the other are one event on the wire, merged: the later value
        /// of each field wins, the maps are joined, the later value of a shared key wins.
        #[test]
        fn concatenated_events_merge_as_prost_merges(a in event(), b in event()) {
            let mut bytes = prost::Message::encode_to_vec(&a);
            bytes.extend(prost::Message::encode_to_vec(&b));
            prop_assert_eq!(via_wire(&bytes), via_prost(&bytes));
        }

        #[test]
        fn any_bytes_decode_as_prost_decodes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(via_wire(&bytes), via_prost(&bytes));
        }
    }

    /// Varints of every length up to 11 bytes, the tenth byte at its limits: overlong ones are
    /// refused where prost refuses them.
    #[test]
    fn varint_edges_match_prost() {
        for len in 1..=11usize {
            for last in [0u8, 1, 2, 0x7f] {
                let mut v = vec![0xffu8; len - 1];
                v.push(last);
                // Field 8 (timestamp_ns, a varint), then field 18 (key 144, two bytes) to see
                // that reading resumes at the right byte.
                let mut bytes = vec![8 << 3];
                bytes.extend(&v);
                bytes.extend([0x90, 0x01, 5]);
                let (wire, prost) = (via_wire(&bytes), via_prost(&bytes));
                assert_eq!(wire, prost, "{len} bytes ending {last:#x}");
                // Up to 9 bytes always fit; 10 only with a last byte of 0 or 1; 11 never.
                assert_eq!(wire.is_ok(), len < 10 || (len == 10 && last < 2), "{len} bytes ending {last:#x}");
            }
        }
    }

    #[test]
    fn errors_name_the_field() {
        // Field 11 (content) with invalid UTF-8.
        let e = event_input(&[11 << 3 | 2, 2, 0xff, 0xfe]).expect_err("not UTF-8");
        assert_eq!(e.field, "content");
        // Field 13 (confidence) sent as a varint.
        let e = event_input(&[13 << 3, 1]).expect_err("wrong wire type");
        assert_eq!(e.field, "confidence");
        // A length past the end.
        let e = event_input(&[2 << 3 | 2, 40, b'a']).expect_err("cut short");
        assert_eq!(e.field, "(message)");
    }

    #[test]
    fn a_batch_keeps_each_event_as_sent() {
        let events: Vec<pb::Event> =
            (0..3).map(|i| pb::Event { agent_id: format!("a{i}"), ..Default::default() }).collect();
        let raw = RawEventBatch { events: events.iter().map(|e| prost::Message::encode_to_vec(e).into()).collect() };
        let as_batch = prost::Message::encode_to_vec(&pb::EventBatch { events: events.clone() });
        assert_eq!(prost::Message::encode_to_vec(&raw), as_batch, "the same bytes as an EventBatch");
        let back = <RawEventBatch as prost::Message>::decode(&as_batch[..]).expect("decodes");
        for (b, e) in back.events.iter().zip(&events) {
            assert_eq!(event_input(b).expect("event").agent_id.as_deref(), Some(e.agent_id.as_str()));
        }
    }
}

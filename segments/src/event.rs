//! The event record (one agent step, as the contract defines it) and a compact row codec used
//! for WAL payloads. The codec is pure: `encode_events` / `decode_events`, bounds-checked.

/// A short text field of an event (names, ids, labels, attribute keys and values). Up to 24
/// bytes are kept inline, without a heap allocation: most tenants, agents, kinds, intents,
/// statuses and models are that short, and allocating and freeing them once per field per
/// event was a measurable share of parsing, flushing and compacting.
pub type Text = compact_str::CompactString;

/// One agent step. Ids are stored as raw bytes; the SQL layer shows them as lowercase hex.
/// Free text (`content`, `error_message`) stays a `String`: it is rarely short.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    pub tenant: Text,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub agent_id: Text,
    pub session_id: Option<Text>,
    pub timestamp_ns: i64,
    pub kind: Text,
    pub name: Option<Text>,
    pub content: Option<String>,
    pub intent: Option<Text>,
    pub confidence: Option<f64>,
    pub duration_ms: Option<f64>,
    pub status: Text,
    pub error_message: Option<String>,
    pub model: Option<Text>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    /// Key/value pairs, sorted by key, keys unique.
    pub attributes: Vec<(Text, Text)>,
}

impl Event {
    /// Approximate heap + inline size, used for memory accounting.
    pub fn approx_bytes(&self) -> usize {
        fn opt<S: AsRef<str>>(s: &Option<S>) -> usize {
            s.as_ref().map_or(0, |s| s.as_ref().len())
        }
        std::mem::size_of::<Event>()
            + self.tenant.len()
            + self.agent_id.len()
            + self.kind.len()
            + self.status.len()
            + opt(&self.session_id)
            + opt(&self.name)
            + opt(&self.content)
            + opt(&self.intent)
            + opt(&self.error_message)
            + opt(&self.model)
            + self.attributes.iter().map(|(k, v)| k.len() + v.len() + 48).sum::<usize>()
    }
}

impl Event {
    /// Value of an indexed column (the columns with bitmap indexes).
    pub fn indexed_value(&self, c: index::IndexedColumn) -> Option<&str> {
        use index::IndexedColumn::*;
        match c {
            Tenant => Some(self.tenant.as_str()),
            AgentId => Some(self.agent_id.as_str()),
            Intent => self.intent.as_deref(),
            Kind => Some(self.kind.as_str()),
            Status => Some(self.status.as_str()),
            Model => self.model.as_deref(),
        }
    }
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`): the date of an event's `timestamp_ns.div_euclid(86_400 * 10^9)`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Parse `2 * N` lowercase hex characters into `N` bytes.
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventCodecError {
    #[error("event payload truncated at byte {0}")]
    Truncated(usize),
    #[error("event payload corrupt at byte {at}: {what}")]
    Corrupt { at: usize, what: &'static str },
}

const FORMAT_VERSION: u8 = 1;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str<S: AsRef<str>>(out: &mut Vec<u8>, s: &Option<S>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s.as_ref());
        }
    }
}

/// Encode a batch of events (row-wise, varint lengths) onto `out`.
pub fn encode_events(events: &[Event], out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    put_varint(out, events.len() as u64);
    for e in events {
        put_str(out, &e.tenant);
        out.extend_from_slice(&e.trace_id);
        out.extend_from_slice(&e.span_id);
        match &e.parent_span_id {
            None => out.push(0),
            Some(p) => {
                out.push(1);
                out.extend_from_slice(p);
            }
        }
        put_str(out, &e.agent_id);
        put_opt_str(out, &e.session_id);
        out.extend_from_slice(&e.timestamp_ns.to_le_bytes());
        put_str(out, &e.kind);
        put_opt_str(out, &e.name);
        put_opt_str(out, &e.content);
        put_opt_str(out, &e.intent);
        let mut flags = 0u8;
        for (i, present) in [
            e.confidence.is_some(),
            e.duration_ms.is_some(),
            e.cost_usd.is_some(),
            e.input_tokens.is_some(),
            e.output_tokens.is_some(),
        ]
        .into_iter()
        .enumerate()
        {
            if present {
                flags |= 1 << i;
            }
        }
        out.push(flags);
        for f in [e.confidence, e.duration_ms, e.cost_usd].into_iter().flatten() {
            out.extend_from_slice(&f.to_le_bytes());
        }
        for i in [e.input_tokens, e.output_tokens].into_iter().flatten() {
            out.extend_from_slice(&i.to_le_bytes());
        }
        put_str(out, &e.status);
        put_opt_str(out, &e.error_message);
        put_opt_str(out, &e.model);
        put_varint(out, e.attributes.len() as u64);
        for (k, v) in &e.attributes {
            put_str(out, k);
            put_str(out, v);
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EventCodecError> {
        let end = self.pos.checked_add(n).ok_or(EventCodecError::Truncated(self.pos))?;
        let s = self.buf.get(self.pos..end).ok_or(EventCodecError::Truncated(self.pos))?;
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], EventCodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, EventCodecError> {
        Ok(self.take(1)?[0])
    }
    fn varint(&mut self) -> Result<u64, EventCodecError> {
        let at = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(EventCodecError::Corrupt { at, what: "varint too long" })
    }
    fn str<S: for<'s> From<&'s str>>(&mut self) -> Result<S, EventCodecError> {
        let at = self.pos;
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| EventCodecError::Truncated(at))?;
        let s = self.take(len)?;
        let s =
            simdutf8::basic::from_utf8(s).map_err(|_| EventCodecError::Corrupt { at, what: "string is not UTF-8" })?;
        Ok(S::from(s))
    }
    fn opt_str<S: for<'s> From<&'s str>>(&mut self) -> Result<Option<S>, EventCodecError> {
        let at = self.pos;
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(EventCodecError::Corrupt { at, what: "bad option marker" }),
        }
    }
}

/// Decode a batch written by [`encode_events`].
pub fn decode_events(buf: &[u8]) -> Result<Vec<Event>, EventCodecError> {
    let mut r = Reader { buf, pos: 0 };
    if r.u8()? != FORMAT_VERSION {
        return Err(EventCodecError::Corrupt { at: 0, what: "unknown event codec version" });
    }
    let n = r.varint()?;
    // Each event takes at least 40 bytes: never allocate beyond what the input can hold.
    if n > (buf.len() / 40) as u64 {
        return Err(EventCodecError::Corrupt { at: 1, what: "event count larger than the payload" });
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let tenant = r.str()?;
        let trace_id = r.arr::<16>()?;
        let span_id = r.arr::<8>()?;
        let at = r.pos;
        let parent_span_id = match r.u8()? {
            0 => None,
            1 => Some(r.arr::<8>()?),
            _ => return Err(EventCodecError::Corrupt { at, what: "bad option marker" }),
        };
        let agent_id = r.str()?;
        let session_id = r.opt_str()?;
        let timestamp_ns = i64::from_le_bytes(r.arr::<8>()?);
        let kind = r.str()?;
        let name = r.opt_str()?;
        let content = r.opt_str()?;
        let intent = r.opt_str()?;
        let flags = r.u8()?;
        let mut f = [None; 3];
        for (i, slot) in f.iter_mut().enumerate() {
            if flags & (1 << i) != 0 {
                *slot = Some(f64::from_le_bytes(r.arr::<8>()?));
            }
        }
        let mut ints = [None; 2];
        for (i, slot) in ints.iter_mut().enumerate() {
            if flags & (1 << (3 + i)) != 0 {
                *slot = Some(i64::from_le_bytes(r.arr::<8>()?));
            }
        }
        let status = r.str()?;
        let error_message = r.opt_str()?;
        let model = r.opt_str()?;
        let at = r.pos;
        let n_attr = r.varint()?;
        if n_attr > ((buf.len() - r.pos) / 2) as u64 {
            return Err(EventCodecError::Corrupt { at, what: "attribute count larger than the payload" });
        }
        let mut attributes = Vec::with_capacity(n_attr as usize);
        for _ in 0..n_attr {
            let k = r.str()?;
            let v = r.str()?;
            attributes.push((k, v));
        }
        out.push(Event {
            tenant,
            trace_id,
            span_id,
            parent_span_id,
            agent_id,
            session_id,
            timestamp_ns,
            kind,
            name,
            content,
            intent,
            confidence: f[0],
            duration_ms: f[1],
            status,
            error_message,
            model,
            input_tokens: ints[0],
            output_tokens: ints[1],
            cost_usd: f[2],
            attributes,
        });
    }
    if r.pos != buf.len() {
        return Err(EventCodecError::Corrupt { at: r.pos, what: "trailing bytes after the batch" });
    }
    Ok(out)
}

#[cfg(test)]
pub mod strategy {
    //! proptest strategies for events, shared by this crate's tests.
    use super::{Event, Text};
    use proptest::prelude::*;

    fn opt_str(re: &'static str) -> impl Strategy<Value = Option<String>> {
        proptest::option::of(re)
    }

    /// Short texts (kept inline) and long ones (on the heap) alike.
    fn opt_text(re: &'static str) -> impl Strategy<Value = Option<Text>> {
        proptest::option::of(re).prop_map(|s: Option<String>| s.map(Text::from))
    }

    fn text(re: &'static str) -> impl Strategy<Value = Text> {
        re.prop_map(Text::from)
    }

    fn num() -> impl Strategy<Value = Option<f64>> {
        proptest::option::of(prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(1.0),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            Just(f64::INFINITY),
            any::<f64>().prop_filter("not NaN", |f| !f.is_nan()),
        ])
    }

    pub fn event() -> impl Strategy<Value = Event> {
        (
            (text("[a-c]{1,3}"), any::<[u8; 16]>(), any::<[u8; 8]>(), proptest::option::of(any::<[u8; 8]>())),
            (text("agent-[0-9]{1,30}"), opt_text("s[0-9]{0,30}"), any::<i64>(), text("(thought|action|x\u{e9}y)")),
            (opt_text("[a-z_]{0,8}"), opt_str(".{0,40}"), opt_text("[a-z]{0,5}"), num(), num()),
            (text("(ok|error)"), opt_str(".{0,10}"), opt_text("gpt-[0-9]"), proptest::option::of(any::<i64>())),
            (
                proptest::option::of(any::<i64>()),
                num(),
                proptest::collection::btree_map("[a-z.]{1,6}", ".{0,30}", 0..4),
            ),
        )
            .prop_map(
                |(
                    (tenant, trace_id, span_id, parent_span_id),
                    (agent_id, session_id, timestamp_ns, kind),
                    (name, content, intent, confidence, duration_ms),
                    (status, error_message, model, input_tokens),
                    (output_tokens, cost_usd, attrs),
                )| Event {
                    tenant,
                    trace_id,
                    span_id,
                    parent_span_id,
                    agent_id,
                    session_id,
                    timestamp_ns,
                    kind,
                    name,
                    content,
                    intent,
                    confidence,
                    duration_ms,
                    status,
                    error_message,
                    model,
                    input_tokens,
                    output_tokens,
                    cost_usd,
                    attributes: attrs.into_iter().map(|(k, v)| (Text::from(k), Text::from(v))).collect(),
                },
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every day from 1600 to 2400, counted one by one from 1970-01-01 with the Gregorian
    /// rules (leap years: every 4th, not every 100th, every 400th).
    #[test]
    fn civil_from_days_counts_the_calendar() {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_days = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let next = |(y, m, d): (i64, u32, u32)| match (d < month_days(y, m), m < 12) {
            (true, _) => (y, m, d + 1),
            (false, true) => (y, m + 1, 1),
            (false, false) => (y + 1, 1, 1),
        };
        let prev = |(y, m, d): (i64, u32, u32)| match (d > 1, m > 1) {
            (true, _) => (y, m, d - 1),
            (false, true) => (y, m - 1, month_days(y, m - 1)),
            (false, false) => (y - 1, 12, 31),
        };
        let mut date = (1970, 1, 1);
        for days in 0..157_000 {
            assert_eq!(civil_from_days(days), date, "day {days}");
            date = next(date);
        }
        let mut date = (1970, 1, 1);
        for days in (-135_000..=0).rev() {
            assert_eq!(civil_from_days(days), date, "day {days}");
            date = prev(date);
        }
    }

    proptest! {
        #[test]
        fn roundtrip(events in proptest::collection::vec(strategy::event(), 0..20)) {
            let mut buf = Vec::new();
            encode_events(&events, &mut buf);
            prop_assert_eq!(decode_events(&buf).expect("decode"), events);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..500)) {
            let _ = decode_events(&bytes);
        }

        #[test]
        fn truncation_is_an_error(events in proptest::collection::vec(strategy::event(), 1..5), cut in any::<prop::sample::Index>()) {
            let mut buf = Vec::new();
            encode_events(&events, &mut buf);
            let cut = cut.index(buf.len());
            prop_assert!(decode_events(&buf[..cut]).is_err());
        }
    }
}

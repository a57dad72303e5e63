//! Validation of incoming JSON events exactly as the contract says: required fields, id
//! formats, timestamp parsing and agreement, confidence in 0..1. A bad event rejects the whole
//! batch with an error naming the field and the event's position.
//!
//! Fast path: a typed, borrowing serde struct. When serde rejects an event (wrong JSON type),
//! the event is re-read as a generic JSON value to produce an error that names the field.

use std::borrow::Cow;
use std::collections::BTreeMap;

use segments::{Event, Text};
use serde::Deserialize;
use serde_json::Value;

/// Why a batch was rejected: the event's 0-based position, the field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {index}: field `{field}`: {message}")]
pub struct ValidationError {
    pub index: usize,
    pub field: String,
    pub message: String,
}

/// The fields of one event as they arrive, before validation. JSON bodies are read into it by
/// serde; other protocols (gRPC) fill it and call [`validate_input`], so every protocol is
/// validated by the same rules.
#[derive(Deserialize, Default, Debug)]
pub struct EventInput<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub tenant: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub trace_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub span_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub parent_span_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub agent_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub session_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub timestamp: Option<Cow<'a, str>>,
    #[serde(default)]
    pub timestamp_ns: Option<i64>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub content: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub intent: Option<Cow<'a, str>>,
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub duration_ms: Option<f64>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub status: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub error_message: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub input_tokens: Option<i64>,
    #[serde(default)]
    pub output_tokens: Option<i64>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    #[serde(default)]
    pub attributes: Option<BTreeMap<Text, Text>>,
}

/// A JSON string, borrowed from the input when it holds no escape. serde's own `Cow<str>`
/// inside an `Option` always copies into a new `String`, even under `#[serde(borrow)]`:
/// a dozen allocations per event, each copied again and freed as the event is built.
struct JsonStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for JsonStr<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Strings;
        impl<'de> serde::de::Visitor<'de> for Strings {
            type Value = JsonStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Strings)
    }
}

/// An optional string field of [`EventInput`], borrowed where it can be ([`JsonStr`]).
fn borrowed_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    Option::<JsonStr<'de>>::deserialize(d).map(|v| v.map(|s| s.0))
}

type FieldError = (&'static str, String);

fn hex_id<const N: usize>(field: &'static str, s: &str) -> Result<[u8; N], FieldError> {
    if s.len() != N * 2 {
        return Err((field, format!("expected {} lowercase hex characters, got {} characters", N * 2, s.len())));
    }
    segments::parse_hex::<N>(s).ok_or_else(|| (field, format!("`{s}` is not {} lowercase hex characters", N * 2)))
}

/// Parse an RFC 3339 timestamp to unix nanoseconds and the number of fractional digits given.
pub fn parse_rfc3339(s: &str) -> Result<(i64, u32), String> {
    let dt =
        chrono::DateTime::parse_from_rfc3339(s).map_err(|e| format!("`{s}` is not an RFC 3339 timestamp ({e})"))?;
    let ns = dt
        .timestamp_nanos_opt()
        .ok_or_else(|| format!("`{s}` is outside the representable range (years 1678..2262)"))?;
    let digits = s.split_once('.').map_or(0, |(_, frac)| frac.bytes().take_while(u8::is_ascii_digit).count() as u32);
    Ok((ns, digits.min(9)))
}

fn required<'a>(field: &'static str, v: Option<Cow<'a, str>>) -> Result<Cow<'a, str>, FieldError> {
    match v {
        None => Err((field, "is required".into())),
        Some(s) if s.is_empty() => Err((field, "must not be empty".into())),
        Some(s) => Ok(s),
    }
}

fn build(raw: EventInput<'_>) -> Result<Event, FieldError> {
    let trace_id = hex_id::<16>("trace_id", &required("trace_id", raw.trace_id)?)?;
    let span_id = hex_id::<8>("span_id", &required("span_id", raw.span_id)?)?;
    let parent_span_id = match raw.parent_span_id.as_deref() {
        None | Some("") => None,
        Some(p) => Some(hex_id::<8>("parent_span_id", p)?),
    };
    let agent_id = Text::from(required("agent_id", raw.agent_id)?);
    let kind = Text::from(required("kind", raw.kind)?);
    let tenant = match raw.tenant {
        None => Text::const_new("default"),
        Some(t) if t.is_empty() => return Err(("tenant", "must not be empty".into())),
        Some(t) => Text::from(t),
    };
    let timestamp_ns = match (raw.timestamp.as_deref(), raw.timestamp_ns) {
        (None, None) => return Err(("timestamp", "one of `timestamp` or `timestamp_ns` is required".into())),
        (None, Some(ns)) => ns,
        (Some(s), ns) => {
            let (parsed, digits) = parse_rfc3339(s).map_err(|m| ("timestamp", m))?;
            if let Some(ns) = ns {
                let unit = 10i64.pow(9 - digits);
                if ns - ns.rem_euclid(unit) != parsed {
                    return Err(("timestamp_ns", format!("{ns} disagrees with timestamp `{s}` ({parsed} ns)")));
                }
                ns
            } else {
                parsed
            }
        }
    };
    if let Some(c) = raw.confidence {
        if !(0.0..=1.0).contains(&c) {
            return Err(("confidence", format!("{c} is outside 0..1")));
        }
    }
    let status = match raw.status.as_deref() {
        None => Text::const_new("ok"),
        Some(s @ ("ok" | "error")) => Text::from(s),
        Some(s) => return Err(("status", format!("`{s}` is not `ok` or `error`"))),
    };
    let own = |v: Option<Cow<'_, str>>| v.map(Cow::into_owned);
    let text = |v: Option<Cow<'_, str>>| v.map(Text::from);
    Ok(Event {
        tenant,
        trace_id,
        span_id,
        parent_span_id,
        agent_id,
        session_id: text(raw.session_id),
        timestamp_ns,
        kind,
        name: text(raw.name),
        content: own(raw.content),
        intent: text(raw.intent),
        confidence: raw.confidence,
        duration_ms: raw.duration_ms,
        status,
        error_message: own(raw.error_message),
        model: text(raw.model),
        input_tokens: raw.input_tokens,
        output_tokens: raw.output_tokens,
        cost_usd: raw.cost_usd,
        attributes: raw.attributes.map(|m| m.into_iter().collect()).unwrap_or_default(),
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Slow path: read a generic JSON value field by field, naming the first field of the wrong type.
fn raw_from_value(v: &Value) -> Result<EventInput<'_>, FieldError> {
    let Value::Object(m) = v else {
        return Err(("(event)", format!("expected a JSON object, got {}", type_name(v))));
    };
    let s = |f: &'static str| -> Result<Option<Cow<'_, str>>, FieldError> {
        match m.get(f) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(Cow::Borrowed(s.as_str()))),
            Some(o) => Err((f, format!("expected a string, got {}", type_name(o)))),
        }
    };
    let num = |f: &'static str| -> Result<Option<f64>, FieldError> {
        match m.get(f) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(o) => Err((f, format!("expected a number, got {}", type_name(o)))),
        }
    };
    let int = |f: &'static str| -> Result<Option<i64>, FieldError> {
        match m.get(f) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(Some(i)),
                (None, Some(x)) if x.fract() == 0.0 && x.abs() < 9.2e18 => Ok(Some(x as i64)),
                _ => Err((f, format!("expected an integer, got {n}"))),
            },
            // Integers past 2^53 do not survive JavaScript's numbers, so SDKs and protobuf's JSON
            // mapping send int64 as decimal strings.
            Some(Value::String(t)) => match t.parse::<i64>() {
                Ok(i) => Ok(Some(i)),
                Err(_) => Err((f, format!("expected an integer, got the string `{t}`"))),
            },
            Some(o) => Err((f, format!("expected an integer, got {}", type_name(o)))),
        }
    };
    let attributes = match m.get("attributes") {
        None | Some(Value::Null) => None,
        Some(Value::Object(a)) => {
            let mut out = BTreeMap::new();
            for (k, v) in a {
                let v = match v {
                    Value::String(s) => Text::from(s.as_str()),
                    Value::Null => continue,
                    // Numbers, booleans and nested values are kept as their JSON text, as OTLP's
                    // arrays and key-value lists are.
                    other => Text::from(other.to_string()),
                };
                out.insert(Text::from(k.as_str()), v);
            }
            Some(out)
        }
        Some(o) => return Err(("attributes", format!("expected an object, got {}", type_name(o)))),
    };
    Ok(EventInput {
        tenant: s("tenant")?,
        trace_id: s("trace_id")?,
        span_id: s("span_id")?,
        parent_span_id: s("parent_span_id")?,
        agent_id: s("agent_id")?,
        session_id: s("session_id")?,
        timestamp: s("timestamp")?,
        timestamp_ns: int("timestamp_ns")?,
        kind: s("kind")?,
        name: s("name")?,
        content: s("content")?,
        intent: s("intent")?,
        confidence: num("confidence")?,
        duration_ms: num("duration_ms")?,
        status: s("status")?,
        error_message: s("error_message")?,
        model: s("model")?,
        input_tokens: int("input_tokens")?,
        output_tokens: int("output_tokens")?,
        cost_usd: num("cost_usd")?,
        attributes,
    })
}

fn err(index: usize, (field, message): FieldError) -> ValidationError {
    ValidationError { index, field: field.to_owned(), message }
}

/// Parse and validate one JSON object (the text of one event).
pub fn parse_event(json: &str, index: usize) -> Result<Event, ValidationError> {
    match serde_json::from_str::<EventInput<'_>>(json) {
        Ok(raw) => build(raw).map_err(|e| err(index, e)),
        Err(first) => {
            let v: Value = serde_json::from_str(json).map_err(|e| ValidationError {
                index,
                field: "(event)".into(),
                message: format!("invalid JSON: {e}"),
            })?;
            let raw = raw_from_value(&v).map_err(|e| err(index, e))?;
            // The typed reader failed but the generic one did not: report serde's reason.
            let ev = build(raw).map_err(|e| err(index, e))?;
            if first.is_data() {
                Ok(ev)
            } else {
                Err(ValidationError { index, field: "(event)".into(), message: first.to_string() })
            }
        }
    }
}

/// Validate one event given field by field (the gRPC path); `index` is its position in the batch.
pub fn validate_input(input: EventInput<'_>, index: usize) -> Result<Event, ValidationError> {
    build(input).map_err(|e| err(index, e))
}

/// Validate a JSON value already parsed (e.g. one element of an array body).
pub fn event_from_value(v: &Value, index: usize) -> Result<Event, ValidationError> {
    let raw = raw_from_value(v).map_err(|e| err(index, e))?;
    build(raw).map_err(|e| err(index, e))
}

/// Parse a request body: a JSON array of events, or NDJSON (one object per line).
/// All or nothing: the first bad event rejects the batch.
pub fn parse_body(body: &str) -> Result<Vec<Event>, ValidationError> {
    // A byte order mark (some Windows tools write one) is not part of the first event.
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    let trimmed = body.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(trimmed).map_err(|e| ValidationError {
            index: 0,
            field: "(body)".into(),
            message: format!("invalid JSON array: {e}"),
        })?;
        items.iter().enumerate().map(|(i, raw)| parse_event(raw.get(), i)).collect()
    } else {
        body.lines().filter(|l| !l.trim().is_empty()).enumerate().map(|(i, line)| parse_event(line, i)).collect()
    }
}

/// Render ids the way SQL shows them.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = r#"{"tenant":"initech","trace_id":"c957679e1e101bb25665c518beadc325","span_id":"fc8444dccc8cb7a2","parent_span_id":null,"agent_id":"support-agent-090","session_id":"sess_b57c995651c765fa","timestamp":"2025-06-03T00:32:22.997035Z","timestamp_ns":1748910742997035000,"kind":"thought","name":"classify_intent","content":"hi","intent":"order_status","confidence":0.913,"duration_ms":5.14,"status":"ok","error_message":null,"model":"gpt-4o-mini","input_tokens":null,"output_tokens":null,"cost_usd":null,"attributes":{"channel":"api"}}"#;

    /// Strings without escapes are borrowed from the input; with escapes they are decoded
    /// into owned strings; other JSON types are refused, null is absent, as before.
    #[test]
    fn strings_are_borrowed_unless_escaped() {
        let raw: EventInput<'_> = serde_json::from_str(GOOD).expect("good");
        for (field, v) in [("tenant", &raw.tenant), ("trace_id", &raw.trace_id), ("content", &raw.content)] {
            assert!(matches!(v, Some(Cow::Borrowed(_))), "{field}: {v:?}");
        }
        assert_eq!(raw.parent_span_id, None);
        assert_eq!(raw.error_message, None);
        let escaped = good_with(r#""content":"a\"b\\c\n\u00e9","name":"x\ty""#);
        let raw: EventInput<'_> = serde_json::from_str(&escaped).expect("escaped");
        assert!(matches!(&raw.content, Some(Cow::Owned(s)) if s == "a\"b\\c\n\u{e9}"), "{:?}", raw.content);
        assert!(matches!(&raw.name, Some(Cow::Owned(s)) if s == "x\ty"), "{:?}", raw.name);
        for bad in [r#""kind":5"#, r#""kind":true"#, r#""kind":["a"]"#, r#""kind":{}"#] {
            assert!(serde_json::from_str::<EventInput<'_>>(&good_with(bad)).is_err(), "{bad}");
        }
        let ev = parse_event(&escaped, 0).expect("valid");
        assert_eq!(ev.content.as_deref(), Some("a\"b\\c\n\u{e9}"));
        assert_eq!(ev.name.as_deref(), Some("x\ty"));
    }

    /// `GOOD` with `fields` (JSON text of `"key":value` pairs) in place of its own.
    fn good_with(fields: &str) -> String {
        let mut v: serde_json::Map<String, Value> = serde_json::from_str(GOOD).expect("good");
        let extra: serde_json::Map<String, Value> = serde_json::from_str(&format!("{{{fields}}}")).expect("fields");
        v.extend(extra);
        Value::Object(v).to_string()
    }

    #[test]
    fn integers_may_come_as_decimal_strings() {
        let e = parse_event(
            &good_with(r#""timestamp":null,"timestamp_ns":"1748910742997035001","input_tokens":"9007199254740993""#),
            0,
        )
        .expect("strings of digits");
        assert_eq!(e.timestamp_ns, 1_748_910_742_997_035_001);
        assert_eq!(e.input_tokens, Some(9_007_199_254_740_993));
        let err = parse_event(&good_with(r#""output_tokens":"12x""#), 4).expect_err("not an integer");
        assert_eq!((err.index, err.field.as_str()), (4, "output_tokens"));
        assert!(err.message.contains("`12x`"), "{}", err.message);
        // Floats stay numbers only.
        let err = parse_event(&good_with(r#""confidence":"0.5""#), 0).expect_err("a string");
        assert_eq!(err.field, "confidence");
    }

    #[test]
    fn a_float_one_ulp_below_one_is_not_rounded_to_one() {
        let below_one = 1.0 - f64::EPSILON / 2.0;
        let e = parse_event(&good_with(r#""confidence":0.9999999999999999"#), 0).expect("valid");
        assert_eq!(e.confidence, Some(below_one));
    }

    #[test]
    fn attribute_values_that_are_not_strings_keep_their_json_text() {
        let e = parse_event(
            &good_with(r#""attributes":{"n":5,"b":true,"o":{"a":[1,"x"]},"l":[1.5,null],"z":null,"s":"t"}"#),
            0,
        )
        .expect("any JSON values");
        let want: Vec<(Text, Text)> =
            [("b", "true"), ("l", "[1.5,null]"), ("n", "5"), ("o", r#"{"a":[1,"x"]}"#), ("s", "t")]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
        assert_eq!(e.attributes, want, "a null value is no attribute");
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_event() {
        for body in [format!("\u{feff}{GOOD}\n{GOOD}"), format!("\u{feff}[{GOOD},{GOOD}]")] {
            let events = parse_body(&body).expect("parses");
            assert_eq!(events.len(), 2);
            assert_eq!(events[0], events[1]);
        }
        // Anywhere else it is still bad input.
        let err = parse_body(&format!("{GOOD}\n\u{feff}{GOOD}")).expect_err("a mark on line 2");
        assert_eq!(err.index, 1);
    }

    fn with(field: &str, value: &str) -> String {
        let mut v: Value = serde_json::from_str(GOOD).expect("good");
        let parsed: Value = serde_json::from_str(value).expect("value");
        if value == "\"<remove>\"" {
            v.as_object_mut().expect("obj").remove(field);
        } else {
            v[field] = parsed;
        }
        v.to_string()
    }

    #[test]
    fn contract_example_parses() {
        let e = parse_event(GOOD, 0).expect("valid");
        assert_eq!(e.tenant, "initech");
        assert_eq!(hex(&e.trace_id), "c957679e1e101bb25665c518beadc325");
        assert_eq!(e.timestamp_ns, 1748910742997035000);
        assert_eq!(e.attributes, vec![(Text::from("channel"), Text::from("api"))]);
    }

    #[test]
    fn the_shared_example_file_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/contract/example-events.jsonl");
        if let Ok(text) = std::fs::read_to_string(path) {
            let events = parse_body(&text).expect("example events are valid");
            assert_eq!(events.len(), text.lines().filter(|l| !l.trim().is_empty()).count());
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("trace_id", "\"<remove>\""),
            ("trace_id", "\"C957679E1E101BB25665C518BEADC325\""),
            ("trace_id", "\"abc\""),
            ("span_id", "\"zz8444dccc8cb7a2\""),
            ("span_id", "42"),
            ("parent_span_id", "\"123\""),
            ("agent_id", "\"<remove>\""),
            ("agent_id", "\"\""),
            ("kind", "\"<remove>\""),
            ("confidence", "1.5"),
            ("confidence", "-0.1"),
            ("confidence", "\"high\""),
            ("timestamp", "\"yesterday\""),
            ("timestamp", "\"2025-06-03 00:32:22\""),
            ("timestamp_ns", "1748910742997036000"),
            ("status", "\"weird\""),
            ("input_tokens", "1.5"),
            ("attributes", "[1,2]"),
            ("tenant", "\"\""),
        ];
        for (field, value) in cases {
            let body = format!("{GOOD}\n{}\n", with(field, value));
            let e = parse_body(&body).expect_err(&format!("{field}={value} must be rejected"));
            assert_eq!(e.index, 1, "{field}={value}: {e}");
            assert_eq!(e.field, field, "{field}={value}: {e}");
        }
    }

    #[test]
    fn timestamp_alternatives() {
        let only_ns = with("timestamp", "\"<remove>\"");
        assert_eq!(parse_event(&only_ns, 0).expect("ns only").timestamp_ns, 1748910742997035000);
        let only_ts = with("timestamp_ns", "\"<remove>\"");
        assert_eq!(parse_event(&only_ts, 0).expect("ts only").timestamp_ns, 1748910742997035000);
        let offset = with("timestamp", "\"2025-06-03T02:32:22.997035+02:00\"");
        assert_eq!(parse_event(&offset, 0).expect("offset").timestamp_ns, 1748910742997035000);
        let neither = with("timestamp", "\"<remove>\"");
        let neither: Value = serde_json::from_str(&neither).expect("json");
        let mut neither = neither;
        neither.as_object_mut().expect("obj").remove("timestamp_ns");
        assert_eq!(parse_event(&neither.to_string(), 3).expect_err("none").field, "timestamp");
    }

    #[test]
    fn defaults_and_lenient_attributes() {
        let mut v: Value = serde_json::from_str(GOOD).expect("good");
        let o = v.as_object_mut().expect("obj");
        o.remove("tenant");
        o.remove("status");
        o.insert("attributes".into(), serde_json::json!({"retry": 2, "ok": true, "s": "x"}));
        let e = parse_event(&v.to_string(), 0).expect("valid");
        assert_eq!(e.tenant, "default");
        assert_eq!(e.status, "ok");
        assert_eq!(e.attributes.len(), 3);
    }

    #[test]
    fn json_array_bodies_and_garbage() {
        let body = format!("[{GOOD},{GOOD}]");
        assert_eq!(parse_body(&body).expect("array").len(), 2);
        assert_eq!(parse_body("not json").expect_err("garbage").field, "(event)");
        assert_eq!(parse_body("[1, 2").expect_err("truncated").field, "(body)");
    }

    proptest! {
        #[test]
        fn rfc3339_roundtrip(ns in -5_000_000_000_000_000_000i64..9_000_000_000_000_000_000) {
            let dt = chrono::DateTime::from_timestamp_nanos(ns);
            let s = dt.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            prop_assert_eq!(parse_rfc3339(&s).expect("parse").0, ns);
        }

        #[test]
        fn hex_roundtrip(id in any::<[u8; 16]>()) {
            prop_assert_eq!(hex_id::<16>("trace_id", &hex(&id)).expect("hex"), id);
        }

        /// Every float keeps its exact value: the shortest text that names it (what JSON writers
        /// such as Python's, JavaScript's and ours produce) parses back to the same bits. Without
        /// serde_json's `float_roundtrip`, `0.9999999999999999` was read as `1.0`.
        #[test]
        fn floats_keep_their_exact_value(c in 0.0f64..=1.0, d in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
            let e = parse_event(&good_with(&format!(r#""confidence":{c:?},"duration_ms":{d:?},"cost_usd":{d:e}"#)), 0)
                .expect("valid");
            prop_assert_eq!(e.confidence.map(f64::to_bits), Some(c.to_bits()));
            prop_assert_eq!(e.duration_ms.map(f64::to_bits), Some(d.to_bits()));
            prop_assert_eq!(e.cost_usd.map(f64::to_bits), Some(d.to_bits()));
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,200}") {
            let _ = parse_body(&s);
        }
    }
}

//! OpenTelemetry traces to ActiveMirrorOS events: maps OTLP spans, with the GenAI semantic
//! conventions and OpenInference's attribute names, onto the event contract. Pure functions;
//! the OTLP/gRPC and OTLP/HTTP handlers call [`events_from_request`]. The mapping is documented
//! in `docs/otlp-mapping.md`; keep the two in step.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span};
use segments::{Event, Text};

/// Why a request was rejected: where in the request, which field or attribute, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: `{field}`: {message}")]
pub struct MapError {
    pub path: String,
    pub field: String,
    pub message: String,
}

/// Attribute that names the tenant on a resource (or span), when the request does not carry an
/// `x-tenant` header.
pub const TENANT_ATTRIBUTE: &str = "activemirror.tenant";

/// Kind given to spans that carry neither GenAI nor OpenInference kind attributes.
pub const GENERIC_SPAN_KIND: &str = "span";

/// Maps every span of an OTLP export request to events (a span with `exception` events also
/// yields one `error` event per exception). All or nothing: the first bad span rejects the
/// request. `tenant` (from the `x-tenant` header) wins over the resource attribute.
pub fn events_from_request(req: ExportTraceServiceRequest, tenant: Option<&str>) -> Result<Vec<Event>, MapError> {
    let mut out = Vec::new();
    for (ri, rs) in req.resource_spans.into_iter().enumerate() {
        let mut resource_attrs = BTreeMap::new();
        if let Some(r) = rs.resource {
            flatten_into(&mut resource_attrs, r.attributes);
        }
        for (si, ss) in rs.scope_spans.into_iter().enumerate() {
            let mut scope_attrs = resource_attrs.clone();
            if let Some(scope) = ss.scope {
                if !scope.name.is_empty() {
                    scope_attrs.insert("otel.scope.name".to_owned(), scope.name);
                }
                if !scope.version.is_empty() {
                    scope_attrs.insert("otel.scope.version".to_owned(), scope.version);
                }
                flatten_into(&mut scope_attrs, scope.attributes);
            }
            for (pi, sp) in ss.spans.into_iter().enumerate() {
                let path = format!("resource_spans[{ri}].scope_spans[{si}].spans[{pi}]");
                span_to_events(sp, scope_attrs.clone(), tenant, &path, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// The string form of an attribute value: strings as they are, numbers and booleans as
/// written, bytes as hex, arrays and maps as JSON.
pub fn any_value_to_string(v: AnyValue) -> Option<String> {
    match v.value? {
        any_value::Value::StringValue(s) => Some(s),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        any_value::Value::BytesValue(b) => Some(engine::validate::hex(&b)),
        other => Some(any_value_to_json(other).to_string()),
    }
}

fn any_value_to_json(v: any_value::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        any_value::Value::StringValue(s) => J::String(s),
        any_value::Value::BoolValue(b) => J::Bool(b),
        any_value::Value::IntValue(i) => J::from(i),
        any_value::Value::DoubleValue(d) => J::from(d),
        any_value::Value::BytesValue(b) => J::String(engine::validate::hex(&b)),
        any_value::Value::ArrayValue(a) => {
            J::Array(a.values.into_iter().map(|x| x.value.map_or(J::Null, any_value_to_json)).collect())
        }
        // A string-table index, only meaningful inside OTLP profiles: kept as the number.
        any_value::Value::StringValueStrindex(i) => J::from(i),
        any_value::Value::KvlistValue(kv) => J::Object(
            kv.values
                .into_iter()
                .map(|p| (p.key, p.value.and_then(|x| x.value).map_or(J::Null, any_value_to_json)))
                .collect(),
        ),
    }
}

fn flatten_into(map: &mut BTreeMap<String, String>, attrs: Vec<KeyValue>) {
    for kv in attrs {
        if let Some(v) = kv.value.and_then(any_value_to_string) {
            map.insert(kv.key, v);
        }
    }
}

/// Removes and returns the first present attribute of `keys` (with the key used).
fn take_first(attrs: &mut BTreeMap<String, String>, keys: &[&'static str]) -> Option<(&'static str, String)> {
    keys.iter().find_map(|k| attrs.remove(*k).map(|v| (*k, v)))
}

fn take_number<T: std::str::FromStr>(
    attrs: &mut BTreeMap<String, String>,
    keys: &[&'static str],
    path: &str,
) -> Result<Option<T>, MapError> {
    let Some((key, v)) = take_first(attrs, keys) else { return Ok(None) };
    // Integers may arrive as doubles (e.g. from JSON-only SDKs): accept whole values.
    if let Ok(x) = v.parse::<T>() {
        return Ok(Some(x));
    }
    if let Some(x) = v.parse::<f64>().ok().filter(|x| x.fract() == 0.0).and_then(|x| format!("{x:.0}").parse().ok()) {
        return Ok(Some(x));
    }
    Err(MapError { path: path.to_owned(), field: key.to_owned(), message: format!("`{v}` is not a number") })
}

/// The event kind for a span: an explicit `activemirror.kind`, else GenAI's
/// `gen_ai.operation.name`, else OpenInference's `openinference.span.kind`, else `span`.
pub fn kind_for(explicit: Option<&str>, gen_ai_operation: Option<&str>, openinference_kind: Option<&str>) -> String {
    if let Some(k) = explicit.filter(|k| !k.is_empty()) {
        return k.to_owned();
    }
    if let Some(op) = gen_ai_operation.filter(|k| !k.is_empty()) {
        return match op {
            "chat" | "generate_content" | "text_completion" | "embeddings" => "llm_call",
            "execute_tool" => "tool_call",
            "invoke_agent" | "create_agent" => "action",
            other => other,
        }
        .to_owned();
    }
    if let Some(k) = openinference_kind.filter(|k| !k.is_empty()) {
        return match k.to_ascii_uppercase().as_str() {
            "LLM" | "EMBEDDING" => "llm_call".to_owned(),
            "TOOL" | "RETRIEVER" | "RERANKER" => "tool_call".to_owned(),
            "AGENT" | "CHAIN" | "GUARDRAIL" | "EVALUATOR" => "action".to_owned(),
            "UNKNOWN" => GENERIC_SPAN_KIND.to_owned(),
            other => other.to_ascii_lowercase(),
        };
    }
    GENERIC_SPAN_KIND.to_owned()
}

fn id<const N: usize>(bytes: &[u8], field: &str, path: &str) -> Result<[u8; N], MapError> {
    let err = |message: String| MapError { path: path.to_owned(), field: field.to_owned(), message };
    let arr: [u8; N] = bytes.try_into().map_err(|_| err(format!("must be {N} bytes, got {}", bytes.len())))?;
    if arr.iter().all(|b| *b == 0) {
        return Err(err("must not be all zero (an invalid id in OpenTelemetry)".into()));
    }
    Ok(arr)
}

fn unix_nanos(v: u64, field: &str, path: &str) -> Result<i64, MapError> {
    match i64::try_from(v) {
        Ok(ns) if ns > 0 => Ok(ns),
        _ => Err(MapError {
            path: path.to_owned(),
            field: field.to_owned(),
            message: format!("{v} is not a valid time"),
        }),
    }
}

/// Span id of the error event derived from a span's `index`-th exception: a mix of the span id
/// and the index, never zero, so the same export always gives the same id.
pub fn exception_span_id(span_id: [u8; 8], index: usize) -> [u8; 8] {
    let mut z = u64::from_be_bytes(span_id) ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if z == 0 {
        z = 1;
    }
    z.to_be_bytes()
}

fn span_kind_name(k: i32) -> Option<&'static str> {
    match span::SpanKind::try_from(k).ok()? {
        span::SpanKind::Unspecified => None,
        span::SpanKind::Internal => Some("internal"),
        span::SpanKind::Server => Some("server"),
        span::SpanKind::Client => Some("client"),
        span::SpanKind::Producer => Some("producer"),
        span::SpanKind::Consumer => Some("consumer"),
    }
}

fn span_to_events(
    sp: Span,
    mut attrs: BTreeMap<String, String>,
    tenant: Option<&str>,
    path: &str,
    out: &mut Vec<Event>,
) -> Result<(), MapError> {
    let trace_id = id::<16>(&sp.trace_id, "trace_id", path)?;
    let span_id = id::<8>(&sp.span_id, "span_id", path)?;
    let parent_span_id = if sp.parent_span_id.is_empty() || sp.parent_span_id.iter().all(|b| *b == 0) {
        None
    } else {
        Some(id::<8>(&sp.parent_span_id, "parent_span_id", path)?)
    };
    let timestamp_ns = unix_nanos(sp.start_time_unix_nano, "start_time_unix_nano", path)?;
    let duration_ms = (sp.end_time_unix_nano >= sp.start_time_unix_nano && sp.end_time_unix_nano > 0)
        .then(|| (sp.end_time_unix_nano - sp.start_time_unix_nano) as f64 / 1e6);
    // Resource and scope attributes, which the span's error events carry too.
    let mut base = attrs.clone();
    base.remove(TENANT_ATTRIBUTE);
    flatten_into(&mut attrs, sp.attributes);
    if let Some(k) = span_kind_name(sp.kind) {
        attrs.insert("otel.span.kind".to_owned(), k.to_owned());
    }

    let tenant = match tenant {
        Some(t) => {
            attrs.remove(TENANT_ATTRIBUTE);
            t.to_owned()
        }
        None => attrs.remove(TENANT_ATTRIBUTE).filter(|t| !t.is_empty()).unwrap_or_else(|| "default".to_owned()),
    };
    let explicit_kind = take_first(&mut attrs, &["activemirror.kind"]).map(|x| x.1);
    let operation = take_first(&mut attrs, &["gen_ai.operation.name"]).map(|x| x.1);
    let oi_kind = take_first(&mut attrs, &["openinference.span.kind"]).map(|x| x.1);
    let kind = kind_for(explicit_kind.as_deref(), operation.as_deref(), oi_kind.as_deref());
    if let Some(op) = operation {
        // Keep the precise operation visible when it was folded into a contract kind.
        if op != kind {
            attrs.insert("gen_ai.operation.name".to_owned(), op);
        }
    }
    let agent_id = take_first(&mut attrs, &["gen_ai.agent.name", "gen_ai.agent.id", "agent.name"])
        .map(|x| x.1)
        .or_else(|| attrs.get("service.name").cloned())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "unknown_service".to_owned());
    let session_id = take_first(&mut attrs, &["gen_ai.conversation.id", "session.id"]).map(|x| x.1);
    let model =
        take_first(&mut attrs, &["gen_ai.response.model", "gen_ai.request.model", "llm.model_name"]).map(|x| x.1);
    let input_tokens = take_number::<i64>(
        &mut attrs,
        &["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"],
        path,
    )?;
    let output_tokens = take_number::<i64>(
        &mut attrs,
        &["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"],
        path,
    )?;
    let cost_usd =
        take_number::<f64>(&mut attrs, &["activemirror.cost_usd", "gen_ai.usage.cost", "llm.cost.total"], path)?;
    let intent = take_first(&mut attrs, &["activemirror.intent"]).map(|x| x.1);
    let confidence = take_number::<f64>(&mut attrs, &["activemirror.confidence"], path)?;
    if let Some(c) = confidence {
        if !(0.0..=1.0).contains(&c) {
            return Err(MapError {
                path: path.to_owned(),
                field: "activemirror.confidence".into(),
                message: format!("{c} is outside 0..1"),
            });
        }
    }
    let content_keys: &[&'static str] = if kind == "tool_call" {
        &[
            "activemirror.content",
            "gen_ai.tool.call.arguments",
            "input.value",
            "gen_ai.tool.call.result",
            "output.value",
        ]
    } else {
        &[
            "activemirror.content",
            "gen_ai.output.messages",
            "gen_ai.completion",
            "output.value",
            "gen_ai.input.messages",
            "gen_ai.prompt",
            "input.value",
        ]
    };
    let content = take_first(&mut attrs, content_keys).map(|x| x.1);

    let span_status = sp.status.unwrap_or_default();
    let failed = span_status.code == status::StatusCode::Error as i32;
    let mut error_message = failed.then(|| span_status.message.clone()).filter(|m| !m.is_empty());

    // One `error` event per recorded exception, as a child step of the span.
    let mut errors = Vec::new();
    for (i, ev) in sp.events.into_iter().enumerate() {
        if ev.name != "exception" {
            continue;
        }
        let mut ev_attrs = base.clone();
        flatten_into(&mut ev_attrs, ev.attributes);
        let ex_type = ev_attrs.remove("exception.type");
        let ex_message = ev_attrs.remove("exception.message");
        let summary = match (&ex_type, &ex_message) {
            (Some(t), Some(m)) => Some(format!("{t}: {m}")),
            (Some(x), None) | (None, Some(x)) => Some(x.clone()),
            (None, None) => None,
        };
        if failed && error_message.is_none() {
            error_message.clone_from(&summary);
        }
        let ts = if ev.time_unix_nano == 0 {
            timestamp_ns
        } else {
            unix_nanos(ev.time_unix_nano, &format!("events[{i}].time_unix_nano"), path)?
        };
        ev_attrs.insert("otel.event.name".to_owned(), ev.name);
        errors.push(Event {
            tenant: Text::from(tenant.as_str()),
            trace_id,
            span_id: exception_span_id(span_id, i),
            parent_span_id: Some(span_id),
            agent_id: Text::from(agent_id.as_str()),
            session_id: session_id.as_deref().map(Text::from),
            timestamp_ns: ts,
            kind: Text::const_new("error"),
            name: ex_type.map(Text::from),
            content: ex_message,
            intent: None,
            confidence: None,
            duration_ms: None,
            status: Text::const_new("error"),
            error_message: summary,
            model: None,
            input_tokens: None,
            output_tokens: None,
            cost_usd: None,
            attributes: texts(ev_attrs),
        });
    }
    out.push(Event {
        tenant: Text::from(tenant),
        trace_id,
        span_id,
        parent_span_id,
        agent_id: Text::from(agent_id),
        session_id: session_id.map(Text::from),
        timestamp_ns,
        kind: Text::from(kind),
        name: Some(sp.name).filter(|n| !n.is_empty()).map(Text::from),
        content,
        intent: intent.map(Text::from),
        confidence,
        duration_ms,
        status: Text::const_new(if failed { "error" } else { "ok" }),
        error_message,
        model: model.map(Text::from),
        input_tokens,
        output_tokens,
        cost_usd,
        attributes: texts(attrs),
    });
    out.extend(errors);
    Ok(())
}

/// Attributes as an event keeps them (sorted by key, as the map gives them).
fn texts(attrs: BTreeMap<String, String>) -> Vec<(Text, Text)> {
    attrs.into_iter().map(|(k, v)| (Text::from(k), Text::from(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue { key: k.to_owned(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }
    fn s(k: &str, v: &str) -> KeyValue {
        kv(k, any_value::Value::StringValue(v.to_owned()))
    }
    fn i(k: &str, v: i64) -> KeyValue {
        kv(k, any_value::Value::IntValue(v))
    }

    fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: resource, ..Default::default() }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "my-lib".into(),
                        version: "1.2".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn span(attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
            parent_span_id: vec![],
            name: "chat gpt-4o".into(),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_250_000_000,
            attributes: attrs,
            ..Default::default()
        }
    }

    #[test]
    fn genai_llm_span_maps_every_convention() {
        let req = request(
            vec![s("service.name", "support-svc"), s("deployment.environment", "prod")],
            vec![span(vec![
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.request.model", "gpt-4o"),
                s("gen_ai.response.model", "gpt-4o-2024-08-06"),
                i("gen_ai.usage.input_tokens", 120),
                i("gen_ai.usage.output_tokens", 45),
                s("gen_ai.agent.name", "support-bot"),
                s("gen_ai.conversation.id", "conv-9"),
                s("gen_ai.output.messages", "[{\"role\":\"assistant\"}]"),
                s("http.route", "/chat"),
            ])],
        );
        let evs = events_from_request(req, None).expect("maps");
        assert_eq!(evs.len(), 1);
        let e = &evs[0];
        assert_eq!(e.kind, "llm_call");
        assert_eq!(e.agent_id, "support-bot");
        assert_eq!(e.session_id.as_deref(), Some("conv-9"));
        assert_eq!(e.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!((e.input_tokens, e.output_tokens), (Some(120), Some(45)));
        assert_eq!(e.duration_ms, Some(250.0));
        assert_eq!(e.timestamp_ns, 1_700_000_000_000_000_000);
        assert_eq!(e.tenant, "default");
        assert_eq!(e.status, "ok");
        assert_eq!(e.name.as_deref(), Some("chat gpt-4o"));
        assert_eq!(e.content.as_deref(), Some("[{\"role\":\"assistant\"}]"));
        assert_eq!(e.trace_id, [0xab; 16]);
        assert_eq!(e.parent_span_id, None);
        let a: BTreeMap<_, _> = e.attributes.iter().cloned().collect();
        // Kept: unmapped span, resource and scope attributes, and the requested model.
        assert_eq!(a.get("http.route").map(Text::as_str), Some("/chat"));
        assert_eq!(a.get("deployment.environment").map(Text::as_str), Some("prod"));
        assert_eq!(a.get("service.name").map(Text::as_str), Some("support-svc"));
        assert_eq!(a.get("otel.scope.name").map(Text::as_str), Some("my-lib"));
        assert_eq!(a.get("otel.scope.version").map(Text::as_str), Some("1.2"));
        assert_eq!(a.get("otel.span.kind").map(Text::as_str), Some("client"));
        assert_eq!(a.get("gen_ai.request.model").map(Text::as_str), Some("gpt-4o"));
        assert_eq!(a.get("gen_ai.operation.name").map(Text::as_str), Some("chat"));
        // Mapped attributes are not repeated.
        for gone in
            ["gen_ai.response.model", "gen_ai.usage.input_tokens", "gen_ai.agent.name", "gen_ai.conversation.id"]
        {
            assert!(!a.contains_key(gone), "{gone} should be mapped, not kept");
        }
    }

    #[test]
    fn openinference_names_are_accepted() {
        let req = request(
            vec![s("service.name", "rag-app")],
            vec![span(vec![
                s("openinference.span.kind", "LLM"),
                s("llm.model_name", "claude-3-5-sonnet"),
                i("llm.token_count.prompt", 10),
                i("llm.token_count.completion", 3),
                s("session.id", "s-1"),
                s("output.value", "hello"),
            ])],
        );
        let e = &events_from_request(req, Some("acme")).expect("maps")[0];
        assert_eq!(e.kind, "llm_call");
        assert_eq!(e.agent_id, "rag-app", "falls back to the resource's service.name");
        assert_eq!(e.tenant, "acme");
        assert_eq!(e.model.as_deref(), Some("claude-3-5-sonnet"));
        assert_eq!((e.input_tokens, e.output_tokens), (Some(10), Some(3)));
        assert_eq!(e.session_id.as_deref(), Some("s-1"));
        assert_eq!(e.content.as_deref(), Some("hello"));
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_for(None, Some("execute_tool"), None), "tool_call");
        assert_eq!(kind_for(None, Some("invoke_agent"), None), "action");
        assert_eq!(kind_for(None, Some("generate_content"), None), "llm_call");
        assert_eq!(kind_for(None, Some("text_completion"), None), "llm_call");
        assert_eq!(kind_for(None, Some("retrieval"), None), "retrieval");
        assert_eq!(kind_for(None, None, Some("TOOL")), "tool_call");
        assert_eq!(kind_for(None, None, Some("AGENT")), "action");
        assert_eq!(kind_for(None, None, Some("retriever")), "tool_call");
        assert_eq!(kind_for(Some("thought"), Some("chat"), Some("LLM")), "thought");
        assert_eq!(kind_for(None, None, None), "span");
    }

    #[test]
    fn error_status_and_exceptions_become_error_events() {
        let mut sp =
            span(vec![s("gen_ai.operation.name", "execute_tool"), s("gen_ai.tool.call.arguments", "{\"q\":1}")]);
        sp.parent_span_id = vec![9; 8];
        sp.status = Some(Status { code: status::StatusCode::Error as i32, message: String::new() });
        sp.events = vec![
            span::Event { name: "log".into(), ..Default::default() },
            span::Event {
                name: "exception".into(),
                time_unix_nano: 1_700_000_000_100_000_000,
                attributes: vec![
                    s("exception.type", "TimeoutError"),
                    s("exception.message", "tool timed out"),
                    s("exception.stacktrace", "at foo()"),
                ],
                ..Default::default()
            },
        ];
        let evs = events_from_request(request(vec![s("activemirror.tenant", "t9")], vec![sp]), None).expect("maps");
        assert_eq!(evs.len(), 2);
        let (tool, err) = (&evs[0], &evs[1]);
        assert_eq!(tool.kind, "tool_call");
        assert_eq!(tool.status, "error");
        assert_eq!(tool.tenant, "t9");
        assert_eq!(tool.content.as_deref(), Some("{\"q\":1}"));
        assert_eq!(tool.error_message.as_deref(), Some("TimeoutError: tool timed out"));
        assert_eq!(tool.parent_span_id, Some([9; 8]));
        assert_eq!(err.kind, "error");
        assert_eq!(err.status, "error");
        assert_eq!(err.tenant, "t9");
        assert_eq!(err.parent_span_id, Some(tool.span_id));
        assert_ne!(err.span_id, tool.span_id);
        assert_eq!(err.span_id, exception_span_id(tool.span_id, 1));
        assert_eq!(err.timestamp_ns, 1_700_000_000_100_000_000);
        assert_eq!(err.name.as_deref(), Some("TimeoutError"));
        assert_eq!(err.content.as_deref(), Some("tool timed out"));
        assert!(err.attributes.iter().any(|(k, v)| k == "exception.stacktrace" && v == "at foo()"));
    }

    #[test]
    fn bad_spans_are_rejected_naming_the_field() {
        let mut sp = span(vec![]);
        sp.trace_id = vec![1, 2, 3];
        let e = events_from_request(request(vec![], vec![span(vec![]), sp]), None).expect_err("bad trace id");
        assert_eq!(e.path, "resource_spans[0].scope_spans[0].spans[1]");
        assert_eq!(e.field, "trace_id");
        let mut sp = span(vec![]);
        sp.span_id = vec![0; 8];
        assert_eq!(events_from_request(request(vec![], vec![sp]), None).expect_err("zero").field, "span_id");
        let mut sp = span(vec![]);
        sp.start_time_unix_nano = 0;
        assert_eq!(
            events_from_request(request(vec![], vec![sp]), None).expect_err("no time").field,
            "start_time_unix_nano"
        );
        let sp = span(vec![s("gen_ai.usage.input_tokens", "many")]);
        assert_eq!(
            events_from_request(request(vec![], vec![sp]), None).expect_err("nan").field,
            "gen_ai.usage.input_tokens"
        );
        let sp = span(vec![kv("activemirror.confidence", any_value::Value::DoubleValue(1.5))]);
        assert_eq!(
            events_from_request(request(vec![], vec![sp]), None).expect_err("range").field,
            "activemirror.confidence"
        );
    }

    #[test]
    fn attribute_values_render_as_strings() {
        use opentelemetry_proto::tonic::common::v1::ArrayValue;
        let arr = any_value::Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue { value: Some(any_value::Value::StringValue("a".into())) },
                AnyValue { value: Some(any_value::Value::IntValue(2)) },
            ],
        });
        assert_eq!(any_value_to_string(AnyValue { value: Some(arr) }).as_deref(), Some("[\"a\",2]"));
        assert_eq!(
            any_value_to_string(AnyValue { value: Some(any_value::Value::BoolValue(true)) }).as_deref(),
            Some("true")
        );
        assert_eq!(
            any_value_to_string(AnyValue { value: Some(any_value::Value::DoubleValue(0.5)) }).as_deref(),
            Some("0.5")
        );
        assert_eq!(
            any_value_to_string(AnyValue { value: Some(any_value::Value::BytesValue(vec![0xde, 0xad])) }).as_deref(),
            Some("dead")
        );
        assert_eq!(any_value_to_string(AnyValue { value: None }), None);
    }

    #[test]
    fn exception_span_ids_are_distinct_and_nonzero() {
        let base = [1, 2, 3, 4, 5, 6, 7, 8];
        let ids: std::collections::BTreeSet<_> = (0..1000).map(|i| exception_span_id(base, i)).collect();
        assert_eq!(ids.len(), 1000);
        assert!(!ids.contains(&base) && !ids.contains(&[0; 8]));
    }
}

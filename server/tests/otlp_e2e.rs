//! End to end with the official OpenTelemetry Rust SDK and `opentelemetry-otlp` exporter as
//! the client: OTLP/gRPC on the gRPC port, OTLP/HTTP protobuf and JSON on `/v1/traces`. Spans
//! carry GenAI semantic-convention attributes; the stored events are checked over `/v1/sql`.

mod common;

use common::{count, metrics, post, sql, start};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// Emits one agent run: an `invoke_agent` root, a `chat` LLM call and a failing
/// `execute_tool` call with a recorded exception. Returns the root's trace id (hex).
fn emit_run(provider: &SdkTracerProvider, agent: &str) -> String {
    let tracer = provider.tracer("agent-sdk");
    let root = tracer
        .span_builder("invoke_agent support")
        .with_kind(SpanKind::Internal)
        .with_attributes(vec![
            KeyValue::new("gen_ai.operation.name", "invoke_agent"),
            KeyValue::new("gen_ai.agent.name", agent.to_owned()),
            KeyValue::new("gen_ai.conversation.id", "conv-42"),
            KeyValue::new("activemirror.intent", "refund"),
            KeyValue::new("activemirror.confidence", 0.65),
        ])
        .start(&tracer);
    let trace_id = root.span_context().trace_id().to_string();
    let cx = Context::current_with_span(root);
    let mut chat = tracer
        .span_builder("chat gpt-4o")
        .with_kind(SpanKind::Client)
        .with_attributes(vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", "gpt-4o"),
            KeyValue::new("gen_ai.response.model", "gpt-4o-2024-08-06"),
            KeyValue::new("gen_ai.usage.input_tokens", 812i64),
            KeyValue::new("gen_ai.usage.output_tokens", 97i64),
            KeyValue::new("gen_ai.agent.name", agent.to_owned()),
            KeyValue::new("server.address", "api.openai.com"),
        ])
        .start_with_context(&tracer, &cx);
    chat.end();
    let mut tool = tracer
        .span_builder("execute_tool lookup_order")
        .with_attributes(vec![
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.name", "lookup_order"),
            KeyValue::new("gen_ai.tool.call.arguments", "{\"order\":\"A-17\"}"),
            KeyValue::new("gen_ai.agent.name", agent.to_owned()),
        ])
        .start_with_context(&tracer, &cx);
    tool.record_error(&std::io::Error::other("order service timed out"));
    tool.set_status(Status::error("lookup failed"));
    tool.end();
    cx.span().end();
    trace_id
}

fn resource(service: &str) -> Resource {
    Resource::builder_empty()
        .with_service_name(service.to_owned())
        .with_attribute(KeyValue::new("deployment.environment", "test"))
        .build()
}

fn check_run(base: &str, trace_id: &str, agent: &str, tenant: &str) {
    let rows = sql(
        base,
        None,
        &format!(
            "SELECT tenant, kind, name, agent_id, session_id, model, input_tokens, output_tokens, status, \
             error_message, content, intent, confidence, duration_ms, parent_span_id, span_id, \
             attributes['deployment.environment'] AS env, attributes['gen_ai.request.model'] AS req_model, \
             attributes['otel.scope.name'] AS scope, attributes['server.address'] AS server \
             FROM events WHERE trace_id = '{trace_id}' ORDER BY kind"
        ),
    );
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap_or("?")).collect();
    assert_eq!(kinds, ["action", "error", "llm_call", "tool_call"], "{rows:?}");
    let by = |k: &str| rows.iter().find(|r| r["kind"] == k).expect("kind present");
    let (root, err, chat, tool) = (by("action"), by("error"), by("llm_call"), by("tool_call"));
    for r in &rows {
        assert_eq!(r["tenant"], tenant);
        assert_eq!(r["agent_id"], agent);
        assert_eq!(r["env"], "test", "resource attributes are kept");
    }
    assert_eq!(root["session_id"], "conv-42");
    assert_eq!(root["intent"], "refund");
    assert_eq!(root["confidence"], 0.65);
    assert_eq!(root["parent_span_id"], serde_json::Value::Null);
    assert!(root["duration_ms"].as_f64().expect("duration") >= 0.0);
    assert_eq!(chat["model"], "gpt-4o-2024-08-06");
    assert_eq!(chat["req_model"], "gpt-4o");
    assert_eq!((chat["input_tokens"].as_i64(), chat["output_tokens"].as_i64()), (Some(812), Some(97)));
    assert_eq!(chat["parent_span_id"], root["span_id"]);
    assert_eq!(chat["scope"], "agent-sdk");
    assert_eq!(chat["server"], "api.openai.com");
    assert_eq!(chat["status"], "ok");
    assert_eq!(tool["status"], "error");
    assert_eq!(tool["error_message"], "lookup failed");
    assert_eq!(tool["content"], "{\"order\":\"A-17\"}");
    assert_eq!(err["status"], "error");
    assert_eq!(err["parent_span_id"], tool["span_id"]);
    assert!(err["content"].as_str().unwrap_or_default().contains("order service timed out"), "{err}");
}

#[test]
fn official_otlp_exporters_over_grpc_and_http() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("rt");

    // OTLP/gRPC with the tonic exporter, tenant from the x-tenant metadata.
    let grpc_trace = {
        let _guard = rt.enter();
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("x-tenant", "acme".parse().expect("metadata"));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(s.grpc.clone())
            .with_metadata(md)
            // What collectors send by default: gzip-compressed requests.
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
            .expect("grpc exporter");
        let provider =
            SdkTracerProvider::builder().with_resource(resource("support-svc")).with_batch_exporter(exporter).build();
        let t = emit_run(&provider, "support-bot");
        provider.force_flush().expect("flush");
        provider.shutdown().expect("shutdown");
        t
    };
    check_run(&s.base, &grpc_trace, "support-bot", "acme");

    // OTLP/HTTP protobuf and JSON with the HTTP exporter (blocking reqwest client).
    let mut traces = Vec::new();
    for (protocol, gzip) in [(Protocol::HttpBinary, false), (Protocol::HttpJson, true)] {
        let endpoint = format!("{}/v1/traces", s.base);
        let t = std::thread::spawn(move || {
            let mut builder = SpanExporter::builder().with_http().with_protocol(protocol).with_endpoint(endpoint);
            if gzip {
                builder = opentelemetry_otlp::WithHttpConfig::with_compression(
                    builder,
                    opentelemetry_otlp::Compression::Gzip,
                );
            }
            let exporter = builder.build().expect("http exporter");
            let provider = SdkTracerProvider::builder()
                .with_resource(resource("billing-svc"))
                .with_simple_exporter(exporter)
                .build();
            let t = emit_run(&provider, "billing-bot");
            provider.shutdown().expect("shutdown");
            t
        })
        .join()
        .expect("exporter thread");
        traces.push(t);
    }
    for t in &traces {
        check_run(&s.base, t, "billing-bot", "default");
    }
    assert_eq!(count(&s.base, None), 12);
    let m = metrics(&s.base);
    assert!(m.contains("activemirror_events_ingested_total{protocol=\"otlp_grpc\"} 4"), "{m}");
    assert!(m.contains("activemirror_events_ingested_total{protocol=\"otlp_http\"} 8"), "{m}");

    // Malformed OTLP/HTTP: wrong protobuf and wrong JSON name the problem; nothing stored.
    let (status, body) = post(&format!("{}/v1/traces", s.base), "\u{8}\u{ff}garbage");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid OTLP protobuf"), "{body}");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .post(&format!("{}/v1/traces", s.base))
        .header("content-type", "application/json")
        .send(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"00","spanId":"0102030405060708","startTimeUnixNano":"1"}]}]}]}"#)
        .expect("post");
    let body = r.body_mut().read_to_string().expect("body");
    assert_eq!(r.status().as_u16(), 400, "{body}");
    assert!(body.contains("trace"), "{body}");
    assert_eq!(count(&s.base, None), 12);
}

//! End to end over gRPC with the real binary: `activemirror.v1.Ingest` through the generated
//! tonic client (Write and WriteStream, every kind of invalid field, a malformed protobuf), and
//! results checked over `/v1/sql`.

mod common;

use std::collections::BTreeMap;

use common::{count, metrics, sql, start};
use server::grpc::pb::ingest_client::IngestClient;
use server::grpc::pb::{Event, EventBatch};

fn event(i: u64) -> Event {
    Event {
        tenant: if i.is_multiple_of(2) { String::new() } else { "acme".into() },
        trace_id: format!("{:032x}", 0xabc0 + i / 4),
        span_id: format!("{:016x}", i + 1),
        parent_span_id: (!i.is_multiple_of(4)).then(|| format!("{:016x}", i)),
        agent_id: format!("bot-{}", i % 3),
        session_id: Some(format!("s{}", i % 5)),
        timestamp: None,
        timestamp_ns: Some(1_760_000_000_000_000_000 + i as i64 * 1_000_000),
        kind: ["thought", "tool_call", "llm_call", "output"][i as usize % 4].into(),
        name: Some(format!("step-{i}")),
        content: Some(format!("content of step {i}")),
        intent: i.is_multiple_of(3).then(|| "refund".into()),
        confidence: Some((i % 10) as f64 / 10.0),
        duration_ms: Some(i as f64 * 1.5),
        status: Some(if i.is_multiple_of(7) { "error" } else { "ok" }.into()),
        error_message: i.is_multiple_of(7).then(|| "boom".into()),
        model: (i % 4 == 2).then(|| "gpt-4o".into()),
        input_tokens: (i % 4 == 2).then_some(i as i64 * 10),
        output_tokens: (i % 4 == 2).then_some(i as i64),
        cost_usd: (i % 4 == 2).then_some(0.001 * i as f64),
        attributes: BTreeMap::from([("k".to_owned(), format!("v{i}"))]),
    }
}

fn batch(range: std::ops::Range<u64>) -> EventBatch {
    EventBatch { events: range.map(event).collect() }
}

#[test]
fn grpc_ingest_write_stream_and_rejections() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("rt");
    rt.block_on(async {
        let mut c = IngestClient::connect(s.grpc.clone()).await.expect("connect");
        let ack = c.write(batch(0..100)).await.expect("write").into_inner();
        assert_eq!((ack.accepted, ack.batches), (100, 1));
        let stream = futures::stream::iter(vec![batch(100..150), batch(150..200), batch(200..210)]);
        let ack = c.write_stream(stream).await.expect("stream").into_inner();
        assert_eq!((ack.accepted, ack.batches), (110, 3));
    });
    assert_eq!(count(&s.base, None), 210);
    assert_eq!(count(&s.base, Some("acme")), 105);

    // What went in is what comes out, field by field, for one full event.
    let row = &sql(
        &s.base,
        None,
        "SELECT tenant, trace_id, span_id, parent_span_id, agent_id, session_id, kind, name, content, intent, \
         confidence, duration_ms, status, error_message, model, input_tokens, output_tokens, cost_usd, \
         attributes['k'] AS k, CAST(timestamp AS BIGINT) AS ts FROM events WHERE span_id = '000000000000000f'",
    )[0];
    let e = event(14);
    assert_eq!(row["tenant"], "default");
    assert_eq!(row["trace_id"], e.trace_id.as_str());
    assert_eq!(row["parent_span_id"], e.parent_span_id.as_deref().unwrap_or_default());
    assert_eq!(row["agent_id"], "bot-2");
    assert_eq!(row["session_id"], "s4");
    assert_eq!(row["kind"], "llm_call");
    assert_eq!(row["intent"], serde_json::Value::Null);
    assert_eq!(row["confidence"], 0.4);
    assert_eq!(row["duration_ms"], 21.0);
    assert_eq!(row["status"], "error");
    assert_eq!(row["error_message"], "boom");
    assert_eq!(row["model"], "gpt-4o");
    assert_eq!((row["input_tokens"].as_i64(), row["output_tokens"].as_i64()), (Some(140), Some(14)));
    assert_eq!(row["k"], "v14");
    assert_eq!(row["ts"].as_i64(), e.timestamp_ns);

    // Every invalid field is rejected with INVALID_ARGUMENT naming the field and the position.
    type Breaker = fn(&mut Event);
    let cases: Vec<(&str, Breaker)> = vec![
        ("trace_id", |e| e.trace_id = "xyz".into()),
        ("trace_id", |e| e.trace_id.clear()),
        ("span_id", |e| e.span_id = "ABCDEF0123456789".into()),
        ("parent_span_id", |e| e.parent_span_id = Some("12".into())),
        ("agent_id", |e| e.agent_id.clear()),
        ("kind", |e| e.kind.clear()),
        ("timestamp", |e| e.timestamp_ns = None),
        ("timestamp", |e| {
            e.timestamp_ns = None;
            e.timestamp = Some("yesterday".into());
        }),
        ("timestamp_ns", |e| e.timestamp = Some("2020-01-01T00:00:00Z".into())),
        ("confidence", |e| e.confidence = Some(1.5)),
        ("status", |e| e.status = Some("failed".into())),
    ];
    rt.block_on(async {
        let mut c = IngestClient::connect(s.grpc.clone()).await.expect("connect");
        for (field, breaker) in &cases {
            let mut b = batch(1000..1003);
            breaker(&mut b.events[2]);
            let err = c.write(b).await.expect_err(field);
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {err}");
            assert!(err.message().contains(&format!("`{field}`")), "{field}: {}", err.message());
            assert!(err.message().contains("event 2"), "{field}: {}", err.message());
        }
        // A bad batch inside a stream: the batches before it stay stored, the error says so.
        let mut bad = batch(2000..2010);
        bad.events[5].confidence = Some(-0.1);
        let stream = futures::stream::iter(vec![batch(3000..3020), bad, batch(4000..4010)]);
        let err = c.write_stream(stream).await.expect_err("bad stream");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("batch 1") && err.message().contains("20 events"), "{}", err.message());
    });
    assert_eq!(count(&s.base, None), 230, "only the stream's first batch was added");

    // A writer scoped by `x-tenant` metadata: tenantless events become its tenant's, and a
    // batch naming another tenant is refused whole.
    rt.block_on(async {
        let mut c = IngestClient::connect(s.grpc.clone()).await.expect("connect");
        let scoped = |b: EventBatch| {
            let mut r = tonic::Request::new(b);
            r.metadata_mut().insert("x-tenant", tonic::metadata::MetadataValue::from_static("initech"));
            r
        };
        let mut own = batch(5000..5010);
        own.events.iter_mut().for_each(|e| e.tenant = String::new());
        own.events[3].tenant = "initech".into();
        let ack = c.write(scoped(own)).await.expect("scoped write").into_inner();
        assert_eq!(ack.accepted, 10);
        let err = c.write(scoped(batch(6000..6004))).await.expect_err("acme in an initech request");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("event 1") && err.message().contains("`tenant`"), "{}", err.message());
    });
    assert_eq!(count(&s.base, Some("initech")), 10);
    assert_eq!(count(&s.base, None), 240);

    // A body that is not the protobuf it claims to be.
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(s.grpc.clone()).expect("url").connect().await.expect("c");
        let mut g = tonic::client::Grpc::new(ch);
        g.ready().await.expect("ready");
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/activemirror.v1.Ingest/Write");
        let garbage = EventBatch { events: vec![] };
        // Field 1 declared as a length-delimited message of 200 bytes, but only 3 follow.
        let r: Result<tonic::Response<server::grpc::pb::WriteAck>, _> =
            g.unary(tonic::Request::new(garbage), path, RawBytes(vec![0x0a, 0xc8, 0x01, 1, 2, 3])).await;
        let err = r.expect_err("garbage");
        assert!(err.message().to_lowercase().contains("decode"), "{err}");
        // A well-framed batch whose second event holds `content` (field 11) that is not UTF-8:
        // refused whole, naming the event and the field.
        let good = prost::Message::encode_to_vec(&event(9_000));
        let bad = [0x5a, 2, 0xff, 0xfe];
        let mut body = Vec::new();
        for e in [&good[..], &bad[..]] {
            body.push(0x0a);
            prost::encoding::encode_varint(e.len() as u64, &mut body);
            body.extend_from_slice(e);
        }
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/activemirror.v1.Ingest/Write");
        g.ready().await.expect("ready");
        let r: Result<tonic::Response<server::grpc::pb::WriteAck>, _> =
            g.unary(tonic::Request::new(EventBatch { events: vec![] }), path, RawBytes(body)).await;
        let err = r.expect_err("not UTF-8");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().contains("event 1") && err.message().contains("`content`"), "{err}");
        assert!(err.message().contains("UTF-8"), "{err}");
    });
    assert_eq!(count(&s.base, None), 240);
    let m = metrics(&s.base);
    assert!(m.contains("activemirror_events_ingested_total{protocol=\"grpc\"} 240"), "{m}");
    assert!(m.contains("activemirror_batches_total{protocol=\"grpc\"} 6"), "{m}");
    assert!(m.contains("activemirror_wal_fsync_seconds_bucket{le=\"+Inf\"}"), "{m}");
    assert!(m.contains("activemirror_wal_group_records_sum"), "{m}");

    // SIGTERM: graceful stop (flush, exit 0); a restart has every event, from segments.
    let mut s = s;
    let pid = s.child.id().to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let status = s.child.wait().expect("wait");
    assert!(status.success(), "SIGTERM must end the server with exit 0, got {status}");
    let s = start(dir.path());
    assert_eq!(count(&s.base, None), 240);
    assert!(
        !dir.path()
            .join("wal")
            .read_dir()
            .expect("wal dir")
            .any(|f| f.is_ok_and(|f| f.metadata().is_ok_and(|m| m.len() > 0))),
        "after a clean stop every event is in segments and the WAL holds nothing"
    );
}

/// A codec that sends fixed bytes whatever the message, to test malformed requests.
#[derive(Clone)]
struct RawBytes(Vec<u8>);
struct RawEncoder(Vec<u8>);

impl tonic::codec::Encoder for RawEncoder {
    type Item = EventBatch;
    type Error = tonic::Status;
    fn encode(&mut self, _: EventBatch, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &self.0);
        Ok(())
    }
}

impl tonic::codec::Codec for RawBytes {
    type Encode = EventBatch;
    type Decode = server::grpc::pb::WriteAck;
    type Encoder = RawEncoder;
    type Decoder =
        <tonic_prost::ProstCodec<server::grpc::pb::WriteAck, server::grpc::pb::WriteAck> as tonic::codec::Codec>::Decoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder(self.0.clone())
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<server::grpc::pb::WriteAck, server::grpc::pb::WriteAck>::default().decoder()
    }
}

#[test]
fn sigkill_during_grpc_ingest_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = start(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("rt");
    let url = s.grpc.clone();
    // Four clients write distinct batches until the server dies; each remembers what was acked.
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let url = url.clone();
            rt.spawn(async move {
                let mut client = IngestClient::connect(url).await.expect("connect");
                let mut acked = Vec::new();
                for b in 0..10_000u64 {
                    let start = (c * 10_000 + b) * 50;
                    match client.write(batch(start..start + 50)).await {
                        Ok(ack) => {
                            assert_eq!(ack.get_ref().accepted, 50);
                            acked.push(start);
                        }
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(700));
    s.child.kill().expect("SIGKILL");
    let _ = s.child.wait();
    let acked: Vec<u64> = rt.block_on(async {
        let mut all = Vec::new();
        for c in clients {
            all.extend(c.await.expect("client"));
        }
        all
    });
    assert!(!acked.is_empty(), "some batches were acknowledged before the kill");
    let s = start(dir.path());
    let stored = count(&s.base, None);
    assert!(stored >= acked.len() as u64 * 50, "stored {stored} < acknowledged {}", acked.len() * 50);
    // Every acknowledged batch is there in full (its first and last span ids).
    for first in acked.iter().step_by(7) {
        let ids = format!("'{:016x}', '{:016x}'", first + 1, first + 50);
        let n =
            sql(&s.base, None, &format!("SELECT count(*) AS n FROM events WHERE span_id IN ({ids})"))[0]["n"].as_u64();
        assert_eq!(n, Some(2), "batch starting at {first}");
    }
    // Nothing is duplicated by the replay.
    let row = &sql(&s.base, None, "SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM events")[0];
    assert_eq!(row["n"], row["d"]);
}

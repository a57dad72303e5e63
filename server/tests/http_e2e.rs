//! End to end: the real `activemirror` binary on an ephemeral port with a temp data dir.
//! Ingest over HTTP, query over /v1/sql, bad input stores nothing, SIGKILL then restart loses
//! no acknowledged event.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server {
    child: Child,
    base: String,
}

fn start(dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_activemirror"))
        .args(["start", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("server exited before listening").expect("read");
        if line.contains("HTTP listening") {
            let a = line.split("addr=").nth(1).expect("addr").split_whitespace().next().expect("addr").to_owned();
            break a;
        }
    };
    // Keep draining logs so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, base: format!("http://{addr}") }
}

fn post(url: &str, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.post(url).send(body).expect("request");
    (r.status().as_u16(), r.body_mut().read_to_string().expect("body"))
}

fn event(i: usize) -> String {
    format!(
        r#"{{"tenant":"t{}","trace_id":"{:032x}","span_id":"{:016x}","agent_id":"agent-{}","timestamp_ns":{},"kind":"action","content":"step {i}","confidence":0.5}}"#,
        i % 2,
        i / 10 + 1,
        i + 1,
        i % 3,
        1_750_000_000_000_000_000u64 + i as u64
    )
}

fn count(base: &str, tenant: Option<&str>) -> u64 {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = agent.post(&format!("{base}/v1/sql"));
    if let Some(t) = tenant {
        req = req.header("x-tenant", t);
    }
    let mut r = req.send(r#"{"sql": "SELECT count(*) AS n FROM events"}"#).expect("sql");
    let body = r.body_mut().read_to_string().expect("body");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v[0]["n"].as_u64().expect("n")
}

#[test]
fn ingest_query_reject_and_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = start(dir.path());
    let batch: Vec<String> = (0..100).map(event).collect();
    let (status, body) = post(&format!("{}/v1/events", s.base), &batch.join("\n"));
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":100}"#));
    let arr = format!("[{}]", (100..150).map(event).collect::<Vec<_>>().join(","));
    assert_eq!(post(&format!("{}/v1/events", s.base), &arr).0, 200);
    assert_eq!(count(&s.base, None), 150);
    assert_eq!(count(&s.base, Some("t1")), 75, "tenant scope");

    // Bad input: named field and position, nothing stored.
    let bad = format!("{}\n{}", event(200), event(201).replace("\"confidence\":0.5", "\"confidence\":3"));
    let (status, body) = post(&format!("{}/v1/events", s.base), &bad);
    assert_eq!(status, 400);
    assert!(body.contains("event 1") && body.contains("confidence"), "{body}");
    let (status, body) = post(&format!("{}/v1/events", s.base), "{not json");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"error\""));
    assert_eq!(count(&s.base, None), 150);
    let (status, body) = post(&format!("{}/v1/sql", s.base), r#"{"sql": "SELECT nope FROM events"}"#);
    assert_eq!(status, 400);
    assert!(body.contains("nope"), "{body}");

    // A body over the limit (64 MiB default) gets a JSON 413 and is counted.
    let huge = "x".repeat(65 << 20);
    let (status, body) = post(&format!("{}/v1/events", s.base), &huge);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"error\""), "{body}");

    // Health and metrics.
    let mut r = ureq::get(&format!("{}/metrics", s.base)).call().expect("metrics");
    let m = r.body_mut().read_to_string().expect("body");
    assert!(m.contains("activemirror_events_ingested_total{protocol=\"http\"} 150"), "{m}");
    assert!(m.contains("activemirror_rejected_requests_total{reason=\"too_large\"} 1"), "{m}");

    // SIGKILL, restart: every acknowledged event is back.
    s.child.kill().expect("kill");
    let _ = s.child.wait();
    std::thread::sleep(Duration::from_millis(50));
    let mut s = start(dir.path());
    assert_eq!(count(&s.base, None), 150);
    s.child.kill().expect("kill");
    let _ = s.child.wait();
}

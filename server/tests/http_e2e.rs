//! End to end: the real `activemirror` binary on an ephemeral port with a temp data dir.
//! Ingest over HTTP, query over /v1/sql, bad input stores nothing, SIGKILL then restart loses
//! no acknowledged event.

mod common;

use std::time::Duration;

use common::{count, post, start, start_with};

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
    // SQL over HTTP is read-only: statements that would change the shared session are refused.
    for ddl in ["CREATE VIEW v AS SELECT 1", "DROP VIEW traces", "SET datafusion.execution.batch_size = 1"] {
        let (status, body) = post(&format!("{}/v1/sql", s.base), &serde_json::json!({ "sql": ddl }).to_string());
        assert_eq!(status, 400, "{ddl}: {body}");
    }
    assert_eq!(common::sql(&s.base, None, "SELECT count(*) AS n FROM traces")[0]["n"], 150);
    // The prepared session reads a fresh snapshot each time: new events show up at once.
    assert_eq!(post(&format!("{}/v1/events", s.base), &event(150)).0, 200);
    assert_eq!(count(&s.base, None), 151);
    assert_eq!(count(&s.base, Some("t0")), 76);
    // A lookup of one trace (answered without DataFusion's planner), in and out of a tenant's
    // scope: trace 3 holds events 20..=29, the odd ones in tenant t1.
    let lookup =
        format!("SELECT span_id, content FROM events WHERE trace_id = '{:032x}' ORDER BY timestamp DESC LIMIT 4", 3);
    let spans = |tenant: Option<&str>| -> Vec<(String, String)> {
        common::sql(&s.base, tenant, &lookup)
            .iter()
            .map(|r| (r["span_id"].as_str().unwrap_or("").to_owned(), r["content"].as_str().unwrap_or("").to_owned()))
            .collect()
    };
    let want = |ids: &[usize]| -> Vec<(String, String)> {
        ids.iter().map(|i| (format!("{:016x}", i + 1), format!("step {i}"))).collect()
    };
    assert_eq!(spans(None), want(&[29, 28, 27, 26]));
    assert_eq!(spans(Some("t1")), want(&[29, 27, 25, 23]));
    // EXPLAIN ANALYZE works over HTTP and shows what the scan pruned.
    let (status, body) = post(
        &format!("{}/v1/sql", s.base),
        r#"{"sql": "EXPLAIN ANALYZE SELECT count(content) FROM events WHERE tenant = 't1' AND confidence < 0.9"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("EventsScanExec") && body.contains("segments="), "{body}");
    // Arrow IPC output: plain Utf8 strings (readers without Utf8View support read it), also
    // inside the `traces` view's structs.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .post(&format!("{}/v1/sql?format=arrow", s.base))
        .send(r#"{"sql": "SELECT agent_id, events FROM traces ORDER BY timestamp LIMIT 3"}"#)
        .expect("arrow");
    let status = r.status().as_u16();
    let bytes = r.body_mut().read_to_vec().expect("body");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).expect("ipc");
    let schema = reader.schema();
    assert_eq!(schema.field(0).data_type(), &arrow::datatypes::DataType::Utf8);
    assert!(!format!("{:?}", schema.field(1).data_type()).contains("View"), "{schema:?}");
    let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, 3);
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
    assert!(m.contains("activemirror_events_ingested_total{protocol=\"http\"} 151"), "{m}");
    assert!(m.contains("activemirror_rejected_requests_total{reason=\"too_large\"} 1"), "{m}");
    // The ingest gate: its budget (32 MiB by default), nothing admitted between requests.
    assert!(m.contains("activemirror_rejected_requests_total{reason=\"inflight\"} 0"), "{m}");
    assert!(m.contains(&format!("activemirror_ingest_inflight_limit_bytes {}", 32u64 << 20)), "{m}");
    assert!(m.contains("activemirror_ingest_inflight_bytes 0\n"), "{m}");
    // The block cache reports its budget (the default, 256 MiB) and its use.
    assert!(m.contains(&format!("activemirror_block_cache_capacity_bytes {}", 256u64 << 20)), "{m}");
    assert!(m.contains("activemirror_block_cache_hits_total "), "{m}");
    // So does the text page cache (a quarter of it by default).
    assert!(m.contains(&format!("activemirror_text_cache_capacity_bytes {}", 64u64 << 20)), "{m}");
    assert!(m.contains("activemirror_text_cache_misses_total "), "{m}");
    // And the token index cache (256 MiB by default).
    assert!(m.contains(&format!("activemirror_index_cache_capacity_bytes {}", 256u64 << 20)), "{m}");
    assert!(m.contains(&format!("activemirror_segment_index_cache_capacity_bytes {}", 256u64 << 20)), "{m}");
    // The process's own figures, under the names Prometheus client libraries use, and how
    // often the idle server returned memory (a count; whether it ran yet depends on timing).
    let gauge = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {m}"))
    };
    assert!(gauge("process_resident_memory_bytes") > 1e6, "{m}");
    assert!(gauge("process_virtual_memory_bytes") >= gauge("process_resident_memory_bytes"), "{m}");
    assert!(gauge("process_threads") >= 2.0 && gauge("process_open_fds") >= 3.0, "{m}");
    assert!(gauge("process_cpu_seconds_total") > 0.0, "{m}");
    assert!(gauge("activemirror_memory_releases_total") >= 0.0, "{m}");
    // A new data directory has only hot segments in the compaction order: none is sorted in
    // memory.
    assert_eq!(gauge("activemirror_compactions_sorted_in_memory_total"), 0.0, "{m}");
    // A few batches never pile up the 16 hot segments that make compaction urgent.
    assert_eq!(gauge("activemirror_compactions_urgent_total"), 0.0, "{m}");
    assert!(gauge("activemirror_compactions_warm_total") >= 0.0, "{m}");

    // SIGKILL, restart: every acknowledged event is back.
    s.child.kill().expect("kill");
    let _ = s.child.wait();
    std::thread::sleep(Duration::from_millis(50));
    let mut s = start(dir.path());
    assert_eq!(count(&s.base, None), 151);
    s.child.kill().expect("kill");
    let _ = s.child.wait();
}

/// `query.max_results` cuts every result over HTTP to its first rows and says so, whatever
/// path the query takes (sorted, unsorted, aggregated, a point lookup).
#[test]
fn results_over_the_limit_are_cut_and_marked() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = common::start_with(dir.path(), &["--max-results", "7"]);
    let batch: Vec<String> = (0..30).map(event).collect();
    assert_eq!(post(&format!("{}/v1/events", s.base), &batch.join("\n")).0, 200);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let run = |sql: &str| -> (Vec<String>, bool) {
        let mut r =
            agent.post(&format!("{}/v1/sql", s.base)).send(serde_json::json!({ "sql": sql }).to_string()).expect("sql");
        assert_eq!(r.status().as_u16(), 200, "{sql}");
        let cut = r.headers().get("x-activemirror-truncated").is_some_and(|v| v == "true");
        // Every answer says where its time went: `query;dur=<ms>, encode;dur=<ms>`.
        let timing = r.headers().get("server-timing").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let durations: Vec<f64> =
            timing.split(", ").filter_map(|part| part.split_once(";dur=").and_then(|(_, d)| d.parse().ok())).collect();
        assert!(timing.starts_with("query;dur=") && durations.len() == 2, "{timing}");
        assert!(durations.iter().all(|d| *d >= 0.0 && *d < 60_000.0), "{timing}");
        let body = r.body_mut().read_to_string().expect("body");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&body).expect("json");
        (
            rows.iter()
                .map(|r| r.as_object().and_then(|o| o.values().next()).map_or(String::new(), |v| v.to_string()))
                .collect(),
            cut,
        )
    };
    let span = |i: usize| format!("\"{:016x}\"", i + 1);
    // Sorted: the first 7 by time, the sort planned with the cut.
    let (rows, cut) = run("SELECT span_id FROM events ORDER BY timestamp DESC");
    assert_eq!(rows, (23..30).rev().map(span).collect::<Vec<_>>());
    assert!(cut);
    // Unsorted: 7 distinct stored rows.
    let (mut rows, cut) = run("SELECT span_id FROM events");
    rows.sort();
    rows.dedup();
    assert_eq!((rows.len(), cut), (7, true));
    assert!(rows.iter().all(|r| (0..30).map(span).any(|s| &s == r)), "{rows:?}");
    // A point lookup: trace 1 holds events 0..=9.
    let (rows, cut) = run(&format!("SELECT span_id FROM events WHERE trace_id = '{:032x}' ORDER BY timestamp", 1));
    assert_eq!((rows, cut), ((0..7).map(span).collect::<Vec<_>>(), true));
    // At or under the limit: whole and unmarked.
    let (rows, cut) = run("SELECT span_id FROM events ORDER BY timestamp LIMIT 7");
    assert_eq!((rows, cut), ((0..7).map(span).collect::<Vec<_>>(), false));
    let (rows, cut) = run("SELECT count(*) FROM events");
    assert_eq!((rows, cut), (vec!["30".to_owned()], false));
    s.child.kill().expect("kill");
    let _ = s.child.wait();
}

/// `POST /v1/events` takes gzip bodies as `/v1/traces` does: stored when they decode, 413 when
/// they decompress past the body limit (1 MB here), 400 when they do not decode and 415 for
/// other encodings; only the good one is stored.
#[test]
fn gzip_bodies_are_decoded_and_held_to_the_limit() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("am.yaml");
    std::fs::write(&config, "server:\n  max_body_mb: 1\n").expect("config");
    let s = start_with(&dir.path().join("data"), &["--config", config.to_str().expect("utf8")]);
    let gzip = |bytes: &[u8]| {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(bytes).expect("gzip");
        z.finish().expect("gzip")
    };
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let send = |encoding: &str, body: Vec<u8>| {
        let mut r = agent
            .post(&format!("{}/v1/events", s.base))
            .header("content-encoding", encoding)
            .send(&body[..])
            .expect("request");
        (r.status().as_u16(), r.body_mut().read_to_string().expect("body"))
    };
    let ndjson: Vec<String> = (0..50).map(event).collect();
    let (status, body) = send("gzip", gzip(ndjson.join("\n").as_bytes()));
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":50}"#));
    // 2 MB of JSON that gzips to a few KB: refused by its decompressed size.
    let big = format!("[{}]", vec![event(0); 2 << 20 >> 8].join(","));
    let packed = gzip(big.as_bytes());
    assert!(packed.len() < 1 << 20 && big.len() > 1 << 20);
    let (status, body) = send("gzip", packed);
    assert_eq!(status, 413, "{body}");
    let mut torn = gzip(ndjson.join("\n").as_bytes());
    torn.truncate(torn.len() / 2);
    let (status, body) = send("gzip", torn);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("gzip"), "{body}");
    let (status, body) = send("br", ndjson.join("\n").into_bytes());
    assert_eq!(status, 415, "{body}");
    assert_eq!(count(&s.base, None), 50);
}

/// `POST /v1/events` with an `x-tenant` header: events without a tenant are stored under it,
/// and a batch naming another tenant is refused whole.
#[test]
fn a_tenant_header_scopes_what_a_writer_stores() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(dir.path());
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let send = |body: String| {
        let mut r =
            agent.post(&format!("{}/v1/events", s.base)).header("x-tenant", "initech").send(body).expect("request");
        (r.status().as_u16(), r.body_mut().read_to_string().expect("body"))
    };
    // `event(i)` names tenant t0 or t1; without it the header's tenant applies.
    let tenantless: Vec<String> = (0..6).map(|i| event(i).replace(&format!(r#""tenant":"t{}","#, i % 2), "")).collect();
    assert!(tenantless.iter().all(|l| !l.contains("tenant")));
    let (status, body) = send(tenantless.join("\n"));
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":6}"#));
    let (status, body) = send(format!("{}\n{}", tenantless[0], event(7)));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("event 1") && body.contains("`tenant`") && body.contains("t1"), "{body}");
    assert_eq!(count(&s.base, Some("initech")), 6);
    assert_eq!(count(&s.base, None), 6);
}

/// Long operator chains nest as deep as they are long. Up to the limit they run; past it they
/// are refused by name (a 5,000-term sum used to overflow a worker's stack and abort the
/// server). Either way the server stays up.
#[test]
fn deep_statements_run_or_are_refused_without_harming_the_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(dir.path());
    let url = format!("{}/v1/sql", s.base);
    let (status, body) = post(&format!("{}/v1/events", s.base), &(0..20).map(event).collect::<Vec<_>>().join("\n"));
    assert_eq!(status, 200, "{body}");
    let max = query::limits::MAX_OPERATORS;
    // `max / 2` comparisons joined by `max / 2 - 1` ORs, on the scan's filter path; one
    // matches every row.
    let terms: Vec<String> =
        std::iter::once("kind = 'action'".to_owned()).chain((1..max / 2).map(|i| format!("kind = 'k{i}'"))).collect();
    let ors = format!("SELECT count(*) AS n FROM events WHERE {}", terms.join(" OR "));
    let (status, body) = post(&url, &serde_json::json!({ "sql": ors }).to_string());
    assert_eq!((status, body.as_str()), (200, r#"[{"n":20}]"#));
    for op in ["+", " OR "] {
        let over = format!("SELECT {} AS n", vec!["1"; max + 2].join(op));
        let (status, body) = post(&url, &serde_json::json!({ "sql": over }).to_string());
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(&format!("{} operators", max + 1)), "{body}");
    }
    assert_eq!(count(&s.base, None), 20, "the server is still up");
}

/// `query.memory_mb` bounds what running queries hold: a hash join past it fails by name,
/// and the server goes on answering.
#[test]
fn queries_are_held_to_the_memory_budget() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = start_with(dir.path(), &["--query-memory-mb", "1"]);
    let url = format!("{}/v1/sql", s.base);
    let join =
        "SELECT count(*) AS n FROM generate_series(1, 300000) a(v) JOIN generate_series(1, 300000) b(w) ON a.v = b.w";
    let (status, body) = post(&url, &serde_json::json!({ "sql": join }).to_string());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Resources exhausted"), "{body}");
    let (status, body) = post(&url, r#"{"sql": "SELECT count(*) AS n FROM generate_series(1, 1000) t(v)"}"#);
    assert_eq!((status, body.as_str()), (200, r#"[{"n":1000}]"#));
}

/// A body declared over the limit is answered with 413 at once when the client waits for
/// `100 Continue` (nothing of it is sent or read), and after the server has read it when the
/// client sends it anyway; either way the client reads the answer, and nothing is stored.
#[test]
fn declared_oversize_bodies_get_a_413_the_client_can_read() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("am.yaml");
    std::fs::write(&config, "server:\n  max_body_mb: 1\n").expect("config");
    let mut s = start_with(&dir.path().join("data"), &["--config", config.to_str().expect("utf8")]);
    let addr = s.base.trim_start_matches("http://").to_string();
    let response = |request: &[u8], body: &[u8]| -> String {
        let mut c = std::net::TcpStream::connect(&addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        c.write_all(request).expect("headers");
        c.write_all(body).expect("the whole body is read before the answer");
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let headers = |len: usize, expect: bool| {
        format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n{}Connection: close\r\n\r\n",
            if expect { "Expect: 100-continue\r\n" } else { "" }
        )
    };
    let waiting = response(headers(3 << 20, true).as_bytes(), b"");
    assert!(waiting.starts_with("HTTP/1.1 413"), "{waiting}");
    assert!(!waiting.contains("100 Continue"), "the body was not invited: {waiting}");
    assert!(waiting.contains("server.max_body_mb"), "{waiting}");
    let body = vec![b' '; 3 << 20];
    let sent = response(headers(body.len(), false).as_bytes(), &body);
    assert!(sent.starts_with("HTTP/1.1 413"), "{sent}");
    assert_eq!(count(&s.base, None), 0);
    s.child.kill().expect("kill");
    let _ = s.child.wait();
}

/// Data older than `--archive-after` moves to the cold tier (Parquet files under `archive/`)
/// while the server runs, and every query, the trace lookup and a tenant's scope give the same
/// answers before and after, across a restart, and with fresh events beside it; `/metrics`
/// counts the cold tier.
#[test]
fn old_data_moves_to_the_cold_tier_and_stays_queryable() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    // 3,000 events of June 2025, imported offline (one warm segment).
    let src = dir.path().join("old.jsonl");
    std::fs::write(&src, (0..3000).map(event).collect::<Vec<_>>().join("\n")).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_activemirror"))
        .arg("import")
        .arg(&src)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("import");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let queries = [
        "SELECT count(*) AS n, count(DISTINCT trace_id) AS traces, min(timestamp) AS lo, max(timestamp) AS hi FROM events",
        "SELECT tenant, agent_id, count(*) AS n, sum(confidence) AS c FROM events GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT span_id, content FROM events WHERE trace_id = '0000000000000000000000000000002a' ORDER BY span_id",
        "SELECT count(*) AS n FROM events WHERE content LIKE '%step 12%' AND timestamp > '2025-06-15T15:06:40.000001Z'",
        "SELECT agent_id, count(*) AS n FROM traces WHERE events.semantics.confidence < 0.7 GROUP BY 1 ORDER BY 1",
    ];
    let answers =
        |base: &str| -> Vec<Vec<serde_json::Value>> { queries.iter().map(|q| common::sql(base, None, q)).collect() };
    // Warm: the answers to compare with.
    let warm = {
        let s = start_with(&data, &[]);
        let a = answers(&s.base);
        assert_eq!(a[0][0]["n"], 3000);
        assert_eq!(a[2].len(), 10, "the trace's ten steps");
        a
    };
    let s = start_with(&data, &["--archive-after", "1d"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let cold = |m: &str| m.lines().any(|l| l == "activemirror_segments{tier=\"cold\"} 1");
    while !cold(&common::metrics(&s.base)) {
        assert!(std::time::Instant::now() < deadline, "not archived within 30 s:\n{}", common::metrics(&s.base));
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = common::metrics(&s.base);
    assert!(m.contains("activemirror_segments{tier=\"warm\"} 0"), "{m}");
    assert!(m.contains("activemirror_archived_rows_total 3000"), "{m}");
    let files: Vec<_> = std::fs::read_dir(data.join("archive")).expect("archive dir").collect();
    assert_eq!(files.len(), 1);
    assert_eq!(answers(&s.base), warm, "the same answers from the cold tier");
    assert_eq!(count(&s.base, Some("t1")), 1500, "a tenant's scope holds in the cold tier");
    // Fresh events (now) stay warm beside the cold ones.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    let fresh: Vec<String> = (0..10)
        .map(|i| {
            format!(
                r#"{{"trace_id":"{:032x}","span_id":"{:016x}","agent_id":"fresh","timestamp_ns":{},"kind":"output"}}"#,
                99_999,
                10_000 + i,
                now + i as u128
            )
        })
        .collect();
    assert_eq!(post(&format!("{}/v1/events", s.base), &fresh.join("\n")).0, 200);
    assert_eq!(count(&s.base, None), 3010);
    drop(s);
    // After a restart (and a SIGKILL above) the cold tier is still read, nothing twice.
    let s = start_with(&data, &["--archive-after", "1d"]);
    assert_eq!(count(&s.base, None), 3010);
    let after = answers(&s.base);
    assert_eq!(after[2..], warm[2..]);
    // The fresh agent's group, then the old ones as they were.
    assert_eq!(after[1][0]["agent_id"], "fresh");
    assert_eq!(after[1][1..], warm[1][..]);
    assert_eq!(after[0][0]["n"], 3010);
}

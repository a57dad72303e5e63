//! Backpressure end to end: many clients flood the real server, started with a small ingest
//! buffer, with far more data than its memory limit. The server's resident memory stays
//! bounded, every acknowledged event is stored exactly once, and refused batches (429) store
//! nothing.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{sql, start_with};

/// Resident set size of a process, in bytes, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn event(client: u64, seq: u64, filler: &str) -> String {
    format!(
        r#"{{"tenant":"flood","trace_id":"{:032x}","span_id":"{:016x}","agent_id":"agent-{}","timestamp_ns":{},"kind":"observation","content":"{filler} {seq}"}}"#,
        client * 1_000_000 + seq / 16 + 1,
        (client << 40) | (seq + 1),
        seq % 7,
        1_760_000_000_000_000_000u64 + seq * 1000 + client
    )
}

#[test]
fn a_flood_on_a_small_buffer_keeps_memory_bounded_and_loses_nothing() {
    const CLIENTS: u64 = 8;
    const BATCH: u64 = 200;
    /// The server's RSS must stay below this while it is sent several times as much data.
    const RSS_LIMIT: u64 = 192 << 20;
    const SEND_BYTES: u64 = 2 * RSS_LIMIT;
    let dir = tempfile::tempdir().expect("tmp");
    let s = start_with(dir.path(), &["--max-buffered-mb", "16"]);
    let pid = s.child.id();
    let url = format!("{}/v1/events", s.base);
    let acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // Text that compresses poorly enough to be realistic: varied words.
    let filler: String = (0..120).map(|i| format!("w{}", (i * 7919) % 1009)).collect::<Vec<_>>().join(" ");
    let deadline = Instant::now() + Duration::from_secs(120);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (url, acked, refused, sent, done, filler) =
                (url.clone(), acked.clone(), refused.clone(), sent.clone(), done.clone(), filler.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let mut seq = 0;
                while !done.load(Ordering::Relaxed) {
                    let body: Vec<String> = (seq..seq + BATCH).map(|i| event(c, i, &filler)).collect();
                    let body = body.join("\n");
                    let mut r = agent.post(&url).send(&body).expect("post");
                    sent.fetch_add(body.len() as u64, Ordering::Relaxed);
                    match r.status().as_u16() {
                        200 => {
                            acked.fetch_add(BATCH, Ordering::Relaxed);
                            seq += BATCH;
                        }
                        429 => {
                            // Refused: nothing stored; retry the same batch (same ids) later.
                            refused.fetch_add(1, Ordering::Relaxed);
                            assert!(r.headers().get("retry-after").is_some());
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        other => panic!("unexpected status {other}: {:?}", r.body_mut().read_to_string()),
                    }
                }
            })
        })
        .collect();
    let mut peak = 0;
    while sent.load(Ordering::Relaxed) < SEND_BYTES && Instant::now() < deadline {
        peak = peak.max(rss_bytes(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    peak = peak.max(rss_bytes(pid));
    let sent = sent.load(Ordering::Relaxed);
    let acked = acked.load(Ordering::Relaxed);
    eprintln!(
        "flood: sent {} MB, acked {acked} events, {} refusals, peak RSS {} MB",
        sent >> 20,
        refused.load(Ordering::Relaxed),
        peak >> 20
    );
    assert!(sent >= SEND_BYTES, "the flood must send more than the memory limit (sent {} MB)", sent >> 20);
    assert!(peak > 0 && peak < RSS_LIMIT, "peak RSS {} MB exceeds {} MB", peak >> 20, RSS_LIMIT >> 20);
    let row = &sql(&s.base, None, "SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM events")[0];
    assert_eq!(row["n"].as_u64(), Some(acked), "every acknowledged event is stored");
    assert_eq!(row["d"].as_u64(), Some(acked), "and stored once");
}

//! Child process for the crash tests: appends batches from several writer threads and prints
//! `ACK <writer> <first_seq> <count>` after each acknowledged (durable) batch, until killed.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, EngineConfig};
use integration_tests::span_of;
use segments::Event;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or_else(|| anyhow::anyhow!("usage: crash-writer DIR WRITERS"))?;
    let writers: u32 = args.next().map_or(Ok(4), |s| s.parse())?;
    let cfg = EngineConfig {
        flush_bytes: 200_000,
        flush_age: Duration::from_millis(20),
        compaction_trigger: 3,
        wal_file_bytes: 256 << 10,
        ..Default::default()
    };
    let (engine, report) = Engine::open(&dir, cfg)?;
    // Continue numbering after what earlier runs stored.
    let start = report.segment_rows + report.replayed_events;
    let engine = Arc::new(engine);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let engine = engine.clone();
            let out = out.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut seq = start as u32;
                loop {
                    let n = 1 + (seq % 37);
                    let batch: Vec<Event> = (seq..seq + n)
                        .map(|s| Event {
                            tenant: format!("t{}", s % 3).into(),
                            trace_id: [w as u8; 16],
                            span_id: span_of(w, s).to_be_bytes(),
                            agent_id: format!("agent-{w}").into(),
                            timestamp_ns: 1_700_000_000_000_000_000 + i64::from(s),
                            kind: "action".into(),
                            content: Some(format!("writer {w} step {s} {}", "x".repeat((s % 200) as usize))),
                            status: "ok".into(),
                            ..Default::default()
                        })
                        .collect();
                    engine.append(batch)?;
                    let mut o = out.lock().map_err(|_| anyhow::anyhow!("stdout lock poisoned"))?;
                    writeln!(o, "ACK {w} {seq} {n}")?;
                    o.flush()?;
                    seq += n;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    Ok(())
}

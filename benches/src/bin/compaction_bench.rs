//! What the engine's background work costs per event: flushing the in-memory buffer into hot
//! segments and compacting those into a warm one, each timed alone (wall and CPU) on generated
//! events. Appends go through the WAL first, as in the server. Figures are per event so runs
//! of different sizes compare; compare builds by alternating them in one session (or by
//! instruction counts under `valgrind --tool=callgrind --toggle-collect='*compact_once*'`).

use std::time::Instant;

use benches::{cpu_seconds, median, Generator};
use clap::Parser;
use engine::{Engine, EngineConfig};
use indicatif::ProgressBar;
use segments::Event;

#[derive(Parser, Debug)]
#[command(about = "ActiveMirrorOS flush and compaction cost per event")]
struct Args {
    /// Events to generate.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Events per hot segment (the server flushes about 60,000 of the generator's events per
    /// 64 MB buffer).
    #[arg(long, default_value_t = 60_000)]
    flush_events: usize,
    /// Events per append call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Runs; medians are printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// Wall and CPU seconds of `f`.
fn timed<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, f64, f64)> {
    let (t, c) = (Instant::now(), cpu_seconds());
    let out = f()?;
    Ok((out, t.elapsed().as_secs_f64(), cpu_seconds() - c))
}

/// Per-phase (wall, cpu) seconds of one run.
struct Run {
    flush: (f64, f64),
    compact: (f64, f64),
    hot_segments: usize,
}

fn one_run(events: &[Event], args: &Args) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let cfg = EngineConfig { background: false, idle_compaction: None, ..EngineConfig::default() };
    let (engine, _) = Engine::open(dir.path(), cfg)?;
    let mut flush = (0.0, 0.0);
    for part in events.chunks(args.flush_events.max(1)) {
        for batch in part.chunks(args.batch.max(1)) {
            engine.append(batch.to_vec())?;
        }
        let (_, w, c) = timed(|| Ok(engine.flush()?))?;
        flush.0 += w;
        flush.1 += c;
    }
    let flushed = hot_segments(&engine);
    let (_, w, c) = timed(|| {
        // Hot segments only: once they are compacted, `compact` would go on to merge warm ones.
        while hot_segments(&engine) > 0 && engine.compact()? {}
        Ok(())
    })?;
    let left_hot = hot_segments(&engine);
    anyhow::ensure!(left_hot == 0, "{left_hot} hot segments were not compacted");
    let stored = engine.snapshot().rows();
    anyhow::ensure!(stored == events.len() as u64, "{stored} rows stored of {}", events.len());
    engine.close()?;
    Ok(Run { flush, compact: (w, c), hot_segments: flushed })
}

/// Hot segments the engine holds now.
fn hot_segments(engine: &Engine) -> usize {
    engine.snapshot().segments.iter().filter(|s| s.entry.tier == engine::Tier::Hot).count()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bar = ProgressBar::new(args.events as u64);
    bar.set_message("generate");
    let events: Vec<Event> = Generator::new(args.seed).take(args.events).inspect(|_| bar.inc(1)).collect();
    bar.finish_and_clear();
    let bar = ProgressBar::new(args.runs as u64);
    let mut runs = Vec::new();
    for _ in 0..args.runs.max(1) {
        runs.push(one_run(&events, &args)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let per = |mut v: Vec<f64>| median(&mut v) * 1e6 / events.len() as f64;
    println!(
        "{} events in {} hot segments, medians of {} runs, us/event: flush wall {:.3} cpu {:.3}; compact wall {:.3} cpu {:.3}",
        events.len(),
        runs.first().map_or(0, |r| r.hot_segments),
        runs.len(),
        per(runs.iter().map(|r| r.flush.0).collect()),
        per(runs.iter().map(|r| r.flush.1).collect()),
        per(runs.iter().map(|r| r.compact.0).collect()),
        per(runs.iter().map(|r| r.compact.1).collect()),
    );
    Ok(())
}

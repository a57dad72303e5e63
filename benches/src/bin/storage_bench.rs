//! Storage benchmark: durable append throughput with concurrent writers, and bytes per event at
//! rest after compaction, each against a baseline measured in the same run:
//! - throughput vs. one writer that fsyncs every batch itself (no group commit);
//! - size vs. the same events written as Parquet (zstd) by the parquet crate.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow::array::RecordBatch;
use benches::Generator;
use clap::Parser;
use engine::{Engine, EngineConfig};
use indicatif::{ProgressBar, ProgressStyle};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use segments::{Codec, ColumnData, ColumnId, Event};

#[derive(Parser, Debug)]
#[command(about = "ActiveMirrorOS storage benchmark")]
struct Args {
    /// Events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Concurrent writer threads.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Events per append call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Only measure content-column compression across zstd levels and block sizes.
    #[arg(long)]
    tune_text: bool,
}

/// Content column: bytes and speed per codec and block size, to choose the cold text codec.
fn tune_text(events: &[Event]) {
    println!("content compression (raw = plain-encoded bytes before compression):");
    println!("{:>8} {:>10} {:>10} {:>8} {:>12} {:>12}", "block", "codec", "MB", "ratio", "comp MB/s", "decomp MB/s");
    for block in [4096usize, 16384, 65536] {
        for codec in [
            Codec::Lz4,
            Codec::Zstd(1),
            Codec::Zstd(3),
            Codec::Zstd(6),
            Codec::Zstd(9),
            Codec::Zstd(12),
            Codec::Zstd(15),
        ] {
            let mut raw_total = 0usize;
            let mut stored_total = 0usize;
            let mut comp = std::time::Duration::ZERO;
            let mut decomp = std::time::Duration::ZERO;
            for chunk in events.chunks(block) {
                let mut raw = Vec::new();
                segments::column::encode_column(ColumnId::Content, chunk, &mut raw);
                let t = Instant::now();
                let stored = codec.compress(&raw);
                comp += t.elapsed();
                let t = Instant::now();
                let back = codec.decompress(&stored, raw.len()).unwrap_or_default();
                decomp += t.elapsed();
                assert_eq!(back.len(), raw.len());
                raw_total += raw.len();
                stored_total += stored.len();
            }
            let mb = raw_total as f64 / 1e6;
            println!(
                "{block:>8} {:>10} {:>10.2} {:>8.3} {:>12.0} {:>12.0}",
                format!("{codec:?}"),
                stored_total as f64 / 1e6,
                stored_total as f64 / raw_total as f64,
                mb / comp.as_secs_f64(),
                mb / decomp.as_secs_f64()
            );
        }
    }
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        dir_bytes(&path)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn append_all(engine: &Arc<Engine>, events: &Arc<Vec<Event>>, writers: usize, batch: usize) -> anyhow::Result<f64> {
    let bar = ProgressBar::new(events.len() as u64);
    bar.set_style(ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} {per_sec}").context("style")?);
    bar.set_message(format!("append x{writers}"));
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let engine = engine.clone();
            let events = events.clone();
            let bar = bar.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                for (i, chunk) in events.chunks(batch).enumerate() {
                    if i % writers == w {
                        engine.append(chunk.to_vec())?;
                        bar.inc(chunk.len() as u64);
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(events.len() as f64 / secs)
}

fn parquet_bytes(events: &[Event], path: &Path) -> anyhow::Result<u64> {
    let schema = query::schema::events_schema();
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let file = std::fs::File::create(path)?;
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    for chunk in events.chunks(65_536) {
        let cols = ColumnId::ALL
            .iter()
            .map(|c| query::schema::to_arrow(*c, ColumnData::from_events(*c, chunk)))
            .collect::<Result<Vec<_>, _>>()?;
        w.write(&RecordBatch::try_new(schema.clone(), cols)?)?;
    }
    w.close()?;
    Ok(std::fs::metadata(path)?.len())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bar = ProgressBar::new(args.events as u64);
    bar.set_message("generate");
    let events: Arc<Vec<Event>> =
        Arc::new(Generator::new(args.seed).take(args.events).inspect(|_| bar.inc(1)).collect());
    bar.finish_and_clear();
    let raw_text: u64 = events.iter().map(|e| e.content.as_ref().map_or(0, String::len) as u64).sum();
    if args.tune_text {
        tune_text(&events);
        return Ok(());
    }
    println!(
        "events: {}  (content text {:.1} MB, avg {:.0} B/event)",
        events.len(),
        raw_text as f64 / 1e6,
        raw_text as f64 / events.len() as f64
    );

    // Baseline: one writer, no batching across writers (every append pays its own fsync).
    let base_dir = tempfile::tempdir_in(".")?;
    let (base, _) = Engine::open(base_dir.path(), EngineConfig::default())?;
    let base = Arc::new(base);
    let base_n = (args.events / 10).max(args.batch);
    let base_events = Arc::new(events[..base_n.min(events.len())].to_vec());
    let base_rate = append_all(&base, &base_events, 1, args.batch)?;
    drop(base);

    let dir = tempfile::tempdir_in(".")?;
    let (engine, _) = Engine::open(dir.path(), EngineConfig::default())?;
    let engine = Arc::new(engine);
    let rate = append_all(&engine, &events, args.writers, args.batch)?;
    let (fsyncs, fsync_time) = engine.wal().fsync_stats();
    println!(
        "append: {:.0} events/s with {} writers, batch {} ({} fsyncs, mean {:.2} ms)  baseline 1 writer: {:.0} events/s  ratio {:.2}x",
        rate,
        args.writers,
        args.batch,
        fsyncs,
        fsync_time.as_secs_f64() * 1e3 / fsyncs.max(1) as f64,
        base_rate,
        rate / base_rate
    );

    let t = Instant::now();
    engine.close()?;
    while engine.compact()? {}
    let compact_secs = t.elapsed().as_secs_f64();
    let snap = engine.snapshot();
    let seg_bytes: u64 = snap.segments.iter().map(|s| s.segment.file_bytes()).sum();
    let rows: u64 = snap.segments.iter().map(|s| s.segment.rows()).sum();
    anyhow::ensure!(rows == events.len() as u64, "stored {rows} rows of {}", events.len());
    println!("flush + compaction: {compact_secs:.1} s, {} segment(s)", snap.segments.len());
    if let Some(s) = snap.segments.first() {
        let mut per: Vec<(ColumnId, u64)> = ColumnId::ALL.iter().map(|c| (*c, s.segment.column_bytes(*c))).collect();
        per.sort_by_key(|p| std::cmp::Reverse(p.1));
        let top: Vec<String> =
            per.iter().take(6).map(|(c, b)| format!("{}={:.1}MB", c.name(), *b as f64 / 1e6)).collect();
        println!("  largest columns: {}", top.join(" "));
    }
    let pq = parquet_bytes(&events, &dir.path().join("baseline.parquet"))?;
    println!(
        "at rest: {:.1} B/event ({:.1} MB segments)  parquet-zstd: {:.1} B/event ({:.1} MB)  ratio {:.3}x  (data dir incl. WAL: {:.1} MB)",
        seg_bytes as f64 / rows as f64,
        seg_bytes as f64 / 1e6,
        pq as f64 / rows as f64,
        pq as f64 / 1e6,
        seg_bytes as f64 / pq as f64,
        dir_bytes(dir.path()) as f64 / 1e6
    );
    Ok(())
}

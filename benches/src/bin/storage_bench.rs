//! Storage benchmark: durable append throughput with concurrent writers, and bytes per event at
//! rest after compaction, each against a baseline measured in the same run:
//! - throughput vs. one writer that fsyncs every batch itself (no group commit);
//! - size vs. the same events written as Parquet (zstd) by the parquet crate.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow::array::RecordBatch;
use benches::{cpu_seconds, Generator};
use clap::Parser;
use engine::{Engine, EngineConfig};
use indicatif::{ProgressBar, ProgressStyle};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use segments::{Codec, ColumnData, ColumnId, Event, SegmentWriter, WriterOptions};

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
    /// Only write the generated events as JSON Lines to this file (input for import / peers).
    #[arg(long)]
    write_jsonl: Option<std::path::PathBuf>,
    /// Hot segments that trigger background compaction while appending.
    #[arg(long, default_value_t = 4)]
    compaction_trigger: usize,
    /// Nice value of the compaction threads (0: the priority of the writers; the engine's
    /// default if unset).
    #[arg(long)]
    compaction_niceness: Option<i32>,
    /// Timed runs per query in the query section (0 skips it).
    #[arg(long, default_value_t = 50)]
    query_runs: usize,
    /// Engine flush threshold in MB of buffered events (the engine's default if unset).
    #[arg(long)]
    flush_mb: Option<usize>,
    /// Engine buffer limit in MB before appends wait (the engine's default if unset).
    #[arg(long)]
    buffer_mb: Option<usize>,
    /// Compressor of free text in hot (flushed) segments: `lz4` (the engine's default) or `none`.
    #[arg(long, default_value = "lz4")]
    hot_text_codec: String,
    /// Only measure encoding segments in memory (what a flush and a compaction cost per
    /// event), this many runs each of the hot and the compacted layout.
    #[arg(long)]
    encode_only: Option<usize>,
    /// With `--encode-only`: which segment layouts to encode.
    #[arg(long, value_enum, default_value_t = EncodeLayout::Both)]
    encode_layout: EncodeLayout,
}

/// The segment layouts `--encode-only` measures.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum EncodeLayout {
    /// A flushed segment: time-ordered rows, lz4.
    Hot,
    /// A compacted segment: rows ordered for compaction, zstd, text dictionary, token index.
    Compacted,
    Both,
}

/// Encodes the events as a hot (flushed, time-ordered) and as a compacted segment in memory,
/// `runs` times each, and prints the median wall and CPU time per event.
fn encode_only(events: &[Event], runs: usize, layout: EncodeLayout) {
    let mut by_time: Vec<&Event> = events.iter().collect();
    by_time.sort_by_key(|e| e.timestamp_ns);
    let mut compacted: Vec<Event> = events.to_vec();
    engine::sort_for_compaction(&mut compacted);
    let layouts: [(EncodeLayout, &str, WriterOptions, Vec<&Event>); 2] = [
        (EncodeLayout::Hot, "hot", WriterOptions::hot(), by_time),
        (EncodeLayout::Compacted, "compacted", WriterOptions::cold(), compacted.iter().collect()),
    ];
    for (which, name, opts, rows) in layouts {
        if layout != EncodeLayout::Both && layout != which {
            continue;
        }
        let mut wall = Vec::new();
        let mut cpu = Vec::new();
        let mut bytes = 0;
        for _ in 0..runs.max(1) {
            let (t, c) = (Instant::now(), cpu_seconds());
            bytes = SegmentWriter::new(opts).encode(&rows).len();
            wall.push(t.elapsed().as_secs_f64());
            cpu.push(cpu_seconds() - c);
        }
        wall.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        let per = |v: &[f64]| percentile(v, 0.5) * 1e6 / events.len() as f64;
        println!(
            "encode {name:9} {} events: wall {:.3} us/event, cpu {:.3} us/event (medians of {}), {:.1} B/event",
            events.len(),
            per(&wall),
            per(&cpu),
            wall.len(),
            bytes as f64 / events.len() as f64
        );
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn time_query(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
    runs: usize,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut rows = 0;
    for _ in 0..3 {
        rows = ctx.sql(sql).await?.collect().await?.iter().map(|b| b.num_rows()).sum();
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let out = ctx.sql(sql).await?.collect().await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(out);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms, rows))
}

/// Query latency on our provider vs. DataFusion over the same rows in memory (same run).
fn query_section(engine: Arc<Engine>, events: &[Event], runs: usize) -> anyhow::Result<()> {
    use datafusion::datasource::MemTable;
    let top_agent = {
        let mut counts = std::collections::HashMap::new();
        for e in events {
            *counts.entry(&e.agent_id).or_insert(0usize) += 1;
        }
        counts.into_iter().max_by_key(|(_, c)| *c).map(|(a, _)| a.clone()).unwrap_or_default()
    };
    let trace = engine::validate::hex(&events[events.len() / 2].trace_id);
    let queries = [
        ("contract example query", format!("SELECT * FROM traces WHERE agent_id = '{top_agent}' AND timestamp > '2024-01-01' AND events.semantics.intent = 'refund' AND events.semantics.confidence < 0.7")),
        ("one trace by trace_id", format!("SELECT * FROM events WHERE trace_id = '{trace}' ORDER BY timestamp")),
        ("count per kind", "SELECT kind, count(*) FROM events GROUP BY kind".to_owned()),
        ("p99 duration per agent", "SELECT agent_id, approx_percentile_cont(duration_ms, 0.99) FROM events GROUP BY agent_id".to_owned()),
        ("error rate per agent per hour (acme)", "SELECT agent_id, date_trunc('hour', timestamp) h, avg(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) FROM events WHERE tenant = 'acme' GROUP BY 1, 2".to_owned()),
        ("tokens and cost per model per day", "SELECT model, date_trunc('day', timestamp) d, sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM events GROUP BY 1, 2".to_owned()),
        ("distinct traces per tenant", "SELECT tenant, count(DISTINCT trace_id) FROM events GROUP BY tenant".to_owned()),
        ("rare word in content", "SELECT count(*) FROM events WHERE content LIKE '%inconvenience%'".to_owned()),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let ours = query::session(engine.clone(), None).await?;
        let theirs = datafusion::prelude::SessionContext::new();
        let schema = query::schema::events_schema();
        let mut batches = Vec::new();
        for chunk in events.chunks(8192) {
            let cols = ColumnId::ALL
                .iter()
                .map(|c| query::schema::to_arrow(*c, ColumnData::from_events(*c, chunk)))
                .collect::<Result<Vec<_>, _>>()?;
            batches.push(RecordBatch::try_new(schema.clone(), cols)?);
        }
        let parts = batches.chunks(batches.len().div_ceil(2).max(1)).map(|c| c.to_vec()).collect();
        theirs.register_table("events", Arc::new(MemTable::try_new(schema, parts)?))?;
        theirs.sql(query::TRACES_VIEW).await?.collect().await?;
        println!("queries ({runs} timed runs each after 3 warm-ups; baseline: DataFusion over the same rows as an in-memory table)");
        println!("{:<38} {:>9} {:>9} {:>11} {:>11} {:>8} {:>7}", "query", "ours p50", "ours p99", "mem p50", "mem p99", "ratio50", "rows");
        for (name, sql) in &queries {
            let (a, rows_a) = time_query(&ours, sql, runs).await?;
            let (b, rows_b) = time_query(&theirs, sql, runs).await?;
            anyhow::ensure!(rows_a == rows_b, "{name}: {rows_a} rows vs {rows_b}");
            println!(
                "{name:<38} {:>7.2}ms {:>7.2}ms {:>9.2}ms {:>9.2}ms {:>7.2}x {rows_a:>7}",
                percentile(&a, 0.5),
                percentile(&a, 0.99),
                percentile(&b, 0.5),
                percentile(&b, 0.99),
                percentile(&a, 0.5) / percentile(&b, 0.5)
            );
        }
        Ok::<_, anyhow::Error>(())
    })
}

/// Bytes and time of compressing `events`' content in frames of `rows` rows each.
#[derive(Default)]
struct FrameStats {
    raw: usize,
    stored: usize,
    compress: std::time::Duration,
    decompress: std::time::Duration,
}

impl FrameStats {
    fn ratio(&self) -> f64 {
        self.stored as f64 / self.raw as f64
    }
    fn compress_mb_s(&self) -> f64 {
        self.raw as f64 / 1e6 / self.compress.as_secs_f64()
    }
    fn decompress_mb_s(&self) -> f64 {
        self.raw as f64 / 1e6 / self.decompress.as_secs_f64()
    }
}

/// Compress the plain-encoded content of every `rows` events as one frame, decompress it back
/// (checked), and add up bytes and times.
fn measure_frames(
    events: &[Event],
    rows: usize,
    mut compress: impl FnMut(&[u8]) -> Vec<u8>,
    mut decompress: impl FnMut(&[u8], usize) -> Vec<u8>,
) -> FrameStats {
    let mut st = FrameStats::default();
    for chunk in events.chunks(rows.max(1)) {
        let mut raw = Vec::new();
        segments::column::encode_column(ColumnId::Content, chunk, &mut raw);
        let t = Instant::now();
        let stored = compress(&raw);
        st.compress += t.elapsed();
        let t = Instant::now();
        let back = decompress(&stored, raw.len());
        st.decompress += t.elapsed();
        assert_eq!(back, raw, "content frame round trip");
        st.raw += raw.len();
        st.stored += stored.len();
    }
    st
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
            let st = measure_frames(
                events,
                block,
                |raw| codec.compress(raw),
                |stored, n| codec.decompress(stored, n).unwrap_or_default(),
            );
            println!(
                "{block:>8} {:>10} {:>10.2} {:>8.3} {:>12.0} {:>12.0}",
                format!("{codec:?}"),
                st.stored as f64 / 1e6,
                st.ratio(),
                st.compress_mb_s(),
                st.decompress_mb_s()
            );
        }
    }
}

/// Pages of few rows compressed against one zstd dictionary trained on the segment's own text,
/// through the code compaction uses (`segments::textdict`): what a point read decompresses vs.
/// the bytes kept at rest. Dictionary size 0 is plain zstd pages.
fn tune_text_dictionary(events: &[Event]) {
    use segments::textdict::{self, CompressionDictionary, DecompressionDictionary, DictCompressor};
    println!("content pages with a trained dictionary (segment = all events, dictionary counted once):");
    println!(
        "{:>8} {:>8} {:>6} {:>10} {:>8} {:>10} {:>10} {:>12}",
        "dict KB", "page", "level", "MB", "ratio", "train ms", "comp MB/s", "decomp MB/s"
    );
    let texts: Vec<&str> = events.iter().filter_map(|e| e.content.as_deref()).collect();
    for dict_kb in [0usize, 32, 64, 112] {
        let t = Instant::now();
        // As compaction trains: up to 2 MiB of the texts, evenly spread.
        let opts = segments::TextDictionaryOptions { dict_bytes: dict_kb * 1024, ..Default::default() };
        let dict = if dict_kb == 0 { None } else { textdict::train(&texts, &opts) };
        let train_ms = t.elapsed().as_secs_f64() * 1e3;
        if dict_kb > 0 && dict.is_none() {
            println!("{dict_kb:>8} no dictionary trained");
            continue;
        }
        for page in [1usize, 4, 8, 16, 32, 1024] {
            for level in [1, 2, 3, 6] {
                let mut st = match &dict {
                    None => {
                        let codec = Codec::Zstd(level);
                        measure_frames(
                            events,
                            page,
                            |raw| codec.compress(raw),
                            |stored, n| codec.decompress(stored, n).unwrap_or_default(),
                        )
                    }
                    Some(dict) => {
                        let (Some(cd), Some(dd)) =
                            (CompressionDictionary::new(dict, level), DecompressionDictionary::new(dict))
                        else {
                            continue;
                        };
                        let Some(mut c) = DictCompressor::new(&cd) else { continue };
                        measure_frames(
                            events,
                            page,
                            |raw| c.compress(raw).unwrap_or_default(),
                            |stored, n| textdict::decompress_with(&dd, stored, n).unwrap_or_default(),
                        )
                    }
                };
                st.stored += dict.as_ref().map_or(0, Vec::len);
                println!(
                    "{dict_kb:>8} {page:>8} {level:>6} {:>10.2} {:>8.3} {train_ms:>10.0} {:>10.0} {:>12.0}",
                    st.stored as f64 / 1e6,
                    st.ratio(),
                    st.compress_mb_s(),
                    st.decompress_mb_s()
                );
            }
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
        tune_text_dictionary(&events);
        tune_text(&events);
        return Ok(());
    }
    if let Some(runs) = args.encode_only {
        encode_only(&events, runs, args.encode_layout);
        return Ok(());
    }
    if let Some(path) = &args.write_jsonl {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
        for e in events.iter() {
            writeln!(w, "{}", Generator::json_line(e))?;
        }
        w.flush()?;
        println!("wrote {} events to {}", events.len(), path.display());
        return Ok(());
    }
    println!(
        "events: {}  (content text {:.1} MB, avg {:.0} B/event)",
        events.len(),
        raw_text as f64 / 1e6,
        raw_text as f64 / events.len() as f64
    );

    // Baseline: one writer, no batching across writers (every append pays its own fsync).
    let mut cfg = EngineConfig { compaction_trigger: args.compaction_trigger, ..EngineConfig::default() };
    if let Some(mb) = args.flush_mb {
        cfg.flush_bytes = mb << 20;
    }
    if let Some(mb) = args.buffer_mb {
        cfg.max_buffered_bytes = mb << 20;
    }
    if let Some(nice) = args.compaction_niceness {
        cfg.compaction_niceness = nice;
    }
    cfg.hot.text_codec = match args.hot_text_codec.as_str() {
        "lz4" => Codec::Lz4,
        "none" => Codec::None,
        other => anyhow::bail!("--hot-text-codec {other}: expected lz4 or none"),
    };
    let base_dir = tempfile::tempdir_in(".")?;
    let (base, _) = Engine::open(base_dir.path(), cfg.clone())?;
    let base = Arc::new(base);
    let base_rate = append_all(&base, &events, 1, args.batch)?;
    base.close()?;
    drop(base);
    drop(base_dir);

    let dir = tempfile::tempdir_in(".")?;
    let (engine, _) = Engine::open(dir.path(), cfg)?;
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
    {
        let mut per: Vec<(ColumnId, u64)> = ColumnId::ALL
            .iter()
            .map(|c| (*c, snap.segments.iter().map(|s| s.segment.column_bytes(*c)).sum()))
            .collect();
        let columns: u64 = per.iter().map(|p| p.1).sum();
        let index: u64 = snap.segments.iter().map(|s| s.segment.index_bytes()).sum();
        let (index_raw, token_raw) =
            snap.segments.iter().map(|s| s.segment.index_raw_bytes()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        println!(
            "  columns {:.1} MB, index section {:.1} MB stored ({:.1} MB raw, of it token index {:.1} MB raw), other {:.1} MB",
            columns as f64 / 1e6,
            index as f64 / 1e6,
            index_raw as f64 / 1e6,
            token_raw as f64 / 1e6,
            seg_bytes.saturating_sub(columns + index) as f64 / 1e6
        );
        per.sort_by_key(|p| std::cmp::Reverse(p.1));
        let all: Vec<String> = per.iter().map(|(c, b)| format!("{}={:.1}", c.name(), *b as f64 / 1e6)).collect();
        println!("  columns (MB, all segments): {}", all.join(" "));
    }
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
    drop(snap);
    if args.query_runs > 0 {
        query_section(engine, &events, args.query_runs)?;
    }
    Ok(())
}

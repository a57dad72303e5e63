//! Command-line parsing and the offline commands (import, sql, export).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use engine::{Engine, EngineConfig};
use indicatif::ProgressBar;

#[derive(Parser, Debug)]
#[command(name = "activemirror", version, about = "ActiveMirrorOS: store, query and watch AI-agent traces")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, global = true, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (HTTP API) on embedded defaults unless told otherwise.
    Start(crate::config::StartArgs),
    /// Bulk load JSON Lines files (`-` for stdin) into a data directory, offline.
    Import {
        files: Vec<PathBuf>,
        #[arg(long, env = "ACTIVEMIRROR_DATA_DIR", default_value = "./activemirror-data")]
        data_dir: PathBuf,
    },
    /// Run one SQL statement against a data directory or a running server.
    Sql {
        query: String,
        #[arg(long, env = "ACTIVEMIRROR_DATA_DIR", default_value = "./activemirror-data", conflicts_with = "server")]
        data_dir: PathBuf,
        /// Base URL of a running server, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: Option<String>,
        #[arg(long, default_value = "table")]
        format: OutputFormat,
        /// Only this tenant's rows.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Load generators and benchmarks against a running server.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Export events as Parquet (zstd) in Hive-style folders tenant=.../date=YYYY-MM-DD/.
    Export {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, env = "ACTIVEMIRROR_DATA_DIR", default_value = "./activemirror-data")]
        data_dir: PathBuf,
        #[arg(long)]
        tenant: Option<String>,
        /// Inclusive lower bound (RFC 3339 or date).
        #[arg(long)]
        since: Option<String>,
        /// Exclusive upper bound (RFC 3339 or date).
        #[arg(long)]
        until: Option<String>,
        /// A SELECT over `events` to export instead of whole rows.
        #[arg(long)]
        query: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Drive a running server's gRPC ingest with generated events; prints events/s, MB/s and
    /// ack latency p50/p99.
    Ingest(crate::bench::IngestBenchArgs),
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    init_logs(cli.log_format);
    match cli.command {
        Command::Start(args) => crate::http::start(args),
        Command::Import { files, data_dir } => crate::import::import(&files, &data_dir),
        Command::Sql { query, data_dir, server, format, tenant } => match server {
            Some(url) => sql_remote(&url, &query, format, tenant.as_deref()),
            None => sql_local(&data_dir, &query, format, tenant),
        },
        Command::Bench(BenchCommand::Ingest(args)) => {
            let report = runtime()?.block_on(crate::bench::run_ingest(&args))?;
            crate::bench::print_report(&report, args.json)
        }
        Command::Export { out, data_dir, tenant, since, until, query } => {
            export(&data_dir, &out, tenant, since, until, query)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// Open a data directory that must already exist: reading a mistyped path gives an error, not
/// an empty result and a new empty directory.
fn open_existing(dir: &Path) -> anyhow::Result<Engine> {
    if !dir.is_dir() {
        bail!("data directory {} does not exist (`import` into it, or `start` a server on it, first)", dir.display());
    }
    open_engine(dir)
}

pub(crate) fn open_engine(dir: &Path) -> anyhow::Result<Engine> {
    let (engine, report) = Engine::open(dir, EngineConfig::default())
        .with_context(|| format!("opening data directory {}", dir.display()))?;
    if report.wal.dropped_bytes > 0 {
        tracing::warn!(bytes = report.wal.dropped_bytes, reason = ?report.wal.dropped_reason, "recovery cut a torn WAL tail");
    }
    Ok(engine)
}

pub fn format_batches(batches: &[arrow::array::RecordBatch], format: OutputFormat) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Table => arrow::util::pretty::pretty_format_batches(batches)?.to_string(),
        OutputFormat::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut buf);
                for b in batches {
                    w.write(&query::json::nested_as_json_text(b)?)?;
                }
            }
            String::from_utf8(buf)?
        }
        // Explicit nulls: every row object has every column, as SQL clients expect.
        OutputFormat::Json => String::from_utf8(query::json::to_json_array(batches)?)?,
    })
}

fn sql_local(dir: &Path, sql: &str, format: OutputFormat, tenant: Option<String>) -> anyhow::Result<()> {
    let engine = Arc::new(open_existing(dir)?);
    let rt = runtime()?;
    let batches = rt.block_on(async {
        let ctx = query::session(engine.clone(), tenant).await?;
        query::run_sql(&ctx, sql).await
    })?;
    print_out(&format_batches(&batches, format)?)
}

/// Write a result to stdout, ending in one newline. A closed pipe (`activemirror sql ... | head`) is
/// the reader's choice, not an error: the rest of the output is dropped quietly.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let end: &[u8] = if text.ends_with('\n') { b"" } else { b"\n" };
    match out.write_all(text.as_bytes()).and_then(|()| out.write_all(end)).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing the result to stdout"),
        _ => Ok(()),
    }
}

fn sql_remote(url: &str, sql: &str, format: OutputFormat, tenant: Option<&str>) -> anyhow::Result<()> {
    // A table is drawn here from the server's Arrow stream, with the same types as a local run.
    let fmt = match format {
        OutputFormat::Csv => "csv",
        OutputFormat::Json => "json",
        OutputFormat::Table => "arrow",
    };
    let endpoint = format!("{}/v1/sql?format={fmt}", url.trim_end_matches('/'));
    let mut req = ureq::post(&endpoint).config().http_status_as_error(false).build();
    if let Some(t) = tenant {
        req = req.header("x-tenant", t);
    }
    let mut resp = req.send_json(serde_json::json!({ "sql": sql })).with_context(|| format!("POST {endpoint}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.body_mut().read_to_string()?;
        bail!("server answered {status}: {body}");
    }
    if format == OutputFormat::Table {
        let body = resp.body_mut().with_config().limit(u64::MAX).read_to_vec()?;
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
            .context("reading the server's Arrow stream")?;
        let batches = reader.collect::<Result<Vec<_>, _>>().context("reading the server's Arrow stream")?;
        print_out(&format_batches(&batches, format)?)
    } else {
        let body = resp.body_mut().with_config().limit(u64::MAX).read_to_string()?;
        print_out(&body)
    }
}

fn sql_time(s: &str) -> anyhow::Result<String> {
    let t = s.trim();
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || "-:.+TZ ".contains(c)) {
        bail!("`{s}` is not a timestamp or date");
    }
    Ok(format!("TIMESTAMP '{t}'"))
}

fn export(
    dir: &Path,
    out: &Path,
    tenant: Option<String>,
    since: Option<String>,
    until: Option<String>,
    sql: Option<String>,
) -> anyhow::Result<()> {
    let engine = Arc::new(open_existing(dir)?);
    let mut conds = Vec::new();
    if let Some(s) = &since {
        conds.push(format!("timestamp >= {}", sql_time(s)?));
    }
    if let Some(u) = &until {
        conds.push(format!("timestamp < {}", sql_time(u)?));
    }
    let source = sql.unwrap_or_else(|| "SELECT * FROM events".to_owned());
    let filter = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    let full = format!("SELECT *, to_char(timestamp, '%Y-%m-%d') AS date FROM ({source}) AS src{filter}");
    let bar = ProgressBar::new_spinner();
    bar.set_message(format!("exporting to {}", out.display()));
    bar.enable_steady_tick(Duration::from_millis(120));
    let rt = runtime()?;
    let start = Instant::now();
    // DataFusion's writer reports nothing while it writes: a watcher shows the files and
    // bytes that have reached the output folder.
    let done = std::sync::atomic::AtomicBool::new(false);
    let rows = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (files, bytes) = parquet_written(out);
                if files > 0 {
                    bar.set_message(format!(
                        "exporting to {}: {files} Parquet files, {}",
                        out.display(),
                        indicatif::HumanBytes(bytes)
                    ));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let rows = export_rows(&rt, &engine, tenant, &full, out);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        rows
    })?;
    bar.finish_and_clear();
    escape_equals_in_partitions(out)?;
    let (files, bytes) = parquet_written(out);
    eprintln!(
        "exported {rows} rows to {} in {:.2} s ({files} Parquet files, {})",
        out.display(),
        start.elapsed().as_secs_f64(),
        indicatif::HumanBytes(bytes)
    );
    Ok(())
}

/// Parquet files under `dir` (any depth) and their bytes.
fn parquet_written(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "parquet") {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (files, bytes)
}

/// Run the export query and write its rows as Hive-partitioned Parquet under `out`; returns
/// the rows written.
fn export_rows(
    rt: &tokio::runtime::Runtime,
    engine: &Arc<engine::Engine>,
    tenant: Option<String>,
    full: &str,
    out: &Path,
) -> anyhow::Result<usize> {
    let rows = rt.block_on(async {
        let ctx = query::session(engine.clone(), tenant).await?;
        let df = ctx.sql(full).await?;
        // Plain string types in the files, so every Parquet reader takes them as they are.
        let plain: Vec<datafusion::prelude::Expr> = df
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let c = datafusion::prelude::col(datafusion::common::Column::from_name(f.name()));
                match query::schema::plain_type(f.data_type()) {
                    t if t == *f.data_type() => c,
                    t => datafusion::prelude::cast(c, t).alias(f.name()),
                }
            })
            .collect();
        let df = df.select(plain)?;
        let opts = datafusion::dataframe::DataFrameWriteOptions::new()
            .with_partition_by(vec!["tenant".to_owned(), "date".to_owned()]);
        let mut pq = datafusion::config::TableParquetOptions::default();
        pq.global.compression = Some("zstd(3)".to_owned());
        // The writer answers with the rows it wrote (one `count` value), so the query runs once.
        let written = df.write_parquet(&format!("{}/", out.display()), opts, Some(pq)).await?;
        Ok::<_, datafusion::error::DataFusionError>(written)
    })?;
    rows_written(&rows)
}

/// The rows a DataFusion write reports: the sum of its `count` column (one UInt64 value per
/// batch, usually a single batch).
fn rows_written(batches: &[arrow::array::RecordBatch]) -> anyhow::Result<usize> {
    let mut rows = 0u64;
    for b in batches {
        let counts = b
            .column_by_name("count")
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::UInt64Array>())
            .context("the Parquet writer reported no `count` of rows written")?;
        rows += counts.iter().flatten().sum::<u64>();
    }
    usize::try_from(rows).context("row count")
}

/// Hive readers split a folder name `key=value` at its first `=` and percent-decode the
/// value; DataFusion's writer escapes `/`, `%` and the like in a value but leaves `=`, which
/// DuckDB then reads as a second key. Rename `tenant=a=b` folders to `tenant=a%3Db` (a `%`
/// in the value is already `%25`, so a raw `=` is always the tenant's own).
fn escape_equals_in_partitions(out: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(out).with_context(|| format!("listing {}", out.display()))? {
        let entry = entry.with_context(|| format!("listing {}", out.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(value) = name.strip_prefix("tenant=") else { continue };
        if value.contains('=') {
            let target = out.join(format!("tenant={}", value.replace('=', "%3D")));
            move_into(&entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Move `src` to `dst`, merging folders that already exist there (an export into a folder
/// that holds an earlier one).
fn move_into(src: &Path, dst: &Path) -> anyhow::Result<()> {
    if !dst.exists() {
        return std::fs::rename(src, dst).with_context(|| format!("renaming {} to {}", src.display(), dst.display()));
    }
    if !src.is_dir() {
        bail!("{} already exists; not replacing it with {}", dst.display(), src.display());
    }
    for entry in std::fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
        let entry = entry.with_context(|| format!("listing {}", src.display()))?;
        move_into(&entry.path(), &dst.join(entry.file_name()))?;
    }
    std::fs::remove_dir(src).with_context(|| format!("removing {}", src.display()))
}

/// `Error: <error>` and, one per line, each cause that adds something: DataFusion and Arrow
/// errors repeat their source's text in their own, and a reader needs it once.
pub fn error_report(e: &anyhow::Error) -> String {
    let mut out = format!("Error: {e}");
    let mut shown = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !shown.contains(text.trim()) {
            out.push_str("\n  caused by: ");
            out.push_str(&text);
            shown.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod report_tests {
    use super::error_report;
    use anyhow::Context;

    #[test]
    fn causes_are_shown_once_and_only_when_they_add_something() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Err::<(), _>(io).context("reading events.jsonl").context("importing").expect_err("an error");
        assert_eq!(error_report(&e), "Error: importing\n  caused by: reading events.jsonl\n  caused by: no such file");
        // A wrapper whose text already holds its source's text: the source is not repeated.
        #[derive(Debug, thiserror::Error)]
        #[error("Schema error: {0}")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("No field named nope")]
        struct Inner;
        let e = anyhow::Error::new(Outer(Inner));
        assert_eq!(error_report(&e), "Error: Schema error: No field named nope");
    }
}

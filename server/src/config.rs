//! Server configuration: embedded defaults < YAML file (`--config`) < `ACTIVEMIRROR_*`
//! environment variables < command-line flags. The file's unknown keys and bad values are
//! errors naming the key, reported at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Deserializer};

#[derive(clap::Args, Debug, Default, Clone)]
pub struct StartArgs {
    /// YAML configuration file.
    #[arg(long, env = "ACTIVEMIRROR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./activemirror-data].
    #[arg(long, env = "ACTIVEMIRROR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP API address [default: 127.0.0.1:8080].
    #[arg(long, env = "ACTIVEMIRROR_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// gRPC (ingest + OTLP) address [default: 127.0.0.1:4317].
    #[arg(long, env = "ACTIVEMIRROR_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Delete data older than this, e.g. 30d, 12h [default: keep everything].
    #[arg(long, env = "ACTIVEMIRROR_RETENTION", value_parser = parse_duration)]
    pub retention: Option<Duration>,
    /// Move data older than this to the cold tier, Parquet files under DATA_DIR/archive/
    /// (still queried), e.g. 7d [default: keep it warm].
    #[arg(long, env = "ACTIVEMIRROR_ARCHIVE_AFTER", value_parser = parse_duration)]
    pub archive_after: Option<Duration>,
    /// Longest a query may run, e.g. 30s, 500ms.
    #[arg(long, env = "ACTIVEMIRROR_QUERY_TIMEOUT", value_parser = parse_duration)]
    pub query_timeout: Option<Duration>,
    /// Most rows a query returns over HTTP.
    #[arg(long, env = "ACTIVEMIRROR_MAX_RESULTS")]
    pub max_results: Option<usize>,
    /// Also serve /metrics and /healthz on this port (127.0.0.1).
    #[arg(long, env = "ACTIVEMIRROR_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Memory for buffered (not yet flushed) events, in MiB, before writers wait.
    #[arg(long, env = "ACTIVEMIRROR_MAX_BUFFERED_MB")]
    pub max_buffered_mb: Option<usize>,
    /// Bytes of ingest requests (all protocols) decoded, validated and appended at once, in
    /// MiB; further requests wait up to 5 s for room, then get 429 / RESOURCE_EXHAUSTED
    /// [default: 32].
    #[arg(long, env = "ACTIVEMIRROR_MAX_INFLIGHT_MB")]
    pub max_inflight_mb: Option<usize>,
    /// Memory for decoded column blocks kept between queries, in MiB (0 turns it off)
    /// [default: 256].
    #[arg(long, env = "ACTIVEMIRROR_QUERY_CACHE_MB")]
    pub query_cache_mb: Option<u64>,
    /// Memory for decompressed pages of free text (`content`) kept between queries, in MiB
    /// (0 turns it off) [default: a quarter of the block cache's].
    #[arg(long, env = "ACTIVEMIRROR_QUERY_TEXT_CACHE_MB")]
    pub query_text_cache_mb: Option<u64>,
    /// Memory for segments' token indexes of `content` (read by `LIKE` searches), kept between
    /// queries, in MiB (0 turns it off: each search decodes them again) [default: 256].
    #[arg(long, env = "ACTIVEMIRROR_QUERY_INDEX_CACHE_MB")]
    pub query_index_cache_mb: Option<u64>,
    /// Memory for segments' value bitmaps and trace directories (read by filters on the
    /// indexed columns and `trace_id`), kept between queries, in MiB (0 turns it off: each
    /// query decodes them again) [default: 256].
    #[arg(long, env = "ACTIVEMIRROR_QUERY_SEGMENT_INDEX_CACHE_MB")]
    pub query_segment_index_cache_mb: Option<u64>,
    /// Memory all running queries together may hold in joins, sorts and aggregations, in MiB;
    /// past it they spill or fail with "Resources exhausted" [default: 2048].
    #[arg(long, env = "ACTIVEMIRROR_QUERY_MEMORY_MB")]
    pub query_memory_mb: Option<u64>,
}

/// `30s`, `500ms`, `2h`, `7d`, `1h 30m` (humantime), or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| format!("`{s}` is not a duration (like 30s, 500ms, 12h, 7d): {e}"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Secs(s)) => Ok(Some(Duration::from_secs(s))),
        Some(Raw::Text(t)) => parse_duration(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

/// The YAML file's layout.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub storage: StorageConfig,
    pub retention: RetentionConfig,
    pub query: QueryFileConfig,
    pub monitoring: MonitoringConfig,
    pub server: ServerConfig,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: Option<PathBuf>,
    pub max_buffered_mb: Option<usize>,
    /// Flush the in-memory buffer at least this often.
    #[serde(deserialize_with = "duration")]
    pub flush_interval: Option<Duration>,
    /// Compact once this many hot segments exist (and merge this many warm ones of similar
    /// size).
    pub compaction_trigger: Option<usize>,
    /// Nice value (0..=19) of the compaction threads: 0 (the default) compacts at the priority
    /// of ingest and queries; higher lets a burst of ingest go first, for more memory.
    pub compaction_niceness: Option<i32>,
    /// Largest time span of a segment made by merging warm segments (with retention, at most
    /// a quarter of `retention.max_age`).
    #[serde(deserialize_with = "duration")]
    pub merge_span: Option<Duration>,
    /// Largest time span of a segment merged from warm segments whose events are all older
    /// than this before the newest event stored (at least `merge_span`).
    #[serde(deserialize_with = "duration")]
    pub settled_merge_span: Option<Duration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Delete data older than this.
    #[serde(deserialize_with = "duration")]
    pub max_age: Option<Duration>,
    /// Move data older than this to the cold tier (Parquet files, still queried).
    #[serde(deserialize_with = "duration")]
    pub archive_after: Option<Duration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct QueryFileConfig {
    pub max_results: Option<usize>,
    #[serde(deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// The same as `timeout`, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Memory for decoded column blocks kept between queries, in MiB (0: none).
    pub cache_mb: Option<u64>,
    /// Memory for decompressed text pages kept between queries, in MiB (0: none).
    pub text_cache_mb: Option<u64>,
    /// Memory for token indexes of `content` kept between queries, in MiB (0: none).
    pub index_cache_mb: Option<u64>,
    /// Memory for segments' value bitmaps and trace directories kept between queries, in MiB.
    pub segment_index_cache_mb: Option<u64>,
    /// Memory running queries may hold together, in MiB.
    pub memory_mb: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// A second listener (127.0.0.1:port) for /metrics and /healthz.
    pub port: Option<u16>,
    /// Serve /metrics at all.
    pub metrics_enabled: bool,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig { port: None, metrics_enabled: true }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub http_addr: Option<SocketAddr>,
    pub grpc_addr: Option<SocketAddr>,
    pub max_body_mb: Option<usize>,
    /// Bytes of ingest requests being decoded, validated and appended at once, in MiB.
    pub max_inflight_mb: Option<usize>,
}

/// Query limits the HTTP API applies.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryLimits {
    pub max_results: usize,
    pub timeout: Duration,
    /// Memory all running queries may hold together (DataFusion's memory pool).
    pub memory_bytes: usize,
}

/// Everything `start` needs, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub max_body_bytes: usize,
    /// Budget of the ingest admission gate ([`crate::ingest::IngestGate`]).
    pub max_inflight_bytes: usize,
    pub query: QueryLimits,
    pub metrics_enabled: bool,
    pub metrics_port: Option<u16>,
    pub retention: Option<Duration>,
    /// Age from which warm segments move to the cold tier (`None`: never).
    pub archive_after: Option<Duration>,
    pub max_buffered_bytes: usize,
    pub flush_interval: Duration,
    pub compaction_trigger: usize,
    pub compaction_niceness: i32,
    pub merge_span: Duration,
    pub settled_merge_span: Duration,
    /// Budget of the decoded block cache ([`query::BlockCache`]).
    pub query_cache_bytes: u64,
    /// Budget of the text page cache ([`query::TextPageCache`]).
    pub query_text_cache_bytes: u64,
    /// Budget of the token index cache ([`query::TextIndexCache`]).
    pub query_index_cache_bytes: u64,
    /// Budget of the segment index cache ([`query::SegmentIndexCache`]).
    pub query_segment_index_cache_bytes: u64,
    /// The memory limit the unset sizes were fitted to ([`MemoryDefaults::within`]), if any.
    pub memory_limit: Option<u64>,
}

/// Reads and checks a YAML config file; errors name the file, the key and what is wrong.
pub fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    parse_file(&text).with_context(|| format!("config {}", path.display()))
}

/// Parses the YAML text of a config file.
pub fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("key `{path}`: {}", e.into_inner())
    })
}

/// A cache's size in MiB under `key`: the flag, else the file, else `default`; 0 turns the
/// cache off, and more than 2^30 MiB is refused.
fn cache_megabytes(key: &str, flag: Option<u64>, file: Option<u64>, default: u64) -> anyhow::Result<u64> {
    let mb = flag.or(file).unwrap_or(default);
    anyhow::ensure!(mb <= 1 << 30, "key `{key}`: {mb} MiB is more than any machine has");
    Ok(mb)
}

/// Applies the precedence: defaults < file < environment / flags (clap has already merged
/// environment variables into `args`).
pub fn resolve(args: &StartArgs, file: FileConfig) -> anyhow::Result<Settings> {
    resolve_within(args, file, None)
}

/// The memory sizes used where neither flag nor file sets one: the embedded defaults, or,
/// inside a cgroup whose memory limit is smaller than they need, fractions of that limit
/// (so the server in a 512 MB container buffers and caches within it instead of being
/// killed by the kernel's OOM killer). Each is in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryDefaults {
    pub max_buffered_mb: usize,
    pub cache_mb: u64,
    pub index_cache_mb: u64,
    pub segment_index_cache_mb: u64,
    pub query_memory_mb: u64,
    pub max_inflight_mb: usize,
}

impl MemoryDefaults {
    /// The defaults for a process limited to `limit_bytes` (`None`: no limit). A flush can
    /// peak at about twice the buffer plus 200 MB (docs/configuration.md), so the buffer gets
    /// an eighth of the limit; each of the three caches a sixteenth; queries a quarter; the
    /// ingest gate a sixty-fourth (each admitted MB costs several while it waits). Each is
    /// capped at the embedded default and kept above a floor that still works.
    pub fn within(limit_bytes: Option<u64>) -> MemoryDefaults {
        let full = MemoryDefaults {
            max_buffered_mb: engine::EngineConfig::default().max_buffered_bytes >> 20,
            cache_mb: query::cache::DEFAULT_BLOCK_CACHE_BYTES >> 20,
            index_cache_mb: query::cache::DEFAULT_TEXT_INDEX_CACHE_BYTES >> 20,
            segment_index_cache_mb: query::cache::DEFAULT_SEGMENT_INDEX_CACHE_BYTES >> 20,
            query_memory_mb: 2048,
            max_inflight_mb: 32,
        };
        let Some(limit) = limit_bytes else { return full };
        let mb = limit >> 20;
        let part = |divisor: u64, floor: u64, cap: u64| (mb / divisor).clamp(floor, cap.max(floor));
        MemoryDefaults {
            max_buffered_mb: part(8, 16, full.max_buffered_mb as u64) as usize,
            cache_mb: part(16, 8, full.cache_mb),
            index_cache_mb: part(16, 8, full.index_cache_mb),
            segment_index_cache_mb: part(16, 8, full.segment_index_cache_mb),
            query_memory_mb: part(4, 64, full.query_memory_mb),
            max_inflight_mb: part(64, 2, full.max_inflight_mb as u64) as usize,
        }
    }
}

/// The memory limit of the cgroup this process runs in, the smallest of its cgroup's and its
/// visible ancestors' (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`), if any is set.
pub fn cgroup_memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    memory_limit_under(Path::new("/sys/fs/cgroup"), &own)
}

/// [`cgroup_memory_limit`] with the cgroup mount at `root` and `proc_cgroup` the text of
/// `/proc/self/cgroup` (`ID:CONTROLLERS:PATH` lines; v2's has no controllers).
fn memory_limit_under(root: &Path, proc_cgroup: &str) -> Option<u64> {
    let mut smallest: Option<u64> = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (mount, file) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        // Inside a container the path may not exist under the mount; the mount's own root
        // (the container's cgroup) is then the last one read.
        let mut dir = Some(Path::new(path.trim().trim_start_matches('/')));
        while let Some(d) = dir {
            let text = std::fs::read_to_string(mount.join(d).join(file)).unwrap_or_default();
            if let Some(limit) = parse_memory_limit(&text) {
                smallest = Some(smallest.map_or(limit, |s| s.min(limit)));
            }
            dir = d.parent();
        }
    }
    smallest
}

/// A cgroup memory limit file's value: bytes, or `max` (v2) / a number near 2^63 (v1) for none.
fn parse_memory_limit(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|&n| n > 0 && n < 1 << 60)
}

/// [`resolve`] inside a memory limit of `memory_limit` bytes (see [`MemoryDefaults::within`]).
pub fn resolve_within(args: &StartArgs, file: FileConfig, memory_limit: Option<u64>) -> anyhow::Result<Settings> {
    let sizes = MemoryDefaults::within(memory_limit);
    let engine_defaults = engine::EngineConfig::default();
    let max_body_mb = file.server.max_body_mb.unwrap_or(64);
    anyhow::ensure!(max_body_mb > 0, "key `server.max_body_mb`: must be at least 1");
    let max_inflight_mb = args.max_inflight_mb.or(file.server.max_inflight_mb).unwrap_or(sizes.max_inflight_mb);
    anyhow::ensure!(
        (1..=1 << 22).contains(&max_inflight_mb),
        "key `server.max_inflight_mb`: {max_inflight_mb} is outside 1..4194304"
    );
    let timeout = args
        .query_timeout
        .or(file.query.timeout)
        .or(file.query.timeout_ms.map(Duration::from_millis))
        .unwrap_or(Duration::from_secs(30));
    anyhow::ensure!(!timeout.is_zero(), "key `query.timeout`: must be more than zero");
    let max_results = args.max_results.or(file.query.max_results).unwrap_or(100_000);
    anyhow::ensure!(max_results > 0, "key `query.max_results`: must be at least 1");
    let max_buffered_mb = args.max_buffered_mb.or(file.storage.max_buffered_mb);
    let compaction_niceness = file.storage.compaction_niceness.unwrap_or(engine_defaults.compaction_niceness);
    anyhow::ensure!(
        (0..=19).contains(&compaction_niceness),
        "key `storage.compaction_niceness`: {compaction_niceness} is outside 0..19"
    );
    let merge_span = file.storage.merge_span.unwrap_or(engine_defaults.merge_span);
    anyhow::ensure!(!merge_span.is_zero(), "key `storage.merge_span`: must be more than zero");
    let settled_merge_span = file.storage.settled_merge_span.unwrap_or(engine_defaults.settled_merge_span);
    anyhow::ensure!(!settled_merge_span.is_zero(), "key `storage.settled_merge_span`: must be more than zero");
    if let Some(mb) = max_buffered_mb {
        anyhow::ensure!(mb >= 1, "key `storage.max_buffered_mb`: must be at least 1");
    }
    let cache_mb = cache_megabytes("query.cache_mb", args.query_cache_mb, file.query.cache_mb, sizes.cache_mb)?;
    let memory_mb = args.query_memory_mb.or(file.query.memory_mb).unwrap_or(sizes.query_memory_mb);
    anyhow::ensure!(memory_mb > 0, "key `query.memory_mb`: must be at least 1");
    anyhow::ensure!(memory_mb <= 1 << 30, "key `query.memory_mb`: {memory_mb} MiB is more than any machine has");
    let text_cache_mb =
        cache_megabytes("query.text_cache_mb", args.query_text_cache_mb, file.query.text_cache_mb, cache_mb / 4)?;
    let index_cache_mb = cache_megabytes(
        "query.index_cache_mb",
        args.query_index_cache_mb,
        file.query.index_cache_mb,
        sizes.index_cache_mb,
    )?;
    let segment_index_cache_mb = cache_megabytes(
        "query.segment_index_cache_mb",
        args.query_segment_index_cache_mb,
        file.query.segment_index_cache_mb,
        sizes.segment_index_cache_mb,
    )?;
    let retention = args.retention.or(file.retention.max_age);
    if let Some(r) = retention {
        anyhow::ensure!(!r.is_zero(), "key `retention.max_age`: must be more than zero");
    }
    let archive_after = args.archive_after.or(file.retention.archive_after);
    if let Some(a) = archive_after {
        anyhow::ensure!(!a.is_zero(), "key `retention.archive_after`: must be more than zero");
        if let Some(r) = retention {
            anyhow::ensure!(
                a < r,
                "key `retention.archive_after`: {} is not less than `retention.max_age` ({}): nothing would be archived before it is deleted",
                humantime::format_duration(a),
                humantime::format_duration(r)
            );
        }
    }
    Ok(Settings {
        data_dir: args
            .data_dir
            .clone()
            .or(file.storage.data_dir)
            .unwrap_or_else(|| PathBuf::from("./activemirror-data")),
        http_addr: args.http_addr.or(file.server.http_addr).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        grpc_addr: args.grpc_addr.or(file.server.grpc_addr).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4317))),
        max_body_bytes: max_body_mb << 20,
        max_inflight_bytes: max_inflight_mb << 20,
        query: QueryLimits { max_results, timeout, memory_bytes: (memory_mb << 20) as usize },
        metrics_enabled: file.monitoring.metrics_enabled,
        metrics_port: args.metrics_port.or(file.monitoring.port),
        retention,
        archive_after,
        max_buffered_bytes: max_buffered_mb.unwrap_or(sizes.max_buffered_mb) << 20,
        flush_interval: file.storage.flush_interval.unwrap_or(engine_defaults.flush_age),
        compaction_trigger: file.storage.compaction_trigger.unwrap_or(engine_defaults.compaction_trigger).max(1),
        compaction_niceness,
        merge_span,
        settled_merge_span,
        query_cache_bytes: cache_mb << 20,
        query_text_cache_bytes: text_cache_mb << 20,
        query_index_cache_bytes: index_cache_mb << 20,
        query_segment_index_cache_bytes: segment_index_cache_mb << 20,
        memory_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_a_file() {
        let s = resolve(&StartArgs::default(), FileConfig::default()).expect("defaults");
        assert_eq!(s.data_dir, PathBuf::from("./activemirror-data"));
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.grpc_addr.to_string(), "127.0.0.1:4317");
        assert_eq!(
            s.query,
            QueryLimits { max_results: 100_000, timeout: Duration::from_secs(30), memory_bytes: 2048 << 20 }
        );
        assert!(s.metrics_enabled);
        assert_eq!(s.retention, None);
        assert_eq!(s.query_cache_bytes, 256 << 20);
        assert_eq!(s.query_text_cache_bytes, 64 << 20);
        assert_eq!(s.query_index_cache_bytes, 256 << 20);
        assert_eq!(s.max_inflight_bytes, 32 << 20);
    }

    #[test]
    fn the_ingest_budget_comes_from_the_flag_else_the_file_and_is_checked() {
        let file = || parse_file("server:\n  max_inflight_mb: 32\n").expect("parses");
        assert_eq!(resolve(&StartArgs::default(), file()).expect("file").max_inflight_bytes, 32 << 20);
        let args = StartArgs { max_inflight_mb: Some(8), ..Default::default() };
        assert_eq!(resolve(&args, file()).expect("flag").max_inflight_bytes, 8 << 20, "the flag wins");
        let zero = parse_file("server:\n  max_inflight_mb: 0\n").expect("parses");
        let e = resolve(&StartArgs::default(), zero).expect_err("zero");
        assert!(e.to_string().contains("`server.max_inflight_mb`"), "{e}");
        let args = StartArgs { max_inflight_mb: Some(1 << 23), ..Default::default() };
        let e = resolve(&args, FileConfig::default()).expect_err("too big");
        assert!(e.to_string().contains("`server.max_inflight_mb`"), "{e}");
        let e = parse_file("server:\n  max_inflight_mb: some\n").expect_err("not a number");
        assert!(e.to_string().contains("server.max_inflight_mb"), "{e}");
    }

    #[test]
    fn the_full_layout_parses_and_flags_win() {
        let file = parse_file(
            "storage:\n  data_dir: /var/am\n  max_buffered_mb: 128\n  flush_interval: 500ms\n\
             retention:\n  max_age: 30d\n\
             query:\n  max_results: 500\n  timeout: 2s\n  cache_mb: 64\n\
             monitoring:\n  port: 9100\n  metrics_enabled: false\n\
             server:\n  http_addr: 0.0.0.0:9000\n  max_body_mb: 8\n",
        )
        .expect("parses");
        let args = StartArgs {
            max_results: Some(7),
            http_addr: Some("127.0.0.1:1".parse().expect("a")),
            ..Default::default()
        };
        let s = resolve(&args, file).expect("resolves");
        assert_eq!(s.data_dir, PathBuf::from("/var/am"));
        assert_eq!(s.max_buffered_bytes, 128 << 20);
        assert_eq!(s.flush_interval, Duration::from_millis(500));
        assert_eq!(s.retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(s.query, QueryLimits { max_results: 7, timeout: Duration::from_secs(2), memory_bytes: 2048 << 20 });
        assert_eq!(s.metrics_port, Some(9100));
        assert!(!s.metrics_enabled);
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:1", "the flag wins over the file");
        assert_eq!(s.max_body_bytes, 8 << 20);
        assert_eq!(s.query_cache_bytes, 64 << 20);
        assert_eq!(s.query_text_cache_bytes, 16 << 20, "a quarter of the block cache unless set");
        let off = StartArgs { query_cache_mb: Some(0), ..Default::default() };
        let off = resolve(&off, FileConfig::default()).expect("resolves");
        assert_eq!((off.query_cache_bytes, off.query_text_cache_bytes), (0, 0));
        let text = parse_file("query:\n  text_cache_mb: 100\n").expect("parses");
        let args = StartArgs { query_text_cache_mb: Some(3), ..Default::default() };
        assert_eq!(resolve(&StartArgs::default(), text).expect("resolves").query_text_cache_bytes, 100 << 20);
        assert_eq!(resolve(&args, FileConfig::default()).expect("resolves").query_text_cache_bytes, 3 << 20);
        let index = || parse_file("query:\n  index_cache_mb: 40\n").expect("parses");
        assert_eq!(resolve(&StartArgs::default(), index()).expect("resolves").query_index_cache_bytes, 40 << 20);
        let args = StartArgs { query_index_cache_mb: Some(0), ..Default::default() };
        assert_eq!(resolve(&args, index()).expect("resolves").query_index_cache_bytes, 0, "the flag wins");
        let seg = || parse_file("query:\n  segment_index_cache_mb: 8\n").expect("parses");
        assert_eq!(resolve(&StartArgs::default(), seg()).expect("resolves").query_segment_index_cache_bytes, 8 << 20);
        let args = StartArgs { query_segment_index_cache_mb: Some(1), ..Default::default() };
        assert_eq!(resolve(&args, seg()).expect("resolves").query_segment_index_cache_bytes, 1 << 20, "the flag wins");
        let s = resolve(&StartArgs::default(), FileConfig::default()).expect("defaults");
        assert_eq!(s.query_segment_index_cache_bytes, 256 << 20);
        let e = parse_file("query:\n  segment_index_cache_mb: lots\n").expect_err("not a number");
        assert!(e.to_string().contains("segment_index_cache_mb"), "{e}");
    }

    /// `retention.archive_after`: off unless set, the flag over the file, more than zero and
    /// less than `retention.max_age`, each refusal naming the key.
    #[test]
    fn archive_after_is_read_checked_and_overridden() {
        assert_eq!(resolve(&StartArgs::default(), FileConfig::default()).expect("defaults").archive_after, None);
        let file = || parse_file("retention:\n  max_age: 30d\n  archive_after: 7d\n").expect("parses");
        assert_eq!(
            resolve(&StartArgs::default(), file()).expect("resolves").archive_after,
            Some(Duration::from_secs(7 * 86_400))
        );
        let args = StartArgs { archive_after: Some(Duration::from_secs(3600)), ..Default::default() };
        assert_eq!(resolve(&args, file()).expect("resolves").archive_after, Some(Duration::from_secs(3600)));
        let late = StartArgs { archive_after: Some(Duration::from_secs(31 * 86_400)), ..Default::default() };
        let e = resolve(&late, file()).expect_err("after max_age");
        assert!(e.to_string().contains("`retention.archive_after`") && e.to_string().contains("max_age"), "{e}");
        let zero = parse_file("retention:\n  archive_after: 0s\n").expect("parses");
        let e = resolve(&StartArgs::default(), zero).expect_err("zero");
        assert!(e.to_string().contains("`retention.archive_after`"), "{e}");
        let e = parse_file("retention:\n  archive_after: later\n").expect_err("not a duration");
        assert!(e.to_string().contains("archive_after"), "{e}");
    }

    /// Each cache's size past 2^30 MiB is refused, naming its key, from the file or the flag.
    #[test]
    fn oversized_caches_are_refused_naming_their_key() {
        let too_big = (1u64 << 30) + 1;
        for key in ["cache_mb", "text_cache_mb", "index_cache_mb", "segment_index_cache_mb"] {
            let file = parse_file(&format!("query:\n  {key}: {too_big}\n")).expect("parses");
            let e = resolve(&StartArgs::default(), file).expect_err("too big");
            assert!(e.to_string().contains(&format!("`query.{key}`")), "{e}");
        }
        let args = StartArgs { query_segment_index_cache_mb: Some(too_big), ..Default::default() };
        let e = resolve(&args, FileConfig::default()).expect_err("too big");
        assert!(e.to_string().contains("`query.segment_index_cache_mb`"), "{e}");
        assert_eq!(cache_megabytes("query.x", None, None, 7).expect("default"), 7);
        assert_eq!(cache_megabytes("query.x", Some(1), Some(2), 7).expect("flag"), 1);
        assert_eq!(cache_megabytes("query.x", None, Some(2), 7).expect("file"), 2);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = parse_file("query:\n  max_result: 5\n").expect_err("typo");
        assert!(e.to_string().contains("query") && e.to_string().contains("max_result"), "{e}");
        let text = parse_file("query:\n  memory_mb: 64\n").expect("parses");
        assert_eq!(resolve(&StartArgs::default(), text).expect("ok").query.memory_bytes, 64 << 20);
        let text = parse_file("query:\n  memory_mb: 64\n").expect("parses");
        let args = StartArgs { query_memory_mb: Some(3), ..Default::default() };
        assert_eq!(resolve(&args, text).expect("ok").query.memory_bytes, 3 << 20, "the flag wins");
        let zero = StartArgs { query_memory_mb: Some(0), ..Default::default() };
        let e = resolve(&zero, parse_file("").expect("empty")).expect_err("zero");
        assert!(e.to_string().contains("query.memory_mb"), "{e}");
        let e = parse_file("query:\n  cache_mb: -1\n").expect_err("negative size");
        assert!(e.to_string().contains("query.cache_mb"), "{e}");
        let e = parse_file("query:\n  timeout: soon\n").expect_err("bad duration");
        assert!(e.to_string().contains("query.timeout") && e.to_string().contains("soon"), "{e}");
        let e = parse_file("server:\n  http_addr: nowhere\n").expect_err("bad addr");
        assert!(e.to_string().contains("server.http_addr"), "{e}");
        let e = parse_file("monitoring:\n  metrics_enabled: maybe\n").expect_err("bad bool");
        assert!(e.to_string().contains("monitoring.metrics_enabled"), "{e}");
        let e = parse_file("colour: blue\n").expect_err("unknown section");
        assert!(e.to_string().contains("colour"), "{e}");
        let e = resolve(&StartArgs::default(), parse_file("query:\n  max_results: 0\n").expect("parses"))
            .expect_err("zero");
        assert!(e.to_string().contains("query.max_results"), "{e}");
        let e = resolve(&StartArgs::default(), parse_file("storage:\n  compaction_niceness: 20\n").expect("parses"))
            .expect_err("past 19");
        assert!(e.to_string().contains("storage.compaction_niceness"), "{e}");
        let ok = resolve(&StartArgs::default(), parse_file("storage:\n  compaction_niceness: 0\n").expect("parses"));
        assert_eq!(ok.expect("0 is allowed").compaction_niceness, 0);
        assert_eq!(resolve(&StartArgs::default(), FileConfig::default()).expect("defaults").compaction_niceness, 0);
        let ten = resolve(&StartArgs::default(), parse_file("storage:\n  compaction_niceness: 10\n").expect("parses"));
        assert_eq!(ten.expect("10 is allowed").compaction_niceness, 10);
        let span = |yaml: &str| resolve(&StartArgs::default(), parse_file(yaml).expect("parses"));
        assert_eq!(span("").expect("default").merge_span, Duration::from_secs(3600));
        assert_eq!(span("storage:\n  merge_span: 15m\n").expect("15m").merge_span, Duration::from_secs(900));
        let e = span("storage:\n  merge_span: 0s\n").expect_err("zero");
        assert!(e.to_string().contains("storage.merge_span"), "{e}");
        let e = parse_file("storage:\n  merge_span: often\n").expect_err("not a duration");
        assert!(e.to_string().contains("storage.merge_span"), "{e}");
        assert_eq!(span("").expect("default").settled_merge_span, Duration::from_secs(86_400));
        let week = span("storage:\n  settled_merge_span: 7d\n").expect("7d").settled_merge_span;
        assert_eq!(week, Duration::from_secs(7 * 86_400));
        let e = span("storage:\n  settled_merge_span: 0s\n").expect_err("zero");
        assert!(e.to_string().contains("storage.settled_merge_span"), "{e}");
    }

    #[test]
    fn sizes_fit_a_memory_limit_where_none_is_set() {
        let full = MemoryDefaults::within(None);
        assert_eq!(
            full,
            MemoryDefaults {
                max_buffered_mb: 512,
                cache_mb: 256,
                index_cache_mb: 256,
                segment_index_cache_mb: 256,
                query_memory_mb: 2048,
                max_inflight_mb: 32
            }
        );
        assert_eq!(MemoryDefaults::within(Some(64 << 30)), full, "a large limit changes nothing");
        let half_gb = MemoryDefaults::within(Some(512 << 20));
        assert_eq!(
            half_gb,
            MemoryDefaults {
                max_buffered_mb: 64,
                cache_mb: 32,
                index_cache_mb: 32,
                segment_index_cache_mb: 32,
                query_memory_mb: 128,
                max_inflight_mb: 8
            }
        );
        let tiny = MemoryDefaults::within(Some(32 << 20));
        assert_eq!((tiny.max_buffered_mb, tiny.cache_mb, tiny.query_memory_mb, tiny.max_inflight_mb), (16, 8, 64, 2));
        // Resolved: the unset sizes follow the limit, the set ones do not; the text cache is a
        // quarter of the block cache as always.
        let args = StartArgs { max_buffered_mb: Some(100), ..Default::default() };
        let file = parse_file("query:\n  index_cache_mb: 5\n").expect("parses");
        let s = resolve_within(&args, file, Some(512 << 20)).expect("resolves");
        assert_eq!(s.max_buffered_bytes, 100 << 20, "the flag wins");
        assert_eq!(s.query_index_cache_bytes, 5 << 20, "the file wins");
        assert_eq!((s.query_cache_bytes, s.query_text_cache_bytes), (32 << 20, 8 << 20));
        assert_eq!((s.query_segment_index_cache_bytes, s.query.memory_bytes), (32 << 20, 128 << 20));
        assert_eq!((s.max_inflight_bytes, s.memory_limit), (8 << 20, Some(512 << 20)));
        assert_eq!(resolve(&StartArgs::default(), FileConfig::default()).expect("defaults").memory_limit, None);
    }

    #[test]
    fn the_cgroup_memory_limit_is_the_smallest_on_the_path() {
        let write = |path: &Path, text: &str| {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        };
        // cgroup v2: the cgroup's own file says `max`, its parent's a limit.
        let v2 = tempfile::tempdir().expect("tmp");
        write(&v2.path().join("memory.max"), "max\n");
        write(&v2.path().join("a/memory.max"), "536870912\n");
        write(&v2.path().join("a/b/memory.max"), "max\n");
        assert_eq!(memory_limit_under(v2.path(), "0::/a/b\n"), Some(512 << 20));
        assert_eq!(memory_limit_under(v2.path(), "0::/\n"), None, "no limit at the root");
        // Inside a container the listed path is not under the mount; the mount's root counts.
        write(&v2.path().join("memory.max"), "268435456");
        assert_eq!(memory_limit_under(v2.path(), "0::/docker/0123abcd\n"), Some(256 << 20));
        // cgroup v1 (as on hybrid hosts): the memory controller's own mount and file, where
        // "no limit" is a number near 2^63; other controllers' lines are skipped.
        let v1 = tempfile::tempdir().expect("tmp");
        write(&v1.path().join("memory/memory.limit_in_bytes"), "9223372036854771712\n");
        write(&v1.path().join("memory/x/memory.limit_in_bytes"), "9223372036854771712\n");
        let own = "8:pids:/\n4:cpuacct,memory:/x\n0::/\n";
        assert_eq!(memory_limit_under(v1.path(), own), None);
        write(&v1.path().join("memory/x/memory.limit_in_bytes"), "1073741824\n");
        assert_eq!(memory_limit_under(v1.path(), own), Some(1 << 30));
        assert_eq!(memory_limit_under(v1.path(), "garbage\n\n4:memory\n"), None, "malformed lines are skipped");
        assert_eq!(parse_memory_limit("0"), None);
        assert_eq!(parse_memory_limit(" 4096 "), Some(4096));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("-3s").is_err());
    }
}

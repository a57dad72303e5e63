//! The ActiveMirrorOS storage engine.
//!
//! Owns the write path (validated batch -> WAL group commit -> in-memory buffer), background
//! flushing of the buffer into hot segments, compaction of small hot segments into larger zstd
//! ones, recovery on open (manifest + WAL replay after the checkpoint), and consistent
//! read snapshots (segments + durable buffered rows) while writes go on.
//!
//! Ordering invariant: WAL enqueue and memtable insert happen under one lock, so the memtable
//! holds batches in LSN order; a flush takes a prefix of durable batches, and its highest LSN
//! is then a valid checkpoint (every lower LSN is in this or an earlier segment).

pub mod manifest;
pub mod merge;
pub mod priority;
pub mod validate;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use segments::{decode_events, encode_events, Event, Segment, SegmentWriter, WriterOptions};
use wal::{Wal, WalConfig};

pub use manifest::{Manifest, SegmentEntry, Tier};
pub use segments;
pub use validate::{parse_body, parse_event, validate_input, EventInput, ValidationError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("write-ahead log: {0}")]
    Wal(#[from] wal::WalError),
    #[error(transparent)]
    Segment(#[from] segments::SegmentError),
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("corrupt data directory: {0}")]
    Corrupt(String),
    #[error("ingest buffer full ({buffered} bytes buffered, limit {limit}): the engine is behind; retry later")]
    Backpressure { buffered: usize, limit: usize },
    #[error("engine is shut down")]
    Closed,
    #[error("data directory {0} is in use by another process (a running server? query it with --server URL)")]
    Locked(PathBuf),
}

impl EngineError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        EngineError::Io { path: path.to_path_buf(), source }
    }
}

/// Fewest hot rows that [`EngineConfig::idle_compaction`] compacts: a trickle of traffic
/// with pauses would otherwise turn each pause's few rows into a small warm segment.
pub const IDLE_COMPACTION_MIN_ROWS: u64 = 50_000;

/// Blocks of rows per piece a compaction merges and then encodes (on every core) at once.
const MERGE_PIECE_BLOCKS: usize = 4;

/// Tunables of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Flush the buffer once it holds this many bytes...
    pub flush_bytes: usize,
    /// ... or once its oldest row is this old.
    pub flush_age: Duration,
    /// Appends wait once buffered (unflushed) bytes exceed this.
    pub max_buffered_bytes: usize,
    /// How long an append waits for room before failing with `Backpressure`.
    pub backpressure_wait: Duration,
    pub wal_file_bytes: u64,
    pub hot: WriterOptions,
    pub cold: WriterOptions,
    /// Compact once this many hot segments exist; also how many warm segments of similar
    /// size are merged into one (at least 2).
    pub compaction_trigger: usize,
    /// Largest time span (newest event minus oldest) of a segment made by merging warm
    /// segments; with `retention`, at most a quarter of it, so that merging does not keep
    /// expired rows much longer (retention drops a segment once its newest row expires).
    pub merge_span: Duration,
    /// Largest time span of a segment made by merging warm segments whose events are all
    /// older than this before the newest event stored (never less than `merge_span`; with
    /// `retention`, at most a quarter of it). Settled data is read by wider time ranges, and
    /// every query pays per segment: an hour's span makes at least 24 segments a day.
    pub settled_merge_span: Duration,
    /// Once no event has been appended for this long, compact the hot segments however few
    /// (if they hold at least [`IDLE_COMPACTION_MIN_ROWS`] rows): after a burst, the last
    /// flushes would otherwise stay hot (lz4, no token index) until more traffic comes.
    /// `None` turns it off.
    pub idle_compaction: Option<Duration>,
    /// Nice value (0..=19) of the threads that compact: above 0, compaction runs on threads of
    /// its own which, under a burst, leave the CPU to appends, flushes and queries and catch
    /// up when it ends. 0 (the default) compacts on rayon's threads at the priority of
    /// everything else: the threads of their own cost memory (their malloc arenas), about
    /// 20-40 MB more at the peak of a flood on a 16 MB buffer. Once
    /// [`URGENT_HOT_SEGMENTS_PER_TRIGGER`] times `compaction_trigger` hot segments wait,
    /// compaction runs at normal priority whatever this says, so a load that never ends
    /// still gets its segments compacted.
    pub compaction_niceness: i32,
    /// Largest compacted segment, in rows.
    pub compaction_max_rows: u64,
    /// Largest memory one compaction may take for its input, estimated. A merge holds a block
    /// of each input and two pieces of output whatever its input (see [`merge`]), plus the new
    /// segment's indexes, which grow with it ([`merge_bytes`]); hot segments are also bounded
    /// by their decoded column bytes plus the in-memory row overhead, for the in-memory sort
    /// that inputs flushed by older versions still need.
    pub compaction_max_bytes: u64,
    /// Run the flush and compaction threads (tests may drive them by hand).
    pub background: bool,
    /// Delete data older than this (by event timestamp). Whole segments are dropped once
    /// their newest event is older than the cutoff, so a query may still see up to one
    /// segment's worth of older rows. `None` keeps everything.
    pub retention: Option<Duration>,
    /// Called on the flush and compaction threads each time they wake (every 100 ms at most)
    /// and before they exit: a place for per-thread upkeep such as giving the thread's free
    /// allocator memory back (the server's `memory` module). Must be cheap when it has nothing
    /// to do.
    pub background_thread_hook: Option<fn()>,
    /// Called on each of the low-priority compaction threads after a compaction that wrote a
    /// segment (see [`EngineConfig::compaction_niceness`]): those threads allocate from malloc
    /// arenas of their own, which keep what a compaction freed unless given back (the server
    /// trims each thread's arena here).
    pub after_compaction_hook: Option<fn()>,
    /// Called once a merge of warm segments is picked, before it starts (tests flush hot
    /// segments from it, to see them compacted between the merge's pieces).
    pub warm_merge_hook: Option<fn()>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            flush_bytes: 64 << 20,
            flush_age: Duration::from_secs(2),
            max_buffered_bytes: 512 << 20,
            backpressure_wait: Duration::from_secs(5),
            wal_file_bytes: 64 << 20,
            hot: WriterOptions::hot(),
            cold: WriterOptions::cold(),
            compaction_trigger: 4,
            merge_span: Duration::from_secs(3600),
            settled_merge_span: Duration::from_secs(24 * 3600),
            idle_compaction: Some(Duration::from_secs(5)),
            compaction_niceness: 0,
            compaction_max_rows: 4_000_000,
            compaction_max_bytes: 512 << 20,
            background: true,
            retention: None,
            background_thread_hook: None,
            after_compaction_hook: None,
            warm_merge_hook: None,
        }
    }
}

/// A batch in memory with the LSN of its WAL record.
#[derive(Debug)]
struct MemBatch {
    lsn: u64,
    events: Arc<Vec<Event>>,
    bytes: usize,
}

/// A live segment and its manifest entry.
#[derive(Debug, Clone)]
pub struct LiveSegment {
    pub segment: Arc<Segment>,
    pub entry: SegmentEntry,
}

#[derive(Default)]
struct State {
    active: Vec<MemBatch>,
    active_bytes: usize,
    active_since: Option<Instant>,
    /// Batches taken by a running flush, still visible to readers until the segment lands.
    frozen: Vec<MemBatch>,
    frozen_bytes: usize,
    segments: Vec<LiveSegment>,
    manifest: Manifest,
}

/// A consistent read view: segments plus durable buffered batches, none counted twice.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub segments: Vec<LiveSegment>,
    pub memory: Vec<Arc<Vec<Event>>>,
}

impl Snapshot {
    pub fn rows(&self) -> u64 {
        self.segments.iter().map(|s| s.segment.rows()).sum::<u64>()
            + self.memory.iter().map(|m| m.len() as u64).sum::<u64>()
    }

    /// Every row (test and export helper; queries stream blocks instead).
    pub fn all_events(&self) -> Result<Vec<Event>, EngineError> {
        let mut out = Vec::new();
        for s in &self.segments {
            out.extend(s.segment.read_all()?);
        }
        for m in &self.memory {
            out.extend(m.iter().cloned());
        }
        Ok(out)
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub events_appended: AtomicU64,
    pub batches_appended: AtomicU64,
    pub flushes: AtomicU64,
    pub compactions: AtomicU64,
    /// Compactions whose inputs were not all in the compaction order (hot segments flushed
    /// by older versions), so their rows were sorted in memory instead of merged.
    pub compactions_sorted_in_memory: AtomicU64,
    /// Compactions that did not yield the CPU because [`URGENT_HOT_SEGMENTS_PER_TRIGGER`]
    /// times `compaction_trigger` hot segments waited: ingest was outpacing compaction.
    pub compactions_urgent: AtomicU64,
    /// Compactions that merged warm segments of similar size (see `pick_warm_merge`).
    pub compactions_warm: AtomicU64,
    pub backpressure_rejections: AtomicU64,
    /// Segments and rows deleted by retention.
    pub expired_segments: AtomicU64,
    pub expired_rows: AtomicU64,
}

struct Inner {
    dir: PathBuf,
    cfg: EngineConfig,
    wal: Wal,
    state: Mutex<State>,
    room: Condvar,
    /// Orders WAL enqueue with memtable insert.
    write_order: Mutex<()>,
    /// Serialises manifest changes (flush, compaction, bulk load, retention): each clones the
    /// manifest, changes it, stores it and installs it under this lock. Segments are written
    /// before it is taken, so a long compaction never holds up a flush.
    manifest_lock: Mutex<()>,
    /// One flush at a time (the frozen batches belong to it).
    flush_lock: Mutex<()>,
    /// One compaction of hot segments at a time.
    hot_lane: Mutex<()>,
    /// One merge of warm segments at a time. Holds the warm segments (see [`WarmSet`]) among
    /// which the last search with the whole memory budget found no merge, so that the
    /// compaction thread, which wakes every 100 ms, searches again only once they change.
    warm_lane: Mutex<Option<WarmSet>>,
    /// What a running warm merge and the hot compaction between its pieces hold (see
    /// [`LaneBudget`]).
    lane_budget: Mutex<LaneBudget>,
    /// Next segment file number: taken before a segment is written, so writers running at
    /// once never share one. Stored in the manifest as `next_segment_id`.
    next_segment_id: AtomicU64,
    shutdown: AtomicBool,
    wake: Condvar,
    wake_lock: Mutex<()>,
    stats: EngineStats,
    /// Low-priority threads that compaction runs on (see [`EngineConfig::compaction_niceness`]);
    /// `None` without background threads or at niceness 0.
    compaction_pool: Option<rayon::ThreadPool>,
    /// Exclusive lock on `<dir>/LOCK`, held for the engine's life (released when dropped).
    _dir_lock: std::fs::File,
}

/// The storage engine. Cheap to share behind an `Arc`.
pub struct Engine {
    inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("dir", &self.inner.dir).finish()
    }
}

/// What recovery did on open.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub segments: usize,
    pub segment_rows: u64,
    pub replayed_batches: u64,
    pub replayed_events: u64,
    pub wal: wal::RecoveryReport,
    pub removed_orphans: usize,
}

fn segment_file(id: u64) -> String {
    format!("seg-{id:016}.seg")
}

impl Engine {
    /// Open or create the data directory `dir` and recover its contents.
    pub fn open(dir: impl AsRef<Path>, cfg: EngineConfig) -> Result<(Engine, OpenReport), EngineError> {
        let dir = dir.as_ref().to_path_buf();
        let seg_dir = dir.join("segments");
        std::fs::create_dir_all(&seg_dir).map_err(|e| EngineError::io(&seg_dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| EngineError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(EngineError::Locked(dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(EngineError::io(&lock_path, e)),
        }
        let manifest = Manifest::load(&dir)?;
        let mut report = OpenReport::default();
        let mut live = Vec::new();
        let listed: HashSet<&str> = manifest.segments.iter().map(|s| s.file.as_str()).collect();
        for entry in std::fs::read_dir(&seg_dir).map_err(|e| EngineError::io(&seg_dir, e))? {
            let entry = entry.map_err(|e| EngineError::io(&seg_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !listed.contains(name.as_str()) {
                tracing::info!(file = %name, "removing segment file not in the manifest");
                std::fs::remove_file(entry.path()).map_err(|e| EngineError::io(&entry.path(), e))?;
                report.removed_orphans += 1;
            }
        }
        for e in &manifest.segments {
            let seg = Segment::open(&seg_dir.join(&e.file))?;
            report.segment_rows += seg.rows();
            live.push(LiveSegment { segment: Arc::new(seg), entry: e.clone() });
        }
        report.segments = live.len();

        let mut wal_cfg = WalConfig::new(dir.join("wal"));
        wal_cfg.max_file_bytes = cfg.wal_file_bytes;
        wal_cfg.min_next_lsn = manifest.checkpoint_lsn + 1;
        let mut replay = Vec::new();
        let mut decode_err = None;
        let (wal, wal_report) =
            Wal::open(wal_cfg, manifest.checkpoint_lsn, |lsn, payload| match decode_events(payload) {
                Ok(events) => replay.push((lsn, events)),
                Err(e) => decode_err = Some(format!("wal record {lsn}: {e}")),
            })?;
        if let Some(e) = decode_err {
            return Err(EngineError::Corrupt(e));
        }
        report.wal = wal_report;
        let mut state = State { manifest, segments: live, ..Default::default() };
        for (lsn, events) in replay {
            report.replayed_batches += 1;
            report.replayed_events += events.len() as u64;
            let bytes = events.iter().map(Event::approx_bytes).sum();
            state.active_bytes += bytes;
            state.active_since.get_or_insert_with(Instant::now);
            state.active.push(MemBatch { lsn, events: Arc::new(events), bytes });
        }
        let background = cfg.background;
        let compaction_pool = if background && cfg.compaction_niceness > 0 {
            Some(low_priority_pool(cfg.compaction_niceness, cfg.background_thread_hook)?)
        } else {
            None
        };
        let next_segment_id = AtomicU64::new(state.manifest.next_segment_id);
        let inner = Arc::new(Inner {
            dir,
            cfg,
            wal,
            state: Mutex::new(state),
            room: Condvar::new(),
            write_order: Mutex::new(()),
            manifest_lock: Mutex::new(()),
            flush_lock: Mutex::new(()),
            hot_lane: Mutex::new(()),
            warm_lane: Mutex::new(None),
            lane_budget: Mutex::new(LaneBudget::default()),
            next_segment_id,
            shutdown: AtomicBool::new(false),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
            stats: EngineStats::default(),
            compaction_pool,
            _dir_lock: lock,
        });
        let mut workers = Vec::new();
        if background {
            // Flushes (and retention) on one thread, compaction on another: compacting a
            // million rows takes seconds, and the buffer must keep draining meanwhile.
            let loops: [(&str, BackgroundLoop); 2] = [("am-flush", flush_loop), ("am-compact", compaction_loop)];
            for (name, body) in loops {
                let shared = inner.clone();
                let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
                    body(&shared);
                    if let Some(hook) = shared.cfg.background_thread_hook {
                        hook();
                    }
                });
                match spawned {
                    Ok(h) => workers.push(h),
                    Err(e) => {
                        stop_workers(&inner, &mut workers);
                        return Err(EngineError::io(Path::new("(thread)"), e));
                    }
                }
            }
        }
        Ok((Engine { inner, workers: Mutex::new(workers) }, report))
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    pub fn wal(&self) -> &Wal {
        &self.inner.wal
    }

    /// Append a validated batch; returns once every event of it is durable (fsync'd WAL).
    pub fn append(&self, events: Vec<Event>) -> Result<u64, EngineError> {
        if events.is_empty() {
            return Ok(self.inner.wal.durable_lsn());
        }
        let inner = &*self.inner;
        if inner.shutdown.load(Ordering::Acquire) {
            return Err(EngineError::Closed);
        }
        let bytes: usize = events.iter().map(Event::approx_bytes).sum();
        let mut payload = Vec::with_capacity(bytes);
        encode_events(&events, &mut payload);
        self.wait_for_room(bytes)?;
        let n = events.len() as u64;
        let lsn = {
            let _order = inner.write_order.lock();
            let lsn = inner.wal.enqueue(&payload)?;
            let mut st = inner.state.lock();
            st.active_bytes += bytes;
            st.active_since.get_or_insert_with(Instant::now);
            st.active.push(MemBatch { lsn, events: Arc::new(events), bytes });
            lsn
        };
        inner.wal.wait_durable(lsn)?;
        inner.stats.events_appended.fetch_add(n, Ordering::Relaxed);
        inner.stats.batches_appended.fetch_add(1, Ordering::Relaxed);
        if inner.state.lock().active_bytes >= inner.cfg.flush_bytes {
            inner.wake.notify_one();
        }
        Ok(lsn)
    }

    /// Parse, validate and append a JSON body (array or NDJSON); all or nothing.
    pub fn append_json(&self, body: &str) -> Result<usize, EngineError> {
        let events = parse_body(body)?;
        let n = events.len();
        self.append(events)?;
        Ok(n)
    }

    fn wait_for_room(&self, bytes: usize) -> Result<(), EngineError> {
        let inner = &*self.inner;
        let limit = inner.cfg.max_buffered_bytes;
        let deadline = Instant::now() + inner.cfg.backpressure_wait;
        let mut st = inner.state.lock();
        loop {
            let buffered = st.active_bytes + st.frozen_bytes;
            // A batch larger than the whole limit still goes through once the buffer is empty.
            if buffered + bytes <= limit || buffered == 0 {
                return Ok(());
            }
            inner.wake.notify_one();
            if inner.room.wait_until(&mut st, deadline).timed_out() {
                inner.stats.backpressure_rejections.fetch_add(1, Ordering::Relaxed);
                return Err(EngineError::Backpressure { buffered, limit });
            }
        }
    }

    /// A consistent view of everything durable now.
    pub fn snapshot(&self) -> Snapshot {
        let durable = self.inner.wal.durable_lsn();
        let st = self.inner.state.lock();
        let memory = st
            .frozen
            .iter()
            .chain(st.active.iter())
            .take_while(|b| b.lsn <= durable)
            .map(|b| b.events.clone())
            .collect();
        Snapshot { segments: st.segments.clone(), memory }
    }

    /// Bytes and rows currently buffered in memory (not yet in segments).
    pub fn buffered(&self) -> (usize, usize) {
        let st = self.inner.state.lock();
        let rows = st.active.iter().chain(st.frozen.iter()).map(|b| b.events.len()).sum();
        (st.active_bytes + st.frozen_bytes, rows)
    }

    /// Flush all durable buffered rows into a hot segment now.
    pub fn flush(&self) -> Result<bool, EngineError> {
        flush_once(&self.inner)
    }

    /// Compact hot segments into a warm (zstd) one now, regardless of the trigger count; with
    /// no hot segment, merge warm segments of similar size if `compaction_trigger` of them
    /// exist (see [`SMALL_WARM_SEGMENT_ROWS`]).
    pub fn compact(&self) -> Result<bool, EngineError> {
        compact_once(&self.inner, 1)
    }

    /// Offline bulk load: writes already-validated `events` straight into one compacted (warm,
    /// zstd) segment, ordered as compaction orders them, bypassing the WAL and the in-memory
    /// buffer. Durable when it returns: the segment is fsync'd and the manifest that lists it
    /// is replaced atomically, so a crash leaves either all of the batch or none of it.
    /// Returns the rows written. Callers should pass large batches (up to
    /// `compaction_max_rows`); each call makes one segment.
    pub fn bulk_load(&self, mut events: Vec<Event>) -> Result<u64, EngineError> {
        if events.is_empty() {
            return Ok(0);
        }
        sort_for_compaction(&mut events);
        let inner = &self.inner;
        let live = write_new_segment(inner, &events, Tier::Warm)?;
        let rows = live.segment.rows();
        {
            let _m = inner.manifest_lock.lock();
            let mut manifest = inner.state.lock().manifest.clone();
            manifest.segments.push(live.entry.clone());
            manifest.next_segment_id = inner.next_segment_id.load(Ordering::Acquire);
            // On failure the new segment file stays: see `write_new_segment`.
            manifest.store(&inner.dir)?;
            let mut st = inner.state.lock();
            st.segments.push(live);
            st.manifest = manifest;
        }
        inner.stats.events_appended.fetch_add(rows, Ordering::Relaxed);
        // Freeing half a million events (each a handful of heap strings) is seconds of serial
        // allocator work; do it off the caller's path.
        let _ = std::thread::Builder::new().name("bulk-load-free".into()).spawn(move || drop(events));
        Ok(rows)
    }

    /// Delete every segment whose newest event is older than `cutoff_ns` (unix ns). Returns
    /// the rows deleted. Readers holding a snapshot keep reading the deleted files' mappings.
    pub fn expire_before(&self, cutoff_ns: i64) -> Result<u64, EngineError> {
        expire_once(&self.inner, cutoff_ns)
    }

    /// Stop the background threads, then flush what is buffered.
    pub fn close(&self) -> Result<(), EngineError> {
        stop_workers(&self.inner, &mut self.workers.lock());
        flush_once(&self.inner).map(|_| ())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        stop_workers(&self.inner, &mut self.workers.lock());
    }
}

/// As many threads as rayon's own pool, at nice value `nice`, for work that should wait while
/// appends and queries want the CPU (compaction). `hook` runs on each as it stops.
fn low_priority_pool(nice: i32, hook: Option<fn()>) -> Result<rayon::ThreadPool, EngineError> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(hook) = hook {
        builder = builder.exit_handler(move |_| hook());
    }
    builder
        .num_threads(rayon::current_num_threads())
        .thread_name(|i| format!("am-compact-{i}"))
        .start_handler(move |_| {
            if let Err(e) = priority::lower_current_thread(nice) {
                tracing::warn!(error = %e, "could not lower the compaction threads' priority");
            }
        })
        .build()
        .map_err(|e| EngineError::io(Path::new("(compaction threads)"), std::io::Error::other(e.to_string())))
}

/// Hot segments per `compaction_trigger` from which compaction stops yielding the CPU (see
/// [`EngineConfig::compaction_niceness`]): at the default trigger, 16 hot segments.
pub const URGENT_HOT_SEGMENTS_PER_TRIGGER: usize = 4;

/// The body of a background thread.
type BackgroundLoop = fn(&Arc<Inner>);

/// Whether the engine is closing: background work stops at its next step.
fn stopping(inner: &Inner) -> bool {
    inner.shutdown.load(Ordering::Acquire)
}

/// Tell the background threads to stop and wait for them (a running merge stops at its next
/// piece, leaving its inputs as they were).
fn stop_workers(inner: &Inner, workers: &mut Vec<JoinHandle<()>>) {
    inner.shutdown.store(true, Ordering::Release);
    inner.wake.notify_all();
    for h in workers.drain(..) {
        let _ = h.join();
    }
}

/// Sleep until woken or for 100 ms.
fn nap(inner: &Inner) {
    {
        let mut g = inner.wake_lock.lock();
        inner.wake.wait_for(&mut g, Duration::from_millis(100));
    }
    if let Some(hook) = inner.cfg.background_thread_hook {
        hook();
    }
}

fn flush_loop(inner: &Arc<Inner>) {
    while !inner.shutdown.load(Ordering::Acquire) {
        nap(inner);
        let due = {
            let st = inner.state.lock();
            st.active_bytes >= inner.cfg.flush_bytes
                || st.active_since.is_some_and(|t| t.elapsed() >= inner.cfg.flush_age)
                || st.active_bytes + st.frozen_bytes > inner.cfg.max_buffered_bytes / 2
        };
        if due {
            match flush_once(inner) {
                // (Wakes the compaction thread: a new hot segment may reach the trigger.)
                Ok(true) => {
                    inner.wake.notify_all();
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "flush failed; will retry");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        if let Some(max_age) = inner.cfg.retention {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64);
            let cutoff = now.saturating_sub(max_age.as_nanos().min(i64::MAX as u128) as i64);
            if let Err(e) = expire_once(inner, cutoff) {
                tracing::error!(error = %e, "retention failed; will retry");
            }
        }
    }
}

fn compaction_loop(inner: &Arc<Inner>) {
    // Appends seen, and since when they have not changed.
    let mut appended = inner.stats.events_appended.load(Ordering::Relaxed);
    let mut quiet_since = std::time::Instant::now();
    while !inner.shutdown.load(Ordering::Acquire) {
        nap(inner);
        let now = inner.stats.events_appended.load(Ordering::Relaxed);
        if now != appended {
            appended = now;
            quiet_since = std::time::Instant::now();
        }
        let trigger = match inner.cfg.idle_compaction {
            Some(idle) if quiet_since.elapsed() >= idle && idle_hot_rows(inner) >= IDLE_COMPACTION_MIN_ROWS => 1,
            _ => inner.cfg.compaction_trigger,
        };
        let urgent = compaction_is_urgent(hot_segments(inner), inner.cfg.compaction_trigger);
        let compacted = match &inner.compaction_pool {
            Some(pool) if !urgent => {
                let done = pool.install(|| compact_once(inner, trigger));
                // The pool's threads have no naps of their own: give them the per-thread upkeep
                // here (the server returns their free memory once it is idle).
                if let Some(hook) = inner.cfg.background_thread_hook {
                    pool.broadcast(|_| hook());
                }
                if let (Ok(true), Some(hook)) = (&done, inner.cfg.after_compaction_hook) {
                    pool.broadcast(|_| hook());
                }
                done
            }
            Some(_) => {
                let done = compact_once(inner, trigger);
                if matches!(done, Ok(true)) {
                    inner.stats.compactions_urgent.fetch_add(1, Ordering::Relaxed);
                }
                done
            }
            None => compact_once(inner, trigger),
        };
        if let Err(e) = compacted {
            tracing::error!(error = %e, "compaction failed; will retry");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn expire_once(inner: &Inner, cutoff_ns: i64) -> Result<u64, EngineError> {
    let _m = inner.manifest_lock.lock();
    let gone: HashSet<String> = {
        let st = inner.state.lock();
        st.segments.iter().filter(|s| s.segment.max_ts() < cutoff_ns).map(|s| s.entry.file.clone()).collect()
    };
    if gone.is_empty() {
        return Ok(0);
    }
    let mut manifest = inner.state.lock().manifest.clone();
    let rows: u64 = manifest.segments.iter().filter(|s| gone.contains(&s.file)).map(|s| s.rows).sum();
    manifest.segments.retain(|s| !gone.contains(&s.file));
    manifest.store(&inner.dir)?;
    {
        let mut st = inner.state.lock();
        st.segments.retain(|s| !gone.contains(&s.entry.file));
        st.manifest = manifest;
    }
    for f in &gone {
        let p = inner.dir.join("segments").join(f);
        if let Err(e) = std::fs::remove_file(&p) {
            tracing::warn!(file = %p.display(), error = %e, "could not remove expired segment");
        }
    }
    inner.stats.expired_segments.fetch_add(gone.len() as u64, Ordering::Relaxed);
    inner.stats.expired_rows.fetch_add(rows, Ordering::Relaxed);
    tracing::info!(segments = gone.len(), rows, cutoff_ns, "retention deleted expired segments");
    Ok(rows)
}

fn flush_once(inner: &Inner) -> Result<bool, EngineError> {
    let _f = inner.flush_lock.lock();
    let durable = inner.wal.durable_lsn();
    // Freeze the durable prefix of the active buffer.
    let (events, max_lsn) = {
        let mut st = inner.state.lock();
        let n = st.active.iter().take_while(|b| b.lsn <= durable).count();
        if n == 0 {
            return Ok(false);
        }
        let taken: Vec<MemBatch> = st.active.drain(..n).collect();
        let bytes: usize = taken.iter().map(|b| b.bytes).sum();
        st.active_bytes -= bytes;
        st.active_since = if st.active.is_empty() { None } else { Some(Instant::now()) };
        st.frozen_bytes += bytes;
        let max_lsn = taken.last().map_or(0, |b| b.lsn);
        let batches: Vec<Arc<Vec<Event>>> = taken.iter().map(|b| b.events.clone()).collect();
        st.frozen.extend(taken);
        (batches, max_lsn)
    };
    // Sort references, not copies: the batches stay shared with readers. In the compaction
    // order, so that compaction merges hot segments as they stream by (see `merge`).
    let mut events: Vec<&Event> = events.iter().flat_map(|b| b.iter()).collect();
    sort_for_compaction(&mut events);
    let result = (|| {
        let live = write_new_segment(inner, &events, Tier::Hot)?;
        let _m = inner.manifest_lock.lock();
        let mut manifest = inner.state.lock().manifest.clone();
        manifest.segments.push(live.entry.clone());
        manifest.checkpoint_lsn = max_lsn;
        manifest.next_segment_id = inner.next_segment_id.load(Ordering::Acquire);
        manifest.store(&inner.dir)?;
        // Installed under the manifest lock, so the next change starts from this manifest.
        let mut st = inner.state.lock();
        let frozen: Vec<MemBatch> = st.frozen.drain(..).collect();
        st.frozen_bytes -= frozen.iter().map(|b| b.bytes).sum::<usize>();
        st.segments.push(live);
        st.manifest = manifest;
        Ok::<_, EngineError>(())
    })();
    match result {
        Ok(()) => {
            inner.room.notify_all();
            inner.stats.flushes.fetch_add(1, Ordering::Relaxed);
            inner.wal.remove_obsolete(max_lsn)?;
            Ok(true)
        }
        Err(e) => {
            // Put the batches back at the front so nothing is lost; the flush will be retried.
            let mut st = inner.state.lock();
            let frozen: Vec<MemBatch> = st.frozen.drain(..).collect();
            let bytes: usize = frozen.iter().map(|b| b.bytes).sum();
            st.frozen_bytes -= bytes;
            st.active_bytes += bytes;
            st.active.splice(0..0, frozen);
            st.active_since.get_or_insert_with(Instant::now);
            // (A segment written before a failed manifest store stays: see
            // `MANIFEST_FAILURE_KEEPS_FILES`.)
            Err(e)
        }
    }
}

/// Warm segments are ordered by (tenant, agent_id, timestamp, trace_id): one agent's rows sit
/// together and, within them, in time order, so a bitmap lookup on tenant or agent touches few
/// blocks and a time bound prunes those blocks by their min/max. A trace's steps are close in
/// time, so its rows land in one or two blocks per agent.
///
/// Hot segments are flushed in this order too (a hot segment spans seconds, so its blocks
/// lose little time pruning), which lets compaction merge them as they stream by.
pub fn sort_for_compaction<E: std::borrow::Borrow<Event>>(events: &mut [E]) {
    // Rank the distinct (tenant, agent_id) pairs once, then sort by integers: comparing the
    // strings of every pair of rows dominated bulk import.
    let mut ranks: foldhash::HashMap<(&str, &str), u32> = foldhash::HashMap::default();
    for e in events.iter().map(std::borrow::Borrow::borrow) {
        ranks.entry((e.tenant.as_str(), e.agent_id.as_str())).or_insert(0);
    }
    let mut keys: Vec<(&str, &str)> = ranks.keys().copied().collect();
    keys.sort_unstable();
    for (i, k) in keys.iter().enumerate() {
        ranks.insert(*k, i as u32);
    }
    let mut order: Vec<(u32, i64, [u8; 16], u32)> = events
        .iter()
        .map(std::borrow::Borrow::borrow)
        .enumerate()
        .map(|(i, e)| {
            let r = ranks.get(&(e.tenant.as_str(), e.agent_id.as_str())).copied().unwrap_or(0);
            (r, e.timestamp_ns, e.trace_id, i as u32)
        })
        .collect();
    drop(ranks);
    rayon::slice::ParallelSliceMut::par_sort_unstable(&mut order[..]);
    let perm: Vec<usize> = order.into_iter().map(|(.., i)| i as usize).collect();
    apply_permutation(events, perm);
}

/// Reorder `items` so that position `k` receives the item that was at `perm[k]`.
fn apply_permutation<T>(items: &mut [T], mut perm: Vec<usize>) {
    // Follow each cycle once, swapping items into place.
    for start in 0..items.len() {
        let mut cur = start;
        while perm[cur] != start {
            let next = perm[cur];
            items.swap(cur, next);
            perm[cur] = cur;
            cur = next;
        }
        perm[cur] = cur;
    }
}

/// Write `events` (in the given order) as a new segment of `tier` under a fresh file number,
/// and open it. The caller lists it in the manifest (under the manifest lock).
///
/// When storing that manifest fails, the file stays: the store may fail after its rename (in
/// the directory's fsync), so the manifest on disk may already list the file, with its
/// checkpoint. Kept, the file is either listed (and the WAL records it holds are below the
/// checkpoint) or an orphan, which the next open deletes, while its rows stay in the buffer
/// and the WAL (or, for a compaction, in its input segments): stored exactly once either way.
fn write_new_segment<E: std::borrow::Borrow<Event>>(
    inner: &Inner,
    events: &[E],
    tier: Tier,
) -> Result<LiveSegment, EngineError> {
    let (file, path) = new_segment_file(inner);
    let opts = match tier {
        Tier::Hot => inner.cfg.hot,
        Tier::Warm => inner.cfg.cold,
    };
    let written = SegmentWriter::new(opts).write(&path, events).map(|_| ());
    open_written(file, &path, written, tier)
}

/// A fresh segment file number: its name and path.
fn new_segment_file(inner: &Inner) -> (String, PathBuf) {
    let id = inner.next_segment_id.fetch_add(1, Ordering::AcqRel);
    let file = segment_file(id);
    let path = inner.dir.join("segments").join(&file);
    (file, path)
}

/// Open a segment just written (`written` says whether that worked); on any error the file
/// is removed.
fn open_written(
    file: String,
    path: &Path,
    written: Result<(), segments::SegmentError>,
    tier: Tier,
) -> Result<LiveSegment, EngineError> {
    match written.and_then(|()| Segment::open(path)) {
        Ok(segment) => {
            let entry = SegmentEntry { file, rows: segment.rows(), tier };
            Ok(LiveSegment { segment: Arc::new(segment), entry })
        }
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e.into())
        }
    }
}

/// Merge `picked` into one warm segment: streamed when every input is in the compaction order
/// (see [`merge`]), calling `between_pieces` after each piece, else (hot segments flushed by
/// older versions, in time order) their rows sorted in memory if `sort_in_memory` allows it;
/// `None` when it does not, or when the engine is stopping (a merge stops between pieces
/// then, so that closing does not wait for one of millions of rows).
fn compact_segments(
    inner: &Inner,
    picked: &[LiveSegment],
    sort_in_memory: bool,
    between_pieces: &mut dyn FnMut() -> bool,
) -> Result<Option<LiveSegment>, EngineError> {
    let writer = SegmentWriter::new(inner.cfg.cold);
    let inputs: Vec<&Segment> = picked.iter().map(|s| &*s.segment).collect();
    let (file, path) = new_segment_file(inner);
    let piece_rows = inner.cfg.cold.block_rows.max(1) * MERGE_PIECE_BLOCKS;
    let merged = merge::merge_segments(&writer, &inputs, &path, piece_rows, between_pieces);
    match merged {
        Ok(Some(_)) => open_written(file, &path, Ok(()), Tier::Warm).map(Some),
        Ok(None) if !sort_in_memory || stopping(inner) => Ok(None),
        Ok(None) => {
            inner.stats.compactions_sorted_in_memory.fetch_add(1, Ordering::Relaxed);
            let mut events = Vec::new();
            for s in picked {
                events.extend(s.segment.read_all()?);
            }
            sort_for_compaction(&mut events);
            let written = writer.write(&path, &events).map(|_| ());
            drop(events);
            open_written(file, &path, written, Tier::Warm).map(Some)
        }
        Err(e) => open_written(file, &path, Err(e), Tier::Warm).map(Some),
    }
}

/// Estimated memory of a segment's rows once decoded for compaction.
fn compaction_bytes(seg: &Segment) -> u64 {
    seg.raw_bytes() + seg.rows() * std::mem::size_of::<Event>() as u64
}

/// Estimated memory a streaming merge holds for `seg`'s rows until the merged segment is
/// finished: the new segment's token index, first as (token, block) pairs and then encoded,
/// and its trace directory and value bitmaps. The rows themselves stream through a few
/// blocks at a time whatever the inputs' size. Measured: four segments of 500,000 generated
/// events (17 MB of token index each) merged into one took 250 MB more than at the merge's
/// start; this says 320 MB.
fn merge_bytes(seg: &Segment) -> u64 {
    let (_, text_index) = seg.index_raw_bytes();
    text_index.saturating_mul(4).saturating_add(seg.rows().saturating_mul(24))
}

/// Whether `hot` waiting segments are enough for compaction to stop yielding the CPU.
fn compaction_is_urgent(hot: usize, trigger: usize) -> bool {
    hot >= trigger.max(1).saturating_mul(URGENT_HOT_SEGMENTS_PER_TRIGGER)
}

/// Hot segments waiting for compaction.
fn hot_segments(inner: &Inner) -> usize {
    inner.state.lock().segments.iter().filter(|s| s.entry.tier == Tier::Hot).count()
}

/// Rows in hot segments, when nothing is buffered (else 0: the buffer's flush comes first).
fn idle_hot_rows(inner: &Inner) -> u64 {
    let st = inner.state.lock();
    if st.active_bytes + st.frozen_bytes > 0 {
        return 0;
    }
    st.segments.iter().filter(|s| s.entry.tier == Tier::Hot).map(|s| s.segment.rows()).sum()
}

/// Warm segments this small are merged with any others as small, whatever their sizes'
/// ratio (see [`pick_warm_merge`]).
pub const SMALL_WARM_SEGMENT_ROWS: u64 = 1 << 16;

/// A warm segment as [`pick_warm_merge`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WarmCandidate {
    rows: u64,
    /// Estimated memory of merging it ([`merge_bytes`]).
    bytes: u64,
    min_ts: i64,
    max_ts: i64,
}

/// What one merge of warm segments may take and make.
#[derive(Debug, Clone, Copy)]
struct MergeLimits {
    fan_in: usize,
    max_rows: u64,
    max_bytes: u64,
    /// Largest time span (newest event minus oldest, in ns) of a merged segment.
    max_span_ns: i64,
    /// A merged segment whose newest event is older than this (ns) may span up to
    /// `settled_span_ns` instead.
    settled_before_ns: i64,
    settled_span_ns: i64,
    /// The newest event stored: a group whose newest event is more than its span older is
    /// closed ([`pick_closing_merge`]).
    newest_ns: i64,
}

impl MergeLimits {
    /// The limits for warm segments when the newest event stored is at `newest_ns`.
    fn of(cfg: &EngineConfig, newest_ns: i64) -> Self {
        let ns = |d: Duration| d.as_nanos().min(i64::MAX as u128) as i64;
        let settled_age = cfg.settled_merge_span.max(cfg.merge_span);
        let quarter = cfg.retention.map_or(Duration::MAX, |r| r / 4);
        MergeLimits {
            fan_in: cfg.compaction_trigger,
            max_rows: cfg.compaction_max_rows,
            max_bytes: cfg.compaction_max_bytes,
            max_span_ns: ns(cfg.merge_span.min(quarter)),
            settled_before_ns: newest_ns.saturating_sub(ns(settled_age)),
            settled_span_ns: ns(settled_age.min(quarter)),
            newest_ns,
        }
    }

    /// Largest span of a merged segment whose newest event is at `newest_ns`.
    fn span_for(&self, newest_ns: i64) -> i64 {
        if newest_ns < self.settled_before_ns {
            self.settled_span_ns.max(self.max_span_ns)
        } else {
            self.max_span_ns
        }
    }
}

/// Size-tiered merging of warm segments, given them in manifest order: the indexes
/// (ascending) of `fan_in` segments to merge into one, or `None`. Without it, every
/// compaction of hot segments leaves one more warm segment, however small: a trickle of
/// 1,000 events/s made a warm segment of 12,000 rows every 12 s, and each open segment
/// costs memory and a memory map, and every query pays per segment.
///
/// From each candidate, smallest first, the next larger ones that fit with it are gathered
/// until `fan_in` are. A group is merged when its largest segment is at most twice its
/// smallest, or all are below
/// [`SMALL_WARM_SEGMENT_ROWS`] (so segments of mixed small sizes never stay unmerged), its
/// total stays within `max_rows` and `max_bytes`, and its events span at most
/// `max_span_ns`, or `settled_span_ns` when its newest event is before `settled_before_ns`:
/// a merged segment is deleted by retention only once its newest event expires, and a
/// query's time bounds prune whole segments only as far as their spans allow (recent data
/// is read by the narrowest ranges). Segments above half of `max_rows` are left alone. Each row is rewritten about
/// once per factor of `fan_in` in its segment's growth, as in any size-tiered LSM.
fn pick_warm_merge(segs: &[WarmCandidate], limits: &MergeLimits) -> Option<Vec<usize>> {
    let fan_in = limits.fan_in.max(2);
    let mut order: Vec<usize> = (0..segs.len()).filter(|&i| segs[i].rows <= limits.max_rows / 2).collect();
    order.sort_by_key(|&i| (segs[i].rows, i));
    // From each segment, smallest first, gather the next larger ones that fit with it.
    for (a, &first) in order.iter().enumerate() {
        let smallest = segs[first].rows;
        let mut group = vec![first];
        let (mut rows, mut bytes) = (smallest, segs[first].bytes);
        let (mut oldest, mut newest) = (segs[first].min_ts, segs[first].max_ts);
        for &next in &order[a + 1..] {
            let s = &segs[next];
            let similar = s.rows <= smallest.max(1).saturating_mul(2) || s.rows < SMALL_WARM_SEGMENT_ROWS;
            if !similar || rows.saturating_add(s.rows) > limits.max_rows {
                break; // Only larger segments follow.
            }
            let (lo, hi) = (oldest.min(s.min_ts), newest.max(s.max_ts));
            let spanned = i128::from(hi) - i128::from(lo) <= i128::from(limits.span_for(hi));
            if !spanned || bytes.saturating_add(s.bytes) > limits.max_bytes {
                continue;
            }
            group.push(next);
            (rows, bytes, oldest, newest) = (rows + s.rows, bytes + s.bytes, lo, hi);
            if group.len() == fan_in {
                group.sort_unstable();
                return Some(group);
            }
        }
    }
    None
}

/// Closing merges, for when [`pick_warm_merge`] finds no group of similar sizes: the indexes
/// (ascending) of the most warm segments (at least 2) whose events fit in one span
/// ([`MergeLimits::span_for`]) from the oldest of them, once that span has closed: it ended
/// more than another span before the newest event stored (so that events arriving a little
/// late still find it open). Within `max_rows` and `max_bytes`; or `None`.
///
/// Size tiers alone leave the segments of each span as they were when it closed: slow traffic,
/// flushed every 20 minutes, left three segments an hour, as four exceed the hour. Merged
/// once closed, an hour or a settled day of them becomes one segment in one rewrite, and no
/// later flush adds to it (a span still open would be merged again at every flush). Segments
/// above half of `max_rows` are left alone, as by size.
fn pick_closing_merge(segs: &[WarmCandidate], limits: &MergeLimits) -> Option<Vec<usize>> {
    let mut order: Vec<usize> = (0..segs.len()).filter(|&i| segs[i].rows <= limits.max_rows / 2).collect();
    order.sort_by_key(|&i| (segs[i].min_ts, segs[i].max_ts, i));
    let mut best: Option<(Vec<usize>, u64)> = None;
    // From each segment, oldest first, gather every later one that keeps the group closed and
    // within its span and bounds (a subset of such a group is such a group too).
    for (a, &first) in order.iter().enumerate() {
        let mut group = vec![first];
        let (mut rows, mut bytes) = (segs[first].rows, segs[first].bytes);
        let (oldest, mut newest) = (segs[first].min_ts, segs[first].max_ts);
        for &next in &order[a + 1..] {
            let s = &segs[next];
            let hi = newest.max(s.max_ts);
            let span = limits.span_for(hi);
            let closed = i128::from(oldest) + 2 * i128::from(span) < i128::from(limits.newest_ns);
            let within = i128::from(hi) - i128::from(oldest.min(s.min_ts)) <= i128::from(span);
            if closed
                && within
                && rows.saturating_add(s.rows) <= limits.max_rows
                && bytes.saturating_add(s.bytes) <= limits.max_bytes
            {
                group.push(next);
                (rows, bytes, newest) = (rows + s.rows, bytes + s.bytes, hi);
            }
        }
        let better = match &best {
            None => true,
            Some((g, r)) => group.len() > g.len() || (group.len() == g.len() && rows < *r),
        };
        if group.len() >= 2 && better {
            best = Some((group, rows));
        }
    }
    best.map(|(mut g, _)| {
        g.sort_unstable();
        g
    })
}

/// Which warm segments exist: their count and the sum of their [`Segment::uid`]s (a new
/// segment's uid exceeds every earlier one, so any change to the set, segments added,
/// removed or both, changes one of the two), and the newest event stored, which decides
/// which of them are settled ([`MergeLimits::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WarmSet {
    count: usize,
    uid_sum: u64,
    newest_ns: i64,
}

impl WarmSet {
    fn of(warm: &[LiveSegment], newest_ns: i64) -> Self {
        let uid_sum = warm.iter().fold(0u64, |a, s| a.wrapping_add(s.segment.uid()));
        WarmSet { count: warm.len(), uid_sum, newest_ns }
    }
}

/// Estimated memory held by a running warm merge and by a hot compaction. A merge of large
/// warm segments takes seconds (3 million rows about 10 s on 2 cores), and the hot segments
/// flushed meanwhile must not wait for it: they are compacted between the merge's pieces, on
/// the same thread (a thread of its own would keep its malloc arena, and on 2 cores would
/// only share them). Each picks its inputs within what the other holds of
/// `compaction_max_bytes` (a hot compaction takes at least one segment whatever is left), so
/// that together they stay within it.
#[derive(Debug, Default)]
struct LaneBudget {
    /// The running hot compaction's inputs, decoded ([`compaction_bytes`]).
    hot: u64,
    /// The running warm merge's estimate ([`merge_bytes`]).
    warm: u64,
}

/// A lane's share of [`LaneBudget`], given back when dropped.
struct LaneShare<'a> {
    inner: &'a Inner,
    warm: bool,
}

impl Drop for LaneShare<'_> {
    fn drop(&mut self) {
        let mut budget = self.inner.lane_budget.lock();
        if self.warm {
            budget.warm = 0;
        } else {
            budget.hot = 0;
        }
    }
}

/// Compact hot segments now if at least `trigger` of them wait, else merge warm ones if a
/// merge is due.
fn compact_once(inner: &Inner, trigger: usize) -> Result<bool, EngineError> {
    if compact_hot(inner, trigger)? {
        return Ok(true);
    }
    merge_warm(inner)
}

/// The oldest hot segments, if at least `trigger` of them wait, into one warm segment, within
/// the rows and memory a compaction may take.
fn compact_hot(inner: &Inner, trigger: usize) -> Result<bool, EngineError> {
    let _lane = inner.hot_lane.lock();
    let (picked, _share) = {
        let mut budget = inner.lane_budget.lock();
        let available = inner.cfg.compaction_max_bytes.saturating_sub(budget.warm);
        let st = inner.state.lock();
        let hot: Vec<&LiveSegment> = st.segments.iter().filter(|s| s.entry.tier == Tier::Hot).collect();
        if hot.len() < trigger.max(1) {
            return Ok(false);
        }
        let sizes: Vec<(u64, u64)> = hot.iter().map(|s| (s.segment.rows(), compaction_bytes(&s.segment))).collect();
        let take = hot_compaction_len(&sizes, inner.cfg.compaction_max_rows, available);
        let picked: Vec<LiveSegment> = hot.into_iter().take(take).cloned().collect();
        budget.hot = sizes[..take].iter().map(|&(_, b)| b).sum();
        (picked, LaneShare { inner, warm: false })
    };
    match compact_segments(inner, &picked, true, &mut || !stopping(inner))? {
        Some(live) => install_compacted(inner, &picked, live, false),
        None => Ok(false),
    }
}

/// How many of the oldest hot segments (their rows and decoded bytes, oldest first) one
/// compaction takes: as many as stay within `max_rows` and `max_bytes` together, and at least
/// one, so that a segment larger than the budget is still compacted.
fn hot_compaction_len(sizes: &[(u64, u64)], max_rows: u64, max_bytes: u64) -> usize {
    let (mut rows, mut bytes) = (0u64, 0u64);
    let within = sizes
        .iter()
        .take_while(|&&(r, b)| {
            rows = rows.saturating_add(r);
            bytes = bytes.saturating_add(b);
            rows <= max_rows && bytes <= max_bytes
        })
        .count();
    within.max(1).min(sizes.len())
}

/// Merge warm segments of similar size ([`pick_warm_merge`]) or those of a closed span
/// ([`pick_closing_merge`]), within what a running hot compaction left of the memory budget;
/// between the merge's pieces, compact the hot segments flushed meanwhile.
fn merge_warm(inner: &Inner) -> Result<bool, EngineError> {
    let mut fruitless = inner.warm_lane.lock();
    let (picked, set, available, _share) = {
        let mut budget = inner.lane_budget.lock();
        let whole_budget = budget.hot == 0;
        let available = inner.cfg.compaction_max_bytes.saturating_sub(budget.hot);
        // The search runs outside the state lock (appends take it), and only when the warm
        // segments changed since the last one that found nothing.
        let (warm, newest) = {
            let st = inner.state.lock();
            let warm: Vec<LiveSegment> = st.segments.iter().filter(|s| s.entry.tier == Tier::Warm).cloned().collect();
            (warm, st.segments.iter().map(|s| s.segment.max_ts()).max().unwrap_or(i64::MIN))
        };
        let set = WarmSet::of(&warm, newest);
        if *fruitless == Some(set) {
            return Ok(false);
        }
        let candidates: Vec<WarmCandidate> = warm
            .iter()
            .map(|s| WarmCandidate {
                rows: s.segment.rows(),
                bytes: merge_bytes(&s.segment),
                min_ts: s.segment.min_ts(),
                max_ts: s.segment.max_ts(),
            })
            .collect();
        let limits = MergeLimits { max_bytes: available, ..MergeLimits::of(&inner.cfg, newest) };
        let Some(picked) = pick_warm_merge(&candidates, &limits).or_else(|| pick_closing_merge(&candidates, &limits))
        else {
            // With part of the budget taken by a hot compaction, a later search may find one.
            if whole_budget {
                *fruitless = Some(set);
            }
            return Ok(false);
        };
        budget.warm = picked.iter().map(|&i| candidates[i].bytes).sum();
        let picked: Vec<LiveSegment> = picked.into_iter().map(|i| warm[i].clone()).collect();
        (picked, set, available, LaneShare { inner, warm: true })
    };
    if let Some(hook) = inner.cfg.warm_merge_hook {
        hook();
    }
    // Warm segments are picked by what a streaming merge holds, which may be far less than
    // their rows sorted in memory; should one turn out not to be in the compaction order
    // (none is written so), the rows are sorted in memory only within the memory the hot
    // lane left when the merge was picked.
    let sort_in_memory = picked.iter().map(|s| compaction_bytes(&s.segment)).sum::<u64>() <= available;
    let mut hot_between_pieces = || {
        if stopping(inner) {
            return false;
        }
        if let Err(e) = compact_hot(inner, inner.cfg.compaction_trigger) {
            tracing::error!(error = %e, "compaction during a merge of warm segments failed; will retry");
        }
        true
    };
    match compact_segments(inner, &picked, sort_in_memory, &mut hot_between_pieces)? {
        Some(live) => install_compacted(inner, &picked, live, true),
        None if stopping(inner) => Ok(false),
        None => {
            tracing::warn!(
                segments = picked.len(),
                "warm segments out of the compaction order are too large to merge in memory; left as they are"
            );
            *fruitless = Some(set);
            Ok(false)
        }
    }
}

/// Replace the segments `picked` by `live`, their compaction, in the manifest and the live
/// set, and delete their files.
fn install_compacted(
    inner: &Inner,
    picked: &[LiveSegment],
    live: LiveSegment,
    warm_merge: bool,
) -> Result<bool, EngineError> {
    let gone: HashSet<String> = picked.iter().map(|s| s.entry.file.clone()).collect();
    {
        let _m = inner.manifest_lock.lock();
        let mut manifest = {
            let st = inner.state.lock();
            // Retention may have deleted an input meanwhile: then this result would bring
            // its rows back. Drop it; the next round compacts what is left.
            if st.segments.iter().filter(|s| gone.contains(&s.entry.file)).count() != gone.len() {
                drop(st);
                let _ = std::fs::remove_file(live.segment.path());
                return Ok(false);
            }
            st.manifest.clone()
        };
        manifest.segments.retain(|s| !gone.contains(&s.file));
        manifest.segments.push(live.entry.clone());
        manifest.next_segment_id = inner.next_segment_id.load(Ordering::Acquire);
        // On failure the new segment file stays: see `write_new_segment`.
        manifest.store(&inner.dir)?;
        let mut st = inner.state.lock();
        st.segments.retain(|s| !gone.contains(&s.entry.file));
        st.segments.push(live);
        st.manifest = manifest;
    }
    for f in gone {
        let p = inner.dir.join("segments").join(f);
        if let Err(e) = std::fs::remove_file(&p) {
            tracing::warn!(file = %p.display(), error = %e, "could not remove compacted segment");
        }
    }
    inner.stats.compactions.fetch_add(1, Ordering::Relaxed);
    if warm_merge {
        inner.stats.compactions_warm.fetch_add(1, Ordering::Relaxed);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Warm segments of these sizes, each holding one instant.
    fn candidates(rows: &[u64]) -> Vec<WarmCandidate> {
        rows.iter().map(|&r| WarmCandidate { rows: r, bytes: r * 100, min_ts: 0, max_ts: 0 }).collect()
    }

    fn limits(fan_in: usize) -> MergeLimits {
        MergeLimits {
            fan_in,
            max_rows: 4_000_000,
            max_bytes: u64::MAX,
            max_span_ns: i64::MAX,
            settled_before_ns: i64::MIN,
            settled_span_ns: i64::MAX,
            newest_ns: 0,
        }
    }

    #[test]
    fn warm_merges_take_the_smallest_similar_segments() {
        let k = SMALL_WARM_SEGMENT_ROWS;
        let pick = |rows: &[u64], fan_in| pick_warm_merge(&candidates(rows), &limits(fan_in));
        assert_eq!(pick(&[800, 800, 800], 4), None, "too few");
        assert_eq!(pick(&[900, 800, 5_000, 800, 800], 4), Some(vec![0, 1, 3, 4]), "the smallest");
        assert_eq!(pick(&[900, 800, 50_000, 800], 4), Some(vec![0, 1, 2, 3]), "small ones, any mix");
        assert_eq!(pick(&[4 * k, k, k, k, k / 4, 2 * k], 4), Some(vec![1, 2, 3, 5]), "twice the smallest at most");
        assert_eq!(pick(&[k, 3 * k, 9 * k, 27 * k], 4), None, "no similar group");
        assert_eq!(pick(&[2_100_000; 4], 4), None, "above half the largest segment");
        assert_eq!(pick(&[1_000_000; 5], 4), Some(vec![0, 1, 2, 3]), "up to the largest segment");
        assert_eq!(pick(&[0, 0, 7], 1), Some(vec![0, 1]), "a fan-in of 1 acts as 2");
        let bounded = MergeLimits { max_bytes: 399_999, ..limits(4) };
        assert_eq!(pick_warm_merge(&candidates(&[1000; 4]), &bounded), None, "the byte budget holds");
    }

    #[test]
    fn warm_merges_keep_within_the_time_span() {
        let hour = 3_600_000_000_000i64;
        // Five equal segments of ten minutes each; the fourth two hours after the others.
        let mut segs = candidates(&[1000; 5]);
        for (i, start) in [0, 0, 10 * 60 * 1_000_000_000, 2 * hour, 0].into_iter().enumerate() {
            segs[i].min_ts = start;
            segs[i].max_ts = start + hour / 6;
        }
        let within = MergeLimits { max_span_ns: hour, ..limits(4) };
        assert_eq!(pick_warm_merge(&segs, &within), Some(vec![0, 1, 2, 4]), "the late one left out");
        assert_eq!(pick_warm_merge(&segs[..4], &within), None, "no four within the hour");
        assert_eq!(pick_warm_merge(&segs[..4], &limits(4)), Some(vec![0, 1, 2, 3]), "unbounded");
        // Retention bounds the span to a quarter of it.
        let cfg = EngineConfig { retention: Some(Duration::from_secs(2 * 3600)), ..EngineConfig::default() };
        assert_eq!(MergeLimits::of(&cfg, 0).max_span_ns, hour / 2);
        assert_eq!(MergeLimits::of(&cfg, 0).span_for(-100 * hour), hour / 2, "settled or not");
        assert_eq!(MergeLimits::of(&EngineConfig::default(), 0).max_span_ns, hour);
    }

    /// Segments whose events are all a day older than the newest event stored may merge into
    /// a segment spanning up to a day; newer ones only up to the hour.
    #[test]
    fn settled_warm_segments_merge_across_a_day() {
        let hour = 3_600_000_000_000i64;
        let now = 100 * 24 * hour;
        let lim = MergeLimits::of(&EngineConfig::default(), now);
        assert_eq!((lim.span_for(now), lim.span_for(now - 25 * hour)), (hour, 24 * hour));
        assert_eq!(lim.span_for(now - 24 * hour), hour, "settled strictly before a day");
        // Four segments of an hour each, four hours apart: settled two days ago, or recent.
        let hourly = |end: i64| -> Vec<WarmCandidate> {
            (0..4i64)
                .map(|i| WarmCandidate {
                    rows: 1000,
                    bytes: 1,
                    min_ts: end - 16 * hour + 4 * i * hour,
                    max_ts: end - 15 * hour + 4 * i * hour,
                })
                .collect()
        };
        assert_eq!(pick_warm_merge(&hourly(now - 48 * hour), &lim), Some(vec![0, 1, 2, 3]), "settled");
        assert_eq!(pick_warm_merge(&hourly(now), &lim), None, "recent");
        // Settled is judged by the group's newest event: a group of 13 hours ending 30 hours
        // before the newest event stored merges, one ending 20 hours before does not.
        assert!(pick_warm_merge(&hourly(now - 27 * hour), &lim).is_some());
        assert!(pick_warm_merge(&hourly(now - 17 * hour), &lim).is_none());
        // Never less than `merge_span`, and within a quarter of the retention.
        let short = EngineConfig { settled_merge_span: Duration::from_secs(60), ..EngineConfig::default() };
        assert_eq!(MergeLimits::of(&short, now).span_for(i64::MIN), hour);
        let kept = EngineConfig { retention: Some(Duration::from_secs(8 * 3600)), ..EngineConfig::default() };
        assert_eq!(MergeLimits::of(&kept, now).span_for(i64::MIN), 2 * hour);
    }

    /// Segments of a closed hour merge into one whatever their sizes; an open hour's wait.
    #[test]
    fn closed_spans_merge_into_one_segment() {
        let (min, hour) = (60_000_000_000i64, 3_600_000_000_000i64);
        let seg = |rows: u64, from_min: i64, to_min: i64| WarmCandidate {
            rows,
            bytes: rows,
            min_ts: from_min * min,
            max_ts: to_min * min,
        };
        let lim = |newest_ns| MergeLimits { max_span_ns: hour, settled_span_ns: hour, newest_ns, ..limits(4) };
        let hourly = [seg(10, 0, 19), seg(5_000, 20, 39), seg(70_000, 40, 59)];
        assert_eq!(pick_closing_merge(&hourly, &lim(2 * hour + 1)), Some(vec![0, 1, 2]), "closed");
        assert_eq!(pick_closing_merge(&hourly, &lim(2 * hour)), None, "open until an hour after the hour");
        assert_eq!(pick_warm_merge(&hourly, &lim(3 * hour)), None, "not by size");
        // Across an hour's edge: the most segments that fit in an hour, then the fewest rows.
        let edge = [seg(30, 0, 20), seg(20, 40, 60), seg(10, 70, 90)];
        assert_eq!(pick_closing_merge(&edge, &lim(5 * hour)), Some(vec![1, 2]));
        assert_eq!(pick_closing_merge(&edge, &lim(2 * hour + 35 * min)), Some(vec![0, 1]), "the later not closed");
        // Never above half the largest segment, nor past the byte budget.
        let big = [seg(2_100_000, 0, 10), seg(10, 20, 30)];
        assert_eq!(pick_closing_merge(&big, &lim(5 * hour)), None);
        let budget = MergeLimits { max_bytes: 5_010, ..lim(5 * hour) };
        assert_eq!(pick_closing_merge(&hourly, &budget), Some(vec![0, 1]));
    }

    proptest! {
        /// A closing merge obeys every rule, and is found whenever some group would qualify
        /// under one span.
        #[test]
        fn closing_merge_picks_are_sound_and_complete(
            segs in proptest::collection::vec((0u64..300_000, 0i64..10_000, 0i64..3_000), 0..8),
            max_span in 0i64..4_000,
            settled_before in 0i64..12_000,
            settled_span in 0i64..8_000,
            newest in 0i64..16_000,
            max_bytes in 1_000_000u64..60_000_000,
        ) {
            let segs: Vec<WarmCandidate> = segs
                .iter()
                .map(|&(r, t, len)| WarmCandidate { rows: r, bytes: r * 100 + 7, min_ts: t, max_ts: t + len })
                .collect();
            let lim = MergeLimits {
                fan_in: 4,
                max_rows: 1_000_000,
                max_bytes,
                max_span_ns: max_span,
                settled_before_ns: settled_before,
                settled_span_ns: settled_span,
                newest_ns: newest,
            };
            let ok = |set: &[usize]| {
                let oldest = set.iter().map(|&i| segs[i].min_ts).min().unwrap_or(0);
                let hi = set.iter().map(|&i| segs[i].max_ts).max().unwrap_or(0);
                let span = if hi < settled_before { settled_span.max(max_span) } else { max_span };
                set.len() >= 2
                    && set.iter().all(|&i| segs[i].rows <= 500_000)
                    && set.iter().map(|&i| segs[i].rows).sum::<u64>() <= 1_000_000
                    && set.iter().map(|&i| segs[i].bytes).sum::<u64>() <= max_bytes
                    && hi - oldest <= span
                    && oldest + 2 * span < newest
            };
            let exists = (0u32..1 << segs.len()).any(|m| ok(&(0..segs.len()).filter(|i| m & (1 << i) != 0).collect::<Vec<_>>()));
            match pick_closing_merge(&segs, &lim) {
                Some(set) => {
                    prop_assert!(set.windows(2).all(|w| w[0] < w[1]), "ascending, distinct: {:?}", set);
                    prop_assert!(ok(&set), "{:?} of {:?}", set, segs);
                }
                // Complete where one span applies to every group (a settled pair may need a
                // wider closed window than the group it came from).
                None => prop_assert!(!exists || settled_span > max_span, "a group of {:?} qualifies", segs),
            }
        }

        /// What is picked obeys every rule; without a span limit, something is picked whenever
        /// some group would qualify (byte estimates growing with rows, as they do).
        #[test]
        fn warm_merge_picks_are_sound_and_complete(
            rows in proptest::collection::vec(0u64..300_000, 0..8),
            starts in proptest::collection::vec(0i64..10_000, 8),
            fan_in in 2usize..5,
            max_rows in 100_000u64..1_000_000,
            max_bytes in 1_000_000u64..100_000_000,
            max_span in prop_oneof![Just(i64::MAX), 0i64..12_000],
            settled_before in 0i64..12_000,
            settled_span in prop_oneof![Just(i64::MAX), 0i64..12_000],
        ) {
            let segs: Vec<WarmCandidate> = rows
                .iter()
                .zip(&starts)
                .map(|(&r, &t)| WarmCandidate { rows: r, bytes: r * 100 + 7, min_ts: t, max_ts: t + 500 })
                .collect();
            let lim = MergeLimits {
                fan_in,
                max_rows,
                max_bytes,
                max_span_ns: max_span,
                settled_before_ns: settled_before,
                settled_span_ns: settled_span,
                newest_ns: 20_000,
            };
            let ok = |set: &[usize]| {
                let lo = set.iter().map(|&i| rows[i]).min().unwrap_or(0);
                let hi = set.iter().map(|&i| rows[i]).max().unwrap_or(0);
                let oldest = set.iter().map(|&i| segs[i].min_ts).min().unwrap_or(0);
                let newest = set.iter().map(|&i| segs[i].max_ts).max().unwrap_or(0);
                set.iter().all(|&i| rows[i] <= max_rows / 2)
                    && (hi <= lo.max(1) * 2 || hi < SMALL_WARM_SEGMENT_ROWS)
                    && set.iter().map(|&i| rows[i]).sum::<u64>() <= max_rows
                    && set.iter().map(|&i| segs[i].bytes).sum::<u64>() <= max_bytes
                    && newest - oldest <= if newest < settled_before { settled_span.max(max_span) } else { max_span }
            };
            // Every set of `fan_in` segments, by bit mask.
            let exists = (0u32..1 << rows.len())
                .filter(|m| m.count_ones() as usize == fan_in)
                .any(|m| ok(&(0..rows.len()).filter(|i| m & (1 << i) != 0).collect::<Vec<_>>()));
            match pick_warm_merge(&segs, &lim) {
                Some(set) => {
                    prop_assert_eq!(set.len(), fan_in);
                    prop_assert!(set.windows(2).all(|w| w[0] < w[1]), "ascending, distinct: {:?}", set);
                    prop_assert!(ok(&set), "{:?} of {:?}", set, rows);
                }
                None => prop_assert!(
                    !exists || max_span != i64::MAX,
                    "a group of {:?} qualifies",
                    rows
                ),
            }
        }
    }

    #[test]
    fn hot_compactions_take_what_the_budget_left_and_at_least_one_segment() {
        let sizes = [(100, 1_000), (100, 1_000), (100, 1_000), (100, 1_000)];
        assert_eq!(hot_compaction_len(&sizes, 1_000, 10_000), 4);
        assert_eq!(hot_compaction_len(&sizes, 1_000, 2_500), 2, "a warm merge holds the rest");
        assert_eq!(hot_compaction_len(&sizes, 250, 10_000), 2, "rows bound it too");
        assert_eq!(hot_compaction_len(&sizes, 1_000, 0), 1, "one segment whatever the budget");
        assert_eq!(hot_compaction_len(&[(5_000, 9_000)], 10, 10), 1);
        assert_eq!(hot_compaction_len(&[], 10, 10), 0);
        assert_eq!(hot_compaction_len(&[(u64::MAX, u64::MAX), (1, 1)], u64::MAX, u64::MAX), 2);
    }

    #[test]
    fn compaction_stops_yielding_at_four_times_the_trigger() {
        assert!(!compaction_is_urgent(15, 4));
        assert!(compaction_is_urgent(16, 4));
        assert!(!compaction_is_urgent(3, 1));
        assert!(compaction_is_urgent(4, 1));
        assert!(compaction_is_urgent(4, 0), "a trigger of 0 acts as 1, as compact_once does");
        assert!(!compaction_is_urgent(usize::MAX - 1, usize::MAX), "no overflow");
    }

    proptest! {
        #[test]
        fn sort_for_compaction_is_the_compaction_order(
            rows in proptest::collection::vec((0u8..3, 0u8..4, 0i64..20, 0u8..3), 0..200),
        ) {
            let mut events: Vec<Event> = rows
                .iter()
                .enumerate()
                .map(|(i, (t, a, ts, tr))| Event {
                    tenant: format!("t{t}"),
                    agent_id: format!("agent-{a}"),
                    timestamp_ns: *ts,
                    trace_id: [*tr; 16],
                    span_id: (i as u64).to_le_bytes(),
                    kind: "thought".into(),
                    status: "ok".into(),
                    ..Default::default()
                })
                .collect();
            let mut want = events.clone();
            want.sort_by(merge::compaction_order);
            sort_for_compaction(&mut events);
            let key = |e: &Event| (e.tenant.clone(), e.agent_id.clone(), e.timestamp_ns, e.trace_id);
            prop_assert_eq!(events.iter().map(key).collect::<Vec<_>>(), want.iter().map(key).collect::<Vec<_>>());
            // A permutation: every row is still there once.
            let mut spans: Vec<_> = events.iter().map(|e| e.span_id).collect();
            spans.sort_unstable();
            spans.dedup();
            prop_assert_eq!(spans.len(), rows.len());
        }
    }
}

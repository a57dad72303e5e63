//! The ActiveMirrorOS storage engine.
//!
//! Owns the write path (validated batch -> WAL group commit -> in-memory buffer), background
//! flushing of the buffer into hot segments, compaction of small hot segments into larger zstd
//! ones (module `compaction`), recovery on open (manifest + WAL replay after the checkpoint), and consistent
//! read snapshots (segments + durable buffered rows) while writes go on.
//!
//! Ordering invariant: WAL enqueue and memtable insert happen under one lock, so the memtable
//! holds batches in LSN order; a flush takes a prefix of durable batches, and its highest LSN
//! is then a valid checkpoint (every lower LSN is in this or an earlier segment).

pub mod archive;
mod compaction;
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

pub use archive::{ArchivedFile, Archiver, ARCHIVE_DIR};
use compaction::{compact_once, compaction_loop, LaneBudget, WarmSet};
pub use compaction::{IDLE_COMPACTION_MIN_ROWS, SMALL_WARM_SEGMENT_ROWS, URGENT_HOT_SEGMENTS_PER_TRIGGER};
pub use manifest::{ArchiveEntry, Manifest, SegmentEntry, Tier};
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
    #[error("could not move segment {segment} to the cold tier: {reason}")]
    Archive { segment: String, reason: String },
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
    /// segment's indexes, which grow with it (`compaction::merge_bytes`); hot segments are also bounded
    /// by their decoded column bytes plus the in-memory row overhead, for the in-memory sort
    /// that inputs flushed by older versions still need.
    pub compaction_max_bytes: u64,
    /// Run the flush and compaction threads (tests may drive them by hand).
    pub background: bool,
    /// Delete data older than this (by event timestamp). Whole segments are dropped once
    /// their newest event is older than the cutoff, so a query may still see up to one
    /// segment's worth of older rows. `None` keeps everything.
    pub retention: Option<Duration>,
    /// Move warm segments whose newest event is older than this (by wall clock) to the cold
    /// tier (see [`archive`]), written by `archiver`. `None`, or no archiver, keeps them warm.
    pub archive_after: Option<Duration>,
    /// Writes the cold tier's files (the query crate provides a Parquet one).
    pub archiver: Option<Arc<dyn Archiver>>,
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
            archive_after: None,
            archiver: None,
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
    /// Files of the cold tier.
    archives: Vec<ArchivedFile>,
    manifest: Manifest,
}

/// A consistent read view: segments plus durable buffered batches, none counted twice.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub segments: Vec<LiveSegment>,
    pub memory: Vec<Arc<Vec<Event>>>,
    /// Files of the cold tier (rows in none of the above).
    pub archives: Vec<ArchivedFile>,
}

impl Snapshot {
    pub fn rows(&self) -> u64 {
        self.segments.iter().map(|s| s.segment.rows()).sum::<u64>()
            + self.archives.iter().map(|a| a.entry.rows).sum::<u64>()
            + self.memory.iter().map(|m| m.len() as u64).sum::<u64>()
    }

    /// Every row of the segments and the buffer, not the cold tier's (test and export helper;
    /// queries stream blocks instead).
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
    /// Segments and rows moved to the cold tier.
    pub archived_segments: AtomicU64,
    pub archived_rows: AtomicU64,
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
        report.removed_orphans += remove_unlisted(&seg_dir, &listed)?;
        for e in &manifest.segments {
            let seg = Segment::open(&seg_dir.join(&e.file))?;
            report.segment_rows += seg.rows();
            live.push(LiveSegment { segment: Arc::new(seg), entry: e.clone() });
        }
        report.segments = live.len();
        report.removed_orphans += archive::open_archive_dir(&dir, &manifest.archives)?;
        let archives = manifest.archives.iter().map(|a| ArchivedFile::open(&dir, a)).collect::<Result<Vec<_>, _>>()?;

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
        let mut state = State { manifest, segments: live, archives, ..Default::default() };
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
        Snapshot { segments: st.segments.clone(), memory, archives: st.archives.clone() }
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
    pub fn bulk_load(&self, events: Vec<Event>) -> Result<u64, EngineError> {
        if events.is_empty() {
            return Ok(0);
        }
        let inner = &self.inner;
        // The rows are sorted by reference (moving whole events cost a third of a second per
        // 500,000), while the text dictionary, which does not depend on their order, is
        // trained on another core.
        let mut sorted: Vec<&Event> = events.iter().collect();
        let writer = segment_writer(inner, Tier::Warm);
        let ((), dict) = rayon::join(|| sort_for_compaction(&mut sorted), || writer.dictionary_for(&events));
        let live = write_new_segment_with(inner, &sorted, Tier::Warm, dict)?;
        drop(sorted);
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

    /// Move every warm segment whose newest event is older than `cutoff_ns` (unix ns) to the
    /// cold tier now (needs an archiver). Returns the rows moved.
    pub fn archive_before(&self, cutoff_ns: i64) -> Result<u64, EngineError> {
        archive::archive_once(&self.inner, cutoff_ns)
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

/// Delete the files of `dir` whose names are not in `listed` (leftovers of a write the
/// manifest never took). Returns how many were deleted.
fn remove_unlisted(dir: &Path, listed: &HashSet<&str>) -> Result<usize, EngineError> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))? {
        let entry = entry.map_err(|e| EngineError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !listed.contains(name.as_str()) {
            tracing::info!(dir = %dir.display(), file = %name, "removing a file not in the manifest");
            std::fs::remove_file(entry.path()).map_err(|e| EngineError::io(&entry.path(), e))?;
            removed += 1;
        }
    }
    Ok(removed)
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
            let cutoff = wall_clock_cutoff(max_age);
            if let Err(e) = expire_once(inner, cutoff) {
                tracing::error!(error = %e, "retention failed; will retry");
            }
        }
    }
}

/// Unix nanoseconds `age` before now.
fn wall_clock_cutoff(age: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64);
    now.saturating_sub(age.as_nanos().min(i64::MAX as u128) as i64)
}

fn expire_once(inner: &Inner, cutoff_ns: i64) -> Result<u64, EngineError> {
    let _m = inner.manifest_lock.lock();
    let (gone, gone_archives): (HashSet<String>, HashSet<String>) = {
        let st = inner.state.lock();
        (
            st.segments.iter().filter(|s| s.segment.max_ts() < cutoff_ns).map(|s| s.entry.file.clone()).collect(),
            st.archives.iter().filter(|a| a.entry.max_ts < cutoff_ns).map(|a| a.entry.file.clone()).collect(),
        )
    };
    if gone.is_empty() && gone_archives.is_empty() {
        return Ok(0);
    }
    let mut manifest = inner.state.lock().manifest.clone();
    let rows: u64 = manifest.segments.iter().filter(|s| gone.contains(&s.file)).map(|s| s.rows).sum::<u64>()
        + manifest.archives.iter().filter(|a| gone_archives.contains(&a.file)).map(|a| a.rows).sum::<u64>();
    manifest.segments.retain(|s| !gone.contains(&s.file));
    manifest.archives.retain(|a| !gone_archives.contains(&a.file));
    manifest.store(&inner.dir)?;
    {
        let mut st = inner.state.lock();
        st.segments.retain(|s| !gone.contains(&s.entry.file));
        st.archives.retain(|a| !gone_archives.contains(&a.entry.file));
        st.manifest = manifest;
    }
    let files = gone
        .iter()
        .map(|f| inner.dir.join("segments").join(f))
        .chain(gone_archives.iter().map(|f| inner.dir.join(ARCHIVE_DIR).join(f)));
    for p in files {
        if let Err(e) = std::fs::remove_file(&p) {
            tracing::warn!(file = %p.display(), error = %e, "could not remove expired data file");
        }
    }
    inner.stats.expired_segments.fetch_add((gone.len() + gone_archives.len()) as u64, Ordering::Relaxed);
    inner.stats.expired_rows.fetch_add(rows, Ordering::Relaxed);
    tracing::info!(
        segments = gone.len(),
        archive_files = gone_archives.len(),
        rows,
        cutoff_ns,
        "retention deleted expired segments"
    );
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
    // One lookup per row: each row takes its pair's number in order of first appearance,
    // replaced by the pair's rank once the distinct pairs are sorted.
    let mut firsts: foldhash::HashMap<(&str, &str), u32> = foldhash::HashMap::default();
    let mut order: Vec<(u32, i64, [u8; 16], u32)> = events
        .iter()
        .map(std::borrow::Borrow::borrow)
        .enumerate()
        .map(|(i, e)| {
            let next = firsts.len() as u32;
            let first = *firsts.entry((e.tenant.as_str(), e.agent_id.as_str())).or_insert(next);
            (first, e.timestamp_ns, e.trace_id, i as u32)
        })
        .collect();
    let mut pairs: Vec<((&str, &str), u32)> = firsts.into_iter().collect();
    pairs.sort_unstable();
    let mut rank_of_first = vec![0u32; pairs.len()];
    for (rank, (_, first)) in pairs.iter().enumerate() {
        rank_of_first[*first as usize] = rank as u32;
    }
    for o in &mut order {
        o.0 = rank_of_first[o.0 as usize];
    }
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
    let dict = segment_writer(inner, tier).dictionary_for(events);
    write_new_segment_with(inner, events, tier, dict)
}

/// [`write_new_segment`] with the text dictionary already trained on `events`
/// ([`SegmentWriter::dictionary_for`]).
fn write_new_segment_with<E: std::borrow::Borrow<Event>>(
    inner: &Inner,
    events: &[E],
    tier: Tier,
    dict: Option<segments::TextDictionary>,
) -> Result<LiveSegment, EngineError> {
    let (file, path) = new_segment_file(inner);
    let written = segment_writer(inner, tier).write_with_dictionary(&path, events, dict).map(|_| ());
    open_written(file, &path, written, tier)
}

/// The writer of segments of `tier`, with the engine's options for it.
fn segment_writer(inner: &Inner, tier: Tier) -> SegmentWriter {
    SegmentWriter::new(match tier {
        Tier::Hot => inner.cfg.hot,
        Tier::Warm => inner.cfg.cold,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sort_for_compaction_is_the_compaction_order(
            rows in proptest::collection::vec((0u8..3, 0u8..4, 0i64..20, 0u8..3), 0..200),
        ) {
            let mut events: Vec<Event> = rows
                .iter()
                .enumerate()
                .map(|(i, (t, a, ts, tr))| Event {
                    tenant: format!("t{t}").into(),
                    agent_id: format!("agent-{a}").into(),
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

//! The log: group commit across concurrent writers, size-based rotation, recovery that
//! truncates a torn or corrupt tail, and deletion of files a checkpoint has made obsolete.
//!
//! Concurrency: writers copy their framed record into a shared pending buffer under a mutex
//! (`enqueue`), then wait (`wait_durable`). The first waiter that finds no flush in progress
//! becomes the leader: it takes the whole pending buffer, writes it and issues one fsync for
//! everyone, then wakes the group. A failed write or fsync poisons the log for good.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::fs::{StdFs, WalFile, WalFs};
use crate::record::{decode_record, encode_record, DecodeError, MAX_PAYLOAD};

const FILE_SUFFIX: &str = ".wal";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("wal is poisoned by an earlier failed write or fsync ({0}); no further writes are accepted")]
    Poisoned(Arc<str>),
    #[error("record payload of {0} bytes exceeds the maximum of {MAX_PAYLOAD}")]
    PayloadTooLarge(usize),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.to_path_buf(), source }
}

/// Settings of a log.
#[derive(Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    /// Rotate to a new file once the active one reaches this size.
    pub max_file_bytes: u64,
    /// The first LSN to hand out if the log is empty (keeps LSNs monotonic across checkpoints).
    pub min_next_lsn: u64,
    pub fs: Arc<dyn WalFs>,
}

impl std::fmt::Debug for WalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalConfig")
            .field("dir", &self.dir)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("min_next_lsn", &self.min_next_lsn)
            .finish()
    }
}

impl WalConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalConfig { dir: dir.into(), max_file_bytes: 64 << 20, min_next_lsn: 1, fs: Arc::new(StdFs) }
    }
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub files: usize,
    pub records: u64,
    pub last_lsn: Option<u64>,
    /// Bytes cut from the tail (torn write or corruption), with the file and the reason.
    pub dropped_bytes: u64,
    pub dropped_reason: Option<String>,
    /// Whole files after a corrupt one that were removed (only a prefix is ever replayed).
    pub dropped_files: usize,
}

struct Pending {
    buf: Vec<u8>,
    last_lsn: u64,
    next_lsn: u64,
    durable_lsn: u64,
    flushing: bool,
    poisoned: Option<Arc<str>>,
}

struct ActiveFile {
    file: Box<dyn WalFile>,
    size: u64,
    /// First LSN of each file on disk, oldest first; the last is the active file.
    files: Vec<(u64, PathBuf)>,
    spare: Vec<u8>,
}

/// Upper bounds, in seconds, of the fsync latency histogram's buckets.
pub const FSYNC_BUCKETS_S: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];
/// Upper bounds, in records per fsync, of the group-size histogram's buckets.
pub const GROUP_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// Counters of the log's durability work. Buckets are cumulative (count of observations at or
/// below each bound); the total count is `fsyncs`.
#[derive(Debug, Clone, Default)]
pub struct WalStats {
    pub fsyncs: u64,
    pub fsync_seconds_sum: f64,
    pub fsync_buckets: Vec<u64>,
    /// Commit groups written (each with its one fsync, unless the write failed).
    pub groups: u64,
    pub group_records_sum: u64,
    pub group_buckets: Vec<u64>,
}

/// A group-committing write-ahead log.
pub struct Wal {
    cfg: WalConfig,
    pending: Mutex<Pending>,
    flushed: Condvar,
    active: Mutex<ActiveFile>,
    fsyncs: std::sync::atomic::AtomicU64,
    fsync_nanos: std::sync::atomic::AtomicU64,
    fsync_buckets: [std::sync::atomic::AtomicU64; FSYNC_BUCKETS_S.len()],
    group_buckets: [std::sync::atomic::AtomicU64; GROUP_BUCKETS.len()],
    group_records: std::sync::atomic::AtomicU64,
    groups: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("cfg", &self.cfg).finish()
    }
}

fn file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{FILE_SUFFIX}")
}

fn parse_file_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(FILE_SUFFIX)?.parse().ok()
}

impl Wal {
    /// Open (or create) the log in `cfg.dir`, replaying every valid record with `lsn > after`
    /// through `on_record` in LSN order. A torn or corrupt tail is truncated and reported.
    pub fn open(
        cfg: WalConfig,
        after: u64,
        mut on_record: impl FnMut(u64, &[u8]),
    ) -> Result<(Wal, RecoveryReport), WalError> {
        let fs = cfg.fs.clone();
        fs.create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let mut files: Vec<(u64, PathBuf)> = fs
            .list(&cfg.dir)
            .map_err(io_err(&cfg.dir))?
            .into_iter()
            .filter_map(|p| parse_file_name(&p).map(|lsn| (lsn, p)))
            .collect();
        files.sort();

        let mut report = RecoveryReport { files: files.len(), ..Default::default() };
        let mut last_lsn: Option<u64> = None;
        let mut keep = files.len();
        let mut active_size = 0u64;
        for (i, (first_lsn, path)) in files.iter().enumerate() {
            let bytes = fs.read(path).map_err(io_err(path))?;
            let mut pos = 0usize;
            let mut stop: Option<String> = None;
            while pos < bytes.len() {
                match decode_record(&bytes[pos..]) {
                    Ok((rec, used)) => {
                        let expected = last_lsn.map_or(*first_lsn, |l| l + 1);
                        if rec.lsn != expected {
                            stop = Some(format!(
                                "record at offset {pos} has lsn {} where {expected} was expected",
                                rec.lsn
                            ));
                            break;
                        }
                        if rec.lsn > after {
                            on_record(rec.lsn, rec.payload);
                        }
                        report.records += 1;
                        last_lsn = Some(rec.lsn);
                        pos += used;
                    }
                    Err(e) => {
                        stop = Some(describe(&e, pos));
                        break;
                    }
                }
            }
            if let Some(reason) = stop {
                let dropped = bytes.len() - pos;
                tracing::warn!(file = %path.display(), offset = pos, dropped, %reason, "wal recovery truncating tail");
                fs.truncate(path, pos as u64).map_err(io_err(path))?;
                report.dropped_bytes += dropped as u64;
                report.dropped_reason = Some(format!("{}: {reason}", path.display()));
                keep = i + 1;
                active_size = pos as u64;
                break;
            }
            active_size = bytes.len() as u64;
        }
        for (_, path) in files.drain(keep..) {
            let len = fs.read(&path).map(|b| b.len() as u64).unwrap_or(0);
            report.dropped_bytes += len;
            report.dropped_files += 1;
            fs.remove(&path).map_err(io_err(&path))?;
        }
        report.last_lsn = last_lsn;
        let next_lsn = last_lsn.map_or(cfg.min_next_lsn, |l| l + 1).max(cfg.min_next_lsn);

        // An empty last file is fine to keep appending to; otherwise start fresh if none.
        let file = match files.last() {
            Some((first, path)) if last_lsn.is_none_or(|l| l + 1 >= *first) && next_lsn >= *first => {
                fs.open_append(path).map_err(io_err(path))?
            }
            _ => {
                let path = cfg.dir.join(file_name(next_lsn));
                let f = fs.create(&path).map_err(io_err(&path))?;
                fs.sync_dir(&cfg.dir).map_err(io_err(&cfg.dir))?;
                files.push((next_lsn, path));
                active_size = 0;
                f
            }
        };
        let durable = next_lsn - 1;
        let wal = Wal {
            pending: Mutex::new(Pending {
                buf: Vec::new(),
                last_lsn: durable,
                next_lsn,
                durable_lsn: durable,
                flushing: false,
                poisoned: None,
            }),
            flushed: Condvar::new(),
            active: Mutex::new(ActiveFile { file, size: active_size, files, spare: Vec::new() }),
            cfg,
            fsyncs: Default::default(),
            fsync_nanos: Default::default(),
            fsync_buckets: Default::default(),
            group_buckets: Default::default(),
            group_records: Default::default(),
            groups: Default::default(),
        };
        Ok((wal, report))
    }

    /// Frame `payload` into the pending group and return its LSN. Not yet durable.
    pub fn enqueue(&self, payload: &[u8]) -> Result<u64, WalError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(WalError::PayloadTooLarge(payload.len()));
        }
        let mut p = self.pending.lock();
        if let Some(why) = &p.poisoned {
            return Err(WalError::Poisoned(why.clone()));
        }
        let lsn = p.next_lsn;
        p.next_lsn += 1;
        encode_record(&mut p.buf, lsn, payload);
        p.last_lsn = lsn;
        Ok(lsn)
    }

    /// Block until the record `lsn` is covered by an fsync; may lead the group's flush.
    pub fn wait_durable(&self, lsn: u64) -> Result<(), WalError> {
        let mut p = self.pending.lock();
        loop {
            if p.durable_lsn >= lsn {
                return Ok(());
            }
            if let Some(why) = &p.poisoned {
                return Err(WalError::Poisoned(why.clone()));
            }
            if p.flushing {
                self.flushed.wait(&mut p);
                continue;
            }
            // Become the leader for everything pending now.
            p.flushing = true;
            let upto = p.last_lsn;
            let group = upto.saturating_sub(p.durable_lsn);
            let mut act = self.active.lock();
            let mut buf = std::mem::take(&mut act.spare);
            std::mem::swap(&mut buf, &mut p.buf);
            drop(p);
            let result = self.write_group(&mut act, &buf, upto);
            self.record_group(group);
            buf.clear();
            act.spare = buf;
            drop(act);
            p = self.pending.lock();
            p.flushing = false;
            match result {
                Ok(()) => p.durable_lsn = p.durable_lsn.max(upto),
                Err(e) => {
                    tracing::error!(error = %e, "wal write failed; poisoning the log");
                    p.poisoned = Some(Arc::from(e.to_string()));
                }
            }
            self.flushed.notify_all();
        }
    }

    /// Enqueue and wait: returns the LSN once it is durable.
    pub fn append(&self, payload: &[u8]) -> Result<u64, WalError> {
        let lsn = self.enqueue(payload)?;
        self.wait_durable(lsn)?;
        Ok(lsn)
    }

    fn write_group(&self, act: &mut ActiveFile, buf: &[u8], upto: u64) -> Result<(), WalError> {
        let path = act.files.last().map(|(_, p)| p.clone()).unwrap_or_default();
        if !buf.is_empty() {
            act.file.write_all(buf).map_err(io_err(&path))?;
            let t = Instant::now();
            act.file.sync().map_err(io_err(&path))?;
            self.record_fsync(t.elapsed());
            act.size += buf.len() as u64;
        }
        if act.size >= self.cfg.max_file_bytes {
            self.start_file(act, upto + 1)?;
        }
        Ok(())
    }

    /// Start a new log file for the records from `first_lsn` on (created, its directory entry
    /// made durable) and make it the active one.
    fn start_file(&self, act: &mut ActiveFile, first_lsn: u64) -> Result<(), WalError> {
        let new_path = self.cfg.dir.join(file_name(first_lsn));
        let f = self.cfg.fs.create(&new_path).map_err(io_err(&new_path))?;
        self.cfg.fs.sync_dir(&self.cfg.dir).map_err(io_err(&self.cfg.dir))?;
        act.file = f;
        act.size = 0;
        act.files.push((first_lsn, new_path));
        Ok(())
    }

    fn record_fsync(&self, d: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.fsyncs.fetch_add(1, Relaxed);
        self.fsync_nanos.fetch_add(d.as_nanos() as u64, Relaxed);
        let secs = d.as_secs_f64();
        for (b, bound) in self.fsync_buckets.iter().zip(FSYNC_BUCKETS_S) {
            if secs <= bound {
                b.fetch_add(1, Relaxed);
            }
        }
    }

    fn record_group(&self, records: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        if records == 0 {
            return;
        }
        self.group_records.fetch_add(records, Relaxed);
        self.groups.fetch_add(1, Relaxed);
        for (b, bound) in self.group_buckets.iter().zip(GROUP_BUCKETS) {
            if records <= bound {
                b.fetch_add(1, Relaxed);
            }
        }
    }

    /// Fsync latency and group-size histograms (cumulative buckets, Prometheus style).
    pub fn stats(&self) -> WalStats {
        use std::sync::atomic::Ordering::Relaxed;
        let fsyncs = self.fsyncs.load(Relaxed);
        WalStats {
            fsyncs,
            fsync_seconds_sum: Duration::from_nanos(self.fsync_nanos.load(Relaxed)).as_secs_f64(),
            fsync_buckets: self.fsync_buckets.iter().map(|b| b.load(Relaxed)).collect(),
            groups: self.groups.load(Relaxed),
            group_records_sum: self.group_records.load(Relaxed),
            group_buckets: self.group_buckets.iter().map(|b| b.load(Relaxed)).collect(),
        }
    }

    /// Number of fsyncs issued and their total duration (for metrics and group-size figures).
    pub fn fsync_stats(&self) -> (u64, Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.fsyncs.load(Relaxed), Duration::from_nanos(self.fsync_nanos.load(Relaxed)))
    }

    /// Highest LSN known durable.
    pub fn durable_lsn(&self) -> u64 {
        self.pending.lock().durable_lsn
    }

    /// The error that poisoned the log, if any.
    pub fn poisoned(&self) -> Option<Arc<str>> {
        self.pending.lock().poisoned.clone()
    }

    /// Delete whole files whose records all have `lsn <= checkpoint`. The active file stays.
    pub fn remove_obsolete(&self, checkpoint: u64) -> Result<usize, WalError> {
        // When the checkpoint covers every record written so far, start a fresh active file so
        // the covered one can be deleted too (otherwise it lingers until size rotation).
        // Lock order as in `wait_durable`: pending, then active.
        {
            let p = self.pending.lock();
            if !p.flushing && p.buf.is_empty() && p.last_lsn <= checkpoint && p.durable_lsn >= p.last_lsn {
                let mut act = self.active.lock();
                if act.size > 0 {
                    self.start_file(&mut act, p.last_lsn + 1)?;
                }
            }
        }
        let mut act = self.active.lock();
        let mut removed = 0;
        while act.files.len() > 1 && act.files[1].0 <= checkpoint + 1 {
            let (_, path) = act.files.remove(0);
            self.cfg.fs.remove(&path).map_err(io_err(&path))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Number of log files currently on disk.
    pub fn file_count(&self) -> usize {
        self.active.lock().files.len()
    }
}

fn describe(e: &DecodeError, pos: usize) -> String {
    match e {
        DecodeError::Truncated { .. } => format!("torn record at offset {pos}: {e}"),
        _ => format!("corrupt record at offset {pos}: {e}"),
    }
}

//! Crash and corruption on purpose: truncation at every byte offset and random bit flips must
//! recover exactly a prefix of the acknowledged records; a failed fsync poisons the log.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use wal::{StdFs, Wal, WalConfig, WalError, WalFile, WalFs};

fn payload(i: u64) -> Vec<u8> {
    format!("event-{i}-{}", "x".repeat((i % 13) as usize)).into_bytes()
}

fn write_log(dir: &Path, n: u64, max_file: u64) {
    let mut cfg = WalConfig::new(dir);
    cfg.max_file_bytes = max_file;
    let (wal, _) = Wal::open(cfg, 0, |_, _| {}).expect("open");
    for i in 0..n {
        wal.append(&payload(i)).expect("append");
    }
}

fn replay(dir: &Path) -> (Vec<(u64, Vec<u8>)>, wal::RecoveryReport) {
    let mut got = Vec::new();
    let (_, report) = Wal::open(WalConfig::new(dir), 0, |lsn, p| got.push((lsn, p.to_vec()))).expect("reopen");
    (got, report)
}

fn assert_prefix(got: &[(u64, Vec<u8>)]) {
    for (i, (lsn, p)) in got.iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 1);
        assert_eq!(p, &payload(i as u64));
    }
}

fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir).expect("dir").map(|e| e.expect("entry").path()).collect();
    v.sort();
    v
}

#[test]
fn truncation_at_every_offset_recovers_a_prefix() {
    let src = tempfile::tempdir().expect("tmp");
    write_log(src.path(), 12, u64::MAX);
    let files = wal_files(src.path());
    assert_eq!(files.len(), 1);
    let full = std::fs::read(&files[0]).expect("read");
    // Record boundaries, to know how many records a cut keeps.
    let mut boundaries = vec![0usize];
    let mut pos = 0;
    while pos < full.len() {
        let (_, used) = wal::decode_record(&full[pos..]).expect("valid");
        pos += used;
        boundaries.push(pos);
    }
    for cut in 0..=full.len() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join(files[0].file_name().expect("name")), &full[..cut]).expect("w");
        let (got, report) = replay(dir.path());
        let expect = boundaries.iter().filter(|b| **b <= cut).count() - 1;
        assert_eq!(got.len(), expect, "cut at {cut}");
        assert_prefix(&got);
        let kept = boundaries[expect];
        assert_eq!(report.dropped_bytes as usize, cut - kept, "cut at {cut}");
        // Truncated in place: the next open sees a clean log, and appends continue the sequence.
        let (wal, report2) = Wal::open(WalConfig::new(dir.path()), 0, |_, _| {}).expect("open");
        assert_eq!(report2.dropped_bytes, 0);
        assert_eq!(wal.append(b"next").expect("append"), expect as u64 + 1);
    }
}

#[test]
fn truncation_across_rotated_files() {
    let src = tempfile::tempdir().expect("tmp");
    write_log(src.path(), 40, 200);
    let files = wal_files(src.path());
    assert!(files.len() > 3, "rotation happened: {}", files.len());
    let (got, report) = replay(src.path());
    assert_eq!(got.len(), 40);
    assert_eq!(report.dropped_bytes, 0);
    assert_prefix(&got);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_bit_flips_recover_a_prefix(flips in proptest::collection::vec(any::<u64>(), 1..4), rotate in any::<bool>()) {
        let dir = tempfile::tempdir().expect("tmp");
        write_log(dir.path(), 30, if rotate { 300 } else { u64::MAX });
        let files = wal_files(dir.path());
        let mut all: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("r")).collect();
        let total: usize = all.iter().map(|b| b.len()).sum();
        // Distinct bits: two flips of one bit cancel out and leave the log intact.
        let mut bits: Vec<usize> = flips.iter().map(|f| (*f as usize) % (total * 8)).collect();
        bits.sort_unstable();
        bits.dedup();
        for mut bit in bits {
            for b in all.iter_mut() {
                if bit < b.len() * 8 { b[bit / 8] ^= 1 << (bit % 8); break; }
                bit -= b.len() * 8;
            }
        }
        for (f, b) in files.iter().zip(&all) { std::fs::write(f, b).expect("w"); }
        let (got, _) = replay(dir.path());
        prop_assert!(got.len() < 30);
        assert_prefix(&got);
    }
}

/// A file system whose fsync fails once `fail` is set.
struct FaultyFs {
    inner: StdFs,
    fail: Arc<AtomicBool>,
}

struct FaultyFile {
    inner: Box<dyn WalFile>,
    fail: Arc<AtomicBool>,
}

impl WalFile for FaultyFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure (EIO)"));
        }
        self.inner.sync()
    }
}

impl WalFs for FaultyFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        Ok(Box::new(FaultyFile { inner: self.inner.create(path)?, fail: self.fail.clone() }))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        Ok(Box::new(FaultyFile { inner: self.inner.open_append(path)?, fail: self.fail.clone() }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.inner.truncate(path, len)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
}

#[test]
fn fsync_failure_poisons_the_log() {
    let dir = tempfile::tempdir().expect("tmp");
    let fail = Arc::new(AtomicBool::new(false));
    let mut cfg = WalConfig::new(dir.path());
    cfg.fs = Arc::new(FaultyFs { inner: StdFs, fail: fail.clone() });
    let (wal, _) = Wal::open(cfg, 0, |_, _| {}).expect("open");
    assert_eq!(wal.append(b"one").expect("first write"), 1);
    fail.store(true, Ordering::SeqCst);
    let err = wal.append(b"two").expect_err("fsync failure must surface");
    assert!(err.to_string().contains("injected fsync failure"), "{err}");
    // Even after the disk "recovers", the log stays poisoned: no silent retry.
    fail.store(false, Ordering::SeqCst);
    match wal.append(b"three") {
        Err(WalError::Poisoned(why)) => assert!(why.contains("injected")),
        other => panic!("expected poisoned, got {other:?}"),
    }
    assert!(wal.poisoned().is_some());
    assert_eq!(wal.durable_lsn(), 1);
}

#[test]
fn concurrent_writers_share_fsyncs_and_all_records_survive() {
    let dir = tempfile::tempdir().expect("tmp");
    let (wal, _) = Wal::open(WalConfig::new(dir.path()), 0, |_, _| {}).expect("open");
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    wal.append(format!("{t}:{i}").as_bytes()).expect("append");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("join");
    }
    let (fsyncs, _) = wal.fsync_stats();
    assert!(fsyncs < 1600, "group commit must batch fsyncs: {fsyncs} for 1600 records");
    let stats = wal.stats();
    assert_eq!(stats.fsyncs, fsyncs);
    assert_eq!(stats.group_records_sum, 1600, "every record belongs to exactly one group");
    // Cumulative buckets: non-decreasing, and the last fsync bucket (1 s) holds (nearly) all.
    assert!(stats.fsync_buckets.windows(2).all(|w| w[0] <= w[1]));
    assert!(stats.group_buckets.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(stats.groups, fsyncs, "one fsync per commit group");
    assert!(*stats.group_buckets.last().expect("buckets") <= stats.groups);
    drop(wal);
    let mut got = Vec::new();
    let (_, report) = Wal::open(WalConfig::new(dir.path()), 0, |lsn, p| got.push((lsn, p.to_vec()))).expect("reopen");
    assert_eq!(report.records, 1600);
    let mut seen: Vec<String> = got.iter().map(|(_, p)| String::from_utf8(p.clone()).expect("utf8")).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 1600);
}

#[test]
fn checkpoint_removes_only_obsolete_files_and_replay_skips_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = WalConfig::new(dir.path());
    cfg.max_file_bytes = 100;
    let (wal, _) = Wal::open(cfg, 0, |_, _| {}).expect("open");
    for i in 0..20 {
        wal.append(&payload(i)).expect("append");
    }
    let before = wal.file_count();
    let removed = wal.remove_obsolete(10).expect("remove");
    assert!(removed > 0 && removed < before);
    drop(wal);
    let mut got = Vec::new();
    let mut cfg = WalConfig::new(dir.path());
    cfg.min_next_lsn = 11;
    let (_, _) = Wal::open(cfg, 10, |lsn, _| got.push(lsn)).expect("reopen");
    assert_eq!(got, (11..=20).collect::<Vec<_>>());
}

#[test]
fn a_fully_covering_checkpoint_leaves_no_log_bytes_behind() {
    let dir = tempfile::tempdir().expect("tmp");
    let (wal, _) = Wal::open(WalConfig::new(dir.path()), 0, |_, _| {}).expect("open");
    let mut last = 0;
    for i in 0..20 {
        last = wal.append(&payload(i)).expect("append");
    }
    wal.remove_obsolete(last).expect("remove");
    let bytes: u64 = wal_files(dir.path()).iter().map(|p| std::fs::metadata(p).expect("meta").len()).sum();
    assert_eq!(bytes, 0, "the covered active file is replaced by an empty one");
    assert_eq!(wal.file_count(), 1);
    let next = wal.append(b"after").expect("append after checkpoint");
    assert_eq!(next, last + 1, "LSNs continue across the switch");
    drop(wal);
    let mut got = Vec::new();
    let mut cfg = WalConfig::new(dir.path());
    cfg.min_next_lsn = last + 1;
    let (_, _) = Wal::open(cfg, last, |lsn, p| got.push((lsn, p.to_vec()))).expect("reopen");
    assert_eq!(got, vec![(last + 1, b"after".to_vec())]);
}

//! The cold tier: which segments move, what the manifest and the snapshot say afterwards,
//! reopening, interrupted archives, a failing archiver, and retention of archive files.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engine::{Archiver, Engine, EngineConfig, EngineError, Manifest, Tier, ARCHIVE_DIR};
use segments::{Event, Segment};

/// Writes each row's span id (as a decimal u64) on a line: enough to check what was archived.
#[derive(Debug, Default)]
struct SpanIdArchiver {
    fail: AtomicBool,
}

impl Archiver for SpanIdArchiver {
    fn extension(&self) -> &'static str {
        "ids"
    }

    fn archive(&self, segment: &Segment, path: &Path, _stop: &dyn Fn() -> bool) -> Result<bool, String> {
        if self.fail.load(Ordering::Relaxed) {
            // Leave a partial file behind, as a crash or a full disk would.
            std::fs::write(path, b"partial").map_err(|e| e.to_string())?;
            return Err("disk full".into());
        }
        let rows = segment.read_all().map_err(|e| e.to_string())?;
        let mut f = std::fs::File::create(path).map_err(|e| e.to_string())?;
        for e in rows {
            writeln!(f, "{}", u64::from_le_bytes(e.span_id)).map_err(|e| e.to_string())?;
        }
        f.sync_all().map_err(|e| e.to_string())?;
        Ok(true)
    }
}

/// Writes part of a file, says it started, then waits until told to stop.
#[derive(Debug)]
struct StoppableArchiver {
    started: std::sync::mpsc::SyncSender<()>,
    saw_stop: AtomicBool,
}

impl Archiver for StoppableArchiver {
    fn extension(&self) -> &'static str {
        "ids"
    }

    fn archive(&self, _segment: &Segment, path: &Path, stop: &dyn Fn() -> bool) -> Result<bool, String> {
        std::fs::write(path, b"0\n").map_err(|e| e.to_string())?;
        let _ = self.started.try_send(());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if stop() {
                self.saw_stop.store(true, Ordering::Relaxed);
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err("never told to stop".into())
    }
}

const OLD_NS: i64 = 1_600_000_000_000_000_000;
const NEW_NS: i64 = 1_700_000_000_000_000_000;

fn ev(i: u64, ts: i64) -> Event {
    Event {
        tenant: "t".into(),
        trace_id: [1; 16],
        span_id: i.to_le_bytes(),
        agent_id: "a".into(),
        timestamp_ns: ts + i as i64,
        kind: "thought".into(),
        status: "ok".into(),
        ..Default::default()
    }
}

fn config(archiver: &Arc<SpanIdArchiver>) -> EngineConfig {
    EngineConfig { background: false, archiver: Some(archiver.clone()), ..Default::default() }
}

/// One warm segment of old rows (0..100), one of new rows (100..150), one hot old one (150..160).
fn three_segments(eng: &Engine) {
    eng.bulk_load((0..100).map(|i| ev(i, OLD_NS)).collect()).expect("old");
    eng.bulk_load((100..150).map(|i| ev(i, NEW_NS)).collect()).expect("new");
    eng.append((150..160).map(|i| ev(i, OLD_NS)).collect()).expect("append");
    eng.flush().expect("flush");
}

/// A new engine (in a temp dir, with a [`SpanIdArchiver`]) holding [`three_segments`].
fn with_three_segments() -> (tempfile::TempDir, Arc<SpanIdArchiver>, Engine) {
    let dir = tempfile::tempdir().expect("tmp");
    let archiver = Arc::new(SpanIdArchiver::default());
    let (eng, _) = Engine::open(dir.path(), config(&archiver)).expect("open");
    three_segments(&eng);
    (dir, archiver, eng)
}

fn archived_ids(dir: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    for f in std::fs::read_dir(dir.join(ARCHIVE_DIR)).expect("archive dir") {
        let text = std::fs::read_to_string(f.expect("entry").path()).expect("read");
        ids.extend(text.lines().map(|l| l.parse::<u64>().expect("id")));
    }
    ids.sort();
    ids
}

#[test]
fn old_warm_segments_move_to_the_cold_tier_and_stay_there_after_reopening() {
    let (dir, archiver, eng) = with_three_segments();
    let moved = eng.archive_before(NEW_NS).expect("archive");
    assert_eq!(moved, 100, "only the old warm segment (the old hot one waits for compaction)");
    let snap = eng.snapshot();
    assert_eq!(snap.archives.len(), 1);
    let a = &snap.archives[0];
    assert_eq!((a.entry.rows, a.entry.min_ts, a.entry.max_ts), (100, OLD_NS, OLD_NS + 99));
    assert_eq!(a.entry.bytes, std::fs::metadata(&a.path).expect("file").len());
    assert!(a.entry.file.ends_with(".ids"));
    assert_eq!(snap.segments.len(), 2, "the new warm segment and the hot one stay");
    assert!(snap.segments.iter().all(|s| s.segment.min_ts() >= NEW_NS || s.entry.tier == Tier::Hot));
    assert_eq!(snap.rows(), 160);
    assert_eq!(archived_ids(dir.path()), (0..100).collect::<Vec<_>>());
    assert_eq!(std::fs::read_dir(dir.path().join("segments")).expect("segments").count(), 2, "segment file deleted");
    assert_eq!(eng.stats().archived_rows.load(Ordering::Relaxed), 100);
    // Nothing more is due: a second pass moves nothing.
    assert_eq!(eng.archive_before(NEW_NS).expect("again"), 0);
    drop(eng);

    let manifest = Manifest::load(dir.path()).expect("manifest");
    assert_eq!(manifest.archives.len(), 1);
    assert_eq!(manifest.segments.len(), 2);
    let (eng, report) = Engine::open(dir.path(), config(&archiver)).expect("reopen");
    assert_eq!(report.removed_orphans, 0);
    let snap = eng.snapshot();
    assert_eq!(snap.archives.len(), 1);
    assert_eq!(snap.rows(), 160);
    // The old hot rows move once compacted.
    eng.compact().expect("compact");
    assert_eq!(eng.archive_before(NEW_NS).expect("archive"), 10);
    assert_eq!(archived_ids(dir.path()), (0..100).chain(150..160).collect::<Vec<_>>());
}

#[test]
fn an_archive_interrupted_before_its_manifest_is_undone_on_open() {
    let (dir, archiver, eng) = with_three_segments();
    drop(eng);
    // What a crash leaves between writing the file (or part of it) and the manifest.
    let archive = dir.path().join(ARCHIVE_DIR);
    std::fs::write(archive.join("seg-0000000000000000.ids"), b"0\n1\n").expect("stray");
    std::fs::write(archive.join("seg-0000000000000000.ids.tmp"), b"0\n").expect("stray tmp");
    let (eng, report) = Engine::open(dir.path(), config(&archiver)).expect("reopen");
    assert_eq!(report.removed_orphans, 2);
    assert_eq!(std::fs::read_dir(&archive).expect("archive").count(), 0);
    let snap = eng.snapshot();
    assert!(snap.archives.is_empty());
    assert_eq!(snap.rows(), 160, "every row still in its segment, once");
}

#[test]
fn a_failing_archiver_leaves_the_segment_live_and_no_file() {
    let (dir, archiver, eng) = with_three_segments();
    archiver.fail.store(true, Ordering::Relaxed);
    match eng.archive_before(NEW_NS) {
        Err(EngineError::Archive { segment, reason }) => {
            assert!(segment.starts_with("seg-"), "{segment}");
            assert_eq!(reason, "disk full");
        }
        other => panic!("expected an archive error, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(dir.path().join(ARCHIVE_DIR)).expect("archive").count(), 0);
    let snap = eng.snapshot();
    assert!(snap.archives.is_empty());
    assert_eq!(snap.segments.len(), 3);
    assert_eq!(snap.rows(), 160);
    // Once the archiver works again, the segment moves.
    archiver.fail.store(false, Ordering::Relaxed);
    assert_eq!(eng.archive_before(NEW_NS).expect("archive"), 100);
}

#[test]
fn retention_deletes_archive_files_once_their_newest_event_expires() {
    let (dir, _archiver, eng) = with_three_segments();
    eng.archive_before(NEW_NS).expect("archive");
    // A cutoff inside the archive file's span keeps it.
    assert_eq!(eng.expire_before(OLD_NS + 50).expect("expire"), 0);
    assert_eq!(eng.snapshot().archives.len(), 1);
    // Past it: the file goes (and the old hot segment with it).
    assert_eq!(eng.expire_before(OLD_NS + 1_000).expect("expire"), 110);
    let snap = eng.snapshot();
    assert!(snap.archives.is_empty());
    assert_eq!(snap.rows(), 50);
    assert_eq!(std::fs::read_dir(dir.path().join(ARCHIVE_DIR)).expect("archive").count(), 0);
    drop(eng);
    assert!(Manifest::load(dir.path()).expect("manifest").archives.is_empty());
}

#[test]
fn a_listed_archive_file_that_is_missing_is_reported_on_open() {
    let (dir, archiver, eng) = with_three_segments();
    eng.archive_before(NEW_NS).expect("archive");
    drop(eng);
    let file = Manifest::load(dir.path()).expect("manifest").archives[0].file.clone();
    std::fs::remove_file(dir.path().join(ARCHIVE_DIR).join(&file)).expect("remove");
    match Engine::open(dir.path(), config(&archiver)) {
        Err(EngineError::Corrupt(msg)) => assert!(msg.contains(&file) && msg.contains("missing"), "{msg}"),
        Err(e) => panic!("expected a corrupt-directory error, got {e}"),
        Ok(_) => panic!("opened with a missing archive file"),
    }
}

/// Closing the engine stops an archive under way: `close` returns without waiting for the
/// whole segment, the partial file is gone and the segment stays where it was.
#[test]
fn closing_stops_an_archive_under_way_and_keeps_the_segment() {
    let dir = tempfile::tempdir().expect("tmp");
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let archiver = Arc::new(StoppableArchiver { started: tx, saw_stop: AtomicBool::new(false) });
    let cfg = EngineConfig {
        archiver: Some(archiver.clone()),
        archive_after: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    };
    let (eng, _) = Engine::open(dir.path(), cfg).expect("open");
    eng.bulk_load((0..100).map(|i| ev(i, OLD_NS)).collect()).expect("old");
    rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the archive started");
    let t = std::time::Instant::now();
    eng.close().expect("close");
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "close waited {:?}", t.elapsed());
    assert!(archiver.saw_stop.load(Ordering::Relaxed));
    drop(eng);
    let (eng, report) = Engine::open(dir.path(), config(&Arc::new(SpanIdArchiver::default()))).expect("reopen");
    assert_eq!(report.removed_orphans, 0, "nothing left behind to clean up");
    assert_eq!(std::fs::read_dir(dir.path().join(ARCHIVE_DIR)).expect("archive").count(), 0);
    let snap = eng.snapshot();
    assert!(snap.archives.is_empty());
    assert_eq!(snap.rows(), 100);
}

#[test]
fn the_background_thread_archives_on_its_own() {
    let dir = tempfile::tempdir().expect("tmp");
    let archiver = Arc::new(SpanIdArchiver::default());
    let cfg = EngineConfig {
        archiver: Some(archiver.clone()),
        archive_after: Some(std::time::Duration::from_secs(24 * 3600)),
        ..Default::default()
    };
    let (eng, _) = Engine::open(dir.path(), cfg).expect("open");
    eng.bulk_load((0..100).map(|i| ev(i, OLD_NS)).collect()).expect("old");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as i64;
    eng.bulk_load((100..150).map(|i| ev(i, now)).collect()).expect("today");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while eng.snapshot().archives.is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing archived within 20 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let snap = eng.snapshot();
    assert_eq!(snap.archives.iter().map(|a| a.entry.rows).sum::<u64>(), 100);
    assert_eq!(snap.segments.iter().map(|s| s.segment.rows()).sum::<u64>(), 50, "today's rows stay warm");
}

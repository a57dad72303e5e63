//! Engine behaviour: durability across reopen, all-or-nothing validation, snapshots under
//! concurrent writes and flushes, compaction, backpressure.

use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, EngineConfig, EngineError, Tier};
use segments::Event;

fn ev(i: u64) -> Event {
    Event {
        tenant: format!("t{}", i % 3).into(),
        trace_id: [(i / 10) as u8; 16],
        span_id: i.to_le_bytes(),
        agent_id: format!("agent-{}", i % 4).into(),
        timestamp_ns: 1_700_000_000_000_000_000 + ((i * 7919) % 1000) as i64 * 1_000_000,
        kind: "thought".into(),
        content: Some(format!("step {i}")),
        status: "ok".into(),
        confidence: Some((i % 10) as f64 / 10.0),
        ..Default::default()
    }
}

fn manual() -> EngineConfig {
    EngineConfig { background: false, ..Default::default() }
}

fn ids(events: &[Event]) -> Vec<u64> {
    let mut v: Vec<u64> = events.iter().map(|e| u64::from_le_bytes(e.span_id)).collect();
    v.sort();
    v
}

#[test]
fn appended_events_survive_reopen_with_and_without_flush() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
        eng.append((0..100).map(ev).collect()).expect("append");
        eng.flush().expect("flush");
        eng.append((100..150).map(ev).collect()).expect("append");
        // dropped without flushing the last batch: it must come back from the WAL
    }
    let (eng, report) = Engine::open(dir.path(), manual()).expect("reopen");
    assert_eq!(report.segment_rows, 100);
    assert_eq!(report.replayed_events, 50);
    let all = eng.snapshot().all_events().expect("read");
    assert_eq!(ids(&all), (0..150).collect::<Vec<_>>());
    // Flushing the replayed rows and reopening neither loses nor duplicates.
    eng.flush().expect("flush");
    drop(eng);
    let (eng, report) = Engine::open(dir.path(), manual()).expect("reopen 2");
    assert_eq!(report.replayed_events, 0);
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..150).collect::<Vec<_>>());
}

#[test]
fn a_bad_event_rejects_the_whole_batch() {
    let dir = tempfile::tempdir().expect("tmp");
    let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
    let good = r#"{"trace_id":"c957679e1e101bb25665c518beadc325","span_id":"fc8444dccc8cb7a2","agent_id":"a","timestamp":"2025-06-03T00:32:22Z","kind":"thought"}"#;
    let bad = r#"{"trace_id":"c957679e1e101bb25665c518beadc325","span_id":"fc8444dccc8cb7a2","agent_id":"a","timestamp":"2025-06-03T00:32:22Z","kind":"thought","confidence":7}"#;
    assert_eq!(eng.append_json(&format!("{good}\n{good}")).expect("good batch"), 2);
    match eng.append_json(&format!("{good}\n{good}\n{bad}\n{good}")) {
        Err(EngineError::Invalid(e)) => {
            assert_eq!((e.index, e.field.as_str()), (2, "confidence"));
            assert!(e.to_string().contains("event 2") && e.to_string().contains("confidence"));
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert_eq!(eng.snapshot().rows(), 2);
}

#[test]
fn snapshots_stay_consistent_while_writers_and_flushes_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = EngineConfig {
        flush_bytes: 20_000,
        flush_age: Duration::from_millis(5),
        compaction_trigger: 3,
        ..Default::default()
    };
    let (eng, _) = Engine::open(dir.path(), cfg).expect("open");
    let eng = Arc::new(eng);
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let eng = eng.clone();
            std::thread::spawn(move || {
                for b in 0..50u64 {
                    let base = w * 10_000 + b * 20;
                    eng.append((base..base + 20).map(ev).collect()).expect("append");
                }
            })
        })
        .collect();
    let mut last = 0;
    for _ in 0..200 {
        let snap = eng.snapshot();
        let all = snap.all_events().expect("read");
        let got = ids(&all);
        let mut dedup = got.clone();
        dedup.dedup();
        assert_eq!(got.len(), dedup.len(), "a row is visible twice");
        assert!(got.len() >= last, "rows disappeared: {} after {last}", got.len());
        last = got.len();
        std::thread::sleep(Duration::from_millis(2));
    }
    for w in writers {
        w.join().expect("join");
    }
    eng.close().expect("close");
    let all = eng.snapshot().all_events().expect("read");
    assert_eq!(all.len(), 4 * 50 * 20);
    assert!(eng.stats().flushes.load(std::sync::atomic::Ordering::Relaxed) > 1);
}

/// Append rows 0..100 * `n` in `n` batches of 100, each flushed to its own hot segment.
fn flush_batches(eng: &Engine, n: u64) {
    for b in 0..n {
        eng.append((b * 100..b * 100 + 100).map(ev).collect()).expect("append");
        eng.flush().expect("flush");
    }
}

/// Segments whose rows are in the compaction order (all of them must be).
fn snap_key_ordered(eng: &Engine) -> usize {
    let snap = eng.snapshot();
    for s in &snap.segments {
        let rows = s.segment.read_all().expect("read");
        let ordered = rows.windows(2).all(|w| engine::merge::compaction_order(&w[0], &w[1]).is_le());
        assert!(ordered, "{} is in the compaction order", s.entry.file);
    }
    snap.segments.len()
}

/// Hot segments flushed by older versions are in time order: compaction sorts their rows in
/// memory instead of merging them, and loses nothing.
#[test]
fn hot_segments_in_time_order_are_still_compacted() {
    let dir = tempfile::tempdir().expect("tmp");
    let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
    flush_batches(&eng, 3);
    let files: Vec<String> = eng.snapshot().segments.iter().map(|s| s.entry.file.clone()).collect();
    drop(eng);
    // Rewrite the middle one as an older version wrote it: the same rows by timestamp.
    let path = dir.path().join("segments").join(&files[1]);
    let mut rows = segments::Segment::open(&path).expect("open").read_all().expect("read");
    rows.sort_by_key(|e| e.timestamp_ns);
    segments::SegmentWriter::new(segments::WriterOptions::hot()).write(&path, &rows).expect("rewrite");
    let (eng, _) = Engine::open(dir.path(), manual()).expect("reopen");
    assert!(eng.compact().expect("compact"));
    assert_eq!(eng.stats().compactions_sorted_in_memory.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(snap_key_ordered(&eng), 1);
    let rows = eng.snapshot().segments[0].segment.read_all().expect("read");
    assert_eq!(ids(&rows), (0..300).collect::<Vec<_>>());
    let names: Vec<_> = std::fs::read_dir(dir.path().join("segments")).expect("dir").collect();
    assert_eq!(names.len(), 1, "inputs deleted, no temporary file left");
}

#[test]
fn compaction_keeps_every_row_sorted_and_indexed() {
    let dir = tempfile::tempdir().expect("tmp");
    let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
    flush_batches(&eng, 5);
    assert_eq!(snap_key_ordered(&eng), 5, "hot segments are flushed in the compaction order");
    assert!(eng.compact().expect("compact"));
    assert_eq!(eng.stats().compactions_sorted_in_memory.load(std::sync::atomic::Ordering::Relaxed), 0, "merged");
    let snap = eng.snapshot();
    assert_eq!(snap.segments.len(), 1);
    assert_eq!(snap.segments[0].entry.tier, Tier::Warm);
    let rows = snap.segments[0].segment.read_all().expect("read");
    assert_eq!(ids(&rows), (0..500).collect::<Vec<_>>());
    let key = |e: &Event| (e.tenant.clone(), e.agent_id.clone(), e.timestamp_ns, e.trace_id);
    assert!(rows.windows(2).all(|w| key(&w[0]) <= key(&w[1])), "warm segments keep the compaction order");
    let idx = snap.segments[0].segment.load_index().expect("index");
    let t1 = idx.column(index::IndexedColumn::Tenant).rows(Some("t1")).expect("t1").len();
    assert_eq!(t1 as usize, rows.iter().filter(|e| e.tenant == "t1").count());
    drop(snap);
    drop(eng);
    let (eng, report) = Engine::open(dir.path(), manual()).expect("reopen");
    assert_eq!(report.segments, 1);
    assert_eq!(eng.snapshot().rows(), 500);
    let files = std::fs::read_dir(dir.path().join("segments")).expect("dir").count();
    assert_eq!(files, 1, "compacted inputs are deleted");
}

#[test]
fn backpressure_rejects_when_the_buffer_stays_full() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = EngineConfig {
        background: false,
        max_buffered_bytes: 50_000,
        backpressure_wait: Duration::from_millis(50),
        ..Default::default()
    };
    let (eng, _) = Engine::open(dir.path(), cfg).expect("open");
    let mut accepted = 0;
    let mut rejected = false;
    for b in 0..100u64 {
        match eng.append((b * 10..b * 10 + 10).map(ev).collect()) {
            Ok(_) => accepted += 10,
            Err(EngineError::Backpressure { .. }) => {
                rejected = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(rejected, "no flusher runs, so the limit must be hit");
    assert!(eng.buffered().0 <= 50_000 + 10_000);
    // Everything acknowledged is there; a flush makes room again.
    assert_eq!(eng.snapshot().rows(), accepted);
    eng.flush().expect("flush");
    eng.append((5000..5010).map(ev).collect()).expect("room again");
}

#[test]
fn orphan_segment_files_are_removed_on_open() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
        eng.append((0..10).map(ev).collect()).expect("append");
        eng.flush().expect("flush");
    }
    std::fs::write(dir.path().join("segments/seg-0000000000000099.seg"), b"half written").expect("w");
    std::fs::write(dir.path().join("segments/seg-0000000000000100.tmp"), b"tmp").expect("w");
    let (eng, report) = Engine::open(dir.path(), manual()).expect("reopen");
    assert_eq!(report.removed_orphans, 2);
    assert_eq!(eng.snapshot().rows(), 10);
}

#[test]
fn a_data_directory_opens_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
    match Engine::open(dir.path(), manual()) {
        Err(EngineError::Locked(p)) => assert_eq!(p, dir.path()),
        other => panic!("second open must fail with Locked, got {other:?}"),
    }
    drop(eng);
    Engine::open(dir.path(), manual()).expect("open again after the first is dropped");
}

#[test]
fn retention_drops_only_segments_wholly_older_than_the_cutoff() {
    let dir = tempfile::tempdir().expect("tmp");
    let at = |i: u64, ts: i64| Event { timestamp_ns: ts, ..ev(i) };
    let day = 86_400_000_000_000i64;
    let t0 = 1_700_000_000_000_000_000i64;
    {
        let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
        // Segment A: days 0..1. Segment B: days 2..4 (straddles the cutoff). Buffer: day 5.
        eng.append((0..10).map(|i| at(i, t0 + (i as i64 % 2) * day)).collect()).expect("a");
        eng.flush().expect("flush a");
        eng.append((10..20).map(|i| at(i, t0 + (2 + i as i64 % 3) * day)).collect()).expect("b");
        eng.flush().expect("flush b");
        eng.append((20..25).map(|i| at(i, t0 + 5 * day)).collect()).expect("c");
        let snap = eng.snapshot();
        let deleted = eng.expire_before(t0 + 3 * day).expect("expire");
        assert_eq!(deleted, 10, "only segment A is wholly older than day 3");
        // A snapshot taken before keeps reading the deleted segment.
        assert_eq!(snap.all_events().expect("old snapshot").len(), 25);
        let left = ids(&eng.snapshot().all_events().expect("read"));
        assert_eq!(left, (10..25).collect::<Vec<_>>());
        assert_eq!(eng.expire_before(t0 + 3 * day).expect("again"), 0);
        assert_eq!(eng.stats().expired_rows.load(std::sync::atomic::Ordering::Relaxed), 10);
    }
    // The deletion is durable: the manifest no longer lists the segment, its file is gone.
    let (eng, report) = Engine::open(dir.path(), manual()).expect("reopen");
    assert_eq!(report.segment_rows, 10);
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (10..25).collect::<Vec<_>>());
    let files = std::fs::read_dir(dir.path().join("segments")).expect("dir").count();
    assert_eq!(files, 1);
}

#[test]
fn bulk_load_writes_one_warm_segment_that_survives_reopen_beside_appends() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
        assert_eq!(eng.bulk_load((0..500).map(ev).collect()).expect("bulk"), 500);
        eng.append((500..520).map(ev).collect()).expect("append");
        let snap = eng.snapshot();
        assert_eq!(snap.segments.len(), 1);
        assert_eq!(snap.segments[0].entry.tier, Tier::Warm);
        // Compaction order: (tenant, agent_id, timestamp, trace_id) ascending.
        let rows = snap.segments[0].segment.read_all().expect("read");
        let keys: Vec<_> =
            rows.iter().map(|e| (e.tenant.clone(), e.agent_id.clone(), e.timestamp_ns, e.trace_id)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        // The bitmap index of the bulk segment answers like a scan.
        let t1 = rows.iter().filter(|e| e.tenant == "t1").count() as u64;
        let conj = index::Conjunction {
            terms: vec![index::Term {
                column: index::IndexedColumn::Tenant,
                values: vec![Some("t1".into())],
                negated: false,
            }],
            trace_ids: None,
        };
        assert_eq!(snap.segments[0].segment.load_index().expect("index").evaluate(&conj).len(), t1);
    }
    let (eng, report) = Engine::open(dir.path(), manual()).expect("reopen");
    assert_eq!(report.segment_rows, 500);
    assert_eq!(report.replayed_events, 20, "the bulk rows are not in the WAL, the appended ones are");
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..520).collect::<Vec<_>>());
}

/// After a burst, the hot segments left below the compaction trigger are compacted once
/// appends stop for the idle period, and only when they hold enough rows.
#[test]
fn idle_engines_compact_their_last_hot_segments() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = EngineConfig {
        flush_age: Duration::from_millis(20),
        idle_compaction: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let (eng, _) = Engine::open(dir.path(), cfg).expect("open");
    let tiers = |eng: &Engine| {
        let snap = eng.snapshot();
        let hot = snap.segments.iter().filter(|s| s.entry.tier == Tier::Hot).count();
        (hot, snap.segments.len() - hot, snap.memory.iter().map(|m| m.len() as u64).sum::<u64>())
    };
    let wait_for = |eng: &Engine, want: (usize, usize, u64)| {
        for _ in 0..500 {
            if tiers(eng) == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("tiers {:?}, expected {want:?}", tiers(eng));
    };
    // Few rows: flushed to one hot segment, which stays hot however long it is quiet.
    eng.append((0..100).map(ev).collect()).expect("append");
    wait_for(&eng, (1, 0, 0));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(tiers(&eng), (1, 0, 0), "too few rows to compact when idle");
    // Enough rows in two hot segments (below the trigger of four): compacted when idle.
    let n = engine::IDLE_COMPACTION_MIN_ROWS;
    eng.append((100..100 + n).map(ev).collect()).expect("append");
    wait_for(&eng, (0, 1, 0));
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..100 + n).collect::<Vec<_>>());
}

/// Flushes, compactions and bulk loads running at once (each on its own thread, as the
/// server's flush and compaction threads do) never lose, duplicate or resurrect a row, and
/// the manifest they leave reopens to the same rows.
#[test]
fn concurrent_flushes_compactions_and_bulk_loads_keep_every_row_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
    let eng = Arc::new(eng);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spin = |f: fn(&Engine)| {
        let (eng, stop) = (eng.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f(&eng);
            }
        })
    };
    let flusher = spin(|e| {
        e.flush().expect("flush");
    });
    let compactor = spin(|e| {
        e.compact().expect("compact");
    });
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let eng = eng.clone();
            std::thread::spawn(move || {
                for b in 0..40u64 {
                    let base = w * 100_000 + b * 50;
                    let batch: Vec<Event> = (base..base + 50).map(ev).collect();
                    if w == 2 && b % 10 == 0 {
                        eng.bulk_load(batch).expect("bulk load");
                    } else {
                        eng.append(batch).expect("append");
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flusher.join().expect("flusher");
    compactor.join().expect("compactor");
    let want: Vec<u64> = (0..3u64).flat_map(|w| (0..40 * 50).map(move |i| w * 100_000 + i)).collect();
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), want);
    assert!(eng.stats().compactions.load(std::sync::atomic::Ordering::Relaxed) > 0, "compactions ran");
    drop(eng);
    let (eng, report) = Engine::open(dir.path(), manual()).expect("reopen");
    assert_eq!(report.removed_orphans, 0, "every written segment file is listed or was deleted");
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), want);
}

/// A flush whose manifest cannot be stored fails, keeps its rows in the buffer and leaves its
/// segment file (the manifest on disk might already list it); the next flush stores them,
/// and the next open deletes the unlisted file: every row once.
#[test]
fn a_failed_manifest_store_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
        eng.append((0..100).map(ev).collect()).expect("append");
        // The manifest's temporary file cannot be created while a folder takes its name.
        let blocker = dir.path().join("MANIFEST.json.tmp");
        std::fs::create_dir(&blocker).expect("blocker");
        assert!(eng.flush().is_err(), "the manifest store fails");
        assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..100).collect::<Vec<_>>());
        let files = std::fs::read_dir(dir.path().join("segments")).expect("segments").count();
        assert_eq!(files, 1, "the unlisted segment file stays");
        std::fs::remove_dir(&blocker).expect("unblock");
        assert!(eng.flush().expect("flush"), "the next flush stores the rows");
    }
    let (eng, report) = Engine::open(dir.path(), manual()).expect("reopen");
    assert_eq!(report.removed_orphans, 1, "the unlisted file is deleted on open");
    assert_eq!(report.replayed_events, 0);
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..100).collect::<Vec<_>>());
}

/// The background thread hook runs on the flush and compaction threads (never on the caller's)
/// while they idle, and once more on each as it stops.
#[test]
fn background_threads_run_their_hook_while_idle_and_as_they_stop() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    static CALLS: AtomicU64 = AtomicU64::new(0);
    static THREADS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    fn hook() {
        CALLS.fetch_add(1, Ordering::Relaxed);
        let name = std::thread::current().name().unwrap_or("(unnamed)").to_string();
        let mut seen = THREADS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = EngineConfig { background_thread_hook: Some(hook), ..Default::default() };
    let (eng, _) = Engine::open(dir.path(), cfg).expect("open");
    // Both threads nap at most 100 ms at a time: in 350 ms each has woken at least twice.
    std::thread::sleep(Duration::from_millis(350));
    let idle_calls = CALLS.load(Ordering::Relaxed);
    assert!(idle_calls >= 4, "{idle_calls} hook calls in 350 ms from two threads");
    drop(eng);
    let after_stop = CALLS.load(Ordering::Relaxed);
    assert!(after_stop >= idle_calls + 2, "{after_stop} calls after stopping, {idle_calls} before");
    let mut seen = THREADS.lock().expect("names").clone();
    seen.sort();
    // At the default niceness (0) compaction has no threads of its own besides its loop's
    // (`compaction_threads_yield_the_cpu` covers those).
    assert_eq!(seen, ["am-compact", "am-flush"]);
}

/// Threads that ran the background hook, with their nice values.
static HOOKED: std::sync::Mutex<Vec<(String, i32)>> = std::sync::Mutex::new(Vec::new());

fn record_thread() {
    let name = std::thread::current().name().unwrap_or_default().to_owned();
    let nice = engine::priority::current_thread_nice();
    HOOKED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((name, nice));
}

/// Compaction runs on threads of their own at the configured nice value, so a burst of
/// appends gets the CPU first; the flush thread keeps the process's priority.
#[test]
#[cfg(target_os = "linux")]
fn compaction_threads_yield_the_cpu() {
    let base = engine::priority::current_thread_nice();
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = EngineConfig {
        flush_age: Duration::from_millis(20),
        compaction_trigger: 2,
        compaction_niceness: 7,
        background_thread_hook: Some(record_thread),
        ..Default::default()
    };
    let (eng, _) = Engine::open(dir.path(), cfg).expect("open");
    for round in 0..2u64 {
        eng.append((round * 100..round * 100 + 100).map(ev).collect()).expect("append");
        eng.flush().expect("flush");
    }
    for _ in 0..500 {
        if eng.snapshot().segments.iter().all(|s| s.entry.tier == Tier::Warm) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(eng.snapshot().segments.iter().all(|s| s.entry.tier == Tier::Warm), "compacted");
    // Two hot segments are far from urgent (8 at this trigger): the compaction ran on the pool.
    let stats = eng.stats();
    assert!(stats.compactions.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(stats.compactions_urgent.load(std::sync::atomic::Ordering::Relaxed), 0);
    eng.close().expect("close");
    let seen = HOOKED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let compactors: std::collections::BTreeSet<&str> =
        seen.iter().filter(|(n, _)| n.starts_with("am-compact-")).map(|(n, _)| n.as_str()).collect();
    assert_eq!(compactors.len(), rayon::current_num_threads(), "{seen:?}");
    for (name, nice) in &seen {
        if name.starts_with("am-compact-") {
            assert_eq!(*nice, 7.max(base), "{name}");
        } else if name == "am-flush" {
            assert_eq!(*nice, base, "the flush thread keeps its priority");
        }
    }
    assert!(seen.iter().any(|(n, _)| n == "am-flush"), "{seen:?}");
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..200).collect::<Vec<_>>());
}

/// Compactions of a few hot segments each leave small warm segments; once
/// `compaction_trigger` of similar size exist they are merged into one, sorted, with every
/// row once, and the merge survives reopening.
#[test]
fn small_warm_segments_are_merged_into_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
    for round in 0..4u64 {
        eng.append((round * 100..round * 100 + 100).map(ev).collect()).expect("append");
        eng.flush().expect("flush");
        assert!(eng.compact().expect("compact hot"));
    }
    let tiers =
        |eng: &Engine| eng.snapshot().segments.iter().map(|s| (s.entry.tier, s.segment.rows())).collect::<Vec<_>>();
    assert_eq!(tiers(&eng), vec![(Tier::Warm, 100); 4]);
    assert!(eng.compact().expect("merge warm"));
    assert_eq!(tiers(&eng), vec![(Tier::Warm, 400)]);
    assert_eq!(eng.stats().compactions_warm.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(!eng.compact().expect("nothing left"), "one segment is not merged with itself");
    assert_eq!(snap_key_ordered(&eng), 1);
    drop(eng);
    let (eng, _) = Engine::open(dir.path(), manual()).expect("reopen");
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..400).collect::<Vec<_>>());
    assert_eq!(std::fs::read_dir(dir.path().join("segments")).expect("dir").count(), 1, "inputs deleted");
}

/// Four warm segments of 100 rows, each compacted alone from a hot one.
fn four_warm_segments(dir: &std::path::Path, cfg: EngineConfig) -> Engine {
    let (eng, _) = Engine::open(dir, cfg).expect("open");
    for round in 0..4u64 {
        eng.append((round * 100..round * 100 + 100).map(ev).collect()).expect("append");
        eng.flush().expect("flush");
        assert!(eng.compact().expect("compact hot"));
    }
    assert!(eng.snapshot().segments.iter().all(|s| s.entry.tier == Tier::Warm && s.segment.rows() == 100));
    eng
}

/// A merge of warm segments takes seconds for millions of rows; the hot segments flushed
/// meanwhile are compacted between its pieces, not after it. Two hot segments are flushed as
/// a merge of two 10,000-row warm segments (two pieces of 16,384 rows) starts: their
/// compaction is installed before the merge's, and every row is there once.
#[test]
fn hot_segments_are_compacted_between_the_pieces_of_a_warm_merge() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, PoisonError};
    static ENGINE: Mutex<Option<Arc<Engine>>> = Mutex::new(None);
    static FLUSHED: AtomicBool = AtomicBool::new(false);
    fn engine() -> Option<Arc<Engine>> {
        ENGINE.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
    /// The hook: as the first warm merge starts, two hot segments of 300 rows.
    fn flush_two_hot_segments() {
        if FLUSHED.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut eng = engine();
        for _ in 0..1000 {
            if eng.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            eng = engine();
        }
        let eng = eng.expect("the test stores the engine");
        for first in [20_000u64, 20_300] {
            eng.append((first..first + 300).map(ev).collect()).expect("append");
            eng.flush().expect("flush");
        }
    }
    let dir = tempfile::tempdir().expect("tmp");
    {
        let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
        for first in [0u64, 10_000] {
            eng.append((first..first + 10_000).map(ev).collect()).expect("append");
            eng.flush().expect("flush");
            assert!(eng.compact().expect("compact hot"));
        }
    }
    let cfg = EngineConfig {
        compaction_trigger: 2,
        idle_compaction: None,
        warm_merge_hook: Some(flush_two_hot_segments),
        ..Default::default()
    };
    let eng = Arc::new(Engine::open(dir.path(), cfg).expect("open").0);
    *ENGINE.lock().unwrap_or_else(PoisonError::into_inner) = Some(eng.clone());
    for _ in 0..2000 {
        if eng.stats().compactions_warm.load(Ordering::Relaxed) >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(eng.stats().compactions_warm.load(Ordering::Relaxed), 1, "the warm merge ran");
    let segments: Vec<(Tier, u64)> = eng.snapshot().segments.iter().map(|s| (s.entry.tier, s.segment.rows())).collect();
    assert_eq!(segments, [(Tier::Warm, 600), (Tier::Warm, 20_000)], "the hot compaction landed first");
    ENGINE.lock().unwrap_or_else(PoisonError::into_inner).take();
    let eng = Arc::into_inner(eng).expect("the only handle");
    eng.close().expect("close");
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..20_600).collect::<Vec<_>>());
    drop(eng);
    let (eng, _) = Engine::open(dir.path(), manual()).expect("reopen");
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..20_600).collect::<Vec<_>>());
}

/// Closing the engine stops a running merge at its next piece instead of waiting for
/// millions of rows: the inputs stay as they were, no file is left, and nothing is lost.
#[test]
fn closing_stops_a_warm_merge_between_its_pieces() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STARTED: AtomicBool = AtomicBool::new(false);
    static CLOSING: AtomicBool = AtomicBool::new(false);
    /// The hook: the merge starts only once the test is closing the engine.
    fn wait_for_close() {
        STARTED.store(true, Ordering::SeqCst);
        for _ in 0..1000 {
            if CLOSING.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // `close` sets the stop flag before it waits for the threads.
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = tempfile::tempdir().expect("tmp");
    let inputs: Vec<String> = {
        let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
        for first in [0u64, 10_000] {
            eng.append((first..first + 10_000).map(ev).collect()).expect("append");
            eng.flush().expect("flush");
            assert!(eng.compact().expect("compact hot"));
        }
        eng.snapshot().segments.iter().map(|s| s.entry.file.clone()).collect()
    };
    let cfg = EngineConfig { compaction_trigger: 2, warm_merge_hook: Some(wait_for_close), ..Default::default() };
    let (eng, _) = Engine::open(dir.path(), cfg).expect("open");
    for _ in 0..1000 {
        if STARTED.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(STARTED.load(Ordering::SeqCst), "the warm merge started");
    CLOSING.store(true, Ordering::SeqCst);
    eng.close().expect("close");
    assert_eq!(eng.stats().compactions_warm.load(Ordering::Relaxed), 0, "the merge stopped");
    let files: Vec<String> = eng.snapshot().segments.iter().map(|s| s.entry.file.clone()).collect();
    assert_eq!(files, inputs);
    drop(eng);
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.path().join("segments"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, inputs, "no file of the stopped merge is left");
    let (eng, _) = Engine::open(dir.path(), EngineConfig { compaction_trigger: 2, ..manual() }).expect("reopen");
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..20_000).collect::<Vec<_>>());
    assert!(eng.compact().expect("the merge, once open again"));
    assert_eq!(eng.snapshot().segments.len(), 1);
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..20_000).collect::<Vec<_>>());
}

/// Warm segments are merged as they stream by, so what bounds a warm merge is the memory
/// the merge holds (the new segment's indexes), not the inputs' rows decoded: a budget
/// below one input's decoded columns still lets four of them merge, and a budget below
/// what the merge's indexes take does not.
#[test]
fn warm_merges_are_bounded_by_the_memory_of_the_merge() {
    let dir = tempfile::tempdir().expect("tmp");
    // One input's rows decoded as events: sorting all four in memory would take 4 times this.
    let decoded = {
        let eng = four_warm_segments(dir.path(), manual());
        eng.snapshot().segments[0].segment.raw_bytes() + 100 * std::mem::size_of::<Event>() as u64
    };
    let cfg = EngineConfig { compaction_max_bytes: decoded, ..manual() };
    let (eng, _) = Engine::open(dir.path(), cfg).expect("reopen");
    assert!(eng.compact().expect("merge warm"), "merged within a budget of {decoded} bytes");
    assert_eq!(eng.snapshot().segments.len(), 1);
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..400).collect::<Vec<_>>());
    assert_eq!(snap_key_ordered(&eng), 1);

    let dir = tempfile::tempdir().expect("tmp");
    // 400 rows' trace directory and bitmaps alone take more than this.
    let eng = four_warm_segments(dir.path(), EngineConfig { compaction_max_bytes: 1000, ..manual() });
    assert!(!eng.compact().expect("no merge"), "the merge's own memory exceeds the budget");
    assert_eq!(eng.snapshot().segments.len(), 4);
}

/// A warm segment out of the compaction order (none is written so, but a file may be) is
/// merged by sorting the rows in memory only when they fit the budget; else the segments
/// stay as they are, with nothing lost and no file left behind.
#[test]
fn unordered_warm_segments_are_sorted_in_memory_only_within_the_budget() {
    let dir = tempfile::tempdir().expect("tmp");
    let files: Vec<String> = {
        let eng = four_warm_segments(dir.path(), manual());
        eng.snapshot().segments.iter().map(|s| s.entry.file.clone()).collect()
    };
    let path = dir.path().join("segments").join(&files[2]);
    let mut rows = segments::Segment::open(&path).expect("open").read_all().expect("read");
    rows.sort_by_key(|e| std::cmp::Reverse(e.timestamp_ns));
    segments::SegmentWriter::new(segments::WriterOptions::cold()).write(&path, &rows).expect("rewrite");
    let decoded = segments::Segment::open(&path).expect("open").raw_bytes() + 100 * std::mem::size_of::<Event>() as u64;

    let (eng, _) =
        Engine::open(dir.path(), EngineConfig { compaction_max_bytes: decoded, ..manual() }).expect("reopen");
    assert!(!eng.compact().expect("left alone"));
    assert!(!eng.compact().expect("not retried while the segments are the same"));
    assert_eq!(eng.snapshot().segments.len(), 4);
    assert_eq!(eng.stats().compactions_sorted_in_memory.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(std::fs::read_dir(dir.path().join("segments")).expect("dir").count(), 4, "no temporary file");
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..400).collect::<Vec<_>>());
    drop(eng);

    let (eng, _) = Engine::open(dir.path(), manual()).expect("reopen");
    assert!(eng.compact().expect("sorted in memory"));
    assert_eq!(eng.stats().compactions_sorted_in_memory.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(snap_key_ordered(&eng), 1);
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..400).collect::<Vec<_>>());
}

/// Data settles: four warm segments of an hour each, spread over 13 hours, are merged once
/// the newest event stored is more than a day younger than all of them, not before.
#[test]
fn settled_warm_segments_merge_beyond_the_hour() {
    const HOUR: i64 = 3_600_000_000_000;
    let at = |i: u64, ts: i64| Event { timestamp_ns: ts, ..ev(i) };
    let dir = tempfile::tempdir().expect("tmp");
    let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
    let start = 1_700_000_000_000_000_000i64;
    for seg in 0..4u64 {
        let first = start + 4 * seg as i64 * HOUR;
        eng.append((seg * 100..seg * 100 + 100).map(|i| at(i, first + (i % 100) as i64 * HOUR / 100)).collect())
            .expect("append");
        eng.flush().expect("flush");
        assert!(eng.compact().expect("compact hot"));
    }
    assert!(!eng.compact().expect("not yet"), "13 hours of recent data stay in hourly segments");
    // Twenty hours after the last of them: not settled yet.
    eng.append(vec![at(400, start + 33 * HOUR)]).expect("append");
    eng.flush().expect("flush");
    assert!(eng.compact().expect("compact hot"));
    assert!(!eng.compact().expect("not yet"), "within a day of the newest event");
    // Two days after: settled.
    eng.append(vec![at(401, start + 61 * HOUR)]).expect("append");
    eng.flush().expect("flush");
    assert!(eng.compact().expect("compact hot"));
    assert!(eng.compact().expect("settled"), "merged once a day older than the newest event");
    let rows: Vec<u64> = eng.snapshot().segments.iter().map(|s| s.segment.rows()).collect();
    assert!(rows.contains(&400), "the four merged into one: {rows:?}");
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..402).collect::<Vec<_>>());
}

/// Three days of slow traffic (20 events every 20 minutes), flushed and compacted as it
/// comes, with `settled_merge_span` as given: the segments it leaves, and how many of them
/// are settled (a day older than the newest event). Every segment obeys its span (an hour for
/// the last day, `settled` before it) and every event is there once.
fn three_slow_days(settled_merge_span: Duration) -> (usize, usize) {
    const HOUR: i64 = 3_600_000_000_000;
    let dir = tempfile::tempdir().expect("tmp");
    let (eng, _) = Engine::open(dir.path(), EngineConfig { settled_merge_span, ..manual() }).expect("open");
    let start = 1_700_000_000_000_000_000i64;
    let flushes = 3 * 24 * 3;
    for f in 0..flushes as u64 {
        let batch = (f * 20..f * 20 + 20).map(|i| Event { timestamp_ns: start + (i as i64) * HOUR / 60, ..ev(i) });
        eng.append(batch.collect()).expect("append");
        eng.flush().expect("flush");
        while eng.compact().expect("compact") {}
    }
    let snap = eng.snapshot();
    let newest = snap.segments.iter().map(|s| s.segment.max_ts()).max().expect("segments");
    let settled_span = settled_merge_span.as_nanos() as i64;
    let mut settled = 0;
    for s in &snap.segments {
        let span = s.segment.max_ts() - s.segment.min_ts();
        if s.segment.max_ts() < newest - settled_span {
            settled += 1;
            assert!(span <= settled_span, "{}: {} hours", s.entry.file, span / HOUR);
        } else {
            assert!(span <= HOUR, "{}: {} minutes", s.entry.file, span / (HOUR / 60));
        }
    }
    assert_eq!(ids(&snap.all_events().expect("read")), (0..flushes as u64 * 20).collect::<Vec<_>>());
    (snap.segments.len(), settled)
}

/// Slow traffic leaves a segment per flush while its hour is open (four flushes of 20
/// minutes exceed the hour); once closed, an hour's segments become one, and settled days
/// collapse further. Size tiers alone left all 216 flushes as they were.
#[test]
fn days_of_slow_traffic_keep_few_segments_within_their_spans() {
    let (segments, settled) = three_slow_days(Duration::from_secs(24 * 3600));
    assert!(settled <= 3, "{settled} settled segments of {segments}");
    assert!(segments <= 3 + 24 + 6, "{segments} segments: a settled few, one per closed hour, the open ones");
    let (hourly, _) = three_slow_days(Duration::from_secs(3600));
    assert!((3 * 24 - 2..=3 * 24 + 6).contains(&hourly), "{hourly} segments: about one per hour");
}

/// A trickle of events, flushed by age and compacted a pair of hot segments at a time,
/// does not pile up warm segments: the background merges keep them to a handful.
#[test]
fn a_trickle_of_events_keeps_few_segments() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = EngineConfig {
        flush_age: Duration::from_millis(5),
        compaction_trigger: 2,
        idle_compaction: None,
        ..Default::default()
    };
    let (eng, _) = Engine::open(dir.path(), cfg).expect("open");
    // The flush thread wakes every 100 ms: about one flush per 5 batches.
    for b in 0..100u64 {
        eng.append((b * 20..b * 20 + 20).map(ev).collect()).expect("append");
        std::thread::sleep(Duration::from_millis(20));
    }
    let flushes = eng.stats().flushes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(flushes >= 12, "flushed by age: {flushes} flushes");
    let mut segments = usize::MAX;
    for _ in 0..500 {
        segments = eng.snapshot().segments.len();
        if segments <= 3 && eng.snapshot().memory.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Sizes merge pairwise: at most one warm segment per size class plus a hot one left.
    assert!(segments <= 3, "{segments} segments after {flushes} flushes");
    assert!(eng.stats().compactions_warm.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert_eq!(ids(&eng.snapshot().all_events().expect("read")), (0..2000).collect::<Vec<_>>());
}

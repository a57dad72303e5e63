//! Crash safety: a real child process appends with concurrent writers and is SIGKILLed at
//! random moments; after each kill, every acknowledged event is present exactly once.
//! `CRASH_ITERATIONS` raises the number of kills (default 20). A second test kills a process
//! while its background threads merge warm segments.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine::{Engine, EngineConfig};
use integration_tests::span_of;
use rand::Rng;

fn kill9(pid: u32) {
    // SAFETY: sending SIGKILL to our own child by pid has no memory-safety implications.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

#[test]
fn sigkill_during_concurrent_appends_loses_no_acknowledged_event() {
    let iterations: usize = std::env::var("CRASH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().expect("tmp");
    let mut rng = rand::rng();
    let mut acked: HashSet<u64> = HashSet::new();
    for round in 0..iterations {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(dir.path())
            .arg("4")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn crash-writer");
        let stdout = child.stdout.take().expect("stdout");
        let pid = child.id();
        let delay = Duration::from_millis(rng.random_range(30..400));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            kill9(pid);
        });
        let started = Instant::now();
        let mut this_round = 0;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let parts: Vec<u32> = line.split_whitespace().skip(1).filter_map(|p| p.parse().ok()).collect();
            if let [w, first, n] = parts[..] {
                for s in first..first + n {
                    acked.insert(span_of(w, s));
                }
                this_round += n;
            }
        }
        killer.join().expect("killer");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "round {round}: the child must have been killed");
        // Recover in-process and count.
        let (eng, _) =
            Engine::open(dir.path(), EngineConfig { background: false, ..Default::default() }).expect("recover");
        let rows = eng.snapshot().all_events().expect("read");
        let mut seen = HashSet::new();
        for e in &rows {
            let id = u64::from_be_bytes(e.span_id);
            assert!(seen.insert(id), "round {round}: event {id:#x} stored twice");
        }
        let missing = acked.iter().filter(|id| !seen.contains(id)).count();
        assert_eq!(
            missing,
            0,
            "round {round}: {missing} acknowledged events lost (killed after {:?}, {this_round} acked this round)",
            started.elapsed()
        );
        drop(eng);
    }
    assert!(acked.len() > 100, "the test wrote too little to mean anything: {}", acked.len());
    // The debris of all those kills (hundreds of small segments) compacts and merges down to
    // a few, every acknowledged event still there exactly once.
    let (eng, _) = Engine::open(dir.path(), EngineConfig { background: false, ..Default::default() }).expect("reopen");
    let before = eng.snapshot().segments.len();
    while eng.compact().expect("compact") {}
    let snap = eng.snapshot();
    assert!(snap.segments.len() <= 8, "{} segments left of {before}", snap.segments.len());
    assert!(snap.segments.iter().all(|s| s.entry.tier == engine::Tier::Warm));
    let rows = snap.all_events().expect("read");
    let mut seen = HashSet::new();
    for e in &rows {
        assert!(seen.insert(u64::from_be_bytes(e.span_id)), "stored twice after compaction");
    }
    assert_eq!(acked.iter().filter(|id| !seen.contains(id)).count(), 0, "lost in compaction");
}

/// Every event of `dir` by span id, each once, or a panic naming the round.
fn stored_once(eng: &Engine, round: usize) -> HashSet<u64> {
    let mut seen = HashSet::new();
    for e in &eng.snapshot().all_events().expect("read") {
        let id = u64::from_be_bytes(e.span_id);
        assert!(seen.insert(id), "round {round}: event {id:#x} stored twice");
    }
    seen
}

/// A process killed while it merges warm segments (a merge's file half written) loses and
/// duplicates nothing: the next open removes the unfinished file and the inputs are still
/// listed. Each round waits for a merge's temporary file to appear, then kills within 300 ms:
/// mostly while a merge writes, sometimes after one has finished.
#[test]
fn sigkill_during_warm_merges_loses_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let manual = || EngineConfig { background: false, ..Default::default() };
    // Sixteen warm segments of 4,000 events within an hour: four merges of four, then one more.
    let mut all = HashSet::new();
    {
        let (eng, _) = Engine::open(dir.path(), manual()).expect("open");
        for seg in 0..16u32 {
            let batch: Vec<segments::Event> = (0..4000u32)
                .map(|i| {
                    let s = seg * 4000 + i;
                    all.insert(span_of(seg, s));
                    segments::Event {
                        tenant: format!("t{}", s % 3).into(),
                        trace_id: [(s / 20 % 251) as u8; 16],
                        span_id: span_of(seg, s).to_be_bytes(),
                        agent_id: format!("agent-{}", s % 7).into(),
                        timestamp_ns: 1_700_000_000_000_000_000 + i64::from(s) * 1_000_000,
                        kind: "action".into(),
                        content: Some(format!(
                            "step {s} looked up order ORD-{} {}",
                            s * 7919 % 100_003,
                            "y".repeat((s % 300) as usize)
                        )),
                        status: "ok".into(),
                        ..Default::default()
                    }
                })
                .collect();
            eng.append(batch).expect("append");
            eng.flush().expect("flush");
            assert!(eng.compact().expect("compact"));
        }
        assert_eq!(eng.snapshot().segments.len(), 16);
    }
    let mut rng = rand::rng();
    let (mut killed_mid_merge, mut unfinished, mut merged) = (0, 0, 0);
    let mut segments_before = 16;
    for round in 0..8 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_merge-worker"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn merge-worker");
        let mut opened = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut opened).expect("read");
        assert_eq!(opened.trim(), "OPEN", "round {round}");
        let seg_dir = dir.path().join("segments");
        let merging = || {
            std::fs::read_dir(&seg_dir)
                .map(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "tmp")))
                .unwrap_or(false)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !merging() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        if merging() {
            killed_mid_merge += 1;
        }
        kill9(child.id());
        assert!(!child.wait().expect("wait").success(), "round {round}: killed");
        let (eng, report) = Engine::open(dir.path(), manual()).expect("recover");
        unfinished += report.removed_orphans;
        assert_eq!(stored_once(&eng, round), all, "round {round}: every event once");
        let files = std::fs::read_dir(&seg_dir).expect("dir").count();
        assert_eq!(files, eng.snapshot().segments.len(), "round {round}: only listed files ({report:?})");
        merged += segments_before - files;
        segments_before = files;
    }
    eprintln!(
        "killed during a merge {killed_mid_merge} of 8 times; {unfinished} unfinished files removed; {merged} segments fewer"
    );
    assert!(killed_mid_merge >= 2, "only {killed_mid_merge} of 8 kills landed during a merge");
    assert!(unfinished >= 1, "no kill left an unfinished merge behind");
    let (eng, _) = Engine::open(dir.path(), manual()).expect("reopen");
    while eng.compact().expect("compact") {}
    assert!(eng.snapshot().segments.len() <= 2, "{} segments", eng.snapshot().segments.len());
    assert_eq!(stored_once(&eng, usize::MAX), all, "after merging");
}

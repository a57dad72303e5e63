//! Crash safety: a real child process appends with concurrent writers and is SIGKILLed at
//! random moments; after each kill, every acknowledged event is present exactly once.
//! `CRASH_ITERATIONS` raises the number of kills (default 20).

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

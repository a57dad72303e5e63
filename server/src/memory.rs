//! Giving freed heap memory back to the operating system once the server is idle or lightly
//! loaded.
//!
//! glibc's malloc keeps memory that was freed in its arenas for reuse. After a burst of
//! ingest (a full buffer, flushes, a compaction) the server measured 1.27 GB resident while
//! idle, although the engine held a fraction of that; `malloc_trim(0)` brought it to 197 MB,
//! and later sessions' changes to 90-110 MB with 21 MB in use.
//!
//! `malloc_trim` returns the free chunks inside every arena, but not the free space at the
//! top of each per-thread arena: glibc shrinks that only when the arena's own thread frees
//! a large chunk while the top exceeds the trim threshold, which the dynamic threshold
//! raises to 64 MiB after a burst. So, at each release, [`release_when_idle`] starts a new trim
//! epoch, and every thread that allocates trims its own arena ([`trim_thread_arena`]) the
//! next time it is idle: tokio's workers when they park ([`thread_idle`], installed with
//! `on_thread_park`), the engine's flush and compaction threads when they wake (its
//! `background_thread_hook`), rayon's threads by a broadcast, and every runtime thread as it
//! stops (`on_thread_stop`), so an exited thread's arena, which the next new thread
//! inherits, is left trimmed.
//!
//! It all runs at the end of a period in which the server was idle or lightly loaded (a
//! trickle of appends, a dashboard's polls), if a busy period came since the last time or
//! anonymous memory grew by 16 MiB (and once after start), so it never competes with busy
//! ingest or queries and does not repeat for nothing. It also unmaps the segment file pages
//! the process touched.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::Engine;

/// The period over which the server's load is judged light or busy; memory is returned at
/// the end of a light one.
pub const QUIET_PERIOD: Duration = Duration::from_secs(5);

/// Largest allocation glibc serves from an arena rather than its own map, fixed once the
/// first trim freezes glibc's dynamic thresholds (setting any of them stops their
/// adjustment). It is the ceiling the dynamic rule reaches after a burst (32 MiB on 64-bit).
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Free space an arena may keep at its top between trims: what the dynamic rule allows after
/// a burst (twice the mmap threshold), so ingest pays for no more `madvise` calls than before.
const TOP_KEPT_WHILE_BUSY: i32 = 64 << 20;

/// A chunk that comes from the calling thread's arena (below the mmap threshold) and is large
/// enough that freeing it makes glibc consider trimming that arena (at least 64 KiB).
const TRIM_PROBE_BYTES: usize = 96 << 10;

/// Bumped at each release; a thread trims its arena once per value.
static TRIM_EPOCH: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The epoch this thread last trimmed its arena in.
    static TRIMMED_IN: Cell<u64> = const { Cell::new(0) };
}

/// Queries served ([`note_query`]): a query burst frees memory too (hash tables, sorts,
/// decoded blocks beyond the caches), so many queries make a period busy, like writes.
static QUERIES: AtomicU64 = AtomicU64::new(0);

/// A query finished (called by the SQL endpoint).
pub fn note_query() {
    QUERIES.fetch_add(1, Ordering::Relaxed);
}

/// The server's activity counters: they stay equal while nothing is written or queried.
fn activity(engine: &Engine) -> [u64; 4] {
    let s = engine.stats();
    [
        s.events_appended.load(Ordering::Relaxed),
        s.flushes.load(Ordering::Relaxed),
        s.compactions.load(Ordering::Relaxed),
        QUERIES.load(Ordering::Relaxed),
    ]
}

/// Appends and queries per [`QUIET_PERIOD`] under which the server counts as lightly loaded
/// (a trickle of events, a dashboard's polls): memory goes back then too, not only when
/// nothing at all happens, or a burst followed by a trickle would keep its memory all day.
const LIGHT_EVENTS: u64 = 5_000;
const LIGHT_QUERIES: u64 = 50;

/// Growth of anonymous resident memory since the last release that makes another worth it.
const RELEASE_MIN_GROWTH: u64 = 16 << 20;

/// Whether the last period (`delta` of [`activity`]) was light: few appends and queries, no
/// compaction finished. Flushes do not count: a trickle of events flushes by age.
fn is_light(delta: [u64; 4]) -> bool {
    let [events, _flushes, compactions, queries] = delta;
    events < LIGHT_EVENTS && compactions == 0 && queries < LIGHT_QUERIES
}

/// Whether to release at the end of a light period: the first time, after a busy period since
/// the last release (what it freed sits in the arenas without showing as growth), or when
/// anonymous memory grew since the last release (a single large query, caches filling).
fn should_release(busy_since_last: bool, anon_now: Option<u64>, anon_after_last: Option<u64>) -> bool {
    match (anon_now, anon_after_last) {
        (_, None) => true,
        (Some(now), Some(after)) => busy_since_last || now >= after.saturating_add(RELEASE_MIN_GROWTH),
        (None, Some(_)) => busy_since_last,
    }
}

/// What the period after a release (`delta` of [`activity`]) settles: the memory to measure
/// growth from (`anon` as read now, the threads having trimmed their arenas), and whether
/// another release is due at the next light period. Queries in that period may have grown
/// memory already (a first query after a start decodes segment indexes): taken as the
/// baseline, that growth would stay until the next busy period, so a release follows instead.
fn after_settling(delta: [u64; 4], anon: Option<u64>, after_last: Option<u64>) -> (Option<u64>, bool) {
    match delta[3] {
        0 => (anon.or(after_last), false),
        _ => (after_last, true),
    }
}

/// Runs for the server's life: at the end of each [`QUIET_PERIOD`] in which the server was
/// idle or lightly loaded, return freed heap memory to the operating system if there was a
/// busy period or memory grew since the last time (and once right after start).
pub async fn release_when_idle(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(QUIET_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = activity(&engine);
    let mut after_last: Option<u64> = None;
    let mut busy_since_last = false;
    // Threads trim on their next idle moment, so memory is read one period after a release.
    let mut settling = false;
    loop {
        tick.tick().await;
        let now = activity(&engine);
        let delta = std::array::from_fn(|i| now[i].wrapping_sub(last[i]));
        last = now;
        if !is_light(delta) {
            busy_since_last = true;
            settling = false;
            continue;
        }
        let anon = crate::process::anonymous_resident_bytes();
        if settling {
            settling = false;
            (after_last, busy_since_last) = after_settling(delta, anon, after_last);
            continue;
        }
        if should_release(busy_since_last, anon, after_last) {
            let engine = engine.clone();
            let _ = tokio::task::spawn_blocking(move || release_everything(&engine)).await;
            after_last = Some(anon.unwrap_or(0));
            busy_since_last = false;
            settling = true;
            // Wake the runtime's workers so that each parks again, and trims, now rather than
            // at its next request.
            for _ in 0..8 {
                tokio::spawn(async {});
            }
        }
    }
}

/// Start a new trim epoch and return what this thread and rayon's can: segment pages, each
/// rayon thread's arena, this thread's arena, then the free chunks inside every arena. The
/// other threads trim their own arenas when next idle.
pub fn release_everything(engine: &Engine) {
    RELEASES.fetch_add(1, Ordering::Relaxed);
    new_trim_epoch();
    release_segment_pages(engine);
    rayon::broadcast(|_| thread_idle());
    thread_idle();
    release_free_memory();
}

/// Times [`release_everything`] ran.
static RELEASES: AtomicU64 = AtomicU64::new(0);

/// Times the server, idle or lightly loaded, returned freed memory (for `/metrics`).
pub fn releases() -> u64 {
    RELEASES.load(Ordering::Relaxed)
}

/// From now on each thread trims its arena once more, when next idle.
fn new_trim_epoch() {
    TRIM_EPOCH.fetch_add(1, Ordering::AcqRel);
}

/// Unmap the segment file pages that opening, compacting and reading mapped into the
/// process: they stay in the page cache, shared and reclaimable, but would count as the
/// server's resident memory (27 MB of a restarted server holding 1M events).
pub fn release_segment_pages(engine: &Engine) {
    for live in engine.snapshot().segments {
        live.segment.release_pages();
    }
}

/// A thread is idle (a tokio worker about to park, an engine thread between naps): trim its
/// arena if the server released memory since it last did. One atomic load when there is nothing to
/// do.
pub fn thread_idle() {
    let epoch = TRIM_EPOCH.load(Ordering::Acquire);
    if epoch != 0 && TRIMMED_IN.with(Cell::get) != epoch {
        TRIMMED_IN.with(|t| t.set(epoch));
        trim_thread_arena();
    }
}

/// A thread is about to exit: its arena passes to the next new thread, so trim it now.
pub fn thread_stopping() {
    trim_thread_arena();
}

/// Return the free top of the calling thread's malloc arena to the operating system (glibc
/// only; elsewhere a no-op): lower the trim threshold, free a chunk from this arena so glibc
/// trims it, and raise the threshold again.
pub fn trim_thread_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        #[allow(unsafe_code)]
        // SAFETY: `mallopt` takes plain integers and changes glibc's tuning under its own
        // lock. The probe is a fresh allocation, checked for null, freed exactly once and
        // never read or written.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 0);
            let probe = libc::malloc(TRIM_PROBE_BYTES).cast::<u8>();
            if !probe.is_null() {
                // A write the compiler must keep: an allocation freed unused may be elided,
                // and then nothing is trimmed.
                std::ptr::write_volatile(probe, 1);
                libc::free(probe.cast());
            }
            libc::mallopt(libc::M_TRIM_THRESHOLD, TOP_KEPT_WHILE_BUSY);
        }
    }
}

/// Return the allocator's free pages inside every arena to the operating system (glibc only;
/// elsewhere a no-op).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` takes no pointers; it only walks glibc's own arenas under their
    // locks and releases pages no allocation uses. Any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident bytes of this process (Linux).
    fn resident() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("resident pages");
        pages * crate::process::page_bytes().expect("page size")
    }

    /// Freed blocks pinned between live ones stay resident until trimmed; then most of them
    /// are returned.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_goes_back_to_the_system() {
        std::thread::spawn(|| {
            let mut live = Vec::new();
            let mut freed = Vec::new();
            for i in 0..2_000u32 {
                // 64 KiB: below glibc's mmap threshold, so from the heap, and touched.
                freed.push(vec![i as u8 | 1; 64 << 10]);
                live.push(vec![1u8; 24]);
            }
            drop(freed);
            let before = resident();
            release_free_memory();
            let after = resident();
            // 125 MiB were touched and freed; at least a quarter of that is still resident
            // before trimming, and trimming returns at least half of what is.
            assert!(before > 32 << 20, "only {before} bytes resident after freeing 125 MiB");
            assert!(after < before / 2, "resident {before} before trimming, {after} after");
            drop(live);
        })
        .join()
        .expect("allocating thread");
    }

    /// Free space at the top of a thread's arena stays resident while it is under the trim
    /// threshold (64 MiB after a burst), and `malloc_trim` leaves it there; the thread's own
    /// trim returns it.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_threads_own_trim_returns_its_arenas_free_top() {
        std::thread::spawn(|| {
            #[allow(unsafe_code)]
            // SAFETY: plain integer tuning, as after a burst under glibc's dynamic thresholds.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TOP_KEPT_WHILE_BUSY);
            }
            let start = resident();
            // 40 MiB in 64 KiB chunks from this thread's arena, touched, then all freed: they
            // merge into the arena's top.
            let chunks: Vec<Vec<u8>> = (0..640u32).map(|i| vec![i as u8 | 1; 64 << 10]).collect();
            drop(chunks);
            release_free_memory();
            let freed = resident();
            trim_thread_arena();
            let trimmed = resident();
            assert!(freed > start + (30 << 20), "{start} bytes resident at start, {freed} after freeing 40 MiB");
            assert!(freed - trimmed > 30 << 20, "{freed} bytes resident before the thread's trim, {trimmed} after");
        })
        .join()
        .expect("allocating thread");
    }

    /// A thread trims once per release however often it goes idle, and not before the
    /// first one.
    #[test]
    fn idle_threads_trim_once_per_release() {
        std::thread::spawn(|| {
            let trimmed_in = || TRIMMED_IN.with(Cell::get);
            thread_idle();
            let first = TRIM_EPOCH.load(Ordering::Acquire);
            assert_eq!(trimmed_in(), first, "idle with epoch {first}");
            new_trim_epoch();
            let epoch = TRIM_EPOCH.load(Ordering::Acquire);
            assert_ne!(trimmed_in(), epoch, "not trimmed before it is idle");
            thread_idle();
            assert_eq!(trimmed_in(), epoch);
        })
        .join()
        .expect("idle thread");
    }

    /// Light periods: a trickle of appends, a dashboard's polls and flushes by age; busy ones:
    /// many appends, many queries, or a finished compaction.
    #[test]
    fn light_periods_are_few_appends_and_queries_and_no_compaction() {
        assert!(is_light([0; 4]));
        assert!(is_light([LIGHT_EVENTS - 1, 3, 0, LIGHT_QUERIES - 1]));
        assert!(!is_light([LIGHT_EVENTS, 0, 0, 0]));
        assert!(!is_light([0, 0, 0, LIGHT_QUERIES]));
        assert!(!is_light([0, 0, 1, 0]));
    }

    /// Released the first time, after any busy period, or when memory grew; not otherwise.
    #[test]
    fn releases_follow_busy_periods_or_grown_memory() {
        let mb = |n: u64| Some(n << 20);
        assert!(should_release(false, mb(10), None), "the first time");
        assert!(should_release(false, None, None), "the first time, memory unknown");
        assert!(should_release(true, mb(40), mb(40)), "after a busy period, whatever memory shows");
        assert!(should_release(true, None, mb(40)));
        assert!(should_release(false, mb(56), mb(40)), "grown by the minimum");
        assert!(!should_release(false, mb(55), mb(40)), "grown by less");
        assert!(!should_release(false, mb(30), mb(40)));
        assert!(!should_release(false, None, mb(40)));
    }

    #[test]
    fn queries_while_a_release_settles_bring_another() {
        let mb = |n: u64| Some(n << 20);
        assert_eq!(after_settling([0; 4], mb(6), mb(200)), (mb(6), false), "what the release left");
        assert_eq!(after_settling([3, 1, 0, 0], mb(7), mb(200)), (mb(7), false), "a trickle of events");
        assert_eq!(after_settling([0; 4], None, mb(200)), (mb(200), false));
        let (base, again) = after_settling([0, 0, 0, 1], mb(32), mb(30));
        assert!(again, "a query meanwhile: release again");
        assert!(should_release(again, mb(32), base));
    }

    /// Queries count as activity: memory freed by a query burst is returned once it is over,
    /// not only after writes.
    #[test]
    fn queries_delay_the_release_like_writes() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = engine::EngineConfig { background: false, ..Default::default() };
        let (engine, _) = Engine::open(dir.path(), cfg).expect("open");
        let quiet = activity(&engine);
        assert_eq!(activity(&engine), quiet, "nothing happened");
        note_query();
        assert_ne!(activity(&engine), quiet, "a query happened");
    }
}

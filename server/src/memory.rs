//! Giving freed heap memory back to the operating system once the server goes quiet.
//!
//! glibc's malloc keeps memory that was freed in its arenas for reuse. After a burst of
//! ingest (a full buffer, flushes, a compaction) the server measured 1.27 GB resident while
//! idle, although the engine held a fraction of that; `malloc_trim(0)` brought it to 197 MB.
//! [`release_when_idle`] calls it once after each burst, when neither appends, flushes nor
//! compactions have happened for a whole period, so it never competes with busy ingest
//! (and once after start), and then also unmaps the segment file pages the process touched.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use engine::Engine;

/// How long the engine must have been quiet before freed memory is returned.
pub const QUIET_PERIOD: Duration = Duration::from_secs(5);

/// The engine's activity counters: they stay equal while nothing is written.
fn activity(engine: &Engine) -> (u64, u64, u64) {
    let s = engine.stats();
    (
        s.events_appended.load(Ordering::Relaxed),
        s.flushes.load(Ordering::Relaxed),
        s.compactions.load(Ordering::Relaxed),
    )
}

/// Runs for the server's life: after activity, once a [`QUIET_PERIOD`] passes without any,
/// return freed heap memory to the operating system.
pub async fn release_when_idle(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(QUIET_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = activity(&engine);
    let mut released = false;
    loop {
        tick.tick().await;
        let now = activity(&engine);
        if now != last {
            last = now;
            released = false;
        } else if !released {
            released = true;
            let engine = engine.clone();
            let _ = tokio::task::spawn_blocking(move || {
                release_segment_pages(&engine);
                release_free_memory();
            })
            .await;
        }
    }
}

/// Unmap the segment file pages that opening, compacting and reading mapped into the
/// process: they stay in the page cache, shared and reclaimable, but would count as the
/// server's resident memory (27 MB of a restarted server holding 1M events).
pub fn release_segment_pages(engine: &Engine) {
    for live in engine.snapshot().segments {
        live.segment.release_pages();
    }
}

/// Return the allocator's free pages to the operating system (glibc only; elsewhere a
/// no-op).
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
        pages * 4096
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
}

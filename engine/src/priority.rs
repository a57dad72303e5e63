//! CPU priority of the engine's background threads: compaction yields the processor to
//! appends, flushes and queries when they compete for it, and runs at full speed when they do
//! not. Linux keeps a nice value per thread, so lowering one thread's priority leaves the
//! rest of the process as it was; elsewhere these functions do nothing.

/// Raise the calling thread's nice value to at least `nice` (0..=19; higher yields more). An
/// unprivileged thread may raise its nice value but not lower it again, so this is one-way,
/// and a thread already nicer than `nice` stays as it is.
pub fn lower_current_thread(nice: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let nice = nice.clamp(0, 19).max(current_thread_nice());
        // SAFETY: `gettid` takes no arguments and cannot fail. `setpriority` reads plain
        // integers and changes only the scheduling weight of the thread named by the id, which
        // is the calling thread.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
    Ok(())
}

/// The calling thread's nice value (0 where threads have none of their own).
pub fn current_thread_nice() -> i32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: as in `lower_current_thread`; `getpriority` only reads the thread's value.
        // (It may return -1 as a value, and the id is the caller's own, so it cannot fail.)
        #[allow(unsafe_code)]
        unsafe {
            libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
        }
    }
    #[cfg(not(target_os = "linux"))]
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn lowering_one_thread_leaves_the_others() {
        let before = current_thread_nice();
        let inside =
            std::thread::spawn(|| lower_current_thread(12).map(|()| current_thread_nice())).join().expect("thread");
        assert_eq!(inside.expect("setpriority"), 12.max(before));
        assert_eq!(current_thread_nice(), before, "the calling thread keeps its priority");
    }
}

//! The server process's own resource figures for `/metrics`, under the names Prometheus'
//! client libraries give them (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
//! ...), read from `/proc` on Linux; elsewhere there are none. Parsing is pure and tested on
//! fixed text; only [`read`] touches the file system.

/// What `/proc/self/stat` and friends say about this process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessFigures {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub threads: u64,
    /// Seconds since the Unix epoch when the process started.
    pub start_time_seconds: f64,
    pub open_fds: u64,
}

/// The fields of `/proc/<pid>/stat` this module uses, in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatFields {
    utime_ticks: u64,
    stime_ticks: u64,
    threads: u64,
    start_ticks: u64,
    virtual_bytes: u64,
    resident_pages: u64,
}

/// Parse `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself
/// hold spaces and parentheses, so the fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime_ticks: field(14)?,
        stime_ticks: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`.
fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// Combine the parsed files with the system's page size and clock tick rate.
fn figures(stat: StatFields, boot_time: u64, page_bytes: u64, ticks_per_second: u64, open_fds: u64) -> ProcessFigures {
    let ticks = ticks_per_second.max(1) as f64;
    ProcessFigures {
        resident_bytes: stat.resident_pages.saturating_mul(page_bytes),
        virtual_bytes: stat.virtual_bytes,
        cpu_seconds: (stat.utime_ticks + stat.stime_ticks) as f64 / ticks,
        threads: stat.threads,
        start_time_seconds: boot_time as f64 + stat.start_ticks as f64 / ticks,
        open_fds,
    }
}

/// A system setting from `sysconf` (`None` if it reports none).
#[cfg(target_os = "linux")]
fn sysconf(name: libc::c_int) -> Option<u64> {
    #[allow(unsafe_code)]
    // SAFETY: `sysconf` takes an integer name and returns an integer; it touches no memory of
    // ours.
    u64::try_from(unsafe { libc::sysconf(name) }).ok().filter(|v| *v > 0)
}

/// Bytes per memory page, the unit of `/proc/<pid>/statm` (`None` off Linux).
pub fn page_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        sysconf(libc::_SC_PAGESIZE)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// This process's figures now (`None` off Linux or if `/proc` cannot be read).
pub fn read() -> Option<ProcessFigures> {
    #[cfg(target_os = "linux")]
    {
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let boot = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(figures(stat, boot, page_bytes()?, sysconf(libc::_SC_CLK_TCK)?, fds))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Resident memory not backed by files (heap, stacks): resident minus shared pages of
/// `/proc/self/statm`. `None` off Linux or if it cannot be read.
pub fn anonymous_resident_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        parse_statm_anonymous(&std::fs::read_to_string("/proc/self/statm").ok()?, page_bytes()?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Resident minus shared pages of a `/proc/<pid>/statm` line, in bytes.
fn parse_statm_anonymous(statm: &str, page_bytes: u64) -> Option<u64> {
    let mut fields = statm.split_ascii_whitespace().skip(1).map(|f| f.parse::<u64>().ok());
    let (resident, shared) = (fields.next()??, fields.next()??);
    Some(resident.saturating_sub(shared).saturating_mul(page_bytes))
}

/// Append the figures to a Prometheus text exposition.
pub fn write_metrics(out: &mut String, p: &ProcessFigures) {
    use std::fmt::Write;
    let rows: [(&str, &str, &str, f64); 6] = [
        ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", p.resident_bytes as f64),
        ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", p.virtual_bytes as f64),
        ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", p.cpu_seconds),
        ("process_threads", "gauge", "Number of OS threads in the process.", p.threads as f64),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
        ("process_open_fds", "gauge", "Number of open file descriptors.", p.open_fds as f64),
    ];
    for (name, kind, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line's shape, with a command name holding spaces and parentheses.
    const STAT: &str = "4242 (am (x) y) S 1 4242 4242 0 -1 4194560 2093 0 0 0 150 75 0 0 20 0 \
                        9 0 123456 987654321 3000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let s = parse_stat(STAT).expect("parses");
        assert_eq!(
            s,
            StatFields {
                utime_ticks: 150,
                stime_ticks: 75,
                threads: 9,
                start_ticks: 123456,
                virtual_bytes: 987654321,
                resident_pages: 3000,
            }
        );
        assert_eq!(parse_stat("4242 (am) S 1 2"), None, "too few fields");
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn figures_use_the_page_size_and_tick_rate() {
        let s = parse_stat(STAT).expect("parses");
        let boot = parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n").expect("btime");
        let p = figures(s, boot, 4096, 100, 12);
        assert_eq!(p.resident_bytes, 3000 * 4096);
        assert_eq!(p.virtual_bytes, 987654321);
        assert!((p.cpu_seconds - 2.25).abs() < 1e-9, "{}", p.cpu_seconds);
        assert!((p.start_time_seconds - 1_700_001_234.56).abs() < 1e-6, "{}", p.start_time_seconds);
        assert_eq!((p.threads, p.open_fds), (9, 12));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[test]
    fn anonymous_memory_is_resident_minus_shared() {
        assert_eq!(parse_statm_anonymous("5000 3000 1000 10 0 900 0\n", 4096), Some(2000 * 4096));
        assert_eq!(parse_statm_anonymous("5000 3000", 4096), None, "no shared field");
        assert_eq!(parse_statm_anonymous("5000 x 1000", 4096), None);
        let anon = anonymous_resident_bytes();
        #[cfg(target_os = "linux")]
        assert!(anon.is_some_and(|a| a > 0), "{anon:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_as_itself() {
        let p = read().expect("figures");
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("pages");
        // Resident size moves a little between the two reads.
        let statm_bytes = pages * page_bytes().expect("page size");
        assert!(p.resident_bytes.abs_diff(statm_bytes) < 16 << 20, "{} against {statm_bytes}", p.resident_bytes);
        assert!(p.threads >= 1 && p.open_fds >= 3, "{p:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
        assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0, "{p:?}");
        let mut out = String::new();
        write_metrics(&mut out, &p);
        assert!(out.contains(&format!("process_resident_memory_bytes {}\n", p.resident_bytes)), "{out}");
        assert!(out.contains("# TYPE process_cpu_seconds_total counter\n"), "{out}");
    }
}

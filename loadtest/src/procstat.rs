//! The broker's resident memory and CPU time, read from `/proc/<pid>` (Linux).

use std::io;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcSample {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time in seconds.
    pub cpu_seconds: f64,
}

/// Clock ticks per second for `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads RSS and CPU time of `pid`.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS in /proc/<pid>/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed /proc/<pid>/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |idx: usize| -> f64 { fields.get(idx).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    // utime is field 14 and stime field 15, i.e. indexes 11 and 12 after the state (field 3).
    let cpu_seconds = (ticks(11) + ticks(12)) / TICKS_PER_SECOND;
    Ok(ProcSample {
        rss_bytes: rss_kib * 1024,
        cpu_seconds,
    })
}

/// Samples `pid` if given; `None` otherwise or when it cannot be read.
pub fn maybe(pid: Option<u32>) -> Option<ProcSample> {
    pid.and_then(|pid| sample(pid).ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let s = super::sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 1024 * 1024);
        assert!(s.cpu_seconds >= 0.0);
    }
}

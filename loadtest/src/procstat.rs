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
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse(&status, &stat)
}

/// RSS from `/proc/<pid>/status` and CPU time from `/proc/<pid>/stat`. A field that is missing
/// or not a number is an error, not a zero that would pass for an idle process.
fn parse(status: &str, stat: &str) -> io::Result<ProcSample> {
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS in /proc/<pid>/status"))?;
    // Fields after the command name (which may hold spaces and parentheses) start at the
    // state, field 3.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed /proc/<pid>/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |idx: usize| -> io::Result<f64> {
        fields
            .get(idx)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|t| t as f64)
            .ok_or_else(|| io::Error::other("no utime/stime in /proc/<pid>/stat"))
    };
    // utime is field 14 and stime field 15, i.e. indexes 11 and 12 after the state (field 3).
    let cpu_seconds = (ticks(11)? + ticks(12)?) / TICKS_PER_SECOND;
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
    use std::time::{Duration, Instant};

    use super::*;

    /// A real `stat` line whose command holds a space and a `)`, with utime 250 and stime 70.
    const STAT: &str = "4242 (web (worker) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 70 0 0 20 0 \
                        9 0 1000 123456789 3000 18446744073709551615 1 1 0 0 0 0 0 4096 17664 0 0 0 \
                        17 1 0 0 0 0 0";
    const STATUS: &str = "Name:\tweb\nVmPeak:\t  900000 kB\nVmSize:\t  800000 kB\n\
                          VmRSS:\t   12000 kB\nThreads:\t9\n";

    #[test]
    fn parses_utime_stime_and_rss_past_an_odd_command_name() {
        let s = parse(STATUS, STAT).unwrap();
        assert_eq!(s.rss_bytes, 12000 * 1024, "VmRSS, not VmSize or VmPeak");
        assert_eq!(s.cpu_seconds, 3.2, "(250 + 70) ticks at 100 per second");
    }

    #[test]
    fn a_missing_field_is_an_error_not_zero() {
        assert!(parse("Name:\tweb\n", STAT).is_err());
        let cut = &STAT[..STAT.find(" 250 ").unwrap()];
        assert!(parse(STATUS, cut).is_err());
        assert!(parse(STATUS, &STAT.replace(" 250 ", " x ")).is_err());
    }

    /// Against this process: CPU time grows with work done, RSS with memory touched.
    #[test]
    fn follows_this_process_as_it_works_and_grows() {
        let pid = std::process::id();
        let before = sample(pid).unwrap();
        // Spin until the kernel has charged 50 ms more (5 ticks); capped so it cannot hang.
        let started = Instant::now();
        let mut spin = 0u64;
        while sample(pid).unwrap().cpu_seconds < before.cpu_seconds + 0.05 {
            for i in 0..100_000u64 {
                spin = std::hint::black_box(spin.wrapping_mul(31).wrapping_add(i));
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "cpu_seconds stuck at {}",
                before.cpu_seconds
            );
        }
        let grown: Vec<u8> = vec![1u8; 64 << 20];
        let after = sample(pid).unwrap();
        std::hint::black_box(&grown);
        assert!(
            after.rss_bytes >= before.rss_bytes + (48 << 20),
            "RSS {} -> {} after touching 64 MiB",
            before.rss_bytes,
            after.rss_bytes
        );
    }
}

//! `connect`: opens N device connections through the real backend API and login frame, at
//! most K handshakes in flight, and reports logins/s, login latency and broker memory per
//! connection.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::fanout::progress;
use crate::procstat;
use crate::target::Target;

/// What `connect` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Connections opened and logged in.
    pub connections: u64,
    /// Logins per second over the connect phase.
    pub logins_per_sec: f64,
    /// Login latency (TCP connect to `synced`), microseconds.
    pub login_p50_us: u64,
    /// 99th percentile.
    pub login_p99_us: u64,
    /// Broker RSS before connecting.
    pub rss_before_bytes: Option<u64>,
    /// Broker RSS with every connection open and idle.
    pub rss_after_bytes: Option<u64>,
    /// (after − before) / connections.
    pub rss_per_connection_bytes: Option<f64>,
    /// Broker CPU seconds per login (TCP, handshake, token check, registration, catch-up).
    pub server_cpu_us_per_login: Option<f64>,
    /// This generator's own CPU per login, which shares the machine.
    pub client_cpu_us_per_login: Option<f64>,
}

/// Opens `persons × devices` connections and holds them while measuring memory.
pub async fn run(
    target: &Target,
    persons: u32,
    devices: u32,
    inflight: usize,
    source_count: u8,
    server_pid: Option<u32>,
    show: bool,
) -> anyhow::Result<Report> {
    let creds = target.prepare(persons, devices, 32).await?;
    let before = procstat::maybe(server_pid);
    let rss_before = before.map(|s| s.rss_bytes);
    let me_before = procstat::sample(std::process::id()).ok();
    let bar = progress(show, creds.len() as u64, "connecting");
    let started = Instant::now();
    let held = target
        .open_all(creds, inflight, source_count, &bar, |_| None)
        .await?;
    let elapsed = started.elapsed();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for (_, _, took) in &held {
        hist.saturating_record(took.as_micros() as u64);
    }
    let after_login = procstat::maybe(server_pid);
    let me_after = procstat::sample(std::process::id()).ok();
    bar.finish_and_clear();
    // Let the broker settle before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = procstat::maybe(server_pid).map(|s| s.rss_bytes);
    let n = held.len() as u64;
    drop(held);
    let per_login = |b: Option<procstat::ProcSample>, a: Option<procstat::ProcSample>| match (b, a)
    {
        (Some(b), Some(a)) if n > 0 => Some((a.cpu_seconds - b.cpu_seconds) * 1e6 / n as f64),
        _ => None,
    };
    Ok(Report {
        connections: n,
        logins_per_sec: n as f64 / elapsed.as_secs_f64(),
        login_p50_us: hist.value_at_quantile(0.5),
        login_p99_us: hist.value_at_quantile(0.99),
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        rss_per_connection_bytes: match (rss_before, rss_after) {
            (Some(b), Some(a)) if n > 0 => Some((a as f64 - b as f64) / n as f64),
            _ => None,
        },
        server_cpu_us_per_login: per_login(before, after_login),
        client_cpu_us_per_login: per_login(me_before, me_after),
    })
}

//! `connect`: opens N device connections through the real backend API and login frame, at
//! most K handshakes in flight, and reports logins/s, login latency and broker memory per
//! connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::procstat;
use crate::target::{Target, sources};

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
    let bar = if show {
        ProgressBar::new(creds.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    let srcs = sources(source_count);
    let sem = Arc::new(tokio::sync::Semaphore::new(inflight.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(creds.len());
    for (idx, c) in creds.into_iter().enumerate() {
        let target = target.clone();
        let sem = sem.clone();
        let source = srcs[idx % srcs.len()];
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await?;
            let opened = target.open(&c, source).await;
            bar.inc(1);
            opened
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut held = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (ws, took) = task.await??;
        hist.saturating_record(took.as_micros() as u64);
        held.push(ws);
    }
    let elapsed = started.elapsed();
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

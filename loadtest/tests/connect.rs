//! `connect` end to end at tiny scale against a real in-process broker: every device opens and
//! logs in (the broker counts the logins), and the report's figures are consistent with that.

use std::time::{Duration, Instant};

use octet_loadtest::connect::run;
use octet_loadtest::target::Target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

/// The broker's count of successful logins, from `/metrics` (open to loopback clients).
async fn logins_ok(target: &Target) -> u64 {
    let Target::Octet(octet) = target else {
        unreachable!("common::Broker is an octet broker")
    };
    let mut tcp = tokio::net::TcpStream::connect(octet.addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("octet_logins_total{result=\"ok\"} "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn connect_opens_and_logs_in_every_device() {
    let broker = common::Broker::start(|_| {}).await;
    let logins_before = logins_ok(&broker.target).await;
    // 5 persons × 4 devices, at most 3 handshakes at once, from 2 source addresses; the broker
    // runs in this process, so its pid is ours.
    let started = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        run(&broker.target, 5, 4, 3, 2, Some(std::process::id()), false),
    )
    .await
    .expect("the run ends by itself")
    .unwrap();
    let wall = started.elapsed();

    assert_eq!(report.connections, 20);
    assert_eq!(
        logins_ok(&broker.target).await - logins_before,
        20,
        "{report:?}"
    );
    // The rate is over the connect phase: not slower than over the whole run, and not faster
    // than the slowest login allows (histogram values carry 3 significant digits).
    let rate = report.logins_per_sec;
    assert!(rate >= 20.0 / wall.as_secs_f64(), "{report:?} in {wall:?}");
    let p99 = report.login_p99_us as f64 / 1e6;
    assert!(rate * p99 <= 20.0 * 1.01, "{report:?}");
    assert!(report.login_p50_us > 0 && report.login_p50_us <= report.login_p99_us);
    assert!(
        report.login_p99_us as u128 <= wall.as_micros(),
        "{report:?}"
    );
    // Memory: this process, with 20 connections and their broker sessions in it.
    let (before, after) = (
        report.rss_before_bytes.unwrap(),
        report.rss_after_bytes.unwrap(),
    );
    assert!(before > 1 << 20, "{report:?}");
    assert_eq!(
        report.rss_per_connection_bytes.unwrap(),
        (after as f64 - before as f64) / 20.0
    );
    // CPU: broker and generator are this one process, sampled back to back, so the two figures
    // agree to within a couple of 10 ms ticks; neither exceeds what two cores could do.
    let server = report.server_cpu_us_per_login.unwrap();
    let client = report.client_cpu_us_per_login.unwrap();
    assert!((server - client).abs() * 20.0 <= 20_000.0, "{report:?}");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    assert!(
        (0.0..=wall.as_secs_f64() * 1e6 * cores / 20.0 + 1_000.0).contains(&server),
        "{report:?} in {wall:?}"
    );
}

//! `connect` end to end at tiny scale against a real in-process broker: every device opens and
//! logs in, and the report's figures are consistent with that.

use std::time::Duration;

use octet_loadtest::connect::run;

mod common;

#[tokio::test]
async fn connect_opens_and_logs_in_every_device() {
    let broker = common::Broker::start(|_| {}).await;
    // 5 persons × 4 devices, at most 3 handshakes at once, from 2 source addresses; the broker
    // runs in this process, so its pid is ours.
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        run(&broker.target, 5, 4, 3, 2, Some(std::process::id()), false),
    )
    .await
    .expect("the run ends by itself")
    .unwrap();

    assert_eq!(report.connections, 20);
    assert!(report.logins_per_sec > 0.0, "{report:?}");
    assert!(report.login_p50_us > 0 && report.login_p50_us <= report.login_p99_us);
    assert!(report.rss_before_bytes.is_some() && report.rss_after_bytes.is_some());
    assert!(report.server_cpu_us_per_login.is_some());
}

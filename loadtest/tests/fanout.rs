//! The load generator end to end at tiny scale against a real in-process broker: every
//! delivery accounted for, and the counts it reports add up.

use std::time::Duration;

use octet_loadtest::fanout::{Plan, run};

mod common;

#[tokio::test]
async fn fanout_accounts_for_every_delivery() {
    let broker = common::Broker::start(|_| {}).await;
    let target = &broker.target;
    let plan = Plan {
        persons: 4,
        devices: 3,
        senders: 4,
        rates: vec![100, 200],
        warmup: Duration::from_millis(200),
        measure: Duration::from_millis(800),
        inflight: 8,
        sources: 2,
        server_pid: Some(std::process::id()),
        progress: false,
    };
    let report = tokio::time::timeout(Duration::from_secs(30), run(target, &plan))
        .await
        .expect("the run ends by itself")
        .unwrap();

    let t = report.totals;
    assert_eq!((t.lost, t.duplicated, t.out_of_order), (0, 0, 0), "{t:?}");
    assert_eq!(t.received, t.expected);
    // Each send owes 3 recipient devices + 2 other devices of the sender.
    assert_eq!(t.expected % 5, 0);
    assert!(t.expected > 0);
    assert_eq!(report.connections, 12);
    assert_eq!(report.phases.len(), 2);
    for phase in &report.phases {
        assert!(phase.sends > 0, "{phase:?}");
        let deliveries = phase.deliveries_per_sec * 0.8;
        assert_eq!(deliveries.round() as u64, phase.sends * 5, "{phase:?}");
        let l = phase.latency;
        assert!(l.p50_us <= l.p99_us && l.p99_us <= l.max_us);
        assert!(phase.server_cpu_seconds.is_some());
        assert_eq!(phase.lost, 0);
    }
}

//! The `slow` workload at tiny scale against a real in-process broker: the stalled device is
//! closed with 4008 (slow consumer) and the devices that kept reading lost nothing. Not timed.

use std::time::Duration;

use octet_loadtest::slow::{Plan, run};

mod common;

#[tokio::test]
async fn stalled_devices_are_closed_with_4008_and_the_others_lose_nothing() {
    let broker = common::Broker::start(|c| {
        // A small live queue, so the stalled device's fills within the run, yet room for a
        // debug broker on a busy machine to fall briefly behind for the devices that do read
        // (with 8, a reading device was closed as a slow consumer when the machine was loaded).
        c.queue_frames = 64;
    })
    .await;
    let target = &broker.target;
    let plan = Plan {
        persons: 4,
        devices: 3,
        senders: 4,
        rate: 400,
        warmup: Duration::from_millis(200),
        measure: Duration::from_secs(3),
        stall_percent: 1.0,
        pad: 16 * 1024,
        inflight: 8,
        sources: 2,
        server_pid: Some(std::process::id()),
        progress: false,
    };
    let report = tokio::time::timeout(Duration::from_secs(60), run(target, &plan))
        .await
        .expect("the run ends by itself")
        .unwrap();

    assert_eq!(report.connections, 12);
    assert_eq!(report.stalled, 1);
    assert_eq!(
        report.stalled_closed_4008, 1,
        "{:?}",
        report.stalled_outcomes
    );
    let t = report.totals;
    assert!(t.expected > 0);
    assert_eq!((t.lost, t.duplicated, t.out_of_order), (0, 0, 0), "{t:?}");
    assert_eq!(t.received, t.expected);
    assert!(report.rss_peak_bytes.is_some());
}

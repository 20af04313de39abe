//! The JetStream adapter against a real nats-server with JetStream on (Debian's package;
//! `scripts/test` installs it): a tiny fanout run in which every delivery and every PubAck is
//! accounted for, and the stream really holds what was acknowledged.

use std::time::Duration;

use octet_loadtest::fanout::{Plan, run};
use octet_loadtest::target::{JetStream, Target};

mod nats_server;
use nats_server::Server;

#[tokio::test]
async fn fanout_against_jetstream_accounts_for_every_delivery_and_ack() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), true);
    let plan = Plan {
        persons: 4,
        devices: 3,
        senders: 4,
        rates: vec![100],
        warmup: Duration::from_millis(200),
        measure: Duration::from_millis(800),
        inflight: 8,
        sources: 2,
        server_pid: Some(server.child.id()),
        progress: false,
    };
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        run(&Target::JetStream(JetStream::new(server.ws)), &plan),
    )
    .await
    .expect("the run ends by itself")
    .unwrap();
    let t = report.totals;
    assert_eq!((t.lost, t.duplicated, t.out_of_order), (0, 0, 0), "{t:?}");
    assert!(t.expected > 0 && t.received == t.expected, "{t:?}");
    let phase = &report.phases[0];
    assert_eq!(
        (phase.lost, phase.duplicated, phase.out_of_order),
        (0, 0, 0)
    );
    assert!(phase.scheduled > 0);
    assert!(phase.server_cpu_seconds.is_some());
    // Every measured send's second PubAck was timed.
    let acked = phase.ack_latency.expect("publishes are acknowledged");
    assert!(
        acked.p50_us > 0 && acked.p50_us <= acked.max_us,
        "{acked:?}"
    );
    // Every send was stored (two publishes each, both acknowledged).
    let acks = report.acks.expect("JetStream acknowledges publishes");
    assert_eq!((acks.refused, acks.missing), (0, 0), "{acks:?}");
    assert!(acks.owed > 0 && acks.stored == acks.owed, "{acks:?}");
    // One stored message per acknowledgement: the stream's file store holds them.
    let stream = dir.path().join("js/jetstream/$G/streams/PERSONS");
    assert!(stream.join("meta.inf").exists(), "no stream at {stream:?}");
    // 15 deliveries per send here are 2 × 3 − 1 = 5; each send stores two messages.
    assert_eq!(t.expected, acks.owed / 2 * 5);
}

#[tokio::test]
async fn a_server_without_jetstream_is_refused_at_setup() {
    // JetStream off: the stream create request has no responder.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), false);
    let err = Target::JetStream(JetStream::new(server.ws))
        .prepare(2, 1, 1)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no responders"), "{err:#}");
}

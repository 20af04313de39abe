//! The NATS adapter against a real nats-server (Debian's package; `scripts/test` installs it):
//! the same tiny fanout run as against octet, every delivery accounted for. Also the `MSG`
//! parser on synthetic input.

use std::time::Duration;

use octet_loadtest::fanout::{Plan, run};
use octet_loadtest::target::{Nats, Stamp, Target};

mod nats_server;
use nats_server::Server;

#[test]
fn msg_frames_parse_whole_messages_only() {
    // Never connected: only the parser runs.
    let nats = Nats {
        addr: "127.0.0.1:9".parse().unwrap(),
    };
    let a = r#"{"s":1,"n":2,"t":3,"p":0,"w":0}"#;
    let b = r#"{"s":4,"n":5,"t":6,"p":1,"w":1}"#;
    let frame = format!(
        "PING\r\nMSG p.1 1 {}\r\n{a}\r\nMSG p.2 1 {}\r\n{b}\r\nMSG p.3 1 99\r\n{{\"s\"",
        a.len(),
        b.len()
    );
    let mut out: Vec<Stamp> = Vec::new();
    nats.deliveries(frame.as_bytes(), &mut out);
    let got: Vec<(u32, u32)> = out.iter().map(|s| (s.s, s.n)).collect();
    assert_eq!(got, vec![(1, 2), (4, 5)]);
}

#[tokio::test]
async fn fanout_against_a_real_nats_server_accounts_for_every_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), false);
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
        run(&Target::Nats(Nats { addr: server.ws }), &plan),
    )
    .await
    .expect("the run ends by itself")
    .unwrap();
    let t = report.totals;
    assert_eq!((t.lost, t.duplicated, t.out_of_order), (0, 0, 0), "{t:?}");
    assert!(t.expected > 0 && t.received == t.expected);
    assert_eq!(report.phases[0].lost, 0);
}

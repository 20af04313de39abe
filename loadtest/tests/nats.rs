//! The NATS adapter against a real nats-server (Debian's package; `scripts/test` installs it):
//! the same tiny fanout run as against octet, every delivery accounted for. Also the `MSG`
//! parser on synthetic input.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use octet_loadtest::fanout::{Plan, run};
use octet_loadtest::target::{Nats, Stamp, Target};

/// Where nats-server listens for WebSockets, from the ports file it writes once listening
/// (`--ports_file_dir`): its ports are random (`-1`), so no other process can take them first.
fn websocket_addr(dir: &std::path::Path, pid: u32) -> SocketAddr {
    let file = dir.join(format!("nats-server_{pid}.ports"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ports: Option<serde_json::Value> = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        let ws = ports.as_ref().and_then(|p| p["websocket"][0].as_str());
        if let Some(url) = ws {
            return url
                .strip_prefix("ws://")
                .and_then(|addr| addr.parse().ok())
                .unwrap_or_else(|| panic!("unexpected websocket address {url}"));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nats-server never wrote its ports file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

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
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        "listen: \"127.0.0.1:-1\"\nwebsocket { listen: \"127.0.0.1:-1\", no_tls: true }\n",
    )
    .unwrap();
    let mut server = Command::new("nats-server")
        .arg("-c")
        .arg(&config)
        .arg("--ports_file_dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("nats-server is not installed ({err}): apt-get install nats-server (scripts/test does it)")
        });
    let ws = websocket_addr(dir.path(), server.id());
    let plan = Plan {
        persons: 4,
        devices: 3,
        senders: 4,
        rates: vec![100],
        warmup: Duration::from_millis(200),
        measure: Duration::from_millis(800),
        inflight: 8,
        sources: 2,
        server_pid: Some(server.id()),
        progress: false,
    };
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        run(&Target::Nats(Nats { addr: ws }), &plan),
    )
    .await
    .expect("the run ends by itself")
    .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let t = report.totals;
    assert_eq!((t.lost, t.duplicated, t.out_of_order), (0, 0, 0), "{t:?}");
    assert!(t.expected > 0 && t.received == t.expected);
    assert_eq!(report.phases[0].lost, 0);
}

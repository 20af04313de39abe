//! The broker killed with SIGKILL mid-stream: every acknowledged message reaches every device
//! of both persons after a restart and a reconnect with `since`, exactly once by `seq`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use octet::client::{Backend, Connection, Incoming};
use octet::protocol::{ClientFrame, Login, Send, ServerFrame};
use serde_json::value::RawValue;

use crate::harness::{APP_TOKEN, APPID, WAIT};

struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    /// Starts the real binary on a free loopback port and waits until it is healthy.
    async fn start(data_dir: &std::path::Path) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_octet"))
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--app-token",
                APP_TOKEN,
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("octet binary starts");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "broker never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Broker { child, addr }
    }

    fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL"); // std sends SIGKILL on unix
        self.child.wait().unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one device saw: seq → mid, and the sends it got `sent` for (client id → mid).
#[derive(Default)]
struct Seen {
    by_seq: BTreeMap<u64, u64>,
    duplicates: u64,
    acked: BTreeMap<String, u64>,
}

impl Seen {
    fn record(&mut self, seq: u64, mid: u64) {
        if self.by_seq.insert(seq, mid).is_some() {
            self.duplicates += 1;
        }
    }

    /// The highest seq held without a gap below it: what a client resumes from. (Its own
    /// `sent` and the live frames come through different queues, so a kill can leave a hole.)
    fn position(&self) -> u64 {
        let mut position = 0;
        while self.by_seq.contains_key(&(position + 1)) {
            position += 1;
        }
        position
    }
}

/// Sends `sends` one after another (each waits for its `sent`), recording everything, until the
/// connection drops.
async fn drive(mut conn: Connection, sends: Vec<(String, String)>, mut seen: Seen) -> Seen {
    let mut sends = sends.into_iter();
    let mut pending: Option<String> = None;
    loop {
        if pending.is_none()
            && let Some((id, to)) = sends.next()
        {
            let frame = ClientFrame::Send(Send {
                id: id.clone(),
                to,
                body: RawValue::from_string(format!("\"{id}\"")).unwrap(),
            });
            if conn.send(&frame).await.is_err() {
                return seen;
            }
            pending = Some(id);
        }
        let next = tokio::time::timeout(Duration::from_secs(3), conn.recv()).await;
        match next {
            Ok(Ok(Incoming::Frame(_, ServerFrame::Message(m)))) => seen.record(m.seq, m.mid),
            Ok(Ok(Incoming::Frame(_, ServerFrame::Sent(s)))) => {
                seen.record(s.seq, s.mid);
                seen.acked.insert(s.id.clone(), s.mid);
                pending = None;
            }
            Ok(Ok(Incoming::Frame(..))) => {}
            // Closed, reset by the kill, or quiet for long enough: done.
            _ => return seen,
        }
    }
}

async fn login(url: &str, token: &str, since: Option<u64>) -> (Connection, u64) {
    let login = Login {
        token: token.into(),
        appid: APPID.into(),
        since,
        epoch: None,
    };
    let (conn, welcome) = tokio::time::timeout(WAIT, Connection::login(url, login))
        .await
        .expect("login in time")
        .expect("login works");
    (conn, welcome.seq)
}

#[tokio::test]
async fn acknowledged_messages_survive_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(data.path()).await;
    let backend = Backend::new(&format!("http://{}", broker.addr), APP_TOKEN);
    let mut tokens = Vec::new();
    for (address, device) in [
        ("alice@example.com", "a1"),
        ("alice@example.com", "a2"),
        ("bob@example.com", "b1"),
        ("bob@example.com", "b2"),
    ] {
        let t = backend.device_token(address, device, APPID).await.unwrap();
        tokens.push(t.token);
    }
    // a1 and b1 send to each other; a2 and b2 only listen.
    let stream = |tag: &str, to: &str| -> Vec<(String, String)> {
        (0..5000)
            .map(|n| (format!("{tag}-{n}"), to.to_string()))
            .collect()
    };
    let plans = [
        stream("a1", "bob@example.com"),
        vec![],
        stream("b1", "alice@example.com"),
        vec![],
    ];
    // Everyone is online (at seq 0) before the first send.
    let mut conns = Vec::new();
    for token in &tokens {
        let (conn, seq) = login(&broker.ws(), token, None).await;
        assert_eq!(seq, 0);
        conns.push(conn);
    }
    let mut tasks = Vec::new();
    for (conn, plan) in conns.into_iter().zip(plans) {
        tasks.push(tokio::spawn(drive(conn, plan, Seen::default())));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    broker.kill();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    let acked: BTreeSet<u64> = seen
        .iter()
        .flat_map(|s| s.acked.values().copied())
        .collect();
    assert!(
        acked.len() > 20,
        "too little traffic before the kill: {}",
        acked.len()
    );

    let broker = Broker::start(data.path()).await;
    let mut after = Vec::new();
    for (token, mut dev) in tokens.iter().zip(seen) {
        let since = dev.position();
        let (mut conn, _) = login(&broker.ws(), token, Some(since)).await;
        loop {
            match tokio::time::timeout(WAIT, conn.recv())
                .await
                .expect("catch-up in time")
                .unwrap()
            {
                Incoming::Frame(_, ServerFrame::Message(m)) => dev.record(m.seq, m.mid),
                Incoming::Frame(_, ServerFrame::Synced(_)) => break,
                other => panic!("unexpected during catch-up: {other:?}"),
            }
        }
        after.push(dev);
    }
    for (n, dev) in after.iter().enumerate() {
        assert_eq!(dev.duplicates, 0, "device {n} saw a seq twice");
        let mids: BTreeSet<u64> = dev.by_seq.values().copied().collect();
        let lost: Vec<&u64> = acked.difference(&mids).collect();
        assert!(
            lost.is_empty(),
            "device {n} lost acknowledged messages {lost:?}"
        );
        let seqs: Vec<u64> = dev.by_seq.keys().copied().collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "device {n} has gaps"
        );
    }
}

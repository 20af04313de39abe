//! Churn against the real binary: 10,000 connect → login → maybe send → close cycles, 64 at a
//! time, some dropped without a close frame, some closed before login, some stalled in the HTTP
//! handshake. Afterwards nothing is left behind: every device offline, the routing table empty,
//! file descriptors and memory back near their baseline, and a fresh login and send work.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use octet::client::{Backend, Connection};
use octet::protocol::{ClientFrame, Login};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{APP_TOKEN, APPID, Broker};

const CYCLES: usize = 10_000;
const CONCURRENCY: usize = 64;
const PERSONS: usize = 20;
const DEVICES: usize = 4;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

async fn scrape(broker: &Broker, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", broker.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// One cycle, its kind chosen by `n`.
async fn cycle(broker: &Broker, tokens: &[String], n: usize) {
    let url = broker.ws();
    match n % 10 {
        // Stalled mid-handshake: half an HTTP request, then the socket is dropped.
        0 => {
            let mut tcp = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
            let _ = tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgr").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Closed before login.
        1 => {
            if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await {
                let _ = ws.close(None).await;
            }
        }
        // Logged in, then dropped without a close frame.
        2 | 3 => {
            let login = Login {
                token: tokens[n % tokens.len()].clone(),
                appid: APPID.into(),
                since: None,
                epoch: None,
            };
            if let Ok((conn, _)) = Connection::login(&url, login).await {
                drop(conn);
            }
        }
        // Logged in, maybe sent, closed properly.
        _ => {
            let (mut ws, _) = match tokio_tungstenite::connect_async(url.as_str()).await {
                Ok(ok) => ok,
                Err(_) => return,
            };
            let login = ClientFrame::Login(Login {
                token: tokens[n % tokens.len()].clone(),
                appid: APPID.into(),
                since: None,
                epoch: None,
            });
            let _ = ws
                .send(Message::text(serde_json::to_string(&login).unwrap()))
                .await;
            if n.is_multiple_of(2) {
                let send = json!({"op":"send","id":format!("c{n}"),"to":format!("p{}@churn.test", n % PERSONS),"body":n});
                let _ = ws.send(Message::text(send.to_string())).await;
            }
            // Read until welcome/synced (and sent) have come, or briefly.
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                let mut seen = 0;
                while let Some(Ok(_)) = ws.next().await {
                    seen += 1;
                    if seen >= 3 {
                        break;
                    }
                }
            })
            .await;
            let _ = ws.close(None).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_nothing_behind() {
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(data.path()).await;
    let pid = broker.child.id();
    let backend = Backend::new(&format!("http://{}", broker.addr), APP_TOKEN);
    let mut tokens = Vec::new();
    for p in 0..PERSONS {
        for d in 0..DEVICES {
            let t = backend
                .device_token(&format!("p{p}@churn.test"), &format!("d{d}"), APPID)
                .await
                .unwrap();
            tokens.push(t.token);
        }
    }
    // Warm up (allocator arenas, SQLite caches, thread pool), then take the baseline.
    for n in 0..200 {
        cycle(&broker, &tokens, n).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds_before, rss_before) = (open_fds(pid), rss_kib(pid));

    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let broker = std::sync::Arc::new(broker);
    let tokens = std::sync::Arc::new(tokens);
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, broker, tokens) = (next.clone(), broker.clone(), tokens.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= CYCLES {
                        break;
                    }
                    cycle(&broker, &tokens, n).await;
                }
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(workers))
        .await
        .expect("10,000 cycles within 2 minutes");

    // Everything settles: sessions that lost their peer without a close frame end on the
    // socket error; stalled handshakes are gone with their sockets.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let routed = scrape(&broker, "octet_routed_connections").await;
        let open = scrape(&broker, "octet_connections").await;
        if routed == 0.0 && open == 0.0 && open_fds(pid) <= fds_before + 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled: routed {routed}, open {open}, fds {} (baseline {fds_before})",
            open_fds(pid)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(scrape(&broker, "octet_persons_online").await, 0.0);
    let rss_after = rss_kib(pid);
    assert!(
        rss_after <= rss_before + 32 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    for p in 0..PERSONS {
        let devices = backend
            .call(json!({"op":"devices","user":{"address":format!("p{p}@churn.test")}}))
            .await
            .unwrap();
        for d in devices["devices"].as_array().unwrap() {
            assert_eq!(d["online"], false, "{d}");
        }
    }
    // Still serving: a fresh login and send.
    let login = Login {
        token: tokens[0].clone(),
        appid: APPID.into(),
        since: None,
        epoch: None,
    };
    let (mut conn, _) = Connection::login(&broker.ws(), login).await.unwrap();
    let send = json!({"op":"send","id":"after-churn","to":"p1@churn.test","body":"hi"});
    conn.send_text(&send.to_string()).await.unwrap();
    let sent = loop {
        match tokio::time::timeout(Duration::from_secs(5), conn.recv())
            .await
            .unwrap()
            .unwrap()
        {
            octet::client::Incoming::Frame(_, octet::protocol::ServerFrame::Sent(s)) => break s,
            octet::client::Incoming::Frame(..) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(sent.id, "after-churn");
}

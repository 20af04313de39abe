//! Churn against the real binary: 10,000 connect → login → maybe send → close cycles, 64 at a
//! time, some dropped without a close frame, some closed before login, some stalled in the HTTP
//! handshake. Afterwards nothing is left behind: every device offline, the routing table empty,
//! file descriptors and memory back near their baseline, and a fresh login and send work.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use octet::client::{Backend, Connection};
use octet::protocol::{ClientFrame, Login};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{APP_TOKEN, APPID, Broker, heavy};

const CYCLES: usize = 10_000;
const CONCURRENCY: usize = 64;
const PERSONS: usize = 20;
const DEVICES: usize = 4;
/// Cycles before the baseline is taken.
const WARMUP: usize = 1_000;
/// Memory the measured cycles may add: a leak of ~1 KiB per cycle (10 MiB) exceeds it.
const MAX_GROWTH_KIB: u64 = 4 * 1024;

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

/// Waits until no connection is open or routed and (given a baseline) the broker's file
/// descriptors are back near it.
async fn settle(broker: &Broker, pid: u32, fds_before: Option<usize>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let routed = scrape(broker, "octet_routed_connections").await;
        let open = scrape(broker, "octet_connections").await;
        let fds = open_fds(pid);
        if routed == 0.0 && open == 0.0 && fds_before.is_none_or(|before| fds <= before + 2) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled: routed {routed}, open {open}, fds {fds} (baseline {fds_before:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

/// What a cycle was meant to do and did.
#[derive(Default, Debug)]
struct Tally {
    /// Cycles that log in, and those that got their `welcome`.
    logins: (usize, usize),
    /// Cycles that send, and those that got their `sent`.
    sends: (usize, usize),
}

/// One cycle, its kind chosen by `n`, logging in with `token`. Connection-level failures are
/// counted, not fatal: the tally says whether the broker served nearly every cycle.
async fn cycle(broker: &Broker, token: &str, n: usize, tally: &mut Tally) {
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
            tally.logins.0 += 1;
            let login = Login {
                token: token.into(),
                appid: APPID.into(),
                since: None,
                epoch: None,
            };
            if let Ok((conn, _)) = Connection::login(&url, login).await {
                tally.logins.1 += 1;
                drop(conn);
            }
        }
        // Logged in, maybe sent, closed properly.
        _ => {
            let sending = n.is_multiple_of(2);
            tally.logins.0 += 1;
            tally.sends.0 += usize::from(sending);
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
                return;
            };
            let login = ClientFrame::Login(Login {
                token: token.into(),
                appid: APPID.into(),
                since: None,
                epoch: None,
            });
            let _ = ws
                .send(Message::text(serde_json::to_string(&login).unwrap()))
                .await;
            if sending {
                let send = json!({"op":"send","id":format!("c{n}"),"to":format!("p{}@churn.test", n % PERSONS),"body":n});
                let _ = ws.send(Message::text(send.to_string())).await;
            }
            // Read until the welcome (and the `sent`) came; bounded, so a broker that never
            // answers shows as missing answers in the tally rather than a hang.
            let (mut welcomed, mut sent) = (false, false);
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(Ok(message)) = ws.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                    match frame["op"].as_str() {
                        Some("welcome") => welcomed = true,
                        Some("sent") if frame["id"] == format!("c{n}") => sent = true,
                        _ => {}
                    }
                    if welcomed && (sent || !sending) {
                        break;
                    }
                }
            })
            .await;
            tally.logins.1 += usize::from(welcomed);
            tally.sends.1 += usize::from(sent);
            let _ = ws.close(None).await;
        }
    }
}

/// Runs cycles `range` with [`CONCURRENCY`] workers; returns what they did.
async fn run_cycles(
    broker: &Arc<Broker>,
    tokens: &Arc<Vec<String>>,
    range: std::ops::Range<usize>,
) -> Tally {
    let next = Arc::new(AtomicUsize::new(range.start));
    // Each worker logs in with its own device's token: a login with a token in use elsewhere
    // replaces (4003) the other connection, and two cycles at once would refuse each other.
    // A worker's next login still replaces its own dropped connection the broker holds.
    assert!(tokens.len() >= CONCURRENCY);
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let (next, broker, tokens) = (next.clone(), broker.clone(), tokens.clone());
            let end = range.end;
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= end {
                        break tally;
                    }
                    cycle(&broker, &tokens[worker], n, &mut tally).await;
                }
            })
        })
        .collect();
    let done = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(workers))
        .await
        .expect("the cycles end within 2 minutes");
    let mut total = Tally::default();
    for tally in done {
        let tally = tally.unwrap();
        total.logins.0 += tally.logins.0;
        total.logins.1 += tally.logins.1;
        total.sends.0 += tally.sends.0;
        total.sends.1 += tally.sends.1;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_nothing_behind() {
    let _heavy = heavy().await;
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
    let broker = Arc::new(broker);
    let tokens = Arc::new(tokens);
    // Warm up at full concurrency (allocator arenas and their high-water mark, SQLite caches,
    // thread pool), so the baseline already holds what 64 cycles at once need and the
    // growth measured after is what the cycles left behind.
    run_cycles(&broker, &tokens, 0..WARMUP).await;
    settle(&broker, pid, None).await;
    let (fds_before, rss_before) = (open_fds(pid), rss_kib(pid));
    let logins_before = scrape(&broker, "octet_logins_total{result=\"ok\"}").await;

    let tally = run_cycles(&broker, &tokens, WARMUP..WARMUP + CYCLES).await;
    // A broker refusing or ignoring logins or sends would also "leave nothing behind": every
    // cycle that logs in must have been welcomed and every send answered, but for a few
    // lost to a loaded machine's timeouts.
    let (want, got) = tally.logins;
    assert!(
        got * 100 >= want * 99,
        "only {got} of {want} logins welcomed"
    );
    let (want, got) = tally.sends;
    assert!(
        got * 100 >= want * 99,
        "only {got} of {want} sends answered"
    );
    let logins = scrape(&broker, "octet_logins_total{result=\"ok\"}").await - logins_before;
    assert!(
        logins >= tally.logins.1 as f64,
        "the broker counted {logins} logins, the clients {}",
        tally.logins.1
    );

    // Everything settles: sessions that lost their peer without a close frame end on the
    // socket error; stalled handshakes are gone with their sockets.
    settle(&broker, pid, Some(fds_before)).await;
    assert_eq!(scrape(&broker, "octet_persons_online").await, 0.0);
    let rss_after = rss_kib(pid);
    println!(
        "{tally:?}; memory {rss_before} -> {rss_after} KiB, fds {fds_before} -> {}",
        open_fds(pid)
    );
    // A leak of 1 KiB a cycle would be 10 MiB.
    assert!(
        rss_after <= rss_before + MAX_GROWTH_KIB,
        "memory grew from {rss_before} KiB to {rss_after} KiB over {CYCLES} cycles"
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

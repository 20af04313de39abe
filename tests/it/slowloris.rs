//! Slowloris: sockets that send nothing, half a request line, never log in, or stop answering
//! pings are each closed within their bound, while a normal client is served meanwhile.

use std::time::Duration;

use futures::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{APPID, TestServer, WAIT, heavy, read_close_raw};

const EACH: usize = 100;
const LOGIN: Duration = Duration::from_millis(1500);
const IDLE: Duration = Duration::from_millis(2000);
/// How long the broker reads a closed connection's leftovers, waiting for the answering close.
const DISCARD: Duration = Duration::from_secs(2);

/// Slack over each bound: the broker's timers share 2 cores with this test's 400 sockets and
/// with the other (non-timed) tests. A broker that ignored a deadline would keep its
/// sockets far longer (the old single bound of 8.5 s passed a login deadline tripled).
const SLACK: Duration = Duration::from_millis(2000);

/// Waits until the peer closes the socket (EOF or reset), reading and discarding what comes;
/// returns when.
async fn closed_by_peer(mut tcp: TcpStream) -> Instant {
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => continue,
        }
    }
}

/// Waits for a WebSocket's close frame, which must say the login timed out; returns when it
/// came. The broker then waits up to 2 s for the answering close (which this socket never
/// sends) before it drops the socket: that end is bounded too.
async fn login_timeout_close(mut tcp: TcpStream) -> Instant {
    let (code, reason) = read_close_raw(&mut tcp).await;
    let at = Instant::now();
    assert_eq!(code, 4002, "{reason}");
    tokio::time::timeout(DISCARD + SLACK, closed_by_peer(tcp))
        .await
        .expect("the socket was kept after its close frame");
    at
}

/// Each socket of one kind is closed no earlier than half its bound (its deadline, not
/// something else, closed it) and no later than the bound plus [`SLACK`], from its own opening.
/// The tasks may run on after the moment they report (at most `tail` more).
async fn each_closed_within(
    kind: &str,
    bound: Duration,
    tail: Duration,
    waits: Vec<(Instant, JoinHandle<Instant>)>,
) {
    assert_eq!(waits.len(), EACH);
    for (opened, wait) in waits {
        let closed = tokio::time::timeout_at(opened + bound + SLACK + tail, wait)
            .await
            .unwrap_or_else(|_| panic!("{kind}: not closed within {:?}", bound + SLACK))
            .unwrap();
        let took = closed - opened;
        assert!(took >= bound / 2, "{kind}: closed after only {took:?}");
        assert!(took <= bound + SLACK, "{kind}: closed after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_sockets_are_closed_within_their_bounds() {
    let _heavy = heavy().await;
    let server = TestServer::start_with(|c| {
        c.login_timeout = LOGIN;
        c.idle_timeout = IDLE;
    })
    .await;
    let mut tokens = Vec::new();
    for n in 0..EACH {
        let answer = server
            .device_token(&format!("p{}@slow.test", n / 4), &format!("d{}", n % 4))
            .await;
        tokens.push(answer["user"]["token"].as_str().unwrap().to_string());
    }

    // Connects and sends nothing: its request's headers never come within the login timeout.
    let mut silent_tcp = Vec::new();
    for _ in 0..EACH {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        silent_tcp.push((Instant::now(), tokio::spawn(closed_by_peer(tcp))));
    }
    // Half a request line: the same deadline.
    let mut half_line = Vec::new();
    for _ in 0..EACH {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let opened = Instant::now();
        tcp.write_all(b"GET /ws HTT").await.unwrap();
        half_line.push((opened, tokio::spawn(closed_by_peer(tcp))));
    }
    // Upgrades, never logs in: the login timeout, counted from the upgrade, ends it with a
    // close frame.
    let mut no_login = Vec::new();
    for _ in 0..EACH {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .unwrap();
        let opened = Instant::now();
        let tcp = ws.into_inner();
        let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = tcp else {
            unreachable!()
        };
        no_login.push((opened, tokio::spawn(login_timeout_close(tcp))));
    }
    // Logs in, then never reads again, so it answers no ping: the idle timeout.
    let mut silent = Vec::new();
    for token in &tokens {
        let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .unwrap();
        ws.send(Message::text(
            json!({"op":"login","token":token,"appid":APPID}).to_string(),
        ))
        .await
        .unwrap();
        silent.push(ws);
    }
    let last_login = Instant::now();
    // They did log in (a refused login would close them at once and prove nothing): the
    // broker's count of successful logins only grows, so idle closes cannot race it.
    let logins = || server.state.metrics.logins.with_label_values(&["ok"]).get();
    while logins() < EACH as u64 {
        assert!(
            last_login.elapsed() < WAIT,
            "only {} of {EACH} silent devices logged in",
            logins()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Meanwhile a normal client is served (token, login, catch-up, a send) within the login
    // deadline: the stalled sockets take none of its time.
    let started = Instant::now();
    let mut alice = server.device("alice@example.com", "a").await;
    alice.send_msg("1", "alice@example.com", json!("hi")).await;
    let served_in = started.elapsed();
    assert!(
        served_in < LOGIN,
        "a normal client took {served_in:?} while {} sockets stalled",
        4 * EACH
    );

    each_closed_within("silent socket", LOGIN, Duration::ZERO, silent_tcp).await;
    each_closed_within("half a request line", LOGIN, Duration::ZERO, half_line).await;
    each_closed_within("never logged in", LOGIN, DISCARD + SLACK, no_login).await;
    // The silent logged-in ones leave the routing table by their idle deadline.
    let deadline = last_login + IDLE + SLACK;
    while server.state.router.connection_count() > 1 {
        assert!(
            Instant::now() < deadline,
            "{} silent devices still registered {:?} after the last login",
            server.state.router.connection_count() - 1,
            IDLE + SLACK
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(silent);
    // Still serving. (Alice herself read nothing while we waited, so she answered no ping and
    // was rightly closed as idle: a fresh device checks the broker instead.)
    let mut bob = server.device("bob@example.com", "b").await;
    bob.send_msg("2", "bob@example.com", json!("still here"))
        .await;
}

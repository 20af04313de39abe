//! Slowloris: sockets that send nothing, half a request line, never log in, or stop answering
//! pings are each closed within their bound, while a normal client is served meanwhile.

use std::time::Duration;

use futures::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{APPID, TestServer};

const EACH: usize = 100;
const LOGIN: Duration = Duration::from_millis(1500);
const IDLE: Duration = Duration::from_millis(2000);

/// Waits until the peer closes the socket (EOF or reset), reading and discarding what comes.
async fn closed_by_peer(mut tcp: TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_sockets_are_closed_within_their_bounds() {
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

    let mut waits = Vec::new();
    // Connects and sends nothing.
    for _ in 0..EACH {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        waits.push(tokio::spawn(closed_by_peer(tcp)));
    }
    // Half a request line.
    for _ in 0..EACH {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET /ws HTT").await.unwrap();
        waits.push(tokio::spawn(closed_by_peer(tcp)));
    }
    // Upgrades, never logs in.
    for _ in 0..EACH {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .unwrap();
        let tcp = ws.into_inner();
        let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = tcp else {
            unreachable!()
        };
        waits.push(tokio::spawn(closed_by_peer(tcp)));
    }
    // Logs in, then never reads again, so it answers no ping.
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
    let started = tokio::time::Instant::now();

    // Meanwhile a normal client is served.
    let mut alice = server.device("alice@example.com", "a").await;
    alice.send_msg("1", "alice@example.com", json!("hi")).await;
    let served_in = started.elapsed();

    // Every stalled socket is closed by the broker within its bound (plus slack for a loaded
    // machine); the silent logged-in ones leave the routing table.
    let bound = LOGIN + IDLE + Duration::from_secs(5);
    for wait in waits {
        let closed = tokio::time::timeout_at(started + bound, wait)
            .await
            .expect("a stalled socket was not closed in time")
            .unwrap();
        assert!(closed);
    }
    let deadline = started + bound;
    while server.state.router.connection_count() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} silent devices still registered",
            server.state.router.connection_count() - 1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(silent);
    // Still serving. (Alice herself read nothing while we waited, so she answered no ping and
    // was rightly closed as idle: a fresh device checks the broker instead.)
    let mut bob = server.device("bob@example.com", "b").await;
    bob.send_msg("2", "bob@example.com", json!("still here"))
        .await;
    println!(
        "normal client served in {served_in:?} while {} sockets stalled",
        4 * EACH
    );
}

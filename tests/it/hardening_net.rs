//! Issue 13, network abuse: slow request bodies and connection caps, anonymous WebSockets,
//! the failed-login limiter, concurrent app token rotations and the protected `/metrics`.

mod logins;

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{APP_TOKEN, APPID, TestServer, WAIT};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Two (or more) rotations at once: rotations are serialized, so exactly one wins and the
/// others are refused (their token is by then the previous one); every token a `result:true`
/// answer carried works, as the current token (it can rotate again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_app_token_rotations_never_hand_out_a_dead_token() {
    let server = TestServer::start().await;
    let mut current = APP_TOKEN.to_string();
    // A few rounds, each racing 16 rotations with the current token.
    for round in 0..4 {
        let body = json!({"op":"apptokenrotate","token":current,"grace":0}).to_string();
        // Connected first, then every request written at once, so they overlap in the broker.
        let mut sockets = Vec::new();
        for _ in 0..16 {
            sockets.push(TcpStream::connect(server.addr).await.unwrap());
        }
        let request = post_request("/backend", &body);
        for socket in &mut sockets {
            socket.write_all(request.as_bytes()).await.unwrap();
        }
        let answers = futures::future::join_all(sockets.into_iter().map(read_response)).await;
        let mut won = Vec::new();
        for (status, answer) in &answers {
            assert_eq!(*status, 200);
            if answer["result"] == json!(true) {
                won.push(answer["token"].as_str().unwrap().to_string());
            } else {
                assert_eq!(answer["error"], "bad_app_token", "{answer}");
            }
        }
        // Every token handed out works (grace 0: only the current one does).
        for token in &won {
            let useradd = json!({"op":"useradd","token":token,"user":{"address":"x@example.com"}});
            let answer = server.backend_raw(&useradd.to_string()).await.1;
            assert_eq!(
                answer["result"], true,
                "round {round}: a handed-out token is dead: {answer}"
            );
        }
        assert_eq!(
            won.len(),
            1,
            "round {round}: rotations were not serialized: {answers:?}"
        );
        current = won.pop().unwrap();
    }
}

/// A complete HTTP/1.1 POST of a JSON body, closing the connection after the answer.
fn post_request(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one HTTP answer until the broker closes the connection (bounded by `WAIT`): the
/// status and the JSON body (null when there is none).
async fn read_response(mut socket: TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    tokio::time::timeout(crate::harness::WAIT, socket.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .expect("answer read");
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.2 is another client
/// than 127.0.0.1 on loopback).
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connects in time")
        .unwrap()
}

/// `GET path` on a fresh connection from `from`; the status and JSON body.
async fn get_from(from: &str, addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut socket = connect_from(from, addr).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    read_response(socket).await
}

/// Sends the headers of a POST with a 1000-byte body, then one byte every 50 ms; returns how
/// long the broker took to close the connection and what it answered.
async fn trickle(addr: SocketAddr, path: &str, extra: &str) -> (Duration, String) {
    let socket = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = socket.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}Content-Length: 1000\r\n\r\n{{"
    );
    write.write_all(head.as_bytes()).await.unwrap();
    let started = tokio::time::Instant::now();
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    assert!(closed.is_ok(), "{path}: still open after 5 s of trickling");
    (
        started.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

/// A slow POST body cannot hold a connection: /backend answers 408 `request_timeout` and
/// closes once `body_timeout` passed; a /files upload without a token is refused before its
/// body is read and closed; meanwhile other clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_post_bodies_are_closed_within_their_bounds() {
    let server = TestServer::start_with(|c| c.body_timeout = Duration::from_millis(600)).await;
    let backend = (0..20).map(|_| trickle(server.addr, "/backend", ""));
    let files = (0..5).map(|_| trickle(server.addr, "/files?name=a.txt", ""));
    let (backend, files) = tokio::join!(
        futures::future::join_all(backend),
        futures::future::join_all(files),
        async {
            // Served while the trickles go on.
            let (status, _) = get_from("127.0.0.1", server.addr, "/healthz").await;
            assert_eq!(status, 200);
        }
    )
    .into_tuple2();
    for (took, answer) in backend {
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
        assert!(answer.contains("600 ms"), "{answer}");
        // The deadline plus scheduling slack on a busy machine, far from "forever".
        assert!(took >= Duration::from_millis(550), "closed early: {took:?}");
        assert!(took < Duration::from_secs(4), "closed late: {took:?}");
    }
    for (took, answer) in files {
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(took < Duration::from_secs(4), "closed late: {took:?}");
    }
}

trait IntoTuple2<A, B> {
    fn into_tuple2(self) -> (A, B);
}

impl<A, B> IntoTuple2<A, B> for (A, B, ()) {
    fn into_tuple2(self) -> (A, B) {
        (self.0, self.1)
    }
}

/// Past the per-address cap a new connection is refused at once (429 `too_many_connections`)
/// while another address is served; past the total cap, 503 `server_full`; a place frees up
/// when a connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_are_capped_per_address_and_in_total() {
    let server = TestServer::start_with(|c| {
        c.max_http_connections_per_ip = 4;
        c.max_http_connections = 7;
    })
    .await;
    // Four idle connections from 127.0.0.1 (each would hold until the header deadline).
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from("127.0.0.1", server.addr).await);
    }
    // Opened in order, so the broker has admitted the four before the fifth (it reads
    // nothing from the fifth before refusing it).
    let (status, answer) = read_response(connect_from("127.0.0.1", server.addr).await).await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["error"], "too_many_connections");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1 has 4 HTTP connections open"),
        "{answer}"
    );
    // Another address is served.
    assert_eq!(get_from("127.0.0.2", server.addr, "/healthz").await.0, 200);
    // The total: 4 held + 3 more from other addresses fill it.
    for from in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        held.push(connect_from(from, server.addr).await);
    }
    let (status, answer) = read_response(connect_from("127.0.0.6", server.addr).await).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "server_full");
    // Closing them frees the places.
    drop(held);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = get_from("127.0.0.1", server.addr, "/healthz").await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "places never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket from `from` with extra `headers`.
async fn ws_from(
    from: &str,
    server: &TestServer,
    headers: &[(&'static str, &str)],
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut request = server.ws_url().into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let tcp = connect_from(from, server.addr).await;
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp)),
    )
    .await
    .expect("handshake in time")?;
    Ok(ws)
}

/// Logs in on `ws` with `token`; the first frame's op, its code (for errors) and the frame.
async fn login_on(ws: &mut Ws, token: &str) -> (String, Value) {
    ws.send(Message::text(
        json!({"op":"login","token":token,"appid":APPID}).to_string(),
    ))
    .await
    .unwrap();
    first_frame(ws).await
}

/// The first text frame on `ws` (bounded by `WAIT`), as its op and the whole frame.
async fn first_frame(ws: &mut Ws) -> (String, Value) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(8), ws.next())
            .await
            .expect("a frame in time")
            .expect("a frame")
            .expect("no error");
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            return (frame["op"].as_str().unwrap_or("").to_string(), frame);
        }
    }
}

/// The HTTP refusal of an upgrade: status and JSON body.
fn http_refusal(err: tokio_tungstenite::tungstenite::Error) -> (u16, Value) {
    let tokio_tungstenite::tungstenite::Error::Http(response) = err else {
        panic!("expected an HTTP refusal, got {err}");
    };
    let body = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
    (response.status().as_u16(), body)
}

/// With `metrics_token` set, /metrics needs it as a bearer token (401 `bad_metrics_token`
/// otherwise); without one, it answers loopback clients only.
#[tokio::test]
async fn metrics_need_the_token_or_a_loopback_client() {
    let server =
        TestServer::start_with(|c| c.metrics_token = Some("metrics-token-0123456789".into())).await;
    let http = reqwest::Client::new();
    let url = server.http_url("/metrics");
    let refused = http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "bad_metrics_token");
    let wrong = http
        .get(&url)
        .bearer_auth("metrics-token-wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = http
        .get(&url)
        .bearer_auth("metrics-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let text = ok.text().await.unwrap();
    assert!(text.contains("octet_connections"));
    // The edge's caps can be watched: this scrape's own connection is open.
    assert!(text.contains("octet_http_connections 1"), "{text}");
    assert!(text.contains("octet_anonymous_connections 0"), "{text}");

    // No token: loopback only; a client forwarded by a trusted proxy from elsewhere is refused.
    let open = TestServer::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    assert_eq!(get_from("127.0.0.1", open.addr, "/metrics").await.0, 200);
    let mut socket = connect_from("127.0.0.1", open.addr).await;
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_response(socket).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "bad_metrics_token");

    // No trusted proxies (the default) behind a reverse proxy on this host: every request
    // comes from loopback, and one the proxy forwarded must not be taken as a local scrape.
    let proxied = TestServer::start().await;
    assert_eq!(get_from("127.0.0.1", proxied.addr, "/metrics").await.0, 200);
    for header in [
        "X-Forwarded-For: 198.51.100.1",
        "Forwarded: for=198.51.100.1",
        "X-Real-IP: 198.51.100.1",
    ] {
        let mut socket = connect_from("127.0.0.1", proxied.addr).await;
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{header}\r\nConnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let (status, body) = read_response(socket).await;
        assert_eq!(status, 403, "{header}");
        assert_eq!(body["error"], "bad_metrics_token");
    }
}

/// A keep-alive connection that goes quiet after its answer is closed within the header
/// deadline (`login_timeout`), like one that never sent a request.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_by_the_header_deadline() {
    let server = TestServer::start_with(|c| c.login_timeout = Duration::from_millis(500)).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    assert!(
        closed.is_ok(),
        "idle keep-alive connection still open after 4 s"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
}

/// An upgraded WebSocket leaves the HTTP connection count: more logged-in devices than
/// `max_http_connections_per_ip` can be online from one address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_websockets_do_not_count_as_http_connections() {
    let server = TestServer::start_with(|c| c.max_http_connections_per_ip = 3).await;
    let mut online = Vec::new();
    // (The backend client's kept-alive connection holds one of the three places.)
    for n in 0..6 {
        let token = server.device_token(&format!("p{n}@example.com"), "d").await["user"]["token"]
            .as_str()
            .unwrap()
            .to_string();
        // The place of each upgrade is given back once hyper hands the socket over; a
        // connection opened right after may still find it taken for a moment.
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut ws = loop {
            match ws_from("127.0.0.1", &server, &[]).await {
                Ok(ws) => break ws,
                Err(err) => {
                    let (status, _) = http_refusal(err);
                    assert_eq!(status, 429);
                    assert!(tokio::time::Instant::now() < deadline, "never admitted");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        assert_eq!(login_on(&mut ws, &token).await.0, "welcome");
        online.push(ws);
    }
    assert_eq!(server.state.admission.logged_in_count(), 6);
}

/// The edge's settings: the body deadline follows `login_timeout` unless set, proxies are
/// CIDRs or single addresses, and a wrong one is named.
#[test]
fn edge_settings_validate() {
    use octet::config::{Config, ProxyHeader, Settings};
    let settings = Settings {
        login_timeout: Some(7),
        trusted_proxies: Some(vec!["10.0.0.0/8".into(), "::1".into()]),
        proxy_header: Some(ProxyHeader::Forwarded),
        ..Settings::default()
    };
    let config = Config::from_settings(settings).unwrap();
    assert_eq!(config.body_timeout, Duration::from_secs(7));
    assert_eq!(config.trusted_proxies.len(), 2);
    assert_eq!(config.trusted_proxies[1].to_string(), "::1/128");
    assert_eq!(config.proxy_header, ProxyHeader::Forwarded);
    assert_eq!(config.max_anonymous_per_ip, 256);
    assert!(config.metrics_token.is_none());

    let wrong = Settings {
        trusted_proxies: Some(vec!["10.0.0.0/33".into()]),
        ..Settings::default()
    };
    let err = Config::from_settings(wrong).unwrap_err().to_string();
    assert!(
        err.starts_with("trusted_proxies: 10.0.0.0/33 is not a CIDR"),
        "{err}"
    );
    let short = Settings {
        metrics_token: Some("short".into()),
        ..Settings::default()
    };
    let err = Config::from_settings(short).unwrap_err().to_string();
    assert!(err.starts_with("metrics_token:"), "{err}");
}

/// A refused client reads its 429 whether its request reached the broker before the refusal
/// or after it: the broker reads and discards the request instead of closing on it, which
/// would reset the connection and destroy the answer in flight ("connection reset by peer").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_reads_its_answer_not_a_reset() {
    let server = TestServer::start_with(|c| c.max_http_connections_per_ip = 1).await;
    let _held = connect_from("127.0.0.1", server.addr).await;
    for request_first in [true, false, true, false] {
        let mut socket = connect_from("127.0.0.1", server.addr).await;
        if !request_first {
            // The answer and the broker's FIN arrive before the request.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // Time for a reset, if the broker sent one, to arrive before the read.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, answer) = read_response(socket).await;
        assert_eq!(status, 429, "request first: {request_first}; {answer}");
        assert_eq!(answer["error"], "too_many_connections");
    }
}

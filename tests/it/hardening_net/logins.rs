//! Sockets that never log in and failed logins: their caps never keep a valid login out, and
//! behind a trusted proxy they count per forwarded client.

use super::*;

/// Sockets that never log in count against their own cap, not `max_connections`: with the
/// anonymous cap full (the oldest closed to make room) a device with a valid token still logs
/// in, up to `max_connections` logged-in devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_log_in_do_not_keep_a_valid_login_out() {
    let server = TestServer::start_with(|c| {
        c.max_connections = 3;
        c.max_anonymous = 5;
    })
    .await;
    let token = server.device_token("a@example.com", "a").await["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut strangers = Vec::new();
    for _ in 0..8 {
        strangers.push(ws_from("127.0.0.1", &server, &[]).await.unwrap());
    }
    // The three oldest made room for newer ones: told why, closed with 4002.
    for ws in &mut strangers[..3] {
        let (op, frame) = first_frame(ws).await;
        assert_eq!(
            (op.as_str(), &frame["code"]),
            ("error", &json!("login_timeout")),
            "{frame}"
        );
        assert!(
            frame["message"]
                .as_str()
                .unwrap()
                .contains("waiting to log in"),
            "{frame}"
        );
    }
    // A valid login gets in, although strangers hold more sockets than max_connections.
    let mut device = ws_from("127.0.0.1", &server, &[]).await.unwrap();
    let (op, frame) = login_on(&mut device, &token).await;
    assert_eq!(op, "welcome", "{frame}");
    assert_eq!(server.state.admission.logged_in_count(), 1);
    assert!(server.state.admission.anonymous_count() <= 5 + 3);
}

/// One address may hold only `max_anonymous_per_ip` sockets that have not logged in; the next
/// is refused with HTTP 429 `too_many_connections`, another address is not affected, and a
/// socket that logged in no longer counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sockets_are_capped_per_address() {
    let server = TestServer::start_with(|c| c.max_anonymous_per_ip = 3).await;
    let token = server.device_token("a@example.com", "a").await["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(ws_from("127.0.0.1", &server, &[]).await.unwrap());
    }
    let (status, body) = http_refusal(ws_from("127.0.0.1", &server, &[]).await.unwrap_err());
    assert_eq!(status, 429);
    assert_eq!(body["error"], "too_many_connections");
    let mut other = ws_from("127.0.0.2", &server, &[]).await.unwrap();
    assert_eq!(login_on(&mut other, &token).await.0, "welcome");
    // One of the three logs in: its place is free for a new socket.
    let (op, _) = login_on(&mut held[0], &token).await;
    assert_eq!(op, "welcome");
    let mut fresh = ws_from("127.0.0.1", &server, &[]).await.unwrap();
    assert_eq!(
        login_on(&mut fresh, "octu_wrong").await.1["code"],
        "auth_failed"
    );
}

/// Thirty failed logins (and more) from one address never refuse a valid token from it; only
/// the failures over the limit are answered late, with `too_many_logins`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_login_works_after_thirty_failures_from_the_same_address() {
    let server = TestServer::start().await;
    let token = server.device_token("a@example.com", "a").await["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..30 {
        let mut ws = ws_from("127.0.0.1", &server, &[]).await.unwrap();
        assert_eq!(
            login_on(&mut ws, "octu_wrong").await.1["code"],
            "auth_failed"
        );
    }
    let mut ws = ws_from("127.0.0.1", &server, &[]).await.unwrap();
    let started = tokio::time::Instant::now();
    let (_, frame) = login_on(&mut ws, "octu_wrong").await;
    assert_eq!(frame["code"], "too_many_logins", "{frame}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not slowed"
    );
    let mut ws = ws_from("127.0.0.1", &server, &[]).await.unwrap();
    let (op, frame) = login_on(&mut ws, &token).await;
    assert_eq!(op, "welcome", "{frame}");
}

/// Behind a trusted proxy (the peer 127.0.0.1), the client is the rightmost untrusted
/// `X-Forwarded-For` hop: client A's failures do not slow client B, and a hop A forged left
/// of its own address changes nothing. An untrusted peer's header is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_trusted_proxy_failures_count_per_forwarded_client() {
    let server = TestServer::start_with(|c| {
        c.login_attempts = 3;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let token = server.device_token("a@example.com", "a").await["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let a = [("x-forwarded-for", "198.51.100.1")];
    // A forges a different first hop each time; the proxy appended A's real address.
    for n in 0..3 {
        let forged = format!("203.0.113.{n}, 198.51.100.1");
        let mut ws = ws_from(
            "127.0.0.1",
            &server,
            &[("x-forwarded-for", forged.as_str())],
        )
        .await
        .unwrap();
        assert_eq!(
            login_on(&mut ws, "octu_wrong").await.1["code"],
            "auth_failed"
        );
    }
    let mut ws = ws_from("127.0.0.1", &server, &a).await.unwrap();
    assert_eq!(
        login_on(&mut ws, "octu_wrong").await.1["code"],
        "too_many_logins"
    );
    // B, through the same proxy, is not affected.
    let b = [("x-forwarded-for", "198.51.100.2")];
    let mut ws = ws_from("127.0.0.1", &server, &b).await.unwrap();
    assert_eq!(
        login_on(&mut ws, "octu_wrong").await.1["code"],
        "auth_failed"
    );
    // A's valid token still gets in.
    let mut ws = ws_from("127.0.0.1", &server, &a).await.unwrap();
    assert_eq!(login_on(&mut ws, &token).await.0, "welcome");
    // 127.0.0.2 is no trusted proxy: its header is ignored, its failures are its own.
    for _ in 0..3 {
        let mut ws = ws_from("127.0.0.2", &server, &b).await.unwrap();
        assert_eq!(
            login_on(&mut ws, "octu_wrong").await.1["code"],
            "auth_failed"
        );
    }
    let mut ws = ws_from("127.0.0.2", &server, &b).await.unwrap();
    assert_eq!(
        login_on(&mut ws, "octu_wrong").await.1["code"],
        "too_many_logins"
    );
}

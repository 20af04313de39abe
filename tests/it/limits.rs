//! Hard limits: each refusal is clear, and the broker keeps serving everyone else.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{APPID, TestServer, read_close_raw, timed};

#[tokio::test]
async fn deep_json_is_refused_before_parsing() {
    let server = TestServer::start().await;
    server.device_token("a@example.com", "a").await;
    let before = server.snapshot();
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let body = format!(
        r#"{{"op":"useradd","token":"x","user":{{"address":"b@example.com","name":{deep}}}}}"#
    );
    let (status, answer) = server.backend_raw(&body).await;
    assert_eq!(status, 200);
    assert_eq!(answer["error"], "too_deep");
    assert_eq!(answer["message"], "JSON is nested deeper than 32 levels");
    assert_eq!(server.snapshot(), before);
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed_and_its_slot_freed() {
    let _timed = timed().await;
    let server = TestServer::start_with(|c| c.idle_timeout = Duration::from_millis(300)).await;
    // A live device keeps reading, so its client answers the broker's pings.
    let mut live = server.device("a@example.com", "live").await;
    // A dead one: logged in, then never reads again (its pongs never go out).
    let token = server.device_token("a@example.com", "dead").await["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .unwrap();
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"op":"login","token":token,"appid":APPID}).to_string(),
    ))
    .await
    .unwrap();
    // From here on the dead peer is a bare socket: a WebSocket client would answer the queued
    // pings while reading, and a pong hitting the closed socket resets it, losing the close.
    let tokio_tungstenite::MaybeTlsStream::Plain(mut tcp) = ws.into_inner() else {
        unreachable!()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.state.router.online(1).len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "never logged in");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..4 {
        live.expect_silence().await; // reads for 300 ms, answering pings
    }
    assert_eq!(
        server.state.router.online(1).as_slice(),
        &[live.uid],
        "the dead peer is still registered"
    );
    // What the dead peer would have read: welcome, synced, pings, then the close with its code
    // and reason.
    let (code, reason) = read_close_raw(&mut tcp).await;
    assert_eq!(code, 4005);
    assert!(reason.contains("no frame for 300 ms"), "{reason}");
}

#[tokio::test]
async fn a_connection_over_its_send_rate_gets_errors_and_stays_open() {
    let server = TestServer::start_with(|c| {
        c.send_rate = 5;
        c.send_burst = 5;
    })
    .await;
    let mut a = server.device("a@example.com", "a").await;
    // Tokens refill at 5/s while the frames go out, so the split is not fixed: at least the
    // burst is served, at most the burst plus what refilled until the last answer (one more
    // for rounding). 20 frames keep that bound under 20 unless they took nearly 3 s.
    let frames = 20;
    let started = std::time::Instant::now();
    for n in 0..frames {
        a.send_json(json!({"op":"send","id":format!("m{n}"),"to":"a@example.com","body":n}))
            .await;
    }
    let (mut sent, mut limited) = (0, 0);
    for _ in 0..frames {
        let frame = a.next().await;
        match frame["op"].as_str() {
            Some("sent") => sent += 1,
            Some("error") => {
                assert_eq!(frame["code"], "rate_limited");
                assert!(frame["id"].as_str().unwrap().starts_with('m'));
                assert!(
                    frame["message"]
                        .as_str()
                        .unwrap()
                        .contains("5 frames per second")
                );
                limited += 1;
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    let budget = 5.0 + 5.0 * started.elapsed().as_secs_f64() + 1.0;
    assert!(
        sent >= 5 && sent as f64 <= budget,
        "{sent} sent, {limited} refused; the burst is 5 and the budget was {budget:.1}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.send_msg("later", "a@example.com", json!("ok")).await;
}

#[tokio::test]
async fn failed_logins_over_the_limit_are_answered_late_and_valid_ones_still_get_in() {
    let server = TestServer::start_with(|c| c.login_attempts = 3).await;
    for _ in 0..3 {
        let mut dev = server.login("octu_wrong").await;
        assert_eq!(dev.expect("error").await["code"], "auth_failed");
    }
    // Over the limit, a failure is answered late and says why.
    let mut dev = server.login("octu_wrong").await;
    let err = dev.expect("error").await;
    assert_eq!(err["code"], "too_many_logins");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("more than 3 logins"),
        "{err}"
    );
    assert_eq!(dev.expect_closed().await.0, 4001);
    // A valid token from the same address is never refused for those failures.
    server.device("a@example.com", "a").await;
}

#[tokio::test]
async fn over_the_connection_limit_new_ones_are_told_and_old_ones_keep_working() {
    let server = TestServer::start_with(|c| c.max_connections = 2).await;
    let mut a = server.device("a@example.com", "a").await;
    let mut b = server.device("b@example.com", "b").await;
    // Only logged-in connections count: the third is refused once its login succeeded.
    let token = server.device_token("c@example.com", "c").await["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut third = server.login(&token).await;
    let err = third.expect("error").await;
    assert_eq!(err["code"], "server_full");
    let (code, reason) = third.expect_closed().await;
    assert_eq!(code, 1013);
    assert!(reason.contains("try again later"), "{reason}");
    a.send_msg("1", "b@example.com", json!("still fine")).await;
    b.expect("message").await;
    // A slot frees up when a device leaves.
    drop(third);
    a.conn.close().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.state.admission.logged_in_count() > 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.device("c@example.com", "c").await;
}

#[tokio::test]
async fn only_allowed_origins_may_open_websockets() {
    let server =
        TestServer::start_with(|c| c.allowed_origins = vec!["https://app.example.com".into()])
            .await;
    let with_origin = |origin: &'static str| {
        let mut request = server.ws_url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        request
    };
    let refused = tokio_tungstenite::connect_async(with_origin("https://evil.example"))
        .await
        .unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(response) = refused else {
        panic!("expected an HTTP refusal, got {refused}");
    };
    assert_eq!(response.status(), 403);
    let body: serde_json::Value =
        serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
    assert_eq!(body["error"], "origin_not_allowed");
    assert!(
        tokio_tungstenite::connect_async(with_origin("https://app.example.com"))
            .await
            .is_ok()
    );
    // Native apps send no Origin.
    server.device("a@example.com", "a").await;
}

//! Login: tokens, deadlines, one connection per uid, frame limits.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::harness::{APPID, TestServer};

#[tokio::test]
async fn welcome_names_the_device_and_its_primary() {
    let server = TestServer::start().await;
    server.device_token("xyz@example.com", "phone").await;
    let laptop = server.device_token("xyz@example.com", "laptop").await;
    let mut dev = server
        .login(laptop["user"]["token"].as_str().unwrap())
        .await;
    // Seq 1 is the `devices_changed` of the laptop's own link, before its login.
    let welcome = dev.next().await;
    assert_eq!(
        welcome,
        json!({"op":"welcome","uid":2,"address":"xyz@example.com-linked-1",
               "primary":{"uid":1,"address":"xyz@example.com"},
               "seq":1,"epoch":server.epoch(1).await,"recovered":true})
    );
    assert_eq!(
        dev.next().await,
        json!({"op":"synced","seq":1,"replayed":0})
    );
}

#[tokio::test]
async fn unknown_and_wrong_appid_tokens_are_refused_with_a_close() {
    let server = TestServer::start().await;
    let mut dev = server.login("octu_nope").await;
    let err = dev.expect("error").await;
    assert_eq!(err["code"], "auth_failed");
    assert_eq!(dev.expect_closed().await.0, 4001);

    let answer = server.device_token("xyz@example.com", "phone").await;
    let mut dev = server.connect().await;
    dev.send_json(json!({"op":"login","token":answer["user"]["token"],"appid":"com.other.app"}))
        .await;
    let err = dev.expect("error").await;
    assert_eq!(err["code"], "auth_failed");
    assert!(err["message"].as_str().unwrap().contains("com.other.app"));
    assert_eq!(dev.expect_closed().await.0, 4001);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let server = TestServer::start().await;
    let answer = server
        .backend(json!({"op":"useradd","user":{"address":"x@example.com","token":{"appid":APPID,"expiry":1}}}))
        .await;
    let token = answer["user"]["token"].as_str().unwrap().to_string();
    // Age the token in place rather than waiting a minute.
    let mut dev = server.login(&token).await;
    dev.expect("welcome").await;
    let db = rusqlite_path(&server);
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute("UPDATE tokens SET expires_at = 1", [])
        .unwrap();
    let mut late = server.login(&token).await;
    assert_eq!(late.expect("error").await["code"], "auth_failed");
}

fn rusqlite_path(server: &TestServer) -> std::path::PathBuf {
    server.state.config.data_dir.join("octet.db")
}

#[tokio::test]
async fn first_frame_must_be_login() {
    let server = TestServer::start().await;
    let mut dev = server.connect().await;
    dev.send_json(json!({"op":"send","id":"1","to":"x","body":1}))
        .await;
    assert_eq!(dev.expect("error").await["code"], "login_required");
    assert_eq!(dev.expect_closed().await.0, 4001);

    let mut dev = server.connect().await;
    dev.send_text("{oops").await;
    assert_eq!(dev.expect("error").await["code"], "bad_json");
    assert_eq!(dev.expect_closed().await.0, 4001);
}

#[tokio::test]
async fn no_login_within_the_deadline_closes() {
    let server = TestServer::start_with(|c| c.login_timeout = Duration::from_millis(300)).await;
    let connecting = std::time::Instant::now();
    let mut dev = server.connect().await;
    assert_eq!(dev.expect("error").await["code"], "login_timeout");
    // The 300 ms deadline, not the harness's 5 s wait: never early, late only by scheduling.
    let waited = connecting.elapsed();
    assert!(
        (Duration::from_millis(300)..Duration::from_secs(2)).contains(&waited),
        "login_timeout after {waited:?}"
    );
    assert_eq!(dev.expect_closed().await.0, 4002);
}

#[tokio::test]
async fn a_second_login_of_the_same_uid_replaces_the_first() {
    let server = TestServer::start().await;
    let answer = server.device_token("xyz@example.com", "phone").await;
    let token = answer["user"]["token"].as_str().unwrap();
    let mut first = server.login(token).await;
    first.expect("welcome").await;
    let mut second = server.login(token).await;
    second.expect("welcome").await;
    let (code, reason) = first.expect_closed().await;
    assert_eq!(code, 4003);
    assert!(reason.contains("replaced"), "{reason}");
    // The newer one is the live one.
    let mut bob = server.device("bob@example.com", "b").await;
    bob.send_msg("1", "xyz@example.com", json!(1)).await;
    second.expect("message").await;
    assert_eq!(server.state.router.online(1).len(), 1);
}

#[tokio::test]
async fn frames_over_64_kib_are_refused_with_a_close() {
    let server = TestServer::start().await;
    let mut dev = server.device("xyz@example.com", "phone").await;
    let body = "y".repeat(70 * 1024);
    dev.send_json(json!({"op":"send","id":"big","to":"xyz@example.com","body":body}))
        .await;
    let err = dev.expect("error").await;
    assert_eq!(err["code"], "frame_too_large");
    assert_eq!(dev.expect_closed().await.0, 1009);
}

#[tokio::test]
async fn binary_frames_close_with_1003() {
    let server = TestServer::start().await;
    let mut dev = server.device("xyz@example.com", "phone").await;
    dev.conn
        .send_raw(WsMessage::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(dev.expect("error").await["code"], "binary_frame");
    assert_eq!(dev.expect_closed().await.0, 1003);
}

//! The web demo (`--demo`): absent by default; with it, the page and its assets (the client
//! bundle included) and `POST /demo/token`, whose tokens log in and whose refusals say what to
//! fix.

use serde_json::{Value, json};

use crate::harness::{TestServer, WAIT};

async fn demo_server() -> TestServer {
    TestServer::start_with(|c| c.demo = true).await
}

async fn get(url: &str) -> reqwest::Response {
    tokio::time::timeout(WAIT, reqwest::get(url))
        .await
        .unwrap_or_else(|_| panic!("no answer from {url} within {WAIT:?}"))
        .expect("request")
}

/// `POST /demo/token` with a raw body: the status and the JSON answer.
async fn token(server: &TestServer, body: &str) -> (u16, Value) {
    let request = reqwest::Client::new()
        .post(server.http_url("/demo/token"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send();
    let response = tokio::time::timeout(WAIT, request)
        .await
        .expect("an answer in time")
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// Nothing was made: the backend knows no user at `address`.
async fn assert_no_person(server: &TestServer, address: &str) {
    let answer = server.devices(address).await;
    assert_eq!(answer["error"], "no_such_user", "{address}: {answer}");
}

#[tokio::test]
async fn demo_is_404_without_the_flag() {
    let server = TestServer::start().await;
    for path in [
        "/demo",
        "/demo/app.js",
        "/demo/octet-client.js",
        "/demo/style.css",
    ] {
        assert_eq!(get(&server.http_url(path)).await.status(), 404, "{path}");
    }
    let (status, answer) = token(&server, r#"{"name":"alice"}"#).await;
    assert_eq!(status, 404, "{answer}");
    assert_no_person(&server, "alice@demo").await;
}

#[tokio::test]
async fn demo_serves_the_page_and_the_bundle() {
    let server = demo_server().await;
    let page = get(&server.http_url("/demo")).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.headers().contains_key("content-security-policy"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"src="/demo/app.js""#), "{html}");
    assert!(
        !html.contains("://"),
        "the page loads nothing from elsewhere"
    );

    for (asset, kind, marker) in [
        ("app.js", "text/javascript", "./octet-client.js"),
        ("octet-client.js", "text/javascript", "IdbStore,"),
        ("style.css", "text/css", "#messages"),
    ] {
        let response = get(&server.http_url(&format!("/demo/{asset}"))).await;
        assert_eq!(response.status(), 200, "{asset}");
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{asset}: {content_type}");
        let text = response.text().await.unwrap();
        assert!(text.contains(marker), "{asset} should contain {marker}");
        // The only URL scheme in the assets is the page's own WebSocket.
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{asset} must not load anything remote"
        );
    }
}

#[tokio::test]
async fn demo_tokens_log_in_as_new_devices_of_the_name() {
    let server = demo_server().await;
    let mut uids = Vec::new();
    for _ in 0..2 {
        let (status, answer) = token(&server, r#"{"name":"alice"}"#).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["address"], "alice@demo");
        assert_eq!(answer["appid"], "octet.demo");
        let mut conn = server.connect().await;
        conn.send_json(json!({"op":"login","token":answer["token"],"appid":"octet.demo"}))
            .await;
        let welcome = conn.expect("welcome").await;
        assert_eq!(welcome["uid"], answer["uid"], "{welcome}");
        assert_eq!(welcome["primary"]["address"], "alice@demo", "{welcome}");
        uids.push(answer["uid"].as_u64().unwrap());
    }
    assert_ne!(uids[0], uids[1], "each token is a new device");
    assert_eq!(server.device_count("alice@demo").await, 2);
}

#[tokio::test]
async fn demo_token_refuses_bad_names_clearly() {
    let server = demo_server().await;
    let cases = [
        ("{", "bad_json", "not JSON"),
        ("{}", "missing_field", "`name` is missing"),
        (r#"{"name":7}"#, "wrong_type", "must be a string"),
        (r#"{"name":""}"#, "bad_value", "lowercase letters"),
        (r#"{"name":"Alice"}"#, "bad_value", "lowercase letters"),
        (r#"{"name":"a@b"}"#, "bad_value", "lowercase letters"),
        (r#"{"name":"a b"}"#, "bad_value", "lowercase letters"),
        (
            &format!(r#"{{"name":"{}"}}"#, "a".repeat(33)),
            "bad_value",
            "1 to 32",
        ),
    ];
    for (body, code, words) in cases {
        let (status, answer) = token(&server, body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["result"], false, "{body}: {answer}");
        assert_eq!(answer["error"], code, "{body}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(words), "{body}: {message}");
    }
    for name in ["alice", "Alice", "a"] {
        assert_no_person(&server, &format!("{name}@demo")).await;
    }
    let get = get(&server.http_url("/demo/token")).await;
    assert_eq!(get.status(), 405);
}

#[tokio::test]
async fn demo_ninth_device_of_a_name_is_refused() {
    let server = demo_server().await;
    for i in 0..8 {
        let (status, answer) = token(&server, r#"{"name":"bob"}"#).await;
        assert_eq!(status, 200, "device {i}: {answer}");
    }
    let (status, answer) = token(&server, r#"{"name":"bob"}"#).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "device_limit", "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("bob@demo already has 8 devices") && message.contains("another name"),
        "{message}"
    );
    assert_eq!(server.device_count("bob@demo").await, 8, "nothing changed");
    // Another name still works.
    let (status, answer) = token(&server, r#"{"name":"bob2"}"#).await;
    assert_eq!(status, 200, "{answer}");
}

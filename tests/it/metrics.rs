//! `GET /metrics`: the numbers move with real traffic.

use serde_json::json;

use crate::harness::TestServer;

/// The value of one sample line (`name{labels}` exactly as Prometheus prints it).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

async fn scrape(server: &TestServer) -> String {
    let response = reqwest::get(server.http_url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_follow_traffic() {
    let server = TestServer::start().await;
    let mut a1 = server.device("alice@example.com", "a1").await;
    let mut a2 = server.device("alice@example.com", "a2").await;
    let mut b1 = server.device("bob@example.com", "b1").await;
    let mut b2 = server.device("bob@example.com", "b2").await;
    let mut bad = server.login("octu_wrong").await;
    bad.expect("error").await;
    server
        .backend_raw(r#"{"op":"devices","token":"wrong","uid":1}"#)
        .await;
    a1.send_msg("m1", "bob@example.com", json!("hi")).await;
    for dev in [&mut a2, &mut b1, &mut b2] {
        dev.expect("message").await;
    }
    b1.send_text("not json").await;
    b1.expect("error").await;

    let text = scrape(&server).await;
    assert_eq!(sample(&text, r#"octet_logins_total{result="ok"}"#), 4.0);
    assert_eq!(
        sample(&text, r#"octet_logins_total{result="auth_failed"}"#),
        1.0
    );
    assert_eq!(sample(&text, "octet_messages_total"), 1.0);
    assert_eq!(sample(&text, "octet_deliveries_total"), 3.0);
    assert_eq!(sample(&text, "octet_fanout_width_sum"), 3.0);
    assert_eq!(sample(&text, "octet_send_to_deliver_seconds_count"), 1.0);
    assert_eq!(sample(&text, r#"octet_frames_in_total{op="send"}"#), 1.0);
    assert_eq!(sample(&text, r#"octet_frames_in_total{op="invalid"}"#), 1.0);
    assert_eq!(
        sample(&text, r#"octet_frames_out_total{op="message"}"#),
        3.0
    );
    assert_eq!(
        sample(&text, r#"octet_frames_out_total{op="welcome"}"#),
        4.0
    );
    assert_eq!(sample(&text, r#"octet_frames_out_total{op="sent"}"#), 1.0);
    assert_eq!(
        sample(
            &text,
            r#"octet_backend_calls_total{op="useradd",result="ok"}"#
        ),
        4.0
    );
    assert_eq!(
        sample(
            &text,
            r#"octet_backend_calls_total{op="devices",result="bad_app_token"}"#
        ),
        1.0
    );
    assert_eq!(sample(&text, "octet_persons_online"), 2.0);
    assert!(sample(&text, "octet_connections") >= 4.0);
    assert!(sample(&text, "octet_store_batch_size_count") >= 5.0);
    assert_eq!(sample(&text, "octet_slow_consumer_closes_total"), 0.0);

    drop(a2);
    drop(b1);
    drop(b2);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = scrape(&server).await;
        if sample(&text, "octet_persons_online") == 1.0 && sample(&text, "octet_connections") == 1.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gauges never fell:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn slow_consumer_closes_are_counted() {
    let server = TestServer::start_with(|c| c.queue_frames = 8).await;
    let mut sender = server.device("alice@example.com", "a").await;
    let _stalled = server.device("bob@example.com", "b").await;
    sender
        .send_until_kicked(&server, "bob@example.com", 2)
        .await;
    let text = scrape(&server).await;
    assert_eq!(sample(&text, "octet_slow_consumer_closes_total"), 1.0);
}

//! Dead-lettering after the retry window, `webhooks` and `webhookretry`, the bound on the
//! outbox, and the ops on a broker without webhooks.

use std::time::Duration;

use serde_json::{Value, json};

use super::receiver::Receiver;
use super::{ids, metric, server, settled};
use crate::harness::{TestServer, WAIT};

#[tokio::test]
async fn events_past_the_retry_window_are_dead_and_webhookretry_sends_them_again() {
    let rx = Receiver::start(&[], 500).await;
    let server = server(&rx, |w| w.retry_window = Duration::from_secs(2)).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    let bob = server.device_token("bob@example.com", "bob-phone").await;
    let bob_uid = bob["user"]["uid"].as_u64().unwrap();
    let sent = alice
        .send_msg("c1", "bob@example.com", json!({"text": "doomed"}))
        .await;
    let mid = sent["mid"].as_u64().unwrap();
    // Attempts back off (1, 2, 4 s caps, with jitter): dead once one fails after 2 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = server.backend(json!({"op": "webhooks"})).await;
        if status["dead"].as_array().is_some_and(|d| !d.is_empty()) {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["pending"], json!(0));
    let dead = &status["dead"][0];
    let attempts = dead["attempts"].as_u64().unwrap();
    assert!(attempts >= 1, "{status}");
    assert_eq!(
        status,
        json!({"op": "webhooks", "result": true, "pending": 0, "dead": [{
            "id": dead["id"],
            "event": format!("msg-{mid}"),
            "type": "message",
            "user": {"uid": bob_uid, "address": "bob@example.com"},
            "seq": 1,
            "attempts": attempts,
            "last_error": "HTTP 500",
            "created": sent["ts"]
        }]})
    );
    assert_eq!(
        metric(&server, "octet_webhook_events_total{outcome=\"dead\"}").await,
        Some(1.0)
    );
    let tries = rx.hits().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.hits().len(), tries, "a dead event is not tried again");

    // Refusals change nothing.
    for (request, code, field) in [
        (json!({"op": "webhookretry", "ids": []}), "bad_value", "ids"),
        (
            json!({"op": "webhookretry", "ids": ["x"]}),
            "wrong_type",
            "ids",
        ),
        (
            json!({"op": "webhookretry", "ids": [-1]}),
            "wrong_type",
            "ids",
        ),
        (json!({"op": "webhooks", "limit": 0}), "bad_value", "limit"),
        (
            json!({"op": "webhooks", "limit": 101}),
            "bad_value",
            "limit",
        ),
    ] {
        let before = server.snapshot();
        let answer = server.backend(request.clone()).await;
        assert_eq!(answer["error"], json!(code), "{request} → {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{request} → {answer}: names {field}"
        );
        assert_eq!(server.snapshot(), before, "{request} changed something");
    }
    // An id that names no dead event requeues nothing.
    let answer = server
        .backend(json!({"op": "webhookretry", "ids": [999_999]}))
        .await;
    assert_eq!(
        answer,
        json!({"op": "webhookretry", "result": true, "requeued": 0})
    );

    rx.answer(200);
    let answer = server
        .backend(json!({"op": "webhookretry", "ids": [dead["id"]]}))
        .await;
    assert_eq!(
        answer,
        json!({"op": "webhookretry", "result": true, "requeued": 1})
    );
    let events = rx.delivered_at_least(1, WAIT).await;
    assert_eq!(ids(&events), vec![format!("msg-{mid}")]);
    // The receiver records a request before answering it: the delete follows the answer.
    settled(&server).await;
    let status = server.backend(json!({"op": "webhooks", "limit": 5})).await;
    assert_eq!(
        status,
        json!({"op": "webhooks", "result": true, "pending": 0, "dead": []})
    );
}

#[tokio::test]
async fn a_full_outbox_dead_letters_its_oldest_events_and_refuses_no_send() {
    // A receiver that is down, and room for two events.
    let rx = Receiver::start(&[], 503).await;
    let server = server(&rx, |w| w.max_pending = 2).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    server.device_token("bob@example.com", "bob-phone").await;
    let mut mids = Vec::new();
    for n in 0..6 {
        let sent = alice
            .send_msg(&format!("c{n}"), "bob@example.com", json!({"n": n}))
            .await;
        mids.push(sent["mid"].as_u64().unwrap());
    }
    // The bound is checked every 2 s: four go dead, and of those only the newest two are
    // kept (dead events are bounded too).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = server.backend(json!({"op": "webhooks"})).await;
        if status["pending"] == json!(2) && status["dead"].as_array().is_some_and(|d| d.len() == 2)
        {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not bounded: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["pending"], json!(2));
    // Newest first: the oldest went, m0 and m1 forgotten.
    let dead: Vec<Value> = status["dead"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| json!([d["event"], d["last_error"]]))
        .collect();
    assert_eq!(
        dead,
        vec![
            json!([format!("msg-{}", mids[3]), "outbox full"]),
            json!([format!("msg-{}", mids[2]), "outbox full"]),
        ]
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(&server, "octet_webhook_pending").await != Some(2.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pending gauge not 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&server, "octet_webhook_events_total{outcome=\"dead\"}").await,
        Some(4.0)
    );
    // The receiver comes back: the two kept arrive, in order.
    rx.answer(200);
    let events = rx.delivered_at_least(2, Duration::from_secs(15)).await;
    assert_eq!(
        ids(&events),
        vec![format!("msg-{}", mids[4]), format!("msg-{}", mids[5])]
    );
}

#[tokio::test]
async fn without_webhooks_the_ops_say_how_to_turn_them_on() {
    let server = TestServer::start().await;
    for request in [
        json!({"op": "webhooks"}),
        json!({"op": "webhookretry", "ids": [1]}),
    ] {
        let answer = server.backend(request.clone()).await;
        assert_eq!(answer["error"], json!("not_configured"), "{answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("--webhook-url"),
            "{answer}"
        );
    }
}

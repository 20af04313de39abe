//! Event webhooks (issue 16 item 1): a real receiver on loopback gets signed `message` and
//! `read` events from the outbox, with retries, dead-lettering, the bound and `webhookretry`.
//! Dead-lettering, the bound and the backend ops are in `webhooks/dead.rs`; the real binary
//! killed with SIGKILL and the Python receiver of proto/webhooks.md in `webhooks/durable.rs`;
//! https receivers and `--webhook-ca-file` in `webhooks/tls.rs`.

mod calls;
mod dead;
mod durable;
mod presence;
mod receiver;
mod tls;

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use octet::config::WebhookConfig;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::{TestServer, WAIT};
use receiver::{Hit, Receiver};

const SECRET: &str = "webhook-secret-for-tests-0123";

/// A server posting to `receiver`, with `tweak` applied to the webhook settings.
async fn server(receiver: &Receiver, tweak: impl FnOnce(&mut WebhookConfig)) -> TestServer {
    let mut hooks = WebhookConfig::new(receiver.url(), SECRET);
    tweak(&mut hooks);
    TestServer::start_with(|c| c.webhook = Some(hooks)).await
}

/// Checks a request's signature the way a receiver does, without octet's code: HMAC-SHA256 of
/// "<t>.<body>" under the secret, hex, in `v1`; `t` is now (unix seconds, within a minute).
fn assert_signed(hit: &Hit) {
    let header = hit.signature.as_deref().expect("X-Octet-Signature is set");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature header {header:?} is not t=..,v1=.."));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&hit.body);
    assert_eq!(
        hex::encode(mac.finalize().into_bytes()),
        v1,
        "bad signature"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - t.parse::<i64>().unwrap()).abs() < 60,
        "t={t} is not now"
    );
    assert!(octet::webhooks::sign::verify(
        SECRET.as_bytes(),
        header,
        &hit.body
    ));
    assert_eq!(hit.content_type.as_deref(), Some("application/json"));
}

async fn metric(server: &TestServer, line: &str) -> Option<f64> {
    let text = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
}

/// The request shown in proto/webhooks.md (its ```http block's body).
fn documented_request() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/webhooks.md");
    let text = std::fs::read_to_string(path).expect("proto/webhooks.md");
    let start = text.find("```http\n").expect("a ```http block");
    let block = &text[start..];
    let body = &block[block.find("\n\n").expect("headers, then the body")..];
    let body = &body[..body.find("```").expect("the block ends")];
    serde_json::from_str(body).expect("the documented body is JSON")
}

/// Asserts `real` has exactly the documented fields, with the documented JSON types.
fn assert_same_shape(documented: &Value, real: &Value, at: &str) {
    match (documented, real) {
        (Value::Object(d), Value::Object(r)) => {
            let (dk, rk): (Vec<_>, Vec<_>) = (d.keys().collect(), r.keys().collect());
            assert_eq!(dk, rk, "{at}: documented fields differ from what is sent");
            for (key, value) in d {
                assert_same_shape(value, &r[key], &format!("{at}.{key}"));
            }
        }
        (Value::Array(d), Value::Array(r)) if !d.is_empty() && !r.is_empty() => {
            assert_same_shape(&d[0], &r[0], &format!("{at}[0]"))
        }
        (d, r) => assert_eq!(
            std::mem::discriminant(d),
            std::mem::discriminant(r),
            "{at}: documented {d}, sent {r}"
        ),
    }
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_message_to_a_person_with_no_live_device_is_one_signed_event() {
    let rx = Receiver::start(&[], 200).await;
    let server = server(&rx, |w| w.include_body = true).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    let bob = server.device_token("bob@example.com", "bob-phone").await;
    let bob_uid = bob["user"]["uid"].as_u64().unwrap();
    let sent = alice
        .send_msg("c1", "bob@example.com", json!({"text": "hello"}))
        .await;
    let mid = sent["mid"].as_u64().unwrap();
    let events = rx.delivered_at_least(1, WAIT).await;
    assert_eq!(
        events,
        vec![json!({
            "type": "message",
            "id": format!("msg-{mid}"),
            "ts": sent["ts"],
            "user": {"uid": bob_uid, "address": "bob@example.com"},
            "seq": 1,
            "mid": mid,
            "from": "alice@example.com",
            "devices": [{"uid": bob_uid, "device": "bob-phone", "online": false, "acked": 0}],
            "body": "{\"text\":\"hello\"}",
            "body_truncated": false
        })]
    );
    let hit = rx.hits()[0].clone();
    assert_signed(&hit);
    let request = hit.json();
    assert_eq!(
        (&request["server"], &request["v"], &request["aid"]),
        (&json!("octet"), &json!(2), &json!(1))
    );
    assert!(request["id"].is_string() && request["ts"].is_i64());
    let mut documented = documented_request();
    let read_event = documented["events"][1].take();
    documented["events"] = json!([documented["events"][0].take()]);
    assert_same_shape(&documented, &request, "request");
    assert_eq!(read_event["type"], "read");
    // Exactly one: nothing else arrives (the sender's own devices are never pushed).
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(rx.hits().len(), 1, "{:?}", rx.hits());
    settled(&server).await; // counted once the delete after the 2xx committed
    assert_eq!(
        metric(&server, "octet_webhook_events_total{outcome=\"delivered\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&server, "octet_webhook_request_seconds_count").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_message_acked_in_time_is_not_pushed() {
    let rx = Receiver::start(&[], 200).await;
    // A grace far beyond the wait below: only the ack can let the outbox move on in time.
    let server = server(&rx, |w| w.push_grace = Duration::from_secs(60)).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    let mut bob = server.device("bob@example.com", "bob-phone").await;
    server
        .device_token("carol@example.com", "carol-phone")
        .await;
    let first = alice
        .send_msg("c1", "bob@example.com", json!({"text": "seen"}))
        .await;
    let frame = bob.expect("message").await;
    bob.send_json(json!({"op": "ack", "seq": frame["seq"]}))
        .await;
    alice.expect("receipt").await; // delivered: the ack is stored
    // A later event for a person with no live device is delivered; bob's message leaves the
    // outbox as skipped long before its grace could end, and is never sent.
    let second = alice
        .send_msg("c2", "carol@example.com", json!({"text": "later"}))
        .await;
    let events = rx.delivered_at_least(1, WAIT).await;
    assert_eq!(ids(&events), vec![format!("msg-{}", second["mid"])]);
    settled(&server).await; // bob's message left as skipped, long before its grace ends
    assert_eq!(
        metric(&server, "octet_webhook_events_total{outcome=\"skipped\"}").await,
        Some(1.0)
    );
    assert!(!ids(&rx.delivered()).contains(&format!("msg-{}", first["mid"])));
}

#[tokio::test]
async fn a_message_not_acked_within_the_grace_is_pushed_after_it() {
    let rx = Receiver::start(&[], 200).await;
    let server = server(&rx, |w| w.push_grace = Duration::from_secs(1)).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    let mut bob = server.device("bob@example.com", "bob-phone").await;
    let started = Instant::now();
    let sent = alice
        .send_msg("c1", "bob@example.com", json!({"text": "wake up"}))
        .await;
    bob.expect("message").await; // delivered live, never acked
    let events = rx.delivered_at_least(1, WAIT).await;
    // Not before the grace ended (a lower bound: no machine is that fast by accident).
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], json!(format!("msg-{}", sent["mid"])));
    assert_eq!(
        events[0]["devices"],
        json!([{"uid": bob.uid, "device": "bob-phone", "online": true, "acked": 0}])
    );
    // Without --webhook-include-body there is no body.
    assert!(events[0].get("body").is_none());
}

#[tokio::test]
async fn a_message_in_its_grace_period_holds_back_only_its_own_persons_events() {
    let rx = Receiver::start(&[], 200).await;
    let server = server(&rx, |w| w.push_grace = Duration::from_secs(60)).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    let mut bob = server.device("bob@example.com", "bob-phone").await;
    server
        .device_token("carol@example.com", "carol-phone")
        .await;
    let to_bob = alice
        .send_msg("c1", "bob@example.com", json!({"text": "in grace"}))
        .await;
    let bob_seq = bob.expect("message").await["seq"].clone();
    // bob reads it before acking: his read waits behind the message (seq order), carol's
    // message does not.
    bob.send_json(json!({"op": "read", "peer": "alice@example.com", "upto": to_bob["mid"]}))
        .await;
    let marker = bob.expect("read").await;
    alice.expect("receipt").await; // the read receipt
    let to_carol = alice
        .send_msg("c2", "carol@example.com", json!({"text": "now"}))
        .await;
    let events = rx.delivered_at_least(1, WAIT).await;
    assert_eq!(ids(&events), vec![format!("msg-{}", to_carol["mid"])]);
    // bob's device acks: the message is dropped and the read goes out.
    bob.send_json(json!({"op": "ack", "seq": bob_seq})).await;
    let events = rx.delivered_at_least(2, WAIT).await;
    assert_eq!(
        ids(&events),
        vec![
            format!("msg-{}", to_carol["mid"]),
            format!("read-{}-{}", bob.uid, marker["seq"])
        ]
    );
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_event_three_times_and_it_is_delivered_once() {
    let rx = Receiver::start(&[500, 500], 200).await;
    let server = server(&rx, |_| {}).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    server.device_token("bob@example.com", "bob-phone").await;
    let sent = alice
        .send_msg("c1", "bob@example.com", json!({"text": "retry me"}))
        .await;
    // Backoff with full jitter: at most 1 s, then 2 s, between the attempts.
    rx.delivered_at_least(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let hits = rx.hits();
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    for hit in &hits {
        assert_signed(hit);
        assert_eq!(ids(&hit.events()), vec![format!("msg-{}", sent["mid"])]);
    }
    assert_eq!(rx.delivered().len(), 1);
    settled(&server).await;
    let status = server.backend(json!({"op": "webhooks"})).await;
    assert_eq!(
        status,
        json!({"op": "webhooks", "result": true, "pending": 0, "dead": []})
    );
}

#[tokio::test]
async fn a_read_is_an_event_for_the_reader() {
    let rx = Receiver::start(&[], 200).await;
    // No grace: the message is pushed at once too, then the read.
    let server = server(&rx, |w| w.push_grace = Duration::ZERO).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    let mut bob = server.device("bob@example.com", "bob-phone").await;
    let sent = alice
        .send_msg("c1", "bob@example.com", json!({"text": "read me"}))
        .await;
    let mid = sent["mid"].as_u64().unwrap();
    bob.expect("message").await;
    bob.send_json(json!({"op": "read", "peer": "alice@example.com", "upto": mid}))
        .await;
    let marker = bob.expect("read").await;
    let events = rx.delivered_at_least(2, WAIT).await;
    assert_eq!(
        ids(&events),
        vec![
            format!("msg-{mid}"),
            format!("read-{}-{}", bob.uid, marker["seq"])
        ]
    );
    assert_eq!(
        events[1],
        json!({
            "type": "read",
            "id": format!("read-{}-{}", bob.uid, marker["seq"]),
            "ts": marker["ts"],
            "user": {"uid": bob.uid, "address": "bob@example.com"},
            "seq": marker["seq"],
            "mid": mid,
            "peer": "alice@example.com",
            "origin": {"uid": bob.uid, "device": "bob-phone"},
            "devices": [{"uid": bob.uid, "device": "bob-phone", "online": true, "acked": 0}]
        })
    );
    assert_same_shape(&documented_request()["events"][1], &events[1], "read event");
    // Reading the same message again moves nothing: no second event.
    bob.send_json(json!({"op": "read", "peer": "alice@example.com", "upto": mid}))
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(rx.delivered().len(), 2);
}

/// Waits (at most `WAIT`) until no event is pending.
async fn settled(server: &TestServer) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.backend(json!({"op": "webhooks"})).await["pending"] != json!(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events still pending"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_backlog_goes_out_in_full_requests_of_100_events_in_order() {
    // The receiver is down while 250 events queue up (more than two requests' worth, so a
    // full one is certain even if the first answered request was built before the last send).
    let rx = Receiver::start(&[], 503).await;
    let server = server(&rx, |_| {}).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    server.device_token("bob@example.com", "bob-phone").await;
    let mut expected = Vec::new();
    for n in 0..250 {
        let sent = alice
            .send_msg(&format!("c{n}"), "bob@example.com", json!({"n": n}))
            .await;
        expected.push(format!("msg-{}", sent["mid"]));
    }
    rx.answer(200);
    let events = rx.delivered_at_least(250, Duration::from_secs(15)).await;
    assert_eq!(ids(&events), expected, "each once, in seq order");
    let sizes: Vec<usize> = rx
        .hits()
        .iter()
        .filter(|h| h.status == 200)
        .map(|h| h.events().len())
        .collect();
    assert_eq!(
        sizes[0], 100,
        "the backlog's first request is full: {sizes:?}"
    );
    assert!(sizes.iter().all(|&n| n <= 100), "{sizes:?}");
}

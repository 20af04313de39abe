//! `call` and `call_ended` events: a ring that reaches no live device of the callee is pushed,
//! keeps ringing so the woken device that logs in gets it, and its end (answered, rejected,
//! missed, cancelled) is pushed too, so the app can stop the ringing notification.

use std::time::Duration;

use octet::config::WebhookConfig;
use serde_json::{Value, json};

use super::receiver::Receiver;
use super::{SECRET, assert_same_shape, assert_signed, documented_request};
use crate::harness::{Device, TestServer, WAIT};

/// A server posting to `rx`, ringing for `ring_timeout`.
async fn server(rx: &Receiver, ring_timeout: Duration) -> TestServer {
    let hooks = WebhookConfig::new(rx.url(), SECRET);
    TestServer::start_with(|c| {
        c.webhook = Some(hooks);
        c.ring_timeout = ring_timeout;
    })
    .await
}

/// The delivered events of the call kinds, in order (presence events are left out).
fn call_events(rx: &Receiver) -> Vec<Value> {
    rx.delivered()
        .into_iter()
        .filter(|e| e["type"] == "call" || e["type"] == "call_ended")
        .collect()
}

/// Waits until `n` call events were delivered; returns them.
async fn call_events_at_least(rx: &Receiver, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = call_events(rx);
        if events.len() >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {WAIT:?} for {n} call events; got {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Sends a message to carol (no live device: pushed at once) and waits for its event. Events
/// are sent in the order they were written, so every call event written before it is in.
async fn barrier(rx: &Receiver, alice: &mut Device, id: &str) {
    alice
        .send_json(json!({"op": "send", "id": id, "to": "carol@example.com", "body": {"text": id}}))
        .await;
    let sent = expect_op(alice, "sent").await;
    let want = format!("msg-{}", sent["mid"]);
    rx.wait_for(WAIT, &want, |_| {
        rx.delivered().iter().any(|e| e["id"] == json!(want))
    })
    .await;
}

/// The next frame of `op`, passing over the call records the ended calls log.
async fn expect_op(device: &mut Device, op: &str) -> Value {
    loop {
        let frame = device.next().await;
        if frame["op"] == op {
            return frame;
        }
        assert!(
            ["synced", "devices_changed", "call_record"].contains(&frame["op"].as_str().unwrap()),
            "expected `{op}`, got {frame}"
        );
    }
}

/// The next `call` frame's action.
async fn action(device: &mut Device) -> Value {
    expect_op(device, "call").await["action"].clone()
}

fn ring(call: &str) -> Value {
    json!({"op":"call","to":"bob@example.com","call":call,"action":"ring","data":{"sdp":"offer"}})
}

#[tokio::test]
async fn a_ring_to_an_offline_person_is_pushed_rings_the_woken_device_and_its_answer_ends_it() {
    let rx = Receiver::start(&[], 200).await;
    let server = server(&rx, Duration::from_secs(60)).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    let bob = server.device_token("bob@example.com", "bob-phone").await;
    let bob_uid = bob["user"]["uid"].as_u64().unwrap();
    let bob_token = bob["user"]["token"].as_str().unwrap().to_string();
    server
        .device_token("carol@example.com", "carol-phone")
        .await;

    alice.send_json(ring("c1")).await;
    let events = call_events_at_least(&rx, 1).await;
    let rang_at = &events[0]["ts"];
    assert!(rang_at.is_i64(), "{events:?}");
    assert_eq!(
        events,
        vec![json!({
            "type": "call",
            "id": format!("call-{bob_uid}-{rang_at}-c1"),
            "ts": rang_at,
            "user": {"uid": bob_uid, "address": "bob@example.com"},
            "seq": 0,
            "from": "alice@example.com",
            "call": "c1",
            "devices": [{"uid": bob_uid, "device": "bob-phone", "online": false, "acked": 0}],
        })]
    );
    let hit = rx
        .hits()
        .into_iter()
        .find(|h| h.events().iter().any(|e| e["type"] == "call"))
        .unwrap();
    assert_signed(&hit);
    let documented = documented_request();
    let call = documented["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "call")
        .expect("proto/webhooks.md shows a call event");
    assert_same_shape(call, &events[0], "call");

    // The push woke bob's phone: it logs in while the call still rings, and is rung.
    let mut phone = server.login(&bob_token).await;
    phone.expect("welcome").await;
    assert_eq!(
        phone.expect("call").await,
        json!({"op":"call","call":"c1","action":"ring","from":"alice@example.com","to":"bob@example.com","data":{"sdp":"offer"}})
    );
    phone
        .send_json(json!({"op":"call","call":"c1","action":"answer"}))
        .await;
    assert_eq!(action(&mut alice).await, "answer");
    let events = call_events_at_least(&rx, 2).await;
    let ended = &events[1];
    assert_eq!(
        (
            &ended["type"],
            &ended["id"],
            &ended["reason"],
            &ended["call"]
        ),
        (
            &json!("call_ended"),
            &json!(format!("call_ended-{bob_uid}-{rang_at}-c1")),
            &json!("answered"),
            &json!("c1")
        ),
        "{ended}"
    );
    assert_eq!(ended["devices"][0]["online"], true);
    let documented_ended = documented["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "call_ended")
        .expect("proto/webhooks.md shows a call_ended event");
    assert_same_shape(documented_ended, ended, "call_ended");

    // The hangup stores the record; the call's end was already pushed at the answer.
    alice
        .send_json(json!({"op":"call","call":"c1","action":"hangup"}))
        .await;
    assert_eq!(action(&mut phone).await, "hangup");
    barrier(&rx, &mut alice, "after-hangup").await;
    assert_eq!(call_events(&rx).len(), 2, "{:?}", call_events(&rx));
}

#[tokio::test]
async fn a_pushed_ring_rejected_missed_or_cancelled_ends_with_that_reason() {
    let rx = Receiver::start(&[], 200).await;
    let server = server(&rx, Duration::from_secs(1)).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    let bob = server.device_token("bob@example.com", "bob-phone").await;
    let bob_token = bob["user"]["token"].as_str().unwrap().to_string();
    server
        .device_token("carol@example.com", "carol-phone")
        .await;

    // Missed: nobody answers within the ring timeout (1 s).
    alice.send_json(ring("m1")).await;
    assert_eq!(action(&mut alice).await, "missed");
    // Cancelled: the caller hangs up while it rings.
    alice.send_json(ring("x1")).await;
    alice
        .send_json(json!({"op":"call","call":"x1","action":"hangup"}))
        .await;
    // Rejected: the woken phone logs in, is rung, and rejects.
    alice.send_json(ring("r1")).await;
    // The phone logs in once r1's push is out (so after the caller's hangup of x1).
    call_events_at_least(&rx, 5).await;
    let mut phone = server.login(&bob_token).await;
    phone.expect("welcome").await;
    // Only r1 still rings: the ended calls are not rung on the new device.
    assert_eq!(phone.expect("call").await["call"], "r1");
    phone
        .send_json(json!({"op":"call","call":"r1","action":"reject"}))
        .await;
    assert_eq!(action(&mut alice).await, "reject");

    let events = call_events_at_least(&rx, 6).await;
    let seen: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or("-").to_string();
            (text("type"), text("call"), text("reason"))
        })
        .collect();
    let want = |t: &str, c: &str, r: &str| (t.to_string(), c.to_string(), r.to_string());
    assert_eq!(
        seen,
        vec![
            want("call", "m1", "-"),
            want("call_ended", "m1", "missed"),
            want("call", "x1", "-"),
            want("call_ended", "x1", "cancelled"),
            want("call", "r1", "-"),
            want("call_ended", "r1", "rejected"),
        ]
    );
    // Each end is at the seq of the call's record in bob's log, after its ring's.
    for pair in events.chunks(2) {
        assert!(
            pair[1]["seq"].as_u64() > pair[0]["seq"].as_u64(),
            "{pair:?}"
        );
        assert_eq!(
            pair[0]["id"]
                .as_str()
                .unwrap()
                .replacen("call-", "call_ended-", 1),
            pair[1]["id"]
        );
    }
    barrier(&rx, &mut alice, "after").await;
    assert_eq!(call_events(&rx).len(), 6);
}

#[tokio::test]
async fn a_ring_that_reaches_a_live_device_is_not_pushed() {
    let rx = Receiver::start(&[], 200).await;
    let server = server(&rx, Duration::from_secs(60)).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    let mut bob = server.device("bob@example.com", "bob-phone").await;
    server
        .device_token("carol@example.com", "carol-phone")
        .await;

    alice.send_json(ring("c1")).await;
    assert_eq!(action(&mut bob).await, "ring");
    bob.send_json(json!({"op":"call","call":"c1","action":"reject"}))
        .await;
    assert_eq!(action(&mut alice).await, "reject");
    alice.send_json(ring("c2")).await;
    assert_eq!(action(&mut bob).await, "ring");
    bob.send_json(json!({"op":"call","call":"c2","action":"answer"}))
        .await;
    assert_eq!(action(&mut alice).await, "answer");
    alice
        .send_json(json!({"op":"call","call":"c2","action":"hangup"}))
        .await;
    assert_eq!(action(&mut bob).await, "hangup");
    barrier(&rx, &mut alice, "after").await;
    assert_eq!(call_events(&rx), Vec::<Value>::new());
}

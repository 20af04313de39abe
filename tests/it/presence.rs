//! Presence aggregated over a person's devices: online while any device is connected, offline
//! (with last_seen) only after the grace period, who may subscribe, bounds, never logged.

use std::time::{Duration, Instant};

use octet::client::Incoming;
use octet::config::PresencePolicy;
use octet::state::now_millis;
use serde_json::{Value, json};

use crate::harness::{Device, TestServer, WAIT};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

/// Short enough for a test, long enough that a reconnect on a loaded machine falls inside it.
const GRACE: Duration = Duration::from_millis(1500);

async fn subscribe(device: &mut Device, addresses: &[&str]) {
    device
        .send_json(json!({"op":"presence","subscribe":addresses}))
        .await;
}

/// The next frame within `limit`, or `None` (for waits longer than the harness's `WAIT`).
async fn next_within(device: &mut Device, limit: Duration) -> Option<Value> {
    let incoming = tokio::time::timeout(limit, device.conn.recv()).await.ok()?;
    match incoming.expect("receive") {
        Incoming::Frame(text, _) => Some(serde_json::from_str(&text).unwrap()),
        Incoming::Closed(close) => panic!("closed: {close:?}"),
    }
}

async fn token(server: &TestServer, address: &str, device: &str) -> String {
    server.device_token(address, device).await["user"]["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Logs in with an issued token; `welcome` and `synced` are consumed.
async fn login(server: &TestServer, token: &str) -> Device {
    let mut device = server.login(token).await;
    device.expect("welcome").await;
    device.expect("synced").await;
    device
}

#[tokio::test]
async fn online_while_any_device_is_connected_offline_after_the_grace() {
    let server = TestServer::start_with(|c| {
        c.presence = PresencePolicy::Open;
        c.presence_grace = GRACE;
    })
    .await;
    let mut a1 = server.device(ALICE, "a1").await;
    let b1_token = token(&server, BOB, "b1").await;
    let b2_token = token(&server, BOB, "b2").await;

    // Never connected: offline without last_seen. Any address of the person; the frame names
    // the primary.
    subscribe(&mut a1, &["bob@example.com-linked-1"]).await;
    assert_eq!(
        a1.expect("presence").await,
        json!({"op":"presence","address":BOB,"status":"offline"})
    );

    let b1 = login(&server, &b1_token).await;
    assert_eq!(
        a1.expect("presence").await,
        json!({"op":"presence","address":BOB,"status":"online"})
    );
    // A second device, the first leaving while the second stays: no change.
    let b2 = login(&server, &b2_token).await;
    b1.conn.close().await.unwrap();
    // A device that drops and comes back within the grace: no flap.
    b2.conn.close().await.unwrap();
    let b2 = login(&server, &b2_token).await;
    assert_eq!(next_within(&mut a1, GRACE + GRACE / 2).await, None);
    assert!(
        server
            .state
            .presence
            .is_online(server.state.store.resolve(BOB).await.unwrap().0)
    );

    // Gone for good: offline once the grace has passed, with when the last device left.
    let before = now_millis();
    let left = Instant::now();
    b2.conn.close().await.unwrap();
    let offline = next_within(&mut a1, GRACE + WAIT)
        .await
        .expect("offline after the grace");
    let waited = left.elapsed();
    let after = now_millis();
    assert_eq!(offline["status"], "offline", "{offline}");
    assert_eq!(offline["address"], BOB);
    let last_seen = offline["last_seen"].as_i64().expect("last_seen");
    assert!(
        (before..=after).contains(&last_seen),
        "{last_seen} not in {before}..={after}"
    );
    // Never early: a loaded machine may be late, not early.
    assert!(
        waited >= GRACE - Duration::from_millis(100),
        "offline after {waited:?}"
    );

    // A new subscriber gets the same from the stored times.
    let mut a2 = server.device(ALICE, "a2").await;
    subscribe(&mut a2, &[BOB]).await;
    let shown = a2.expect("presence").await;
    assert_eq!(shown["status"], "offline");
    assert!(shown["last_seen"].as_i64().unwrap() >= last_seen, "{shown}");

    // Never logged: nothing of it in the log, and subscriptions end with their connection.
    // (Only the `devices_changed` of a2's link is.)
    a1.send_json(json!({"op":"history"})).await;
    let events = a1.expect("history").await["events"].clone();
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    assert_eq!(events[0]["op"], "devices_changed", "{events}");
    a1.conn.close().await.unwrap();
    a2.conn.close().await.unwrap();
    let deadline = Instant::now() + WAIT;
    while server.state.presence.subscription_count() > 0 {
        assert!(Instant::now() < deadline, "subscriptions left behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn contacts_allow_and_deny_decide_who_may_subscribe() {
    // The default policy: contacts.
    let server = TestServer::start_with(|c| c.presence_grace = GRACE).await;
    let mut a1 = server.device(ALICE, "a1").await;
    let mut b1 = server.device(BOB, "b1").await;
    server.device_token(CAROL, "c1").await;
    // Alice's second device, not connected: its address names her person too.
    server.device_token(ALICE, "a2").await;

    // A stranger is refused, with the address named.
    subscribe(&mut a1, &[BOB]).await;
    let err = a1.expect("error").await;
    assert_eq!(err["code"], "presence_denied");
    assert!(err["message"].as_str().unwrap().contains(BOB), "{err}");
    assert_eq!(server.state.presence.subscription_count(), 0);

    // One message, either way, makes them contacts.
    b1.send_msg("m1", ALICE, json!("hi")).await;
    a1.expect("message").await;
    subscribe(&mut a1, &[BOB]).await;
    assert_eq!(a1.expect("presence").await["status"], "online");
    // Always one's own person.
    subscribe(&mut a1, &["alice@example.com-linked-1"]).await;
    assert_eq!(a1.expect("presence").await["status"], "online");

    // Carol allows alice without any message; bob denies her, which wins over the contact and
    // ends her live subscription at once.
    let answer = server
        .backend(json!({"op":"presence","user":{"address":CAROL},"allow":[ALICE]}))
        .await;
    assert_eq!(
        answer,
        json!({"op":"presence","result":true,"address":CAROL,"allow":[ALICE],"deny":[]})
    );
    subscribe(&mut a1, &[CAROL]).await;
    assert_eq!(a1.expect("presence").await["status"], "offline");
    let answer = server
        .backend(
            json!({"op":"presence","user":{"address":BOB},"deny":["alice@example.com-linked-1"]}),
        )
        .await;
    assert_eq!(answer["deny"], json!([ALICE]), "{answer}");
    b1.conn.close().await.unwrap();
    assert_eq!(next_within(&mut a1, GRACE * 2).await, None, "revoked");
    subscribe(&mut a1, &[BOB]).await;
    let err = a1.expect("error").await;
    assert_eq!(err["code"], "presence_denied", "{err}");
    // The lists are kept across a restart; reading changes nothing.
    let server = server.restart().await;
    let read = server
        .backend(json!({"op":"presence","user":{"address":BOB}}))
        .await;
    assert_eq!(
        read,
        json!({"op":"presence","result":true,"address":BOB,"allow":[],"deny":[ALICE]})
    );

    // `off`: nobody, allow lists included.
    let server = server
        .restart_with(|c| c.presence = PresencePolicy::Off)
        .await;
    let mut a1 = login(&server, &token(&server, ALICE, "a1").await).await;
    subscribe(&mut a1, &[CAROL]).await;
    let err = a1.expect("error").await;
    assert_eq!(err["code"], "presence_denied");
    assert!(err["message"].as_str().unwrap().contains("off"), "{err}");
}

#[tokio::test]
async fn bad_presence_requests_get_clear_errors_and_change_nothing() {
    let server = TestServer::start_with(|c| c.presence = PresencePolicy::Open).await;
    let mut a1 = server.device(ALICE, "a1").await;
    server.device_token(BOB, "b1").await;
    let many: Vec<String> = (0..257).map(|i| format!("u{i}@example.com")).collect();
    let cases = [
        (json!({"op":"presence"}), "bad_value", "subscribe"),
        (
            json!({"op":"presence","subscribe":[]}),
            "bad_value",
            "subscribe",
        ),
        (
            json!({"op":"presence","subscribe":many}),
            "bad_value",
            "256",
        ),
        (
            json!({"op":"presence","subscribe":BOB}),
            "wrong_type",
            "subscribe",
        ),
        (
            json!({"op":"presence","subscribe":[7]}),
            "wrong_type",
            "subscribe",
        ),
        (
            json!({"op":"presence","subscribe":["nobody@example.com"]}),
            "unknown_recipient",
            "nobody@example.com",
        ),
        (
            json!({"op":"presence","unsubscribe":["nobody@example.com"]}),
            "unknown_recipient",
            "nobody@example.com",
        ),
    ];
    for (frame, code, names) in cases {
        a1.send_json(frame.clone()).await;
        let err = a1.expect("error").await;
        assert_eq!(err["code"], code, "{frame} -> {err}");
        assert!(
            err["message"].as_str().unwrap().contains(names),
            "{frame} -> {err}"
        );
    }
    assert_eq!(server.state.presence.subscription_count(), 0);

    // The backend op: each bad field named, the stored lists unchanged.
    server
        .backend(json!({"op":"presence","user":{"address":BOB},"allow":[ALICE]}))
        .await;
    let refusals = [
        (
            json!({"op":"presence","user":{"address":BOB},"deny":[ALICE,"nobody@example.com"]}),
            "no_such_user",
            "deny[1]",
        ),
        (
            json!({"op":"presence","user":{"address":"nobody@example.com"},"allow":[]}),
            "no_such_user",
            "nobody@example.com",
        ),
        (
            json!({"op":"presence","user":{"address":BOB},"allow":ALICE}),
            "wrong_type",
            "allow",
        ),
        (
            json!({"op":"presence","user":{"address":BOB},"deny":[1]}),
            "wrong_type",
            "deny",
        ),
        (json!({"op":"presence","allow":[]}), "missing_field", "user"),
    ];
    for (request, code, names) in refusals {
        let answer = server.backend(request.clone()).await;
        assert_eq!(answer["result"], false, "{request} -> {answer}");
        assert_eq!(answer["error"], code, "{request} -> {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(names),
            "{request} -> {answer}"
        );
    }
    let read = server
        .backend(json!({"op":"presence","user":{"address":BOB}}))
        .await;
    assert_eq!(
        (&read["allow"], &read["deny"]),
        (&json!([ALICE]), &json!([]))
    );
}

#[tokio::test]
async fn a_connection_subscribes_to_at_most_256_persons() {
    let server = TestServer::start_with(|c| c.presence = PresencePolicy::Open).await;
    let mut a1 = server.device(ALICE, "a1").await;
    let addresses: Vec<String> = (0..257).map(|i| format!("u{i}@example.com")).collect();
    for address in &addresses {
        let answer = server
            .backend(json!({"op":"useradd","user":{"address":address}}))
            .await;
        assert_eq!(answer["result"], true, "{answer}");
    }
    let first: Vec<&str> = addresses[..256].iter().map(String::as_str).collect();
    subscribe(&mut a1, &first).await;
    for _ in 0..256 {
        assert_eq!(a1.expect("presence").await["status"], "offline");
    }
    // Again: no new subscription, the status again.
    subscribe(&mut a1, &[first[0]]).await;
    assert_eq!(a1.expect("presence").await["address"], first[0]);
    subscribe(&mut a1, &[&addresses[256]]).await;
    let err = a1.expect("error").await;
    assert_eq!(err["code"], "too_many_subscriptions", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("u256@example.com"),
        "{err}"
    );
    assert_eq!(server.state.presence.subscription_count(), 256);
    // Unsubscribing makes room.
    a1.send_json(json!({"op":"presence","unsubscribe":[first[0]],"subscribe":[&addresses[256]]}))
        .await;
    assert_eq!(a1.expect("presence").await["address"], addresses[256]);
    assert_eq!(server.state.presence.subscription_count(), 256);
}

#[tokio::test]
async fn addresses_in_presence_frames_are_rate_limited_per_person() {
    let server = TestServer::start_with(|c| c.presence = PresencePolicy::Open).await;
    let mut a1 = server.device(ALICE, "a1").await;
    // 1024 addresses back to back: the first 512 (the burst) are looked up, and the rest
    // cannot all be (that would take the 50/s refill more than 10 s).
    let unknown: Vec<String> = (0..256).map(|i| format!("nobody{i}@example.com")).collect();
    for _ in 0..4 {
        a1.send_json(json!({"op":"presence","subscribe":unknown}))
            .await;
    }
    let mut codes = Vec::new();
    while codes.len() < 1024 {
        let frame = next_within(&mut a1, WAIT)
            .await
            .expect("an answer per address");
        assert_eq!(frame["op"], "error", "{frame}");
        codes.push(frame["code"].as_str().unwrap().to_string());
    }
    assert!(
        codes[..512].iter().all(|c| c == "unknown_recipient"),
        "the burst passes"
    );
    let limited = codes.iter().filter(|c| *c == "rate_limited").count();
    assert!(limited >= 1, "none of 1024 was rate limited");
    assert!(
        codes
            .iter()
            .all(|c| c == "unknown_recipient" || c == "rate_limited")
    );
    // Typing and messages have budgets of their own.
    a1.send_msg("m1", ALICE, json!("note")).await;
}

/// A disabled person can still be named where nobody is reached: a device unsubscribes from it
/// (before, the lookup refused with `user_disabled` and the subscription stayed), and a
/// backend's allow list may name it.
#[tokio::test]
async fn a_disabled_person_can_be_unsubscribed_from_and_listed() {
    let server = TestServer::start_with(|c| {
        c.presence = PresencePolicy::Open;
        c.presence_grace = GRACE;
    })
    .await;
    let mut a1 = server.device(ALICE, "a1").await;
    server.device_token(BOB, "b1").await;
    server.device_token(CAROL, "c1").await;
    subscribe(&mut a1, &[CAROL]).await;
    assert_eq!(a1.expect("presence").await["status"], "offline");
    assert_eq!(server.state.presence.subscription_count(), 1);
    let disabled = server
        .backend(json!({"op": "useradd", "user": {"address": CAROL, "active": false}}))
        .await;
    assert_eq!(disabled["result"], json!(true), "{disabled}");

    a1.send_json(json!({"op":"presence","unsubscribe":[CAROL]}))
        .await;
    a1.expect_nothing().await;
    assert_eq!(server.state.presence.subscription_count(), 0);

    let answer = server
        .backend(json!({"op":"presence","user":{"address":BOB},"allow":[CAROL]}))
        .await;
    assert_eq!(answer["result"], json!(true), "{answer}");
    assert_eq!(answer["allow"], json!([CAROL]), "{answer}");
}

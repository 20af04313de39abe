//! `presence` events: a person online, then offline with `last_seen` after the grace period;
//! none for a reconnect within it; at most one waiting per person while the receiver is down.

use std::time::Duration;

use octet::config::WebhookConfig;
use octet::state::now_millis;
use serde_json::{Value, json};

use super::receiver::Receiver;
use super::{SECRET, assert_same_shape, assert_signed, documented_request};
use crate::harness::{TestServer, WAIT};

const GRACE: Duration = Duration::from_millis(400);

async fn server(rx: &Receiver) -> TestServer {
    let mut hooks = WebhookConfig::new(rx.url(), SECRET);
    hooks.presence = true;
    TestServer::start_with(|c| {
        c.webhook = Some(hooks);
        c.presence_grace = GRACE;
    })
    .await
}

fn presence(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"] == "presence")
        .cloned()
        .collect()
}

/// Waits until `n` presence events were delivered; returns them.
async fn presence_at_least(rx: &Receiver, n: usize, within: Duration) -> Vec<Value> {
    rx.wait_for(within, &format!("{n} presence events"), |_| {
        presence(&rx.delivered()).len() >= n
    })
    .await;
    presence(&rx.delivered())
}

#[tokio::test]
async fn a_person_online_then_offline_after_the_grace_is_two_events_in_order() {
    let rx = Receiver::start(&[], 200).await;
    let server = server(&rx).await;
    let token = server.device_token("bob@example.com", "bob-phone").await;
    let bob_uid = token["user"]["uid"].as_u64().unwrap();
    let bob_token = token["user"]["token"].as_str().unwrap().to_string();
    let before_login = now_millis();
    let mut bob = server.login(&bob_token).await;
    bob.expect("welcome").await;
    let online = presence_at_least(&rx, 1, WAIT).await;
    assert_eq!(online.len(), 1, "{online:?}");
    let ts = online[0]["ts"].as_i64().unwrap();
    assert!(ts >= before_login, "{online:?}");
    assert_eq!(
        online[0],
        json!({
            "type": "presence",
            "id": format!("presence-{bob_uid}-{ts}-online"),
            "ts": ts,
            "user": {"uid": bob_uid, "address": "bob@example.com"},
            "seq": online[0]["seq"],
            "status": "online",
            "devices": [{"uid": bob_uid, "device": "bob-phone", "online": true, "acked": 0}],
        })
    );
    let hit = rx
        .hits()
        .into_iter()
        .find(|h| !presence(&h.events()).is_empty())
        .unwrap();
    assert_signed(&hit);

    // A reconnect within the grace period changes nothing.
    drop(bob);
    bob = server.login(&bob_token).await;
    bob.expect("welcome").await;
    tokio::time::sleep(GRACE * 2).await;
    assert_eq!(presence(&rx.delivered()).len(), 1, "{:?}", rx.delivered());

    // Gone for the grace period: offline, with when the device left.
    let before_leaving = now_millis();
    drop(bob);
    let events = presence_at_least(&rx, 2, WAIT).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let offline = &events[1];
    assert_eq!(offline["status"], "offline");
    let last_seen = offline["last_seen"].as_i64().unwrap();
    assert!(last_seen >= before_leaving, "{offline}");
    assert_eq!(offline["ts"], offline["last_seen"]);
    assert_eq!(offline["devices"][0]["online"], false);
    let documented = documented_request();
    let shown = documented["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "presence")
        .expect("proto/webhooks.md shows an offline presence event");
    assert_same_shape(shown, offline, "presence");
}

#[tokio::test]
async fn a_flapping_person_has_at_most_one_presence_event_waiting() {
    let rx = Receiver::start(&[], 503).await;
    let server = server(&rx).await;
    let token = server.device_token("bob@example.com", "bob-phone").await;
    let bob_token = token["user"]["token"].as_str().unwrap().to_string();
    // Online and offline three times, each offline after the grace period, while the
    // receiver refuses everything.
    for _ in 0..3 {
        let mut bob = server.login(&bob_token).await;
        bob.expect("welcome").await;
        drop(bob);
        tokio::time::sleep(GRACE * 3).await;
    }
    let pending = server.backend(json!({"op": "webhooks"})).await["pending"].clone();
    assert_eq!(pending, json!(1), "one presence event waits, the last");
    rx.answer(200);
    // The failed attempts back off: the next comes within a few seconds.
    let events = presence_at_least(&rx, 1, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["status"], "offline");
}

/// Connections end with the process, and so do its grace timers: after a restart (a kill -9
/// here, a graceful stop too) every person the receiver last heard was online is reported
/// offline, with `reason: "restart"`, before any device of the new process is online; a person
/// already reported offline is not reported again.
#[tokio::test]
async fn after_a_restart_persons_last_reported_online_are_reported_offline() {
    let rx = Receiver::start(&[], 200).await;
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--webhook-url",
        &rx.url(),
        "--webhook-secret",
        SECRET,
        "--webhook-presence",
        "--presence-grace",
        "1",
    ];
    let listen = "127.0.0.1:0".parse().unwrap();
    let mut first = crate::harness::Broker::start_with(dir.path(), listen, &flags).await;
    let backend =
        octet::client::Backend::new(&format!("http://{}", first.addr), crate::harness::APP_TOKEN);
    let bob = backend
        .device_token("bob@example.com", "bob-phone", crate::harness::APPID)
        .await
        .unwrap();
    let carol = backend
        .device_token("carol@example.com", "carol-phone", crate::harness::APPID)
        .await
        .unwrap();
    // Carol comes and goes (reported offline); bob stays online until the kill.
    let (carol_conn, _) = crate::harness::client_login(&first.ws(), &carol.token, None).await;
    presence_at_least(&rx, 1, WAIT).await;
    drop(carol_conn);
    presence_at_least(&rx, 2, WAIT).await;
    let before_bob = now_millis();
    let (_bob_conn, _) = crate::harness::client_login(&first.ws(), &bob.token, None).await;
    let events = presence_at_least(&rx, 3, WAIT).await;
    assert_eq!(events[2]["status"], "online", "{events:?}");
    assert_eq!(events[2]["user"]["address"], "bob@example.com");
    first.kill();

    let before_restart = now_millis();
    let _second = crate::harness::Broker::start_with(dir.path(), listen, &flags).await;
    let events = presence_at_least(&rx, 4, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events_now = presence(&rx.delivered());
    assert_eq!(events_now.len(), 4, "only bob is reported: {events_now:?}");
    let offline = &events[3];
    assert_eq!(offline["user"]["address"], "bob@example.com", "{offline}");
    assert_eq!(offline["status"], "offline");
    assert_eq!(offline["reason"], "restart");
    let ts = offline["ts"].as_i64().unwrap();
    assert!(ts >= before_restart, "{offline}");
    // When bob was last seen: his login (a kill -9 records no disconnect).
    let last_seen = offline["last_seen"].as_i64().unwrap();
    assert!(
        (before_bob..=ts).contains(&last_seen),
        "{before_bob} <= {last_seen} <= {ts}: {offline}"
    );
    assert_eq!(offline["devices"][0]["online"], false, "{offline}");
}

//! Device-list events (issue 16 item 5): linking, renaming, revoking and removing a device of a
//! person logs `devices_changed` in its log (live to every device, on catch-up, in history),
//! a device lists its person's devices with `devices`, and with `--device-self-revoke` revokes
//! another one with `revoke` (closing it within a second).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Device, TestServer, timed};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

/// The next `devices_changed`, checked for its change and device.
async fn changed(dev: &mut Device, change: &str, uid: u64) -> Value {
    let event = dev.expect("devices_changed").await;
    assert_eq!(event["change"], json!(change), "{event}");
    assert_eq!(event["uid"], json!(uid), "{event}");
    assert!(event["seq"].as_u64().unwrap() > 0, "{event}");
    assert!(event["ts"].as_i64().unwrap() > 0, "{event}");
    event
}

/// A server (`--device-self-revoke` as given) and alice's phone and laptop, logged in, the
/// phone past the laptop's `linked` event.
async fn alice_phone_and_laptop(self_revoke: bool) -> (TestServer, Device, Device) {
    let server = TestServer::start_with(|c| c.device_self_revoke = self_revoke).await;
    let mut phone = server.device(ALICE, "phone").await;
    let laptop = server.device(ALICE, "laptop").await;
    changed(&mut phone, "linked", laptop.uid).await;
    (server, phone, laptop)
}

/// The entry of `uid` in a device list.
fn entry(list: &Value, uid: u64) -> Option<Value> {
    list["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices in {list}"))
        .iter()
        .find(|d| d["uid"] == json!(uid))
        .cloned()
}

fn uids(list: &Value) -> Vec<u64> {
    list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_u64().unwrap())
        .collect()
}

/// Broken locally by not appending the event in `devices::useradd` (no `log_change` for
/// `linked`): the phone never gets `devices_changed`. Also by wiring `StoreOptions::online` in
/// `server::prepare` to nobody: the phone is shown offline in its own event.
#[tokio::test]
async fn a_linked_device_is_announced_live_on_catch_up_and_in_history() {
    let server = TestServer::start().await;
    let mut phone = server.device(ALICE, "phone").await;
    let laptop = server.device(ALICE, "laptop").await;
    let linked = changed(&mut phone, "linked", laptop.uid).await;
    assert_eq!(uids(&linked), vec![phone.uid, laptop.uid]);
    let me = entry(&linked, phone.uid).unwrap();
    assert_eq!(
        me,
        json!({"uid": phone.uid, "address": ALICE, "device": "phone",
               "appid": crate::harness::APPID, "name": null, "online": true, "primary": true,
               "active": true})
    );
    // The laptop was linked before it logged in: offline in the event.
    let new = entry(&linked, laptop.uid).unwrap();
    assert_eq!(new["online"], json!(false));
    assert_eq!(new["primary"], json!(false));
    assert_eq!(new["device"], json!("laptop"));
    let linked_seq = linked["seq"].as_u64().unwrap();

    // The laptop goes away holding the log up to here; a tablet is linked meanwhile.
    let epoch = server.epoch(phone.uid).await;
    let laptop_token = laptop.token.clone();
    drop(laptop);
    let mut tablet = server.device(ALICE, "tablet").await;
    let live = changed(&mut phone, "linked", tablet.uid).await;
    assert_eq!(live["seq"], json!(linked_seq + 1));
    assert_eq!(uids(&live).len(), 3);

    let mut laptop = server
        .login_since(&laptop_token, Some(linked_seq), Some(&epoch))
        .await;
    let welcome = laptop.expect("welcome").await;
    assert_eq!(welcome["recovered"], json!(true));
    let replayed = laptop.next().await;
    assert_eq!(
        replayed, live,
        "the catch-up replays the event as it went live"
    );
    laptop.expect("synced").await;

    // History shows both events, exactly as delivered live.
    tablet
        .send_json(json!({"op": "history", "before": linked_seq + 2}))
        .await;
    let history = tablet.expect("history").await;
    let events: Vec<&Value> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["op"] == "devices_changed")
        .collect();
    assert_eq!(events.len(), 2, "{history}");
    assert_eq!(events[0], &linked);
    assert_eq!(events[1], &live);
}

/// Broken locally by comparing the new name with itself in `devices::useradd` (never
/// `renamed`): the phone gets nothing after the rename.
#[tokio::test]
async fn a_rename_is_announced_once_and_the_same_name_again_is_not() {
    let server = TestServer::start().await;
    let mut phone = server.device(ALICE, "phone").await;
    let rename = json!({"op": "useradd", "user": {"address": ALICE, "name": "Alice"}});
    assert_eq!(server.backend(rename.clone()).await["result"], json!(true));
    let uid = phone.uid;
    let renamed = changed(&mut phone, "renamed", uid).await;
    assert_eq!(entry(&renamed, phone.uid).unwrap()["name"], json!("Alice"));
    // The same name again changes nothing, so nothing is logged.
    assert_eq!(server.backend(rename).await["result"], json!(true));
    phone.expect_nothing().await;
}

/// Broken locally by logging nothing in `devices::userdel`: the phone never hears that the
/// laptop went.
#[tokio::test]
async fn removing_a_linked_device_is_announced_and_removing_the_person_is_not() {
    let (server, mut phone, mut laptop) = alice_phone_and_laptop(false).await;
    let answer = server
        .backend(json!({"op": "userdel", "uid": laptop.uid}))
        .await;
    assert_eq!(answer["result"], json!(true), "{answer}");
    let removed = changed(&mut phone, "removed", laptop.uid).await;
    assert_eq!(uids(&removed), vec![phone.uid]);
    assert_eq!(laptop.expect_closed().await.0, 4004);

    // Deleting the primary takes the person and its log: its devices close, nothing logged.
    let answer = server
        .backend(json!({"op": "userdel", "uid": phone.uid}))
        .await;
    assert_eq!(answer["result"], json!(true), "{answer}");
    let closed = phone.next().await;
    assert_eq!(closed["op"], json!("closed"), "{closed}");
    assert_eq!(closed["code"], json!(4004));
}

/// Broken locally by logging nothing in `devices::tokendel` (`count > 99`): no `revoked`
/// reaches the phone.
#[tokio::test]
async fn tokendel_is_announced_with_the_revoked_device_offline() {
    let (server, mut phone, mut laptop) = alice_phone_and_laptop(false).await;
    let answer = server
        .backend(json!({"op": "tokendel", "uid": laptop.uid}))
        .await;
    assert_eq!(answer["revoked"], json!(1), "{answer}");
    let revoked = changed(&mut phone, "revoked", laptop.uid).await;
    assert_eq!(entry(&revoked, laptop.uid).unwrap()["online"], json!(false));
    assert_eq!(entry(&revoked, phone.uid).unwrap()["online"], json!(true));
    assert_eq!(laptop.expect_closed().await.0, 4004);
    // Nothing left to revoke: nothing changed, nothing logged.
    let answer = server
        .backend(json!({"op": "tokendel", "uid": laptop.uid}))
        .await;
    assert_eq!(answer["revoked"], json!(0), "{answer}");
    phone.expect_nothing().await;
}

/// Broken locally by answering `devices` without the store's online view (an empty list in
/// `SqliteStore::device_list`): `online` is false for both connected devices.
#[tokio::test]
async fn devices_lists_the_person_with_who_is_online() {
    let server = TestServer::start().await;
    let mut phone = server.device(ALICE, "phone").await;
    let laptop = server.device(ALICE, "laptop").await;
    let tablet = server.device_token(ALICE, "tablet").await["user"]["uid"]
        .as_u64()
        .unwrap();
    changed(&mut phone, "linked", laptop.uid).await;
    changed(&mut phone, "linked", tablet).await;
    phone.send_json(json!({"op": "devices"})).await;
    let list = phone.expect("devices").await;
    assert_eq!(uids(&list), vec![phone.uid, laptop.uid, tablet]);
    let online: Vec<&Value> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["online"])
        .collect();
    assert_eq!(online, vec![&json!(true), &json!(true), &json!(false)]);
    assert_eq!(entry(&list, tablet).unwrap()["device"], json!("tablet"));
    assert!(
        list.get("seq").is_none(),
        "the answer is not logged: {list}"
    );
}

/// Broken locally by kicking uid 0 instead of the revoked uid in `gateway/devices.rs`: the
/// laptop stays connected and `expect_closed` times out.
#[tokio::test]
async fn self_revoke_closes_the_other_device_within_a_second_and_refuses_its_token() {
    let _timed = timed().await;
    let (server, mut phone, mut laptop) = alice_phone_and_laptop(true).await;

    let started = Instant::now();
    phone
        .send_json(json!({"op": "revoke", "uid": laptop.uid}))
        .await;
    let (code, reason) = laptop.expect_closed().await;
    // A second is the bound; the kick itself takes milliseconds.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(code, 4004, "{reason}");
    assert!(reason.contains("another device"), "{reason}");

    // The answer and the event, in either order (answer and live event take different queues).
    let mut got = [phone.next().await, phone.next().await];
    got.sort_by_key(|f| f["op"].as_str().unwrap().to_string());
    assert_eq!(
        got[1],
        json!({"op": "revoke", "uid": laptop.uid, "revoked": 1})
    );
    assert_eq!(got[0]["op"], json!("devices_changed"));
    assert_eq!(got[0]["change"], json!("revoked"));
    assert_eq!(got[0]["uid"], json!(laptop.uid));
    assert_eq!(entry(&got[0], laptop.uid).unwrap()["online"], json!(false));

    let mut again = server.login(&laptop.token).await;
    let err = again.expect("error").await;
    assert_eq!(err["code"], json!("auth_failed"), "{err}");
}

/// A device may revoke itself: a logout.
#[tokio::test]
async fn a_device_revoking_itself_is_logged_out() {
    let (_server, mut phone, mut laptop) = alice_phone_and_laptop(true).await;
    laptop
        .send_json(json!({"op": "revoke", "uid": laptop.uid}))
        .await;
    // Its answer, then the close (the event goes to the person's other devices only).
    let answer = laptop.next().await;
    assert_eq!(
        answer,
        json!({"op": "revoke", "uid": laptop.uid, "revoked": 1})
    );
    let (code, reason) = laptop.expect_closed().await;
    assert_eq!(code, 4004);
    assert!(reason.contains("logged out"), "{reason}");
    changed(&mut phone, "revoked", laptop.uid).await;
}

/// Broken locally by skipping the flag check in `gateway/devices.rs`: the laptop is closed
/// and `forbidden` never comes.
#[tokio::test]
async fn revoke_is_refused_without_the_flag_and_changes_nothing() {
    let (server, mut phone, mut laptop) = alice_phone_and_laptop(false).await;
    server.sessions_down_to(2).await;
    let before = server.snapshot();
    phone
        .send_json(json!({"op": "revoke", "uid": laptop.uid}))
        .await;
    let err = phone.expect("error").await;
    assert_eq!(err["code"], json!("forbidden"), "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("--device-self-revoke"),
        "{err}"
    );
    unchanged(&mut phone, &mut laptop).await;
    assert_eq!(
        server.snapshot(),
        before,
        "a refused revoke changed the store"
    );
    token_still_good(&server, &laptop.token).await;
}

/// Broken locally by dropping the person check in `devices::revoke` (`|| true`): Bob's uid is
/// revoked and answered instead of refused.
#[tokio::test]
async fn revoke_of_another_persons_device_is_refused_and_changes_nothing() {
    let (server, mut phone, mut laptop) = alice_phone_and_laptop(true).await;
    let mut bob = server.device(BOB, "phone").await;
    server.sessions_down_to(3).await;
    let before = server.snapshot();
    for uid in [bob.uid, 999_999] {
        phone.send_json(json!({"op": "revoke", "uid": uid})).await;
        let err = phone.expect("error").await;
        assert_eq!(err["code"], json!("no_such_user"), "{err}");
        // The same words for someone else's uid as for nobody's: it tells nothing about Bob.
        let message = err["message"].as_str().unwrap();
        assert!(message.contains("this person's devices"), "{err}");
    }
    for (bad, code) in [
        (json!({"op": "revoke"}), "missing_field"),
        (json!({"op": "revoke", "uid": "x"}), "wrong_type"),
    ] {
        phone.send_json(bad).await;
        let err = phone.expect("error").await;
        assert_eq!(err["code"], json!(code), "{err}");
        assert!(err["message"].as_str().unwrap().contains("uid"), "{err}");
    }
    unchanged(&mut phone, &mut laptop).await;
    assert_eq!(
        server.snapshot(),
        before,
        "a refused revoke changed the store"
    );
    bob.send_msg("b1", ALICE, json!("still here")).await;
    let msg = phone.expect("message").await;
    assert_eq!(msg["body"], json!("still here"));
    laptop.expect("message").await;
    token_still_good(&server, &laptop.token).await;
    token_still_good(&server, &bob.token).await;
}

/// After a refused `revoke`: no event anywhere, both devices still connected.
async fn unchanged(phone: &mut Device, laptop: &mut Device) {
    phone.expect_nothing().await;
    laptop.expect_nothing().await;
    phone.send_json(json!({"op": "devices"})).await;
    let list = phone.expect("devices").await;
    assert_eq!(entry(&list, laptop.uid).unwrap()["online"], json!(true));
}

/// A token still logs in (this replaces the connection that holds it).
async fn token_still_good(server: &TestServer, token: &str) {
    let mut again = server.login(token).await;
    again.expect("welcome").await;
}

/// `token.linkto` moving a user into a person announces it there as `linked`, with the name it
/// was given in the same `useradd`. Broken locally by not counting a moved user as linked
/// (`!issued.moved` in `devices::useradd`): no event; and by dropping the moved-user guard on
/// `renamed`: the watch is announced twice.
#[tokio::test]
async fn a_user_linked_with_linkto_is_announced_to_its_new_person() {
    let server = TestServer::start().await;
    let mut phone = server.device(ALICE, "phone").await;
    let answer = server
        .backend(
            json!({"op": "useradd", "user": {"address": "alice-tablet@example.com",
            "name": "Tablet", "token": {"appid": crate::harness::APPID, "linkto": ALICE}}}),
        )
        .await;
    assert_eq!(answer["linkto"], json!(phone.uid), "{answer}");
    let uid = answer["user"]["uid"].as_u64().unwrap();
    let linked = changed(&mut phone, "linked", uid).await;
    let tablet = entry(&linked, uid).unwrap();
    assert_eq!(tablet["address"], json!("alice-tablet@example.com"));
    assert_eq!(tablet["name"], json!("Tablet"));
    assert_eq!(tablet["primary"], json!(false));
    phone.expect_nothing().await;

    // A user of its own first, renamed as it is linked: one `linked`, no `renamed`.
    let watch = "alice-watch@example.com";
    server
        .backend(json!({"op": "useradd", "user": {"address": watch, "name": "W"}}))
        .await;
    let answer = server
        .backend(
            json!({"op": "useradd", "user": {"address": watch, "name": "Watch",
            "token": {"appid": crate::harness::APPID, "linkto": ALICE}}}),
        )
        .await;
    let uid = answer["user"]["uid"].as_u64().unwrap();
    let linked = changed(&mut phone, "linked", uid).await;
    assert_eq!(entry(&linked, uid).unwrap()["name"], json!("Watch"));
    phone.expect_nothing().await;
}

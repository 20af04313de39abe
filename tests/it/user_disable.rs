//! `useradd` with `user.active`: disabling a primary disables its whole person (every device
//! closes with 4010, logins and messages to it are refused), disabling a linked user disables
//! that device only; `active: true` enables again; `devices` shows it.

use serde_json::{Value, json};

use crate::harness::{Device, TestServer};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

async fn set_active(server: &TestServer, address: &str, active: bool) {
    let answer = server
        .backend(json!({"op": "useradd", "user": {"address": address, "active": active}}))
        .await;
    assert_eq!(answer["result"], json!(true), "{answer}");
}

/// A device token for `address`/`device` (its user is created if missing).
async fn token(server: &TestServer, address: &str, device: &str) -> String {
    let answer = server.device_token(address, device).await;
    answer["user"]["token"].as_str().unwrap().to_string()
}

/// Logs in with `token` and expects the refusal of a disabled user.
async fn login_refused(server: &TestServer, token: &str) {
    let mut dev = server.login(token).await;
    let err = dev.expect("error").await;
    assert_eq!(err["code"], json!("user_disabled"), "{err}");
    let (code, _) = dev.expect_closed().await;
    assert_eq!(code, 4010);
}

/// The `active` flag of each device of the person at `address`, in `devices` order.
async fn active_flags(server: &TestServer, address: &str) -> Vec<Value> {
    let answer = server.devices(address).await;
    answer["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|d| d["active"].clone())
        .collect()
}

/// The status of a small upload with `token`.
async fn upload_status(server: &TestServer, token: &str) -> u16 {
    let addr = server
        .http_url("")
        .trim_start_matches("http://")
        .to_string();
    crate::files::upload(&addr, token, b"hello".to_vec(), "a.txt")
        .await
        .0
}

async fn closed_disabled(dev: &mut Device) {
    let (code, reason) = dev.expect_closed().await;
    assert_eq!(code, 4010, "{reason}");
    assert!(reason.contains("disabled"), "{reason}");
}

#[tokio::test]
async fn disabling_a_primary_closes_its_person_and_refuses_logins_and_messages() {
    let server = TestServer::start().await;
    let phone_token = token(&server, ALICE, "a-phone").await;
    let mut a_phone = server.login(&phone_token).await;
    a_phone.expect("welcome").await;
    let mut a_laptop = server.device(ALICE, "a-laptop").await;
    let mut bob = server.device(BOB, "b-phone").await;
    // Sent before the disable: its retry must still be answered as sent.
    let first = bob.send_msg("m1", ALICE, json!("before")).await;
    a_phone.expect("message").await;
    a_laptop.expect("message").await;
    assert_eq!(
        active_flags(&server, ALICE).await,
        [json!(true), json!(true)]
    );

    set_active(&server, ALICE, false).await;
    closed_disabled(&mut a_phone).await;
    closed_disabled(&mut a_laptop).await;
    login_refused(&server, &phone_token).await;
    assert_eq!(
        active_flags(&server, ALICE).await,
        [json!(false), json!(false)]
    );
    // Its tokens are refused on the file paths too, as a revoked token is.
    assert_eq!(upload_status(&server, &phone_token).await, 401);

    // Sends to it are refused, by any of its addresses, and store nothing.
    server.sessions_down_to(1).await;
    let before = server.snapshot();
    for to in [ALICE.to_string(), format!("{ALICE}-linked-1")] {
        bob.send_json(json!({"op": "send", "id": "m2", "to": to, "body": "after"}))
            .await;
        let err = bob.expect("error").await;
        assert_eq!(err["code"], json!("user_disabled"), "{err}");
        assert_eq!(err["id"], json!("m2"), "{err}");
        assert!(err["message"].as_str().unwrap().contains(&to), "{err}");
    }
    for (from, to, field) in [(BOB, ALICE, "message.to"), (ALICE, BOB, "message.from")] {
        let answer = server
            .backend(json!({"op": "message", "message": {"from": from, "to": to, "message": "x"}}))
            .await;
        assert_eq!(answer["error"], json!("user_disabled"), "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    // A call does not ring a disabled person either.
    bob.send_json(json!({"op": "call", "call": "c1", "action": "ring", "to": ALICE}))
        .await;
    let err = bob.expect("error").await;
    assert_eq!(err["code"], json!("user_disabled"), "{err}");
    assert_eq!(err["call"], json!("c1"), "{err}");
    // An honest retry of what was stored before is still the same message.
    let retry = bob.send_msg("m1", ALICE, json!("before")).await;
    assert_eq!(retry["mid"], first["mid"]);
    assert_eq!(
        server.snapshot(),
        before,
        "a refused send changed the store"
    );

    // Enabled again: logins and messages work, and nothing refused was stored meanwhile.
    set_active(&server, ALICE, true).await;
    assert_eq!(
        active_flags(&server, ALICE).await,
        [json!(true), json!(true)]
    );
    assert_eq!(upload_status(&server, &phone_token).await, 200);
    let mut a_phone = server.login_since(&phone_token, Some(0), None).await;
    let welcome = a_phone.expect("welcome").await;
    assert_eq!(
        welcome["seq"],
        json!(2),
        "only the laptop's link and the message before: {welcome}"
    );
    a_phone.expect("message").await;
    a_phone.expect("synced").await;
    let sent = bob.send_msg("m3", ALICE, json!("welcome back")).await;
    assert_eq!(a_phone.expect("message").await["mid"], sent["mid"]);
}

#[tokio::test]
async fn disabling_a_linked_user_closes_only_that_device() {
    let server = TestServer::start().await;
    let mut a_phone = server.device(ALICE, "a-phone").await;
    let laptop_token = token(&server, ALICE, "a-laptop").await;
    let mut a_laptop = server.login(&laptop_token).await;
    a_laptop.expect("welcome").await;
    let mut bob = server.device(BOB, "b-phone").await;
    let linked = format!("{ALICE}-linked-1");

    set_active(&server, &linked, false).await;
    closed_disabled(&mut a_laptop).await;
    a_phone.expect_silence().await;
    login_refused(&server, &laptop_token).await;
    assert_eq!(
        active_flags(&server, ALICE).await,
        [json!(true), json!(false)]
    );

    // The person still receives at its primary address; the disabled address refuses.
    bob.send_msg("m1", ALICE, json!("hi")).await;
    a_phone.expect("message").await;
    bob.send_json(json!({"op": "send", "id": "m2", "to": linked, "body": "hi"}))
        .await;
    assert_eq!(bob.expect("error").await["code"], json!("user_disabled"));
    let answer = server
        .backend(json!({"op": "message", "message": {"from": linked, "to": BOB, "message": "x"}}))
        .await;
    assert_eq!(answer["error"], json!("user_disabled"), "{answer}");

    set_active(&server, &linked, true).await;
    let mut a_laptop = server.login(&laptop_token).await;
    a_laptop.expect("welcome").await;
}

#[tokio::test]
async fn a_bad_active_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    server.device_token(ALICE, "a-phone").await;
    let before = server.snapshot();
    for active in [json!("no"), json!(0), json!([false])] {
        let answer = server
            .backend(json!({"op": "useradd", "user": {"address": ALICE, "active": active}}))
            .await;
        assert_eq!(answer["error"], json!("wrong_type"), "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(".user.active"),
            "{answer}"
        );
    }
    assert_eq!(server.snapshot(), before);
}

#[tokio::test]
async fn a_disable_survives_a_restart() {
    let server = TestServer::start().await;
    let phone_token = token(&server, ALICE, "a-phone").await;
    set_active(&server, ALICE, false).await;
    let server = server.restart().await;
    login_refused(&server, &phone_token).await;
    assert_eq!(active_flags(&server, ALICE).await, [json!(false)]);
    // The store learns at open that a user is disabled: sends to it are still checked.
    let mut bob = server.device(BOB, "b-phone").await;
    bob.send_json(json!({"op": "send", "id": "m1", "to": ALICE, "body": "hi"}))
        .await;
    assert_eq!(bob.expect("error").await["code"], json!("user_disabled"));
}

#[tokio::test]
async fn the_primary_and_a_linked_user_are_disabled_separately() {
    let server = TestServer::start().await;
    server.device_token(ALICE, "a-phone").await;
    server.device_token(ALICE, "a-laptop").await;
    let linked = format!("{ALICE}-linked-1");
    set_active(&server, &linked, false).await;
    set_active(&server, ALICE, false).await;
    assert_eq!(
        active_flags(&server, ALICE).await,
        [json!(false), json!(false)]
    );
    // The person stays disabled while its primary is, whatever its linked user's flag.
    set_active(&server, &linked, true).await;
    assert_eq!(
        active_flags(&server, ALICE).await,
        [json!(false), json!(false)]
    );
    set_active(&server, &linked, false).await;
    // Enabling the primary leaves the linked user that was disabled on its own disabled.
    set_active(&server, ALICE, true).await;
    assert_eq!(
        active_flags(&server, ALICE).await,
        [json!(true), json!(false)]
    );
}

//! The backend ops as mesibo documents them: exact response shapes, devices, linking, limits.

use serde_json::json;

use crate::harness::{APPID, TestServer, WAIT};

fn token_of(answer: &serde_json::Value) -> String {
    answer["user"]["token"]
        .as_str()
        .expect("a token")
        .to_string()
}

#[tokio::test]
async fn device_on_a_fresh_user_gets_the_primary() {
    let server = TestServer::start().await;
    // mesibo's first example, with its missing comma fixed.
    let answer = server
        .backend(
            json!({"op":"useradd","user":{"address":"xyz@example.com","name":"User Name",
            "token":{"appid":"com.example.mesiboapp","expiry":525600,"device":"myphone-123"}}}),
        )
        .await;
    let token = token_of(&answer);
    assert!(token.starts_with("octu_"));
    assert_eq!(
        answer,
        json!({"op":"useradd","result":true,"user":{"uid":1,"address":"xyz@example.com","token":token}})
    );
}

#[tokio::test]
async fn second_device_creates_a_linked_user() {
    let server = TestServer::start().await;
    server.device_token("xyz@example.com", "myphone-123").await;
    let answer = server.device_token("xyz@example.com", "mylaptop-456").await;
    let token = token_of(&answer);
    assert_eq!(
        answer,
        json!({"op":"useradd","result":true,"linked":"true","linkto":1,
               "user":{"uid":2,"address":"xyz@example.com-linked-1","token":token}})
    );
    let third = server.device_token("xyz@example.com", "tablet").await;
    assert_eq!(third["user"]["address"], "xyz@example.com-linked-2");
    // Any address of the person names it: a device request at a linked address joins the same person.
    let fourth = server
        .device_token("xyz@example.com-linked-1", "watch")
        .await;
    assert_eq!(fourth["linkto"], 1);
    assert_eq!(fourth["user"]["address"], "xyz@example.com-linked-3");
}

#[tokio::test]
async fn linkto_links_a_new_user_to_the_primary() {
    let server = TestServer::start().await;
    server.device_token("xyz@example.com", "myphone-123").await;
    let answer = server
        .backend(json!({"op":"useradd","user":{"address":"abc@example.com",
            "token":{"appid":"com.example.mesiboapp","expiry":525600,"linkto":"xyz@example.com"}}}))
        .await;
    let token = token_of(&answer);
    assert_eq!(
        answer,
        json!({"op":"useradd","result":true,"linked":"true","linkto":1,
               "user":{"uid":2,"address":"abc@example.com","token":token}})
    );
    // Linking to a linked user links to its primary; linkto wins over device.
    let answer = server
        .backend(json!({"op":"useradd","user":{"address":"def@example.com",
            "token":{"appid":APPID,"linkto":"abc@example.com","device":"ignored"}}}))
        .await;
    assert_eq!(answer["linkto"], 1);
    assert_eq!(answer["linked"], "true");
    let devices = server.devices("def@example.com").await;
    assert_eq!(
        devices["primary"],
        json!({"uid":1,"address":"xyz@example.com"})
    );
    let uids: Vec<u64> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_u64().unwrap())
        .collect();
    assert_eq!(uids, vec![1, 2, 3]);
    assert_eq!(devices["devices"][2]["device"], json!(null));
}

#[tokio::test]
async fn same_device_twice_keeps_the_uid_and_kills_the_old_token() {
    let server = TestServer::start().await;
    server.device_token("xyz@example.com", "phone").await;
    let first = server.device_token("xyz@example.com", "laptop").await;
    let second = server.device_token("xyz@example.com", "laptop").await;
    assert_eq!(first["user"]["uid"], second["user"]["uid"]);
    assert_eq!(first["user"]["address"], second["user"]["address"]);
    assert_ne!(first["user"]["token"], second["user"]["token"]);
    assert_eq!(second["linked"], "true");

    let mut old = server.login(first["user"]["token"].as_str().unwrap()).await;
    let err = old.expect("error").await;
    assert_eq!(err["code"], "auth_failed");
    assert_eq!(old.expect_closed().await.0, 4001);
    let mut new = server.login(&token_of(&second)).await;
    let welcome = new.expect("welcome").await;
    assert_eq!(welcome["uid"], second["user"]["uid"]);
    assert_eq!(server.device_count("xyz@example.com").await, 2);
}

#[tokio::test]
async fn eight_devices_and_no_more() {
    let server = TestServer::start().await;
    let mut tokens = Vec::new();
    for n in 0..8 {
        let answer = server
            .device_token("xyz@example.com", &format!("dev-{n}"))
            .await;
        tokens.push(token_of(&answer));
    }
    let before = server.devices("xyz@example.com").await;
    let ninth = server
        .backend(json!({"op":"useradd","user":{"address":"xyz@example.com","token":{"appid":APPID,"device":"dev-8"}}}))
        .await;
    assert_eq!(ninth["result"], false);
    assert_eq!(ninth["error"], "device_limit");
    assert!(
        ninth["message"].as_str().unwrap().contains("8 devices"),
        "{ninth}"
    );
    assert_eq!(server.devices("xyz@example.com").await, before);
    // linkto past the cap is refused the same way, and creates no user.
    let link = server
        .backend(json!({"op":"useradd","user":{"address":"extra@example.com","token":{"appid":APPID,"linkto":"xyz@example.com"}}}))
        .await;
    assert_eq!(link["error"], "device_limit");
    let missing = server.devices("extra@example.com").await;
    assert_eq!(missing["error"], "no_such_user");
    // Every issued token still works.
    for token in &tokens {
        let mut dev = server.login(token).await;
        dev.expect("welcome").await;
    }
}

#[tokio::test]
async fn linking_a_primary_with_linked_users_is_refused() {
    let server = TestServer::start().await;
    server.device_token("a@example.com", "a1").await;
    server.device_token("b@example.com", "b1").await;
    server.device_token("b@example.com", "b2").await;
    let before = server.devices("b@example.com").await;
    let answer = server
        .backend(json!({"op":"useradd","user":{"address":"b@example.com","token":{"appid":APPID,"linkto":"a@example.com"}}}))
        .await;
    assert_eq!(answer["result"], false);
    assert_eq!(answer["error"], "bad_link");
    assert_eq!(server.devices("b@example.com").await, before);
    assert_eq!(server.device_count("a@example.com").await, 1);
}

#[tokio::test]
async fn userdel_of_a_linked_user_frees_its_slot_and_closes_it() {
    let server = TestServer::start().await;
    for n in 0..8 {
        server
            .device_token("xyz@example.com", &format!("dev-{n}"))
            .await;
    }
    let answer = server.device_token("xyz@example.com", "dev-7").await;
    let uid = answer["user"]["uid"].as_u64().unwrap();
    let mut live = server.login(&token_of(&answer)).await;
    live.expect("welcome").await;
    let del = server.backend(json!({"op":"userdel","uid":uid})).await;
    assert_eq!(del, json!({"op":"userdel","result":true,"removed":[uid]}));
    let (code, reason) = live.expect_closed().await;
    assert_eq!(code, 4004, "{reason}");
    let ninth = server.device_token("xyz@example.com", "dev-new").await;
    assert_eq!(ninth["linked"], "true");
    assert_eq!(server.device_count("xyz@example.com").await, 8);
}

#[tokio::test]
async fn userdel_of_a_primary_removes_the_person() {
    let server = TestServer::start().await;
    server.device_token("xyz@example.com", "a").await;
    server.device_token("xyz@example.com", "b").await;
    let del = server
        .backend(json!({"op":"userdel","user":{"address":"xyz@example.com"}}))
        .await;
    assert_eq!(del["removed"], json!([1, 2]));
    assert_eq!(
        server.devices("xyz@example.com-linked-1").await["error"],
        "no_such_user"
    );
    let again = server.backend(json!({"op":"userdel","uid":1})).await;
    assert_eq!(again["error"], "no_such_user");
}

#[tokio::test]
async fn devices_lists_every_device_with_online_state() {
    let server = TestServer::start().await;
    let _phone = server.device("xyz@example.com", "phone").await;
    server.device_token("xyz@example.com", "laptop").await;
    let answer = server
        .backend(json!({"op":"devices","id":"req-7","user":{"address":"xyz@example.com-linked-1"}}))
        .await;
    assert_eq!(answer["op"], "devices");
    assert_eq!(answer["id"], "req-7");
    assert_eq!(
        answer["primary"],
        json!({"uid":1,"address":"xyz@example.com"})
    );
    let devices = answer["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0]["device"], "phone");
    assert_eq!(devices[0]["online"], true);
    assert_eq!(devices[0]["primary"], true);
    assert!(devices[0]["last_seen"].as_i64().unwrap() > 0);
    assert_eq!(devices[1]["device"], "laptop");
    assert_eq!(devices[1]["appid"], APPID);
    assert_eq!(devices[1]["online"], false);
    assert_eq!(devices[1]["last_seen"], json!(null));
}

/// `last_seen` in the table, not merged with what is pending.
fn stored_last_seen(server: &TestServer, uid: u64) -> Option<i64> {
    let conn = rusqlite::Connection::open(server.state.config.data_dir.join("octet.db")).unwrap();
    conn.query_row("SELECT last_seen FROM users WHERE uid = ?1", [uid], |r| {
        r.get(0)
    })
    .unwrap()
}

#[tokio::test]
async fn last_seen_reaches_the_store_within_seconds_and_at_shutdown() {
    let server = TestServer::start().await;
    let phone = server.device("xyz@example.com", "phone").await;
    // Logins record last_seen in memory; `devices` reports it at once.
    let seen = server.devices("xyz@example.com").await["devices"][0]["last_seen"]
        .as_i64()
        .unwrap();
    assert!(seen > 0);
    // The periodic write stores it within about a second.
    let deadline = tokio::time::Instant::now() + WAIT;
    while stored_last_seen(&server, phone.uid).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "last_seen never stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(stored_last_seen(&server, phone.uid).unwrap() >= seen);
    // The disconnect's time is written at the latest by the shutdown, before the store's last
    // flush.
    let uid = phone.uid;
    drop(phone);
    while server.devices("xyz@example.com").await["devices"][0]["online"] == json!(true) {
        assert!(tokio::time::Instant::now() < deadline, "still online");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Offline is shown once the session unregistered; its last-seen time follows.
    server.sessions_settled().await;
    let disconnected = server.devices("xyz@example.com").await["devices"][0]["last_seen"]
        .as_i64()
        .unwrap();
    let server = server.restart().await;
    assert_eq!(stored_last_seen(&server, uid), Some(disconnected));
    assert_eq!(
        server.devices("xyz@example.com").await["devices"][0]["last_seen"],
        json!(disconnected)
    );
}

#[tokio::test]
async fn tokendel_closes_the_live_connection_at_once() {
    let server = TestServer::start().await;
    let mut phone = server.device("xyz@example.com", "phone").await;
    let answer = server
        .backend(json!({"op":"tokendel","uid":phone.uid}))
        .await;
    assert_eq!(
        answer,
        json!({"op":"tokendel","result":true,"uid":1,"revoked":1})
    );
    let (code, reason) = phone.expect_closed().await;
    assert_eq!(code, 4004);
    assert!(reason.contains("revoked"), "{reason}");
    let mut again = server.login(&phone.token).await;
    assert_eq!(again.expect("error").await["code"], "auth_failed");
}

#[tokio::test]
async fn useradd_without_token_only_creates_the_user_and_echoes_id() {
    let server = TestServer::start().await;
    let answer = server
        .backend(json!({"op":"useradd","id":42,"user":{"address":"plain@example.com","name":"P"}}))
        .await;
    assert_eq!(
        answer,
        json!({"op":"useradd","result":true,"id":42,"user":{"uid":1,"address":"plain@example.com"}})
    );
    let with_token = server
        .backend(
            json!({"op":"useradd","user":{"address":"plain@example.com","token":{"appid":APPID}}}),
        )
        .await;
    assert_eq!(with_token["user"]["uid"], 1);
    let mut dev = server.login(&token_of(&with_token)).await;
    dev.expect("welcome").await;
}

#[tokio::test]
async fn restart_keeps_users_and_tokens() {
    let server = TestServer::start().await;
    let phone = server.device_token("xyz@example.com", "phone").await;
    let laptop = server.device_token("xyz@example.com", "laptop").await;
    let server = server.restart().await;
    for answer in [&phone, &laptop] {
        let mut dev = server.login(&token_of(answer)).await;
        let welcome = dev.expect("welcome").await;
        assert_eq!(welcome["uid"], answer["user"]["uid"]);
        assert_eq!(welcome["primary"]["address"], "xyz@example.com");
    }
    // The same device after restart still maps to the same user.
    let again = server.device_token("xyz@example.com", "laptop").await;
    assert_eq!(again["user"]["uid"], laptop["user"]["uid"]);
}

#[tokio::test]
async fn health_endpoints_answer() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let response = http.get(server.http_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn linking_a_live_primary_moves_it_into_the_other_person() {
    let server = TestServer::start().await;
    let mut a = server.device("a@example.com", "a-phone").await;
    let mut b = server.device("b@example.com", "b-phone").await;
    let answer = server
        .backend(json!({"op":"useradd","user":{"address":"b@example.com","token":{"appid":APPID,"linkto":"a@example.com"}}}))
        .await;
    assert_eq!(answer["linkto"], 1);
    let (code, reason) = b.expect_closed().await;
    assert_eq!(code, 4004, "{reason}");
    // Logged in again, b is a device of a's person: a's messages mirror to it as outgoing.
    let mut b = server.login(&token_of(&answer)).await;
    let welcome = b.expect("welcome").await;
    assert_eq!(welcome["primary"]["address"], "a@example.com");
    server.device_token("c@example.com", "c-phone").await;
    a.send_msg("1", "c@example.com", json!("hi")).await;
    let mirrored = b.expect("message").await;
    assert_eq!(mirrored["out"], true);
    assert_eq!(mirrored["from"], "a@example.com");
}

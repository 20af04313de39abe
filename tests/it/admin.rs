//! The operator's ops: `stats` behind the admin token, and app token rotation without downtime.

use serde_json::{Value, json};

use crate::harness::{APP_TOKEN, TestServer};

const ADMIN: &str = "test-admin-token-0123456789";

async fn post(server: &TestServer, body: Value) -> Value {
    server.backend_raw(&body.to_string()).await.1
}

#[tokio::test]
async fn stats_needs_the_admin_token_and_counts() {
    let server = TestServer::start_with(|c| c.admin_token = Some(ADMIN.into())).await;
    let mut a = server.device("alice@example.com", "a").await;
    server.device_token("alice@example.com", "a2").await;
    let _b = server.device("bob@example.com", "b").await;
    a.send_msg("1", "bob@example.com", json!("hi")).await;

    // Events: the message in Bob's log and `devices_changed` of the link of a2 in Alice's.
    let stats = post(&server, json!({"op":"stats","token":ADMIN})).await;
    assert_eq!(
        stats,
        json!({"op":"stats","result":true,"users":3,"persons":2,"messages":1,"events":3,
               "connections":2,"persons_online":2,
               "apps":[{"appid":"com.example.app","users":3}]})
    );
    // The app token is not the admin token; a wrong or missing one gets the same answer.
    let refused = post(&server, json!({"op":"stats","token":APP_TOKEN})).await;
    assert_eq!(refused["error"], "bad_admin_token");
    for token in [json!("nope"), json!(null), json!(7)] {
        let again = post(&server, json!({"op":"stats","token":token})).await;
        assert_eq!(again, refused);
    }
    // And the admin token does not open the app's ops.
    let app_op = post(&server, json!({"op":"devices","token":ADMIN,"uid":1})).await;
    assert_eq!(app_op["error"], "bad_app_token");
}

#[tokio::test]
async fn the_app_token_rotates_with_a_grace_period() {
    let server = TestServer::start().await;
    let rotated = post(
        &server,
        json!({"op":"apptokenrotate","token":APP_TOKEN,"grace":5}),
    )
    .await;
    assert_eq!(rotated["result"], true, "{rotated}");
    let new = rotated["token"].as_str().unwrap().to_string();
    assert!(new.starts_with("octa_"));
    let until = rotated["previous_valid_until"].as_i64().unwrap();
    assert!(until > octet::state::now_millis() + 4 * 60_000);
    // Both work during the grace period.
    for token in [APP_TOKEN, new.as_str()] {
        let answer = post(
            &server,
            json!({"op":"useradd","token":token,"user":{"address":"x@example.com"}}),
        )
        .await;
        assert_eq!(answer["result"], true, "{token}: {answer}");
    }
    // Only the current token may rotate.
    let refused = post(&server, json!({"op":"apptokenrotate","token":APP_TOKEN})).await;
    assert_eq!(refused["error"], "bad_app_token");
    // It is stored (hashed); a_rotated_app_token_survives_a_restart restarts.
    let stored = server.state.store.app_credentials().await.unwrap();
    assert!(stored.app_matches(
        &octet::auth::TokenHash::of(&new),
        octet::state::now_millis()
    ));

    // With no grace, the old token stops at once.
    let again = post(
        &server,
        json!({"op":"apptokenrotate","token":new,"grace":0}),
    )
    .await;
    let newest = again["token"].as_str().unwrap();
    let old = post(
        &server,
        json!({"op":"useradd","token":new,"user":{"address":"y@example.com"}}),
    )
    .await;
    assert_eq!(old["error"], "bad_app_token");
    let ok = post(
        &server,
        json!({"op":"useradd","token":newest,"user":{"address":"y@example.com"}}),
    )
    .await;
    assert_eq!(ok["result"], true);
    // The first token is gone too (only one previous token is kept).
    let first = post(
        &server,
        json!({"op":"useradd","token":APP_TOKEN,"user":{"address":"z@example.com"}}),
    )
    .await;
    assert_eq!(first["error"], "bad_app_token");

    for (grace, code) in [
        (json!(-1), "bad_value"),
        (json!(10081), "bad_value"),
        (json!("x"), "wrong_type"),
    ] {
        let answer = post(
            &server,
            json!({"op":"apptokenrotate","token":newest,"grace":grace}),
        )
        .await;
        assert_eq!(answer["error"], code, "{grace}");
    }
}

/// Whether `token` opens the backend API.
async fn works(server: &TestServer, token: &str) -> bool {
    let answer = post(
        server,
        json!({"op":"useradd","token":token,"user":{"address":"r@example.com"}}),
    )
    .await;
    match answer["result"].as_bool() {
        Some(true) => true,
        _ if answer["error"] == "bad_app_token" => false,
        _ => panic!("neither served nor refused: {answer}"),
    }
}

/// Rotates with `token` and no grace; returns the new token.
async fn rotate(server: &TestServer, token: &str) -> String {
    let rotated = post(
        server,
        json!({"op":"apptokenrotate","token":token,"grace":0}),
    )
    .await;
    assert_eq!(rotated["result"], true, "{rotated}");
    rotated["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_rotated_app_token_survives_a_restart() {
    // No configured token: the first start generates one, the rotation replaces it, and a
    // restart keeps the rotated one.
    let server = TestServer::start_with(|c| c.app_token = None).await;
    let generated = server
        .generated_app_token
        .clone()
        .expect("a generated token");
    let rotated = rotate(&server, &generated).await;
    let server = server.restart().await;
    assert_eq!(server.generated_app_token, None, "a second token was made");
    assert!(works(&server, &rotated).await, "the rotated token was lost");
    assert!(
        !works(&server, &generated).await,
        "the rotated-out token is back"
    );

    // A configured token: a restart with the same configuration keeps the rotation (it would
    // otherwise bring back a token the operator rotated out, say because it leaked).
    let server = TestServer::start().await;
    let rotated = rotate(&server, APP_TOKEN).await;
    let server = server.restart().await;
    assert!(works(&server, &rotated).await, "the rotated token was lost");
    assert!(
        !works(&server, APP_TOKEN).await,
        "the rotated-out token is back"
    );
    // The operator who changes the configured token wins over the rotation.
    const NEW: &str = "operator-new-token-0123456789";
    let server = server
        .restart_with(|c| c.app_token = Some(NEW.to_string().into()))
        .await;
    assert!(
        works(&server, NEW).await,
        "the newly configured token was ignored"
    );
    assert!(
        !works(&server, &rotated).await,
        "the rotated token still works"
    );
    // And once more unchanged: still the configured one, which may rotate again.
    let server = server.restart().await;
    assert!(works(&server, NEW).await);
    let again = rotate(&server, NEW).await;
    let server = server.restart().await;
    assert!(works(&server, &again).await);
    assert!(!works(&server, NEW).await);
}

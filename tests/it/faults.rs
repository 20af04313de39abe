//! Faults around the store and the clock: a database locked by another process, and token
//! expiry at its exact boundary.

use std::time::Duration;

use octet::auth::TokenHash;
use octet::store::{NewUser, StoreError, TokenRequest, TokenTerms};
use serde_json::json;

use crate::harness::{APPID, TestServer};

#[tokio::test]
async fn token_expiry_is_exact_to_the_millisecond() {
    // The store takes the time as an argument, so expiry is tested at its boundary without
    // waiting (the gateway passes the wall clock; deadlines and keepalives use the monotonic
    // clock, so a wall-clock jump drops no connection).
    let server = TestServer::start().await;
    let store = &server.state.store;
    let t0 = 1_800_000_000_000;
    let issued = store
        .useradd(
            NewUser {
                address: "clock@example.com".into(),
                name: None,
                token: TokenRequest::Plain(TokenTerms {
                    appid: APPID.into(),
                    expiry_minutes: 1,
                }),
            },
            t0,
        )
        .await
        .unwrap();
    let hash = TokenHash::of(issued.token.unwrap().expose());
    let last_valid = t0 + 60_000 - 1;
    assert!(store.authenticate(hash, APPID, last_valid).await.is_ok());
    for late in [t0 + 60_000, t0 + 60_001] {
        assert!(matches!(
            store.authenticate(hash, APPID, late).await,
            Err(StoreError::AuthFailed(octet::store::AuthFailure::Expired))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_by_another_process_delays_or_refuses_sends_never_fakes_them() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let mut bob = server.device("bob@example.com", "b").await;
    let db = server.state.config.data_dir.join("octet.db");

    // A lock shorter than the busy timeout (5 s): the send waits, then succeeds.
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    alice
        .send_json(json!({"op":"send","id":"during-lock","to":"bob@example.com","body":1}))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    lock.execute_batch("COMMIT").unwrap();
    let sent = alice.expect("sent").await;
    assert_eq!(sent["id"], "during-lock");
    assert_eq!(bob.expect("message").await["mid"], sent["mid"]);

    // A lock longer than the busy timeout: the send is refused cleanly (no `sent`, nothing
    // delivered), the connection stays usable, and the retry with the same id succeeds once.
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    alice
        .send_json(json!({"op":"send","id":"too-long","to":"bob@example.com","body":2}))
        .await;
    let err = tokio::time::timeout(Duration::from_secs(15), alice.conn.recv())
        .await
        .expect("an answer within the busy timeout")
        .unwrap();
    let octet::client::Incoming::Frame(text, _) = err else {
        panic!("expected an error frame, got {err:?}")
    };
    let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(frame["op"], "error", "{frame}");
    assert_eq!(frame["code"], "internal");
    assert_eq!(frame["id"], "too-long");
    lock.execute_batch("COMMIT").unwrap();
    bob.expect_silence().await;
    let retried = alice
        .send_msg("too-long", "bob@example.com", json!(2))
        .await;
    assert_eq!(bob.expect("message").await["mid"], retried["mid"]);
}

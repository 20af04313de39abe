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
    // Read while the lock is held: an answer now would be a `sent` for a message the store has
    // not taken (or an early refusal), so the send must wait out the lock.
    if let Ok(early) = tokio::time::timeout(Duration::from_millis(800), alice.conn.recv()).await {
        panic!("answered while the database was locked: {early:?}");
    }
    lock.execute_batch("COMMIT").unwrap();
    let sent = alice.expect("sent").await;
    assert_eq!(sent["id"], "during-lock");
    let message = bob.expect("message").await;
    assert_eq!(
        (&message["mid"], &message["body"]),
        (&sent["mid"], &json!(1))
    );
    let stored: (String, String) = lock
        .query_row(
            "SELECT client_id, body FROM messages WHERE mid = ?1",
            [sent["mid"].as_i64().unwrap()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(stored, ("during-lock".to_string(), "1".to_string()));

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

//! Messages reach every live device of both persons, from the primary's address.

use serde_json::json;

use crate::harness::TestServer;

#[tokio::test]
async fn linked_device_sends_as_the_primary_to_every_device() {
    let server = TestServer::start().await;
    let mut a1 = server.device("alice@example.com", "a-phone").await;
    let mut a2 = server.device("alice@example.com", "a-laptop").await;
    let mut a3 = server.device("alice@example.com", "a-tablet").await;
    let mut b1 = server.device("bob@example.com", "b-phone").await;
    let mut b2 = server.device("bob@example.com", "b-laptop").await;
    assert_eq!(a2.address, "alice@example.com-linked-1");

    // Seqs 1 and 2 of Alice's log are the links of a-laptop and a-tablet, 1 of Bob's the link
    // of b-laptop (`devices_changed`).
    let sent = a2
        .send_msg("c-1", "bob@example.com", json!({"text":"hi","n":[1,2]}))
        .await;
    let mid = sent["mid"].as_u64().unwrap();
    assert!(sent["ts"].as_i64().unwrap() > 0);
    assert_eq!(sent["seq"], 3);

    for bob in [&mut b1, &mut b2] {
        let msg = bob.expect("message").await;
        assert_eq!(
            msg,
            json!({"op":"message","mid":mid,"seq":2,"from":"alice@example.com","to":"bob@example.com",
                   "ts":sent["ts"],"body":{"text":"hi","n":[1,2]}})
        );
    }
    for alice in [&mut a1, &mut a3] {
        let msg = alice.expect("message").await;
        assert_eq!(msg["out"], true);
        assert_eq!(msg["from"], "alice@example.com");
        assert_eq!(msg["mid"], mid);
        assert_eq!(msg["seq"], 3);
    }
    a2.expect_silence().await;
}

#[tokio::test]
async fn a_message_to_a_linked_address_reaches_the_whole_person() {
    let server = TestServer::start().await;
    let mut b1 = server.device("bob@example.com", "b-phone").await;
    let mut b2 = server.device("bob@example.com", "b-laptop").await;
    let mut a1 = server.device("alice@example.com", "a-phone").await;
    a1.send_msg("x", "bob@example.com-linked-1", json!("hello"))
        .await;
    for bob in [&mut b1, &mut b2] {
        let msg = bob.expect("message").await;
        assert_eq!(msg["to"], "bob@example.com");
        assert_eq!(msg["body"], "hello");
    }
}

#[tokio::test]
async fn a_note_to_self_reaches_the_other_devices_once() {
    let server = TestServer::start().await;
    let mut a1 = server.device("alice@example.com", "a1").await;
    let mut a2 = server.device("alice@example.com", "a2").await;
    let mut a3 = server.device("alice@example.com", "a3").await;
    a1.send_msg("n", "alice@example.com-linked-2", json!({"note":1}))
        .await;
    for other in [&mut a2, &mut a3] {
        let msg = other.expect("message").await;
        assert_eq!(msg["out"], true);
        assert_eq!(msg["to"], "alice@example.com");
        other.expect_silence().await;
    }
    a1.expect_silence().await;
}

#[tokio::test]
async fn a_retried_send_returns_the_same_mid_and_delivers_once() {
    let server = TestServer::start().await;
    let mut a = server.device("alice@example.com", "a").await;
    let mut b = server.device("bob@example.com", "b").await;
    let first = a.send_msg("same", "bob@example.com", json!({"t":1})).await;
    b.expect("message").await;
    let again = a.send_msg("same", "bob@example.com", json!({"t":1})).await;
    assert_eq!(first, again);
    b.expect_silence().await;
    a.send_json(json!({"op":"send","id":"same","to":"bob@example.com","body":{"t":2}}))
        .await;
    let err = a.expect("error").await;
    assert_eq!(err["code"], "duplicate_id");
    assert_eq!(err["id"], "same");
    b.expect_silence().await;
}

#[tokio::test]
async fn unknown_recipient_names_the_client_id() {
    let server = TestServer::start().await;
    let mut a = server.device("alice@example.com", "a").await;
    a.send_json(json!({"op":"send","id":"m-9","to":"nobody@example.com","body":1}))
        .await;
    let err = a.expect("error").await;
    assert_eq!(err["code"], "unknown_recipient");
    assert_eq!(err["id"], "m-9");
    // The connection stays usable.
    a.send_msg("m-10", "alice@example.com", json!(1)).await;
}

#[tokio::test]
async fn bad_frames_after_login_get_errors_and_keep_the_connection() {
    let server = TestServer::start().await;
    let mut a = server.device("alice@example.com", "a").await;
    let cases = [
        ("not json", "bad_json", None),
        ("{\"op\":\"send\",\"id\":\"k\"\n\"to\":1}", "bad_json", None),
        ("[1,2]", "bad_request", None),
        (r#"{"op":"fly","id":"k1"}"#, "unknown_op", Some("k1")),
        (r#"{"id":"k2"}"#, "missing_field", Some("k2")),
        (
            r#"{"op":"send","id":"k3","to":"bob"}"#,
            "missing_field",
            Some("k3"),
        ),
        (
            r#"{"op":"send","id":"k4","to":7,"body":1}"#,
            "wrong_type",
            Some("k4"),
        ),
        (
            r#"{"op":"send","id":"","to":"x","body":1}"#,
            "bad_value",
            Some(""),
        ),
        (
            r#"{"op":"login","token":"t","appid":"a"}"#,
            "bad_request",
            None,
        ),
        (
            r#"{"op":"call","call":"c","action":"dance"}"#,
            "wrong_type",
            None,
        ),
        (
            r#"{"op":"call","call":"c","action":"ring"}"#,
            "missing_field",
            None,
        ),
    ];
    for (text, code, id) in cases {
        a.send_text(text).await;
        let err = a.expect("error").await;
        assert_eq!(err["code"], code, "for {text}: {err}");
        assert!(!err["message"].as_str().unwrap().is_empty());
        assert_eq!(
            err.get("id").and_then(|v| v.as_str()),
            id,
            "for {text}: {err}"
        );
    }
    let unknown = {
        a.send_text(r#"{"op":"fly"}"#).await;
        a.expect("error").await
    };
    assert!(
        unknown["message"]
            .as_str()
            .unwrap()
            .contains("login, send, call"),
        "{unknown}"
    );
    a.send_msg("still-open", "alice@example.com", json!(true))
        .await;
}

#[tokio::test]
async fn a_device_that_stops_reading_is_closed_as_a_slow_consumer() {
    let server = TestServer::start_with(|c| c.queue_frames = 8).await;
    let mut sender = server.device("alice@example.com", "a").await;
    let mut stalled = server.device("bob@example.com", "b-stalled").await;
    let mut reader = server.device("bob@example.com", "b-reader").await;
    let big = "x".repeat(60_000);
    let mut read = 0;
    // The stalled device never reads; its socket buffers and queue fill up, and it is kicked.
    for n in 0..200 {
        sender
            .send_msg(&format!("m{n}"), "bob@example.com", json!(big))
            .await;
        while let Ok(Ok(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(1), reader.conn.recv()).await
        {
            read += 1;
        }
        if server.state.router.online(2).len() < 2 {
            break;
        }
    }
    assert_eq!(
        server.state.router.online(2).len(),
        1,
        "the stalled device was not kicked"
    );
    assert!(read > 0);
    // The stalled device finds the close behind what its socket held, once it reads again:
    // the broker waits for that (up to the idle timeout) so the device learns to resync.
    let (code, reason) = stalled.expect_closed().await;
    assert_eq!(code, 4008, "{reason}");
}

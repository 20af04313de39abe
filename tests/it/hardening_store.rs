//! Issue 13, the store's part: receipts and call records that survive a deletion, client ids
//! bound to their recipient, an epoch per log, poison bodies, large integers, lookalike
//! addresses, the call cap, and frames with a duplicate `op` or a BOM.

use serde_json::{Value, json};

use crate::harness::{APPID, Device, TestServer};

/// The next `call_record`, passing over the `call` frames before it.
async fn record(dev: &mut Device) -> Value {
    loop {
        let frame = dev.next().await;
        if frame["op"] == "call_record" {
            return frame;
        }
        assert_eq!(frame["op"], "call", "unexpected {frame}");
    }
}

/// How far the device with `uid` acked, as `devices` reports it.
async fn acked(server: &TestServer, address: &str, uid: u64) -> u64 {
    let answer = server.devices(address).await;
    let devices = answer["devices"].as_array().expect("devices list");
    let device = devices
        .iter()
        .find(|d| d["uid"] == uid)
        .unwrap_or_else(|| panic!("uid {uid} not in {answer}"));
    device["acked"].as_u64().unwrap()
}

/// Links the primary at `address` (which has no linked users) to the person of `linkto`.
async fn link(server: &TestServer, address: &str, linkto: &str) {
    let answer = server
        .backend(json!({"op":"useradd","user":{"address":address,"token":{"appid":APPID,"linkto":linkto}}}))
        .await;
    assert_eq!(answer["result"], true, "linkto refused: {answer}");
}

/// An ack covering a message from a user that is gone (deleted, or moved into another person
/// by `linkto`) commits, and the acks after it too.
#[tokio::test]
async fn an_ack_commits_after_the_sender_is_deleted_or_moved() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let mut carol = server.device("carol@example.com", "c").await;
    server.device_token("dave@example.com", "d").await;
    let mut bob = server.device("bob@example.com", "b").await;
    alice.send_msg("m1", "bob@example.com", json!("hi")).await;
    carol.send_msg("m1", "bob@example.com", json!("hey")).await;
    let first = bob.expect("message").await["seq"].as_u64().unwrap();
    let second = bob.expect("message").await["seq"].as_u64().unwrap();

    let deleted = server
        .backend(json!({"op":"userdel","user":{"address":"alice@example.com"}}))
        .await;
    assert_eq!(deleted["result"], true, "{deleted}");
    link(&server, "carol@example.com", "dave@example.com").await;

    bob.send_json(json!({"op":"ack","seq":first})).await;
    bob.expect_silence().await;
    assert_eq!(acked(&server, "bob@example.com", bob.uid).await, first);
    bob.send_json(json!({"op":"ack","seq":second})).await;
    bob.expect_silence().await;
    assert_eq!(acked(&server, "bob@example.com", bob.uid).await, second);
}

/// A call whose other party was deleted, or moved into another person, still ends with a
/// record in the log of the party that remains.
#[tokio::test]
async fn a_call_is_recorded_for_the_party_that_remains() {
    let server = TestServer::start().await;
    let mut bob = server.device("bob@example.com", "b").await;
    server.device_token("dave@example.com", "d").await;
    for (caller, how) in [
        ("alice@example.com", "userdel"),
        ("carol@example.com", "linkto"),
    ] {
        let mut dev = server.device(caller, "x").await;
        dev.send_json(json!({"op":"call","to":"bob@example.com","call":how,"action":"ring"}))
            .await;
        bob.expect("call").await;
        bob.send_json(json!({"op":"call","call":how,"action":"answer"}))
            .await;
        dev.expect("call").await;
        if how == "userdel" {
            let answer = server
                .backend(json!({"op":"userdel","user":{"address":caller}}))
                .await;
            assert_eq!(answer["result"], true, "{answer}");
        } else {
            link(&server, caller, "dave@example.com").await;
        }
        let rec = record(&mut bob).await;
        assert_eq!(rec["call"], how);
        assert_eq!(rec["status"], "answered");
        assert_eq!(rec["peer"], caller);
    }
}

/// A client id reused for another recipient is another message: `duplicate_id`, and nothing
/// stored; the same id to the same person (by any of its addresses) is still a retry.
#[tokio::test]
async fn the_same_id_to_another_recipient_is_a_duplicate_id() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let mut bob = server.device("bob@example.com", "b1").await;
    server.device_token("bob@example.com", "b2").await;
    let mut carol = server.device("carol@example.com", "c").await;
    let sent = alice.send_msg("5", "bob@example.com", json!("ok")).await;
    bob.expect("message").await;

    let before = server.snapshot();
    alice
        .send_json(json!({"op":"send","id":"5","to":"carol@example.com","body":"ok"}))
        .await;
    let err = alice.expect("error").await;
    assert_eq!(err["code"], "duplicate_id", "{err}");
    assert_eq!(err["id"], "5");
    assert_eq!(server.snapshot(), before);
    carol.expect_silence().await;

    // A retry through another address of bob's person is the same message.
    let retry = alice
        .send_msg("5", "bob@example.com-linked-1", json!("ok"))
        .await;
    assert_eq!(retry["mid"], sent["mid"]);
    assert_eq!(server.snapshot(), before);
}

/// Logs in with `since` and `epoch` and returns the `welcome` and the `synced` after it.
async fn relogin(server: &TestServer, token: &str, since: u64, epoch: &Value) -> (Value, Value) {
    let mut dev = server.login_since(token, Some(since), epoch.as_str()).await;
    let welcome = dev.expect("welcome").await;
    let synced = dev.next().await;
    assert_eq!(synced["op"], "synced", "a replay: {synced}");
    (welcome, synced)
}

/// Sends `n` messages from `from` to `to`, so `to`'s log has at least `n` events.
async fn fill(from: &mut Device, to: &str, n: usize) {
    for i in 0..n {
        from.send_msg(&format!("fill-{to}-{i}"), to, json!(i)).await;
    }
}

/// A device that moves into another person by `linkto` holds a position in the log it left:
/// that `since` is not replayed against the new person's log.
#[tokio::test]
async fn a_since_from_before_a_linkto_is_not_replayed() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let carol_token = server.device_token("carol@example.com", "c").await["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut carol = server.login(&carol_token).await;
    let carol_epoch = carol.expect("welcome").await["epoch"].clone();
    server.device_token("dave@example.com", "d").await;
    fill(&mut alice, "carol@example.com", 1).await;
    fill(&mut alice, "dave@example.com", 3).await;
    carol.expect("message").await;

    let answer = server
        .backend(json!({"op":"useradd","user":{"address":"carol@example.com","token":{"appid":APPID,"linkto":"dave@example.com"}}}))
        .await;
    assert_eq!(answer["result"], true, "{answer}");
    let token = answer["user"]["token"].as_str().unwrap();
    let (welcome, synced) = relogin(&server, token, 1, &carol_epoch).await;
    assert_eq!(welcome["primary"]["address"], "dave@example.com");
    assert_ne!(welcome["epoch"], carol_epoch);
    assert_eq!(welcome["recovered"], false, "{welcome}");
    assert_eq!(synced["replayed"], 0);
}

/// Two persons created before migration 0005 share the database's epoch; a `linkto` between
/// them renews the target's, so the moved device's position still means nothing there.
#[tokio::test]
async fn a_linkto_between_two_migrated_persons_renews_the_epoch() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let carol = server.device("carol@example.com", "c").await;
    let dave = server.device("dave@example.com", "d").await;
    fill(&mut alice, "carol@example.com", 1).await;
    fill(&mut alice, "dave@example.com", 3).await;
    // What migration 0005 leaves: every person with the database's epoch.
    let db = rusqlite::Connection::open(server.state.config.data_dir.join("octet.db")).unwrap();
    db.busy_timeout(crate::harness::WAIT).unwrap();
    db.execute(
        "UPDATE persons SET epoch = (SELECT value FROM meta WHERE key = 'epoch')",
        [],
    )
    .unwrap();
    let legacy = json!(server.epoch(carol.uid).await);
    assert_eq!(server.epoch(dave.uid).await, legacy);

    let answer = server
        .backend(json!({"op":"useradd","user":{"address":"carol@example.com","token":{"appid":APPID,"linkto":"dave@example.com"}}}))
        .await;
    assert_eq!(answer["result"], true, "{answer}");
    let token = answer["user"]["token"].as_str().unwrap();
    let (welcome, synced) = relogin(&server, token, 1, &legacy).await;
    assert_eq!(welcome["recovered"], false, "{welcome}");
    assert_eq!(synced["replayed"], 0);
    // Dave's own device is told its position is from another epoch too, and pages history.
    let (welcome, _) = relogin(&server, &dave.token, 3, &legacy).await;
    assert_eq!(welcome["recovered"], false, "{welcome}");
}

/// An address deleted and created again is a new person with a new log: a device's `since`
/// from the deleted one is not replayed.
#[tokio::test]
async fn a_since_from_a_deleted_person_is_not_replayed() {
    let server = TestServer::start().await;
    let mut bob = server.device("bob@example.com", "b").await;
    let mut alice = server.device("alice@example.com", "a").await;
    fill(&mut bob, "alice@example.com", 1).await;
    alice.expect("message").await;
    let old_epoch = json!(server.epoch(alice.uid).await);

    let answer = server
        .backend(json!({"op":"userdel","user":{"address":"alice@example.com"}}))
        .await;
    assert_eq!(answer["result"], true, "{answer}");
    let answer = server.device_token("alice@example.com", "a").await;
    let token = answer["user"]["token"].as_str().unwrap();
    fill(&mut bob, "alice@example.com", 3).await;
    let (welcome, synced) = relogin(&server, token, 1, &old_epoch).await;
    assert_ne!(welcome["epoch"], old_epoch);
    assert_eq!(welcome["recovered"], false, "{welcome}");
    assert_eq!(synced["replayed"], 0);
}

/// Bodies and call `data` that are JSON but not I-JSON (RFC 7493).
const POISON: &[&str] = &[
    r#""\ud800""#,
    r#"{"text":"a\udc00b"}"#,
    r#"1e400"#,
    r#"{"n":[1,-1e400]}"#,
    r#"{"a":1,"a":2}"#,
    r#"{"a":1,"\u0061":2}"#,
    r#"[{"x":{"k":1,"j":2,"k":3}}]"#,
];

/// A poison body or call `data` is `bad_value` before anything is stored or relayed.
#[tokio::test]
async fn poison_bodies_and_call_data_are_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let mut bob = server.device("bob@example.com", "b").await;
    let before = server.snapshot();
    for poison in POISON {
        alice
            .send_text(&format!(
                r#"{{"op":"send","id":"p","to":"bob@example.com","body":{poison}}}"#
            ))
            .await;
        let err = alice.expect("error").await;
        assert_eq!(err["code"], "bad_value", "{poison}: {err}");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("`body` is not I-JSON"),
            "{poison}: {err}"
        );
        alice
            .send_text(&format!(
                r#"{{"op":"call","call":"c","action":"ring","to":"bob@example.com","data":{poison}}}"#
            ))
            .await;
        let err = alice.expect("error").await;
        assert_eq!(err["code"], "bad_value", "{poison}: {err}");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("`data` is not I-JSON"),
            "{poison}: {err}"
        );
    }
    bob.expect_silence().await;
    assert_eq!(server.snapshot(), before);
    // No call `c` was started: ringing it now works.
    alice
        .send_json(json!({"op":"call","call":"c","action":"ring","to":"bob@example.com"}))
        .await;
    assert_eq!(bob.expect("call").await["action"], "ring");
    alice
        .send_json(json!({"op":"call","call":"c","action":"hangup"}))
        .await;
    assert_eq!(record(&mut alice).await["status"], "cancelled");
    assert_eq!(record(&mut bob).await["status"], "cancelled");

    // I-JSON with escapes, pairs and repeated keys in different objects still goes through.
    let fine = r#"{"t":"\ud83d\ude00","a":{"k":1},"b":{"k":2},"n":1e300}"#;
    alice
        .send_text(&format!(
            r#"{{"op":"send","id":"ok","to":"bob@example.com","body":{fine}}}"#
        ))
        .await;
    alice.expect("sent").await;
    let message = bob.expect("message").await;
    assert_eq!(message["body"]["t"], "😀");
}

/// Numbers beyond i64::MAX (what SQLite stores) in every seq, mid or uid a frame or request
/// names are `bad_value` (they were `internal`, with an ERROR line per frame), changing nothing.
#[tokio::test]
async fn seqs_mids_and_uids_beyond_i64_are_bad_values() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    server.device_token("bob@example.com", "b").await;
    alice.send_msg("m", "bob@example.com", json!(1)).await;
    let before = server.snapshot();
    for big in ["9223372036854775808", "18446744073709551615"] {
        for (frame, field) in [
            (
                format!(r#"{{"op":"read","peer":"bob@example.com","upto":{big}}}"#),
                ".upto",
            ),
            (format!(r#"{{"op":"history","before":{big}}}"#), ".before"),
            (format!(r#"{{"op":"ack","seq":{big}}}"#), ".seq"),
        ] {
            alice.send_text(&frame).await;
            let err = alice.expect("error").await;
            assert_eq!(err["code"], "bad_value", "{frame}: {err}");
            assert!(
                err["message"].as_str().unwrap().starts_with(field),
                "{frame}: {err}"
            );
        }
        for request in [
            format!(r#"{{"op":"userdel","uid":{big}}}"#),
            format!(r#"{{"op":"tokendel","user":{{"uid":{big}}}}}"#),
            format!(r#"{{"op":"devices","user":{{"uid":{big}}}}}"#),
            format!(r#"{{"op":"profileset","uid":{big},"profile":{{"name":"x"}}}}"#),
        ] {
            let body = request.replacen(
                '{',
                &format!(r#"{{"token":"{}","#, crate::harness::APP_TOKEN),
                1,
            );
            let (status, answer) = server.backend_raw(&body).await;
            assert_eq!(status, 200, "{request}");
            assert_eq!(answer["error"], "bad_value", "{request}: {answer}");
        }
        // And at login, where `since` is the position to replay from.
        let mut dev = server.connect().await;
        dev.send_text(&format!(
            r#"{{"op":"login","token":"{}","appid":"{APPID}","since":{big}}}"#,
            alice.token
        ))
        .await;
        let err = dev.expect("error").await;
        assert_eq!(err["code"], "bad_value", "{err}");
    }
    assert_eq!(server.snapshot(), before);
}

/// Zero-width and bidi-override characters make lookalike addresses: refused wherever the
/// backend creates or links an address, and nothing changes.
#[tokio::test]
async fn lookalike_addresses_are_refused() {
    let server = TestServer::start().await;
    server.device_token("alice@example.com", "a").await;
    let before = server.snapshot();
    for address in [
        "ali\u{200B}ce@example.com",
        "alice@example.com\u{200D}",
        "\u{202E}moc.elpmaxe@ecila",
        "alice\u{2066}@example.com",
        "\u{FEFF}alice@example.com",
        "alice\u{00AD}@example.com",
    ] {
        for request in [
            json!({"op":"useradd","user":{"address":address}}),
            json!({"op":"useradd","user":{"address":address,"token":{"appid":APPID,"device":"x"}}}),
            json!({"op":"useradd","user":{"address":"new@example.com","token":{"appid":APPID,"linkto":address}}}),
        ] {
            let answer = server.backend(request.clone()).await;
            assert_eq!(answer["error"], "bad_value", "{request}: {answer}");
            assert!(
                answer["message"]
                    .as_str()
                    .unwrap()
                    .contains("invisible character"),
                "{request}: {answer}"
            );
        }
        // Naming a user is not creating one: an address stored before these characters were
        // refused must stay reachable (to delete it), so lookups only find no such user.
        for request in [
            json!({"op":"userdel","user":{"address":address}}),
            json!({"op":"devices","user":{"address":address}}),
        ] {
            let answer = server.backend(request.clone()).await;
            assert_eq!(answer["error"], "no_such_user", "{request}: {answer}");
        }
    }
    assert_eq!(server.snapshot(), before);
}

/// A frame with `op` twice says so (it said "expected a string, found a string"); other
/// fields named twice too.
#[tokio::test]
async fn a_frame_with_a_duplicate_field_says_which() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    alice.send_text(r#"{"op":"history","op":"history"}"#).await;
    let err = alice.expect("error").await;
    assert_eq!(err["code"], "bad_json", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("duplicate field `op`"),
        "{err}"
    );
    alice
        .send_text(r#"{"op":"send","id":"1","to":"a@example.com","to":"b@example.com","body":1}"#)
        .await;
    let err = alice.expect("error").await;
    assert_eq!(err["code"], "bad_json", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("duplicate field `to`"),
        "{err}"
    );
}

/// A UTF-8 byte order mark before the JSON (Windows tools write one) is skipped, on the backend
/// and in WebSocket frames.
#[tokio::test]
async fn a_leading_bom_is_skipped() {
    let server = TestServer::start().await;
    let body = format!(
        "\u{FEFF}{}",
        json!({"op":"useradd","token":crate::harness::APP_TOKEN,"user":{"address":"bom@example.com","token":{"appid":APPID,"device":"d"}}})
    );
    let (status, answer) = server.backend_raw(&body).await;
    assert_eq!(
        (status, answer["result"].clone()),
        (200, json!(true)),
        "{answer}"
    );
    let token = answer["user"]["token"].as_str().unwrap();

    let mut dev = server.connect().await;
    dev.send_text(&format!(
        "\u{FEFF}{}",
        json!({"op":"login","token":token,"appid":APPID})
    ))
    .await;
    dev.expect("welcome").await;
    dev.send_text(&format!(
        "\u{FEFF}{}",
        json!({"op":"send","id":"1","to":"bom@example.com","body":"hi"})
    ))
    .await;
    dev.expect("sent").await;
}

/// A connection rings at most `MAX_CALLS_PER_CONN` calls at once; ending one frees a place.
#[tokio::test]
async fn a_connection_may_ring_only_so_many_calls() {
    use octet::router::calls::MAX_CALLS_PER_CONN;
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let mut bob = server.device("bob@example.com", "b").await;
    for n in 0..MAX_CALLS_PER_CONN {
        alice
            .send_json(
                json!({"op":"call","call":format!("c{n}"),"action":"ring","to":"bob@example.com"}),
            )
            .await;
        assert_eq!(bob.expect("call").await["call"], format!("c{n}"));
    }
    alice
        .send_json(json!({"op":"call","call":"over","action":"ring","to":"bob@example.com"}))
        .await;
    let err = alice.expect("error").await;
    assert_eq!(err["code"], "too_many_calls", "{err}");
    assert_eq!(err["call"], "over");
    bob.expect_silence().await;

    alice
        .send_json(json!({"op":"call","call":"c0","action":"hangup"}))
        .await;
    assert_eq!(record(&mut alice).await["status"], "cancelled");
    assert_eq!(record(&mut bob).await["status"], "cancelled");
    alice
        .send_json(json!({"op":"call","call":"over","action":"ring","to":"bob@example.com"}))
        .await;
    assert_eq!(bob.expect("call").await["call"], "over");
}

//! Calls: ring every device, first answer wins, signals between the two devices only.

use std::time::{Duration, Instant};

use octet::state::now_millis;

use serde_json::json;

use crate::harness::TestServer;

#[tokio::test]
async fn a_call_answered_on_one_device() {
    let server = TestServer::start().await;
    let mut a1 = server.device("alice@example.com", "a1").await;
    let mut a2 = server.device("alice@example.com", "a2").await;
    let mut b1 = server.device("bob@example.com", "b1").await;
    let mut b2 = server.device("bob@example.com", "b2").await;
    let mut b3 = server.device("bob@example.com", "b3").await;

    a1.send_json(json!({"op":"call","to":"bob@example.com-linked-1","call":"c1","action":"ring","data":{"sdp":"offer"}}))
        .await;
    for bob in [&mut b1, &mut b2, &mut b3] {
        assert_eq!(
            bob.expect("call").await,
            json!({"op":"call","call":"c1","action":"ring","from":"alice@example.com","to":"bob@example.com","data":{"sdp":"offer"}})
        );
    }
    let shown = a2.expect("call").await;
    assert_eq!(shown["action"], "ring");
    assert_eq!(shown["out"], true);

    let answer_sent = now_millis();
    b2.send_json(json!({"op":"call","call":"c1","action":"answer","data":{"sdp":"answer"}}))
        .await;
    let answer = a1.expect("call").await;
    let answer_seen = now_millis();
    assert_eq!(answer["action"], "answer");
    assert_eq!(answer["data"], json!({"sdp":"answer"}));
    for other in [&mut b1, &mut b3, &mut a2] {
        let frame = other.expect("call").await;
        assert_eq!(frame["action"], "answered_elsewhere");
        assert!(frame.get("data").is_none());
    }
    // A late answer loses.
    b3.send_json(json!({"op":"call","call":"c1","action":"answer"}))
        .await;
    let err = b3.expect("error").await;
    assert_eq!(err["code"], "call_state");
    assert_eq!(err["call"], "c1");

    // Signals pass only between a1 and b2.
    a1.send_json(json!({"op":"call","call":"c1","action":"signal","data":{"ice":1}}))
        .await;
    let sig = b2.expect("call").await;
    assert_eq!(
        (sig["action"].clone(), sig["data"].clone()),
        (json!("signal"), json!({"ice":1}))
    );
    b2.send_json(json!({"op":"call","call":"c1","action":"signal","data":{"ice":2}}))
        .await;
    assert_eq!(a1.expect("call").await["data"], json!({"ice":2}));
    b1.send_json(json!({"op":"call","call":"c1","action":"signal","data":{}}))
        .await;
    assert_eq!(b1.expect("error").await["code"], "call_state");
    for quiet in [&mut a2, &mut b1, &mut b3] {
        quiet.expect_silence().await;
    }

    // Hangup ends it everywhere.
    let hangup_sent = now_millis();
    b2.send_json(json!({"op":"call","call":"c1","action":"hangup"}))
        .await;
    for other in [&mut a1, &mut a2, &mut b1, &mut b3] {
        assert_eq!(other.expect("call").await["action"], "hangup");
    }
    let hangup_seen = now_millis();
    // The broker's answer and hangup happened inside these brackets (it reads the same clock),
    // so the connected time is bounded on both sides; the silences above make it far above 0.
    let connected = (hangup_sent - answer_seen)..=(hangup_seen - answer_sent);
    assert!(*connected.start() > 100, "{connected:?}");
    // The call's record is logged for both persons and reaches every device.
    for (dev, out, peer) in [
        (&mut a1, true, "bob@example.com"),
        (&mut a2, true, "bob@example.com"),
        (&mut b1, false, "alice@example.com"),
        (&mut b2, false, "alice@example.com"),
        (&mut b3, false, "alice@example.com"),
    ] {
        let record = dev.expect("call_record").await;
        assert_eq!(record["call"], "c1");
        assert_eq!(record["status"], "answered");
        assert_eq!(record["peer"], peer);
        assert_eq!(record.get("out").is_some(), out, "{record}");
        let duration = record["duration_ms"].as_i64().unwrap();
        assert!(
            connected.contains(&duration),
            "{duration} ms, not in {connected:?}"
        );
        // After the links of a2 (Alice's seq 1) and of b2 and b3 (Bob's 1 and 2).
        assert_eq!(record["seq"], if out { 2 } else { 3 });
    }
    b2.expect_silence().await;
    a1.send_json(json!({"op":"call","call":"c1","action":"hangup"}))
        .await;
    assert_eq!(a1.expect("error").await["code"], "no_such_call");
}

#[tokio::test]
async fn a_rejected_call_stops_ringing_everywhere() {
    let server = TestServer::start().await;
    let mut a1 = server.device("alice@example.com", "a1").await;
    let mut b1 = server.device("bob@example.com", "b1").await;
    let mut b2 = server.device("bob@example.com", "b2").await;
    a1.send_json(json!({"op":"call","to":"bob@example.com","call":"c2","action":"ring"}))
        .await;
    b1.expect("call").await;
    b2.expect("call").await;
    b1.send_json(json!({"op":"call","call":"c2","action":"reject"}))
        .await;
    assert_eq!(a1.expect("call").await["action"], "reject");
    assert_eq!(b2.expect("call").await["action"], "rejected_elsewhere");
}

#[tokio::test]
async fn an_unanswered_call_ends_as_missed_on_every_device() {
    let server = TestServer::start_with(|c| c.ring_timeout = Duration::from_millis(300)).await;
    let mut a1 = server.device("alice@example.com", "a1").await;
    let mut b1 = server.device("bob@example.com", "b1").await;
    let mut b2 = server.device("bob@example.com", "b2").await;
    let rang = Instant::now();
    a1.send_json(json!({"op":"call","to":"bob@example.com","call":"c3","action":"ring"}))
        .await;
    b1.expect("call").await;
    b2.expect("call").await;
    for dev in [&mut a1, &mut b1, &mut b2] {
        assert_eq!(dev.expect("call").await["action"], "missed");
    }
    // The 300 ms ring timeout, not some other timer: never early, and late only by scheduling.
    let waited = rang.elapsed();
    assert!(
        (Duration::from_millis(300)..Duration::from_secs(2)).contains(&waited),
        "missed after {waited:?}"
    );
}

#[tokio::test]
async fn a_caller_that_disconnects_hangs_up() {
    let server = TestServer::start().await;
    let a1 = server.device("alice@example.com", "a1").await;
    let mut b1 = server.device("bob@example.com", "b1").await;
    let mut a1 = a1;
    a1.send_json(json!({"op":"call","to":"bob@example.com","call":"c4","action":"ring"}))
        .await;
    b1.expect("call").await;
    a1.conn.close().await.unwrap();
    assert_eq!(b1.expect("call").await["action"], "hangup");
}

#[tokio::test]
async fn call_refusals() {
    let server = TestServer::start().await;
    let mut a1 = server.device("alice@example.com", "a1").await;
    let mut a2 = server.device("alice@example.com", "a2").await;
    let mut b1 = server.device("bob@example.com", "b1").await;
    a1.send_json(json!({"op":"call","to":"nobody@example.com","call":"x","action":"ring"}))
        .await;
    assert_eq!(a1.expect("error").await["code"], "unknown_recipient");
    a1.send_json(json!({"op":"call","to":"alice@example.com","call":"x","action":"ring"}))
        .await;
    assert_eq!(a1.expect("error").await["code"], "call_state");
    a1.send_json(json!({"op":"call","call":"none","action":"answer"}))
        .await;
    assert_eq!(a1.expect("error").await["code"], "no_such_call");
    a1.send_json(json!({"op":"call","to":"bob@example.com","call":"y","action":"ring"}))
        .await;
    b1.expect("call").await;
    a2.expect("call").await;
    a1.send_json(json!({"op":"call","to":"bob@example.com","call":"y","action":"ring"}))
        .await;
    assert_eq!(a1.expect("error").await["code"], "call_exists");
    // The caller's side cannot answer its own call; signal needs an answered call.
    a2.send_json(json!({"op":"call","call":"y","action":"answer"}))
        .await;
    assert_eq!(a2.expect("error").await["code"], "call_state");
    a1.send_json(json!({"op":"call","call":"y","action":"signal","data":1}))
        .await;
    assert_eq!(a1.expect("error").await["code"], "call_state");
    // A third person cannot touch it.
    let mut c1 = server.device("carol@example.com", "c1").await;
    c1.send_json(json!({"op":"call","call":"y","action":"hangup"}))
        .await;
    assert_eq!(c1.expect("error").await["code"], "no_such_call");
    b1.expect_silence().await;
}

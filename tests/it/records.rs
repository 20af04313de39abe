//! Call records and profiles: logged events every device of the person sees.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Device, TestServer};

async fn record(dev: &mut Device) -> serde_json::Value {
    loop {
        let frame = dev.next().await;
        if frame["op"] == "call_record" {
            return frame;
        }
        assert_eq!(frame["op"], "call", "unexpected {frame}");
    }
}

#[tokio::test]
async fn every_way_a_call_ends_is_recorded_for_both_persons() {
    let server = TestServer::start_with(|c| c.ring_timeout = Duration::from_millis(300)).await;
    let mut a = server.device("alice@example.com", "a").await;
    let mut b = server.device("bob@example.com", "b").await;

    // Missed.
    a.send_json(json!({"op":"call","to":"bob@example.com","call":"c1","action":"ring"}))
        .await;
    let ra = record(&mut a).await;
    let rb = record(&mut b).await;
    assert_eq!(
        (ra["status"].clone(), ra["out"].clone()),
        (json!("missed"), json!(true))
    );
    assert_eq!(
        (rb["status"].clone(), rb.get("out")),
        (json!("missed"), None)
    );
    assert_eq!(rb["peer"], "alice@example.com");
    assert_eq!(rb["duration_ms"], 0);

    // Rejected.
    a.send_json(json!({"op":"call","to":"bob@example.com","call":"c2","action":"ring"}))
        .await;
    b.expect("call").await;
    b.send_json(json!({"op":"call","call":"c2","action":"reject"}))
        .await;
    assert_eq!(record(&mut a).await["status"], "rejected");
    assert_eq!(record(&mut b).await["status"], "rejected");

    // Cancelled by the caller while ringing.
    a.send_json(json!({"op":"call","to":"bob@example.com","call":"c3","action":"ring"}))
        .await;
    b.expect("call").await;
    a.send_json(json!({"op":"call","call":"c3","action":"hangup"}))
        .await;
    assert_eq!(record(&mut a).await["status"], "cancelled");
    assert_eq!(record(&mut b).await["status"], "cancelled");

    // All in the log, in order: a device that pages history sees them.
    b.send_json(json!({"op":"history"})).await;
    let page = b.expect("history").await;
    let statuses: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["missed", "rejected", "cancelled"]);
}

#[tokio::test]
async fn an_answered_call_that_loses_a_party_is_recorded_with_its_duration() {
    let server = TestServer::start().await;
    let mut a = server.device("alice@example.com", "a").await;
    let mut b = server.device("bob@example.com", "b").await;
    a.send_json(json!({"op":"call","to":"bob@example.com","call":"c","action":"ring"}))
        .await;
    b.expect("call").await;
    b.send_json(json!({"op":"call","call":"c","action":"answer"}))
        .await;
    a.expect("call").await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    b.conn.close().await.unwrap();
    assert_eq!(a.expect("call").await["action"], "hangup");
    let rec = a.expect("call_record").await;
    assert_eq!(rec["status"], "answered");
    assert!(rec["duration_ms"].as_i64().unwrap() >= 100, "{rec}");
}

#[tokio::test]
async fn profiles_sync_to_every_device_and_show_on_messages() {
    let server = TestServer::start().await;
    let mut a1 = server.device("alice@example.com", "a1").await;
    let mut a2 = server.device("alice@example.com", "a2").await;
    let mut b = server.device("bob@example.com", "b").await;

    a1.send_json(
        json!({"op":"profile","set":{"name":"Alice","status":"here","fields":{"color":"red"}}}),
    )
    .await;
    for dev in [&mut a1, &mut a2] {
        let change = dev.expect("profile").await;
        // Seq 1 is the `devices_changed` of a2's link.
        assert_eq!(change["seq"], 2);
        assert_eq!(change["version"], 1);
        assert_eq!(change["address"], "alice@example.com");
        assert_eq!(
            change["profile"],
            json!({"name":"Alice","status":"here","fields":{"color":"red"}})
        );
    }
    b.expect_silence().await;

    // The peer sees the version on the next message and fetches the profile.
    a2.send_msg("m1", "bob@example.com", json!("hi")).await;
    let msg = b.expect("message").await;
    assert_eq!(msg["pv"], 1);
    b.send_json(json!({"op":"profile","get":"alice@example.com-linked-1"}))
        .await;
    let got = b.expect("profile").await;
    assert_eq!(
        got,
        json!({"op":"profile","address":"alice@example.com",
               "profile":{"name":"Alice","status":"here","fields":{"color":"red"}},"version":1})
    );

    // The backend sets it too; null removes a key.
    let answer = server
        .backend(json!({"op":"profileset","user":{"address":"alice@example.com"},"profile":{"status":null,"avatar":"file-1"}}))
        .await;
    assert_eq!(
        answer,
        json!({"op":"profileset","result":true,"address":"alice@example.com",
               "profile":{"name":"Alice","fields":{"color":"red"},"avatar":"file-1"},"version":2})
    );
    assert_eq!(a1.expect("message").await["out"], true); // a2's outgoing message, mirrored
    for dev in [&mut a1, &mut a2] {
        assert_eq!(dev.expect("profile").await["version"], 2);
    }
}

#[tokio::test]
async fn bad_profiles_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let mut a = server.device("alice@example.com", "a").await;
    // The login's last-seen time is recorded before its welcome; nothing is pending after.
    server.sessions_down_to(1).await;
    let before = server.snapshot();
    for (frame, code) in [
        (json!({"op":"profile","set":{"nick":"x"}}), "bad_value"),
        (json!({"op":"profile","set":{"name":5}}), "wrong_type"),
        (json!({"op":"profile","set":{"fields":[1]}}), "wrong_type"),
        (
            json!({"op":"profile","set":{"name":"n".repeat(256)}}),
            "bad_value",
        ),
        (json!({"op":"profile","set":{}}), "bad_value"),
        (json!({"op":"profile"}), "bad_value"),
        (
            json!({"op":"profile","set":{"name":"x"},"get":"a"}),
            "bad_value",
        ),
        (
            json!({"op":"profile","set":{"fields":{"big":"x".repeat(9000)}}}),
            "bad_value",
        ),
        (
            json!({"op":"profile","get":"nobody@example.com"}),
            "unknown_recipient",
        ),
        (json!({"op":"profile","set":[1]}), "wrong_type"),
    ] {
        a.send_json(frame.clone()).await;
        let err = a.expect("error").await;
        assert_eq!(err["code"], code, "{frame} -> {err}");
    }
    for (request, code) in [
        (json!({"op":"profileset","uid":1}), "missing_field"),
        (
            json!({"op":"profileset","uid":1,"profile":{"nick":1}}),
            "bad_value",
        ),
        (
            json!({"op":"profileset","uid":99,"profile":{"name":"x"}}),
            "no_such_user",
        ),
        (
            json!({"op":"profileset","uid":1,"profile":[1]}),
            "wrong_type",
        ),
    ] {
        let answer = server.backend(request.clone()).await;
        assert_eq!(answer["error"], code, "{request} -> {answer}");
    }
    assert_eq!(server.snapshot(), before);
}

//! Typing indicators: live to the peer's devices and the typist's other devices, auto-stop after
//! 6 s without a refresh, stop on disconnect, never logged, rate limited per person.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use octet::client::Incoming;

use crate::harness::{Device, TestServer, WAIT};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

fn typing(from: &str, to: &str, state: &str, out: bool) -> Value {
    let mut frame = json!({"op":"typing","from":from,"to":to,"state":state});
    if out {
        frame["out"] = json!(true);
    }
    frame
}

/// The whole retained log of `device`'s person, by `history`.
/// The device's history but the `devices_changed` of the test's links.
async fn history(device: &mut Device) -> Vec<Value> {
    device.send_json(json!({"op":"history","limit":500})).await;
    let page = device.expect("history").await;
    let events = page["events"].as_array().unwrap().iter();
    events
        .filter(|e| e["op"] != "devices_changed")
        .cloned()
        .collect()
}

#[tokio::test]
async fn start_and_stop_reach_the_peer_and_the_other_devices_only() {
    let server = TestServer::start().await;
    let mut a1 = server.device(ALICE, "a1").await;
    let mut a2 = server.device(ALICE, "a2").await;
    let mut b1 = server.device(BOB, "b1").await;
    let mut b2 = server.device(BOB, "b2").await;

    // Any address of the peer; the frames name both persons by their primary address.
    a1.send_json(json!({"op":"typing","to":"bob@example.com-linked-1","state":"start"}))
        .await;
    for bob in [&mut b1, &mut b2] {
        assert_eq!(
            bob.expect("typing").await,
            typing(ALICE, BOB, "start", false)
        );
    }
    assert_eq!(a2.expect("typing").await, typing(ALICE, BOB, "start", true));
    a1.send_json(json!({"op":"typing","to":BOB,"state":"stop"}))
        .await;
    for bob in [&mut b1, &mut b2] {
        assert_eq!(
            bob.expect("typing").await,
            typing(ALICE, BOB, "stop", false)
        );
    }
    assert_eq!(a2.expect("typing").await, typing(ALICE, BOB, "stop", true));
    // A stop for nothing shown sends nothing; the typing device never hears its own.
    a1.send_json(json!({"op":"typing","to":BOB,"state":"stop"}))
        .await;
    for quiet in [&mut a1, &mut a2, &mut b1, &mut b2] {
        quiet.expect_silence().await;
    }

    // Never logged: neither history nor a full catch-up shows it.
    b1.send_json(json!({"op":"typing","to":ALICE,"state":"start"}))
        .await;
    a1.expect("typing").await;
    a2.expect("typing").await;
    b2.expect("typing").await;
    assert_eq!(history(&mut a1).await, Vec::<Value>::new());
    assert_eq!(history(&mut b1).await, Vec::<Value>::new());
    let token = server.device_token(ALICE, "a3").await["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut a3 = server.login_since(&token, Some(0), None).await;
    a3.expect("welcome").await;
    // Alice's log holds only the links of a2 and a3.
    for seq in 1..=2 {
        let replayed = a3.next().await;
        assert_eq!(replayed["op"], "devices_changed", "{replayed}");
        assert_eq!(replayed["seq"], seq, "{replayed}");
    }
    let synced = a3.next().await;
    assert_eq!(synced, json!({"op":"synced","seq":2,"replayed":2}));
    // A device that comes online later hears the next refresh, not a replay.
    a3.expect_silence().await;
    b1.send_json(json!({"op":"typing","to":ALICE,"state":"start"}))
        .await;
    assert_eq!(
        a3.expect("typing").await,
        typing(BOB, ALICE, "start", false)
    );
}

#[tokio::test]
async fn a_start_ends_by_itself_six_seconds_after_the_last_refresh() {
    let server = TestServer::start().await;
    let mut a1 = server.device(ALICE, "a1").await;
    let mut b1 = server.device(BOB, "b1").await;

    a1.send_json(json!({"op":"typing","to":BOB,"state":"start"}))
        .await;
    assert_eq!(b1.expect("typing").await["state"], "start");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The refresh is delivered again and restarts the 6 s.
    a1.send_json(json!({"op":"typing","to":BOB,"state":"start"}))
        .await;
    assert_eq!(b1.expect("typing").await["state"], "start");
    let refreshed = Instant::now();
    let stop = tokio::time::timeout(Duration::from_secs(6) + WAIT, b1.conn.recv())
        .await
        .expect("the broker stops it by itself")
        .expect("receive");
    let after = refreshed.elapsed();
    let Incoming::Frame(stop, _) = stop else {
        panic!("closed: {stop:?}")
    };
    let stop: Value = serde_json::from_str(&stop).unwrap();
    assert_eq!(stop, typing(ALICE, BOB, "stop", false));
    // Not before 6 s after the refresh (the first start's timer was cancelled; it would have
    // fired 3 s ago). The upper bound is generous: a loaded machine may be late, never early.
    assert!(
        after >= Duration::from_millis(5_900),
        "stopped after {after:?}"
    );
    assert_eq!(server.state.router.typing_count(), 0);
    a1.expect_silence().await;
}

#[tokio::test]
async fn a_disconnect_of_the_typing_device_stops_it() {
    let server = TestServer::start().await;
    let a1 = server.device(ALICE, "a1").await;
    let mut a2 = server.device(ALICE, "a2").await;
    let mut b1 = server.device(BOB, "b1").await;
    let mut a1 = a1;
    a1.send_json(json!({"op":"typing","to":BOB,"state":"start"}))
        .await;
    b1.expect("typing").await;
    a2.expect("typing").await;
    a1.conn.close().await.unwrap();
    let started = Instant::now();
    assert_eq!(b1.expect("typing").await, typing(ALICE, BOB, "stop", false));
    assert_eq!(a2.expect("typing").await, typing(ALICE, BOB, "stop", true));
    assert!(started.elapsed() < Duration::from_secs(5), "not the timer");
    assert_eq!(server.state.router.typing_count(), 0);
}

#[tokio::test]
async fn bad_typing_frames_get_clear_errors_and_send_nothing() {
    let server = TestServer::start().await;
    let mut a1 = server.device(ALICE, "a1").await;
    let mut b1 = server.device(BOB, "b1").await;
    let cases = [
        (
            json!({"op":"typing","to":"nobody@example.com","state":"start"}),
            "unknown_recipient",
            "nobody@example.com",
        ),
        (
            json!({"op":"typing","to":BOB,"state":"typing"}),
            "wrong_type",
            "`start` or `stop`",
        ),
        (json!({"op":"typing","to":BOB}), "missing_field", "state"),
        (
            json!({"op":"typing","state":"start"}),
            "missing_field",
            "to",
        ),
        (
            json!({"op":"typing","to":7,"state":"start"}),
            "wrong_type",
            "to",
        ),
        (
            json!({"op":"typing","to":BOB,"state":true}),
            "wrong_type",
            "state",
        ),
    ];
    for (frame, code, names) in cases {
        a1.send_json(frame.clone()).await;
        let err = a1.expect("error").await;
        assert_eq!(err["code"], code, "{frame} -> {err}");
        let message = err["message"].as_str().unwrap();
        assert!(message.contains(names), "{frame} -> {message}");
    }
    b1.expect_silence().await;
    assert_eq!(server.state.router.typing_count(), 0);
}

/// Every frame that arrives until `device` has been quiet for half a second.
async fn drain(device: &mut Device) -> Vec<Value> {
    let mut frames = Vec::new();
    while let Ok(incoming) =
        tokio::time::timeout(Duration::from_millis(500), device.conn.recv()).await
    {
        match incoming.expect("receive") {
            Incoming::Frame(text, _) => frames.push(serde_json::from_str(&text).unwrap()),
            Incoming::Closed(close) => panic!("closed: {close:?}"),
        }
    }
    frames
}

#[tokio::test]
async fn typing_is_rate_limited_per_person() {
    let server = TestServer::start().await;
    let mut a1 = server.device(ALICE, "a1").await;
    let mut a2 = server.device(ALICE, "a2").await;
    let mut b1 = server.device(BOB, "b1").await;
    // Both of alice's devices share one budget (a burst of 10, then 2/s): 30 frames sent back
    // to back cannot all pass however slow the machine (that would take 10 s); the device's
    // own send rate is far above it in tests.
    for _ in 0..15 {
        for device in [&mut a1, &mut a2] {
            device
                .send_json(json!({"op":"typing","to":BOB,"state":"start"}))
                .await;
        }
    }
    let mut refused = 0;
    for device in [&mut a1, &mut a2] {
        for frame in drain(device).await {
            match frame["op"].as_str() {
                Some("error") => {
                    assert_eq!(frame["code"], "rate_limited", "{frame}");
                    assert!(frame["message"].as_str().unwrap().contains("typing"));
                    refused += 1;
                }
                // The other device's accepted starts.
                Some("typing") => assert_eq!(frame["out"], true),
                // The link of a2, to a1.
                Some("devices_changed") => {}
                _ => panic!("unexpected {frame}"),
            }
        }
    }
    let delivered = drain(&mut b1).await;
    assert!(refused >= 15, "only {refused} of 30 refused");
    assert_eq!(
        delivered.len() + refused,
        30,
        "each frame passed or was refused"
    );
    assert!(delivered.iter().all(|f| f["state"] == "start"));
    // The budget is typing's own: a message still goes through at once.
    a1.send_msg("m1", BOB, json!("hi")).await;
    assert_eq!(b1.expect("message").await["body"], "hi");
}

#[tokio::test]
async fn a_device_is_shown_typing_to_at_most_four_persons() {
    let server = TestServer::start().await;
    let mut a1 = server.device(ALICE, "a1").await;
    let mut b1 = server.device(BOB, "b1").await;
    let others = [
        "c@example.com",
        "d@example.com",
        "e@example.com",
        "f@example.com",
    ];
    for other in others {
        server.device_token(other, "x").await;
    }
    a1.send_json(json!({"op":"typing","to":BOB,"state":"start"}))
        .await;
    assert_eq!(b1.expect("typing").await["state"], "start");
    for other in &others[..3] {
        a1.send_json(json!({"op":"typing","to":other,"state":"start"}))
            .await;
    }
    b1.expect_silence().await;
    assert_eq!(server.state.router.typing_count(), 4);
    // A fifth ends the oldest, with a stop, rather than being refused.
    a1.send_json(json!({"op":"typing","to":others[3],"state":"start"}))
        .await;
    assert_eq!(b1.expect("typing").await, typing(ALICE, BOB, "stop", false));
    assert_eq!(server.state.router.typing_count(), 4);
    a1.expect_silence().await;
}

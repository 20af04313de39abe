//! Catch-up with `since`, history paging, and the replay/live race.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::harness::{Device, TestServer};

/// Reads frames until `synced`; returns the replayed messages.
async fn until_synced(dev: &mut Device) -> (Value, Vec<Value>) {
    let welcome = dev.expect("welcome").await;
    let mut replayed = Vec::new();
    loop {
        let frame = dev.next().await;
        match frame["op"].as_str() {
            Some("synced") => return (welcome, replayed),
            Some("message") => replayed.push(frame),
            _ => panic!("unexpected frame during catch-up: {frame}"),
        }
    }
}

#[tokio::test]
async fn an_offline_device_catches_up_in_order_without_gaps() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let mut b1 = server.device("bob@example.com", "b1").await;
    let b2 = server.device("bob@example.com", "b2").await;
    alice.send_msg("first", "bob@example.com", json!(0)).await;
    b1.expect("message").await;
    // Bob's seq 1 is the `devices_changed` of b2's link, 2 the first message.
    let held = 2; // b2's position: it saw seq 2 and went offline
    let token = b2.token.clone();
    b2.conn.close().await.unwrap();

    for n in 1..=100 {
        alice
            .send_msg(&format!("m{n}"), "bob@example.com", json!(n))
            .await;
    }
    let mut b2 = server
        .login_since(&token, Some(held), Some(&server.epoch(b1.uid).await))
        .await;
    let (welcome, replayed) = until_synced(&mut b2).await;
    assert_eq!(welcome["seq"], 102);
    assert_eq!(welcome["recovered"], true);
    let seqs: Vec<u64> = replayed
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (3..=102).collect::<Vec<_>>());
    assert_eq!(replayed[0]["body"], 1);
    assert_eq!(replayed[99]["body"], 100);
    assert_eq!(replayed[0]["from"], "alice@example.com");
    // Then live.
    alice
        .send_msg("live", "bob@example.com", json!("live"))
        .await;
    let live = b2.expect("message").await;
    assert_eq!(live["seq"], 103);
}

#[tokio::test]
async fn the_sender_catches_up_on_its_own_outgoing_messages() {
    let server = TestServer::start().await;
    server.device_token("bob@example.com", "b").await;
    let mut a1 = server.device("alice@example.com", "a1").await;
    let a2 = server.device("alice@example.com", "a2").await;
    let token = a2.token.clone();
    drop(a2);
    a1.send_msg("x", "bob@example.com", json!("from a1")).await;
    let mut a2 = server.login_since(&token, None, None).await;
    // No since: a new device, live from here, history for the past.
    let (welcome, replayed) = until_synced(&mut a2).await;
    // Seq 1 is the `devices_changed` of a2's link, 2 the message.
    assert_eq!(welcome["seq"], 2);
    assert!(replayed.is_empty());
    a2.send_json(json!({"op":"history"})).await;
    let page = a2.expect("history").await;
    assert_eq!(page["more"], false);
    assert_eq!(page["events"][0]["op"], "devices_changed");
    assert_eq!(page["events"][1]["out"], true);
    assert_eq!(page["events"][1]["body"], "from a1");
}

#[tokio::test]
async fn concurrent_sends_during_the_replay_arrive_once_each() {
    let server = TestServer::start().await;
    let b = server.device_token("bob@example.com", "b").await;
    let token = b["user"]["token"].as_str().unwrap().to_string();
    let mut alice = server.device("alice@example.com", "a").await;
    let carol = server.device("carol@example.com", "c").await;
    for n in 0..300 {
        alice
            .send_msg(&format!("pre{n}"), "bob@example.com", json!(n))
            .await;
    }
    // Two senders keep sending while bob reconnects from seq 0+1 (he held seq 1).
    let send_more = |mut dev: Device, tag: &'static str| {
        tokio::spawn(async move {
            for n in 0..150 {
                dev.send_msg(&format!("{tag}{n}"), "bob@example.com", json!(n))
                    .await;
            }
            dev
        })
    };
    let a_task = send_more(alice, "a");
    let c_task = send_more(carol, "c");
    let mut bob = server.login_since(&token, Some(1), None).await;
    a_task.await.unwrap();
    c_task.await.unwrap();
    let total = 600u64;
    let mut seen = BTreeSet::new();
    let mut last = 1u64;
    while last < total {
        let frame = bob.next().await;
        match frame["op"].as_str() {
            Some("welcome") | Some("synced") => continue,
            Some("message") => {
                let seq = frame["seq"].as_u64().unwrap();
                assert!(seen.insert(seq), "seq {seq} delivered twice");
                assert_eq!(seq, last + 1, "gap or reorder after {last}");
                last = seq;
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!(seen.len() as u64, total - 1);
    bob.expect_silence().await;
}

#[tokio::test]
async fn a_new_device_pages_back_through_history() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    server.device_token("bob@example.com", "b1").await;
    for n in 1..=120 {
        alice
            .send_msg(&format!("m{n}"), "bob@example.com", json!(n))
            .await;
    }
    let mut laptop = server.device("bob@example.com", "b-new").await;
    let mut collected: Vec<u64> = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut req = json!({"op":"history","limit":50});
        if let Some(before) = before {
            req["before"] = json!(before);
        }
        laptop.send_json(req).await;
        let page = laptop.expect("history").await;
        let events = page["events"].as_array().unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "page not in order: {seqs:?}"
        );
        // The newest event (121) is the `devices_changed` of the laptop's own link.
        assert!(events.iter().all(|e| e["op"]
            == if e["seq"] == 121 {
                "devices_changed"
            } else {
                "message"
            }));
        collected.splice(0..0, seqs.iter().copied());
        before = seqs.first().copied();
        if page["more"] == false {
            break;
        }
    }
    assert_eq!(collected, (1..=121).collect::<Vec<_>>());
}

#[tokio::test]
async fn bad_positions_and_pages_are_refused_clearly() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let b = server.device("bob@example.com", "b").await;
    alice.send_msg("1", "bob@example.com", json!(1)).await;
    let token = b.token.clone();
    drop(b);

    // since beyond the head: not recovered, and an error says why.
    let mut dev = server.login_since(&token, Some(99), None).await;
    let welcome = dev.expect("welcome").await;
    assert_eq!(welcome["recovered"], false);
    let err = dev.next().await;
    assert_eq!(err["code"], "bad_value");
    assert!(err["message"].as_str().unwrap().contains("beyond"), "{err}");
    assert_eq!(dev.next().await["op"], "synced");
    drop(dev);

    // since from another epoch: not recovered, nothing replayed.
    let mut dev = server.login_since(&token, Some(1), Some("0000")).await;
    let welcome = dev.expect("welcome").await;
    assert_eq!(welcome["recovered"], false);
    assert_eq!(
        dev.next().await,
        json!({"op":"synced","seq":1,"replayed":0})
    );

    // Logins and the closed connection's end record last_seen; once only alice and this
    // device are left, nothing may change.
    server.sessions_down_to(2).await;
    let before = server.snapshot();
    for (req, code) in [
        (json!({"op":"history","limit":0}), "bad_value"),
        (json!({"op":"history","limit":501}), "bad_value"),
        (json!({"op":"history","limit":-1}), "wrong_type"),
        (json!({"op":"history","before":"x"}), "wrong_type"),
        (json!({"op":"history","before":50}), "bad_value"),
    ] {
        dev.send_json(req.clone()).await;
        let err = dev.expect("error").await;
        assert_eq!(err["code"], code, "{req} -> {err}");
    }
    assert_eq!(server.snapshot(), before);
}

#[tokio::test]
async fn pruned_history_is_reported_not_half_replayed() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let b = server.device("bob@example.com", "b").await;
    for n in 1..=5 {
        alice
            .send_msg(&format!("m{n}"), "bob@example.com", json!(n))
            .await;
    }
    let token = b.token.clone();
    drop(b);
    // Everything so far is older than "now + 1 s": pruned.
    let cutoff = octet::state::now_millis() + 1000;
    let pruned = server
        .state
        .store
        .prune(cutoff, cutoff, 1000)
        .await
        .unwrap();
    assert_eq!(pruned, 10); // five messages in two logs
    let mut dev = server.login_since(&token, Some(2), None).await;
    let (welcome, replayed) = until_synced(&mut dev).await;
    assert_eq!(welcome["recovered"], false);
    assert!(replayed.is_empty());
    dev.send_json(json!({"op":"history"})).await;
    let page = dev.expect("history").await;
    assert_eq!(page, json!({"op":"history","events":[],"more":false}));
    // A position at the horizon is still whole.
    let mut dev = server.login_since(&token, Some(5), None).await;
    let (welcome, _) = until_synced(&mut dev).await;
    assert_eq!(welcome["recovered"], true);
}

#[tokio::test]
async fn a_slow_reader_is_closed_and_then_catches_up() {
    let server = TestServer::start_with(|c| c.queue_frames = 8).await;
    let mut sender = server.device("alice@example.com", "a").await;
    let stalled = server.device("bob@example.com", "b").await;
    let token = stalled.token.clone();
    let n = sender
        .send_until_kicked(&server, "bob@example.com", 2)
        .await;
    assert!(server.state.router.online(2).is_empty(), "never kicked");
    drop(stalled);
    // It held nothing (its welcome said seq 0): since 0 brings every message, in order.
    let mut back = server.login_since(&token, Some(0), None).await;
    let (welcome, replayed) = until_synced(&mut back).await;
    assert_eq!(welcome["recovered"], true);
    let seqs: Vec<u64> = replayed
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn retention_prunes_in_the_background() {
    let server = TestServer::start_with(|c| {
        c.retention = Some(std::time::Duration::from_millis(1));
        c.prune_every = std::time::Duration::from_millis(100);
    })
    .await;
    let mut alice = server.device("alice@example.com", "a").await;
    server.device_token("bob@example.com", "b").await;
    for n in 1..=3 {
        alice
            .send_msg(&format!("m{n}"), "bob@example.com", json!(n))
            .await;
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        alice.send_json(json!({"op":"history"})).await;
        let page = alice.expect("history").await;
        if page["events"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never pruned: {page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Sends keep working and seq keeps counting from where it was.
    let sent = alice.send_msg("after", "bob@example.com", json!(4)).await;
    assert_eq!(sent["seq"], 4);
    // Client ids outlive a short retention (at least a day): a late retry is still recognised.
    let retry = alice.send_msg("m1", "bob@example.com", json!(1)).await;
    assert_eq!(retry["mid"], 1);
    assert_eq!(retry["seq"], 1);
}

#[tokio::test]
async fn acks_send_delivered_receipts_once_and_show_in_devices() {
    let server = TestServer::start().await;
    let mut a1 = server.device("alice@example.com", "a1").await;
    let mut a2 = server.device("alice@example.com", "a2").await;
    let mut b1 = server.device("bob@example.com", "b1").await;
    let mut b2 = server.device("bob@example.com", "b2").await;
    // Seq 1 of each log is the `devices_changed` of its second device's link.
    let sent = a1.send_msg("m1", "bob@example.com", json!("hi")).await;
    let mid = sent["mid"].clone();
    a2.expect("message").await;
    let got = b1.expect("message").await;
    b2.expect("message").await;
    b1.send_json(json!({"op":"ack","seq":got["seq"]})).await;
    for alice in [&mut a1, &mut a2] {
        let receipt = alice.expect("receipt").await;
        assert_eq!(receipt["mid"], mid);
        assert_eq!(receipt["status"], "delivered");
        assert_eq!(receipt["peer"], "bob@example.com");
        assert_eq!(receipt["seq"], 3);
    }
    // The second device's ack of the same message sends nothing more.
    b2.send_json(json!({"op":"ack","seq":got["seq"]})).await;
    a1.expect_silence().await;
    let devices = server.devices("bob@example.com").await;
    assert_eq!(devices["devices"][0]["acked"], 2);
    assert_eq!(devices["devices"][1]["acked"], 2);

    // An ack past the head is refused and changes nothing. (The acks above are committed:
    // `devices` showed them; no session has ended.)
    server.sessions_down_to(4).await;
    let before = server.snapshot();
    b1.send_json(json!({"op":"ack","seq":7})).await;
    let err = b1.expect("error").await;
    assert_eq!(err["code"], "bad_value");
    assert!(
        err["message"].as_str().unwrap().contains("newest seq is 2"),
        "{err}"
    );
    b1.send_json(json!({"op":"ack","seq":-1})).await;
    assert_eq!(b1.expect("error").await["code"], "wrong_type");
    assert_eq!(server.snapshot(), before);
}

#[tokio::test]
async fn read_markers_reach_the_other_devices_and_the_peer() {
    let server = TestServer::start().await;
    let mut a1 = server.device("alice@example.com", "a1").await;
    let mut b1 = server.device("bob@example.com", "b1").await;
    let mut b2 = server.device("bob@example.com", "b2").await;
    let mut carol = server.device("carol@example.com", "c").await;
    let sent = a1.send_msg("m1", "bob@example.com", json!("hi")).await;
    let mid = sent["mid"].as_u64().unwrap();
    b1.expect("message").await;
    b2.expect("message").await;

    b1.send_json(json!({"op":"read","peer":"alice@example.com","upto":mid}))
        .await;
    let marker = b2.expect("read").await;
    assert_eq!(marker["peer"], "alice@example.com");
    assert_eq!(marker["upto"], mid);
    // Bob's seq 1 is the `devices_changed` of b2's link, 2 the message.
    assert_eq!(marker["seq"], 3);
    let receipt = a1.expect("receipt").await;
    assert_eq!(
        (receipt["status"].clone(), receipt["mid"].clone()),
        (json!("read"), json!(mid))
    );
    // The reader's own device gets its marker too: every device sees every seq of its log.
    assert_eq!(b1.expect("read").await["seq"], 3);
    b1.expect_silence().await;

    // The marker is in the log: a device catching up gets it.
    b1.send_json(json!({"op":"history"})).await;
    let page = b1.expect("history").await;
    assert_eq!(page["events"][2]["op"], "read");

    // Another person's conversation, an unknown peer: refused, nothing changes. (The marker
    // is committed: its frames came; no session has ended.)
    server.sessions_down_to(4).await;
    let before = server.snapshot();
    carol
        .send_json(json!({"op":"read","peer":"alice@example.com","upto":mid}))
        .await;
    let err = carol.expect("error").await;
    assert_eq!(err["code"], "bad_value");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("not a message from"),
        "{err}"
    );
    carol
        .send_json(json!({"op":"read","peer":"nobody@example.com","upto":mid}))
        .await;
    assert_eq!(carol.expect("error").await["code"], "unknown_recipient");
    carol
        .send_json(json!({"op":"read","peer":"alice@example.com"}))
        .await;
    assert_eq!(carol.expect("error").await["code"], "missing_field");
    assert_eq!(server.snapshot(), before);
    a1.expect_silence().await;
}

#[tokio::test]
async fn a_read_marker_only_moves_forward() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let mut bob = server.device("bob@example.com", "b").await;
    for n in 1..=2 {
        alice
            .send_msg(&format!("m{n}"), "bob@example.com", json!(n))
            .await;
        bob.expect("message").await;
    }
    bob.send_json(json!({"op":"read","peer":"alice@example.com","upto":2}))
        .await;
    assert_eq!(bob.expect("read").await["upto"], 2);
    assert_eq!(alice.expect("receipt").await["mid"], 2);
    let before = server.snapshot();
    assert_eq!(read_mark(&server, bob.uid, alice.uid), Some(2));
    // A connection's frames are handled in order: once the history answer came, so had the
    // marker before it. Neither moved the stored marker back, logged an event or told anyone.
    let mut page = json!(null);
    for upto in [1, 2] {
        bob.send_json(json!({"op":"read","peer":"alice@example.com","upto":upto}))
            .await;
        bob.send_json(json!({"op":"history"})).await;
        page = bob.expect("history").await;
        assert_eq!(
            read_mark(&server, bob.uid, alice.uid),
            Some(2),
            "after {upto}"
        );
    }
    let reads = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["op"] == "read")
        .count();
    assert_eq!(reads, 1, "{page}");
    assert_eq!(server.snapshot(), before);
    alice.expect_silence().await;
}

/// The stored read marker of `person` for the conversation with `peer` (primary uids are
/// their persons' ids).
fn read_mark(server: &TestServer, person: u64, peer: u64) -> Option<u64> {
    let db = rusqlite::Connection::open(server.state.config.data_dir.join("octet.db")).unwrap();
    db.query_row(
        "SELECT upto FROM read_marks WHERE person = ?1 AND peer_person = ?2",
        [person, peer],
        |r| r.get(0),
    )
    .ok()
}

#[tokio::test]
async fn a_send_retried_after_a_reconnect_is_not_duplicated() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let mut bob = server.device("bob@example.com", "b").await;
    let first = alice
        .send_msg("retry-1", "bob@example.com", json!({"t":1}))
        .await;
    assert_eq!(bob.expect("message").await["mid"], first["mid"]);
    // The sender lost its connection before it saw `sent` (as far as it knows): it reconnects
    // and sends the same client id and body again.
    let token = alice.token.clone();
    drop(alice);
    let mut alice = server.login_since(&token, Some(0), None).await;
    loop {
        if alice.next().await["op"] == "synced" {
            break;
        }
    }
    let again = alice
        .send_msg("retry-1", "bob@example.com", json!({"t":1}))
        .await;
    assert_eq!(
        (again["mid"].clone(), again["seq"].clone()),
        (first["mid"].clone(), first["seq"].clone())
    );
    bob.expect_silence().await;
    let devices = server.devices("bob@example.com").await;
    assert_eq!(devices["devices"][0]["online"], true);
}

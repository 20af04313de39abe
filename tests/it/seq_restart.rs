//! The per-person seq across `kill -9`: the writer keeps each log's head in memory (no counter
//! written per event), so after a crash it must start again from exactly what was committed —
//! no seq reused, none skipped — in both persons' logs, and a catch-up after it is gap-free.

use std::collections::BTreeMap;

use octet::client::{Backend, Connection, Incoming};
use octet::protocol::{ClientFrame, Send, ServerFrame};
use serde_json::value::RawValue;

use crate::harness::{APP_TOKEN, APPID, Broker, WAIT, client_login};

/// Sends one message and waits for its `sent`: (mid, the sender's seq).
async fn send(conn: &mut Connection, id: &str, to: &str) -> (u64, u64) {
    let frame = ClientFrame::Send(Send {
        id: id.into(),
        to: to.into(),
        body: Some(RawValue::from_string(format!("\"{id}\"")).unwrap()),
        files: Vec::new(),
    });
    conn.send(&frame).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, conn.recv()).await {
            Ok(Ok(Incoming::Frame(_, ServerFrame::Sent(sent)))) => {
                assert_eq!(sent.id, id);
                return (sent.mid, sent.seq);
            }
            Ok(Ok(Incoming::Frame(_, ServerFrame::Error(err)))) => panic!("send {id}: {err:?}"),
            Ok(Ok(Incoming::Frame(..))) => continue,
            other => panic!("no sent for {id}: {other:?}"),
        }
    }
}

/// Logs in with `since` 0 and reads the catch-up: seq → mid of every message in the log.
async fn catch_up(url: &str, token: &str) -> BTreeMap<u64, u64> {
    let (mut conn, head) = client_login(url, token, Some(0)).await;
    let mut log = BTreeMap::new();
    loop {
        match tokio::time::timeout(WAIT, conn.recv()).await {
            Ok(Ok(Incoming::Frame(_, ServerFrame::Message(m)))) => {
                assert!(log.insert(m.seq, m.mid).is_none(), "seq {} twice", m.seq);
            }
            Ok(Ok(Incoming::Frame(_, ServerFrame::Synced(synced)))) => {
                assert_eq!(synced.seq, head);
                return log;
            }
            Ok(Ok(Incoming::Frame(..))) => continue,
            other => panic!("catch-up ended early: {other:?}"),
        }
    }
}

#[tokio::test]
async fn seqs_continue_without_reuse_or_gap_after_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(data.path()).await;
    let backend = Backend::new(&format!("http://{}", broker.addr), APP_TOKEN);
    let alice = backend
        .device_token("alice@example.com", "a1", APPID)
        .await
        .unwrap()
        .token;
    let bob = backend
        .device_token("bob@example.com", "b1", APPID)
        .await
        .unwrap()
        .token;
    // seq → mid of both logs as the `sent`s reported them (both persons' logs hold each
    // message; the sender's seq is in its `sent`).
    let mut alice_log = BTreeMap::new();
    let mut bob_log = BTreeMap::new();
    for round in 0..3 {
        let (mut a, a_head) = client_login(&broker.ws(), &alice, None).await;
        let (mut b, b_head) = client_login(&broker.ws(), &bob, None).await;
        // Both logs hold every message between them: the heads are the count sent so far.
        assert_eq!(
            a_head,
            alice_log.len() as u64,
            "alice's head after a restart"
        );
        assert_eq!(b_head, bob_log.len() as u64, "bob's head after a restart");
        for n in 0..7 {
            let id = format!("a-{round}-{n}");
            let (mid, seq) = send(&mut a, &id, "bob@example.com").await;
            assert_eq!(seq, alice_log.len() as u64 + 1, "alice's seq for {id}");
            alice_log.insert(seq, mid);
            bob_log.insert(bob_log.len() as u64 + 1, mid);
        }
        for n in 0..4 {
            let id = format!("b-{round}-{n}");
            let (mid, seq) = send(&mut b, &id, "alice@example.com").await;
            assert_eq!(seq, bob_log.len() as u64 + 1, "bob's seq for {id}");
            bob_log.insert(seq, mid);
            alice_log.insert(alice_log.len() as u64 + 1, mid);
        }
        // Every `sent` above was answered after its commit: all of it survives the kill.
        broker.kill();
        broker = Broker::start(data.path()).await;
    }
    assert_eq!(catch_up(&broker.ws(), &alice).await, alice_log);
    assert_eq!(catch_up(&broker.ws(), &bob).await, bob_log);
}

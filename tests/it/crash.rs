//! The broker killed with SIGKILL mid-stream: every acknowledged message reaches every device
//! of both persons after a restart and a reconnect with `since`, exactly once by `seq`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use octet::client::{Backend, Connection, Incoming};
use octet::protocol::{ClientFrame, Send, ServerFrame};
use serde_json::value::RawValue;

use crate::harness::{APP_TOKEN, APPID, Broker, WAIT, client_login};

/// What one device saw: seq → mid, and the sends it got `sent` for (client id → mid).
#[derive(Default)]
struct Seen {
    by_seq: BTreeMap<u64, u64>,
    duplicates: u64,
    acked: BTreeMap<String, u64>,
    /// The close code the broker sent, if it closed cleanly.
    closed_with: Option<u16>,
    /// The send in flight when the connection dropped (sent, never answered).
    pending: Option<(String, String)>,
}

impl Seen {
    fn record(&mut self, seq: u64, mid: u64) {
        if self.by_seq.insert(seq, mid).is_some() {
            self.duplicates += 1;
        }
    }

    /// A frame of the catch-up after `since`. A replayed seq at or below `since` is a
    /// duplicate; one above it that the device already held (above a hole) is what a client
    /// resuming from `since` is told to expect and skip, but it must be the same message.
    fn record_replayed(&mut self, seq: u64, mid: u64, since: u64) {
        match self.by_seq.get(&seq) {
            Some(held) if seq > since => {
                assert_eq!(*held, mid, "seq {seq} replayed as another message")
            }
            _ => self.record(seq, mid),
        }
    }

    /// The highest seq held without a gap below it: what a client resumes from. (Its own
    /// `sent` and the live frames come through different queues, so a kill can leave a hole.)
    fn position(&self) -> u64 {
        let mut position = 0;
        while self.by_seq.contains_key(&(position + 1)) {
            position += 1;
        }
        position
    }
}

/// Sends `sends` one after another (each waits for its `sent`), recording everything, until the
/// connection drops.
async fn drive(mut conn: Connection, sends: Vec<(String, String)>, mut seen: Seen) -> Seen {
    let mut sends = sends.into_iter();
    let mut pending: Option<(String, String)> = None;
    loop {
        if pending.is_none()
            && let Some((id, to)) = sends.next()
        {
            let frame = ClientFrame::Send(Send {
                id: id.clone(),
                to,
                body: Some(RawValue::from_string(format!("\"{id}\"")).unwrap()),
                files: Vec::new(),
            });
            let to_again = match &frame {
                ClientFrame::Send(send) => send.to.clone(),
                _ => unreachable!(),
            };
            if conn.send(&frame).await.is_err() {
                // The close may already be waiting to be read.
                if let Ok(Ok(Incoming::Closed(close))) =
                    tokio::time::timeout(Duration::from_secs(1), conn.recv()).await
                {
                    seen.closed_with = close.map(|(code, _)| code);
                }
                seen.pending = Some((id, to_again));
                return seen;
            }
            pending = Some((id, to_again));
        }
        let next = tokio::time::timeout(Duration::from_secs(3), conn.recv()).await;
        match next {
            Ok(Ok(Incoming::Frame(_, ServerFrame::Message(m)))) => seen.record(m.seq, m.mid),
            Ok(Ok(Incoming::Frame(_, ServerFrame::Sent(s)))) => {
                seen.record(s.seq, s.mid);
                seen.acked.insert(s.id.clone(), s.mid);
                pending = None;
            }
            Ok(Ok(Incoming::Frame(..))) => {}
            Ok(Ok(Incoming::Closed(close))) => {
                seen.closed_with = close.map(|(code, _)| code);
                seen.pending = pending;
                return seen;
            }
            // Reset by the kill, or quiet for long enough: done.
            _ => {
                seen.pending = pending;
                return seen;
            }
        }
    }
}

/// How the broker is stopped mid-stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Kill,
    Terminate,
}

#[tokio::test]
async fn acknowledged_messages_survive_sigkill() {
    stop_mid_stream(Stop::Kill).await;
}

#[tokio::test]
async fn sigterm_closes_with_going_away_exits_zero_and_loses_nothing() {
    stop_mid_stream(Stop::Terminate).await;
}

/// a1 and b1 stream messages at each other while a2 and b2 listen; the broker is stopped;
/// after a restart every device catches up with `since` and holds every acknowledged message
/// exactly once, with no gap in its seq.
async fn stop_mid_stream(stop: Stop) {
    let data = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(data.path()).await;
    let backend = Backend::new(&format!("http://{}", broker.addr), APP_TOKEN);
    let mut tokens = Vec::new();
    for (address, device) in [
        ("alice@example.com", "a1"),
        ("alice@example.com", "a2"),
        ("bob@example.com", "b1"),
        ("bob@example.com", "b2"),
    ] {
        let t = backend.device_token(address, device, APPID).await.unwrap();
        tokens.push(t.token);
    }
    let stream = |tag: &str, to: &str| -> Vec<(String, String)> {
        (0..5000)
            .map(|n| (format!("{tag}-{n}"), to.to_string()))
            .collect()
    };
    let plans = [
        stream("a1", "bob@example.com"),
        vec![],
        stream("b1", "alice@example.com"),
        vec![],
    ];
    // Everyone is online (at seq 1: each log begins with the `devices_changed` of its second
    // device's link) before the first send.
    let mut conns = Vec::new();
    for token in &tokens {
        let (conn, seq) = client_login(&broker.ws(), token, None).await;
        assert_eq!(seq, 1);
        conns.push(conn);
    }
    let mut tasks = Vec::new();
    for (conn, plan) in conns.into_iter().zip(plans) {
        // Held from before the login: the link (no message, so no mid: 0).
        let mut seen = Seen::default();
        seen.record(1, 0);
        tasks.push(tokio::spawn(drive(conn, plan, seen)));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    match stop {
        Stop::Kill => broker.kill(),
        Stop::Terminate => {
            let status = broker.terminate();
            assert!(status.success(), "graceful shutdown exited with {status}");
        }
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    if stop == Stop::Terminate {
        for (n, dev) in seen.iter().enumerate() {
            assert_eq!(
                dev.closed_with,
                Some(1001),
                "device {n} was not told going-away"
            );
        }
    }
    let acked: BTreeSet<u64> = seen
        .iter()
        .flat_map(|s| s.acked.values().copied())
        .collect();
    assert!(
        acked.len() > 20,
        "too little traffic before the stop: {}",
        acked.len()
    );

    let broker = Broker::start(data.path()).await;
    let mut after = Vec::new();
    let mut retried = 0;
    for (token, mut dev) in tokens.iter().zip(seen) {
        let since = dev.position();
        let (mut conn, _) = client_login(&broker.ws(), token, Some(since)).await;
        loop {
            match tokio::time::timeout(WAIT, conn.recv())
                .await
                .expect("catch-up in time")
                .unwrap()
            {
                Incoming::Frame(_, ServerFrame::Message(m)) => {
                    dev.record_replayed(m.seq, m.mid, since)
                }
                Incoming::Frame(_, ServerFrame::Synced(_)) => break,
                other => panic!("unexpected during catch-up: {other:?}"),
            }
        }
        // Retry across the crash: the send whose `sent` never came goes again with the same
        // client id and body; it exists exactly once, and the id with another body is refused.
        if let Some((id, to)) = dev.pending.clone() {
            let retry = |body: String| {
                ClientFrame::Send(Send {
                    id: id.clone(),
                    to: to.clone(),
                    body: Some(RawValue::from_string(body).unwrap()),
                    files: Vec::new(),
                })
            };
            conn.send(&retry(format!("\"{id}\""))).await.unwrap();
            let sent = loop {
                match tokio::time::timeout(WAIT, conn.recv())
                    .await
                    .expect("sent in time")
                    .unwrap()
                {
                    Incoming::Frame(_, ServerFrame::Sent(s)) => break s,
                    Incoming::Frame(..) => continue,
                    other => panic!("unexpected after a retry: {other:?}"),
                }
            };
            assert_eq!(sent.id, id);
            // If the first attempt had committed, the catch-up already brought its event: the
            // retry answers with that same seq and mid.
            match dev.by_seq.get(&sent.seq) {
                Some(mid) => assert_eq!(*mid, sent.mid, "the retry got another message's seq"),
                None => dev.record(sent.seq, sent.mid),
            }
            conn.send(&retry("\"another body\"".into())).await.unwrap();
            loop {
                match tokio::time::timeout(WAIT, conn.recv())
                    .await
                    .expect("error in time")
                    .unwrap()
                {
                    Incoming::Frame(_, ServerFrame::Error(e)) => {
                        assert_eq!(e.code, octet::protocol::ErrorCode::DuplicateId);
                        assert_eq!(e.id.as_deref(), Some(id.as_str()));
                        break;
                    }
                    Incoming::Frame(..) => continue,
                    other => panic!("unexpected after a changed retry: {other:?}"),
                }
            }
            let db = rusqlite::Connection::open(data.path().join("octet.db")).unwrap();
            let copies: i64 = db
                .query_row(
                    "SELECT count(*) FROM messages WHERE client_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(copies, 1, "client id {id} stored {copies} times");
            retried += 1;
        }
        after.push(dev);
    }
    // The senders send back to back, so one had a send in flight at the stop.
    let acked_per_device: Vec<usize> = after.iter().map(|d| d.acked.len()).collect();
    assert!(
        retried >= 1,
        "no send was in flight at the stop (acked per device: {acked_per_device:?})"
    );
    for (n, dev) in after.iter().enumerate() {
        assert_eq!(dev.duplicates, 0, "device {n} saw a seq twice");
        let mids: BTreeSet<u64> = dev.by_seq.values().copied().collect();
        let lost: Vec<&u64> = acked.difference(&mids).collect();
        assert!(
            lost.is_empty(),
            "device {n} lost acknowledged messages {lost:?}"
        );
        let seqs: Vec<u64> = dev.by_seq.keys().copied().collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "device {n} has gaps"
        );
    }
}

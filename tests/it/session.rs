//! `octet::client::Session`, the Rust client's reconnect/resend/dedupe loop, against the real
//! broker: killed mid-stream and restarted, a send made while it is down, a replaced login, a
//! revoked token, a cursor from another log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use octet::client::{
    Backend, Cursor, MemoryStore, SendError, Session, SessionEvent, SessionOptions, SessionStore,
};
use octet::protocol::ServerFrame;
use serde_json::json;
use serde_json::value::RawValue;

use crate::harness::{APP_TOKEN, APPID, Broker, TestServer};

fn options(url: &str, token: &str) -> SessionOptions {
    let mut options = SessionOptions::new(url, token, APPID);
    // Quick reconnects: the test restarts the broker within a second.
    options.backoff_min = Duration::from_millis(50);
    options.backoff_max = Duration::from_millis(500);
    options
}

async fn token(backend: &Backend, address: &str, device: &str) -> String {
    backend
        .device_token(address, device, APPID)
        .await
        .expect("device token")
        .token
}

fn body(n: u64) -> Box<RawValue> {
    RawValue::from_string(n.to_string()).unwrap()
}

/// What a device's app saw: every logged message by seq (mid, body), and how often any seq
/// came twice.
#[derive(Default, Debug)]
struct Seen {
    by_seq: BTreeMap<u64, (u64, String)>,
    twice: usize,
    out_of_order: usize,
    last: u64,
}

/// A session that has logged in: new devices start live, so a receiver must be connected before
/// the messages it is to get are sent.
async fn connected(options: SessionOptions) -> Session {
    let mut session = Session::start(options);
    match tokio::time::timeout(Duration::from_secs(10), session.next()).await {
        Ok(Some(SessionEvent::Connected(_))) => session,
        other => panic!("not connected: {other:?}"),
    }
}

/// The next `Stopped` (other events are skipped), within 10 s.
async fn stopped(session: &mut Session) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), session.next()).await {
            Ok(Some(SessionEvent::Stopped { code, .. })) => return code,
            Ok(Some(_)) => {}
            other => panic!("no Stopped: {other:?}"),
        }
    }
}

/// Takes events until `want` messages were seen (or 60 s passed).
async fn collect(mut session: Session, want: usize) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.by_seq.len() < want {
        let event = tokio::time::timeout_at(deadline, session.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {want} messages: {seen:?}", seen.by_seq.len()))
            .expect("the session goes on");
        match event {
            SessionEvent::Event(ServerFrame::Message(m)) => {
                if m.seq <= seen.last {
                    seen.out_of_order += 1;
                }
                seen.last = seen.last.max(m.seq);
                if seen
                    .by_seq
                    .insert(m.seq, (m.mid, m.body.get().to_string()))
                    .is_some()
                {
                    seen.twice += 1;
                }
            }
            SessionEvent::Stopped { code, reason } => panic!("stopped: {code:?} {reason}"),
            _ => {}
        }
    }
    seen
}

/// The broker is killed (SIGKILL) while one device streams sends, and restarted on the same
/// address; one more send is made while it is down. Every send the app was told `sent` reaches
/// the peer's device and the sender's other device exactly once, in seq order, in the order
/// sent, with the mids the sender was told.
#[tokio::test]
async fn a_killed_broker_loses_and_doubles_nothing_the_app_was_told_sent() {
    let _heavy = crate::harness::heavy().await;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path()).await;
    let addr = broker.addr;
    let backend = Backend::new(&format!("http://{addr}"), APP_TOKEN);
    let url = broker.ws();
    let phone = connected(options(&url, &token(&backend, "alice@x", "a-phone").await)).await;
    let laptop = connected(options(&url, &token(&backend, "alice@x", "a-laptop").await)).await;
    let bob = connected(options(&url, &token(&backend, "bob@x", "b-phone").await)).await;
    let carol_token = token(&backend, "carol@x", "c-phone").await;

    const SENDS: u64 = 60;
    let laptop_seen = tokio::spawn(collect(laptop, SENDS as usize));
    // Bob also gets the message sent while the broker was down.
    let bob_seen = tokio::spawn(collect(bob, SENDS as usize + 1));
    let (killed_tx, killed) = tokio::sync::oneshot::channel::<()>();
    let (restart_tx, restarted) = tokio::sync::oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        let mut phone = phone;
        let mut mids = Vec::new();
        let mut killed_tx = Some(killed_tx);
        for n in 1..=SENDS {
            if n == 20 {
                // Let the test kill the broker with sends in flight.
                killed_tx.take().unwrap().send(()).unwrap();
            }
            let sent = phone.send("bob@x", &body(n)).await.expect("sent");
            mids.push(sent.mid);
        }
        let _ = restarted.await;
        // Drain the sender's own events (its other devices' copies are not its).
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), phone.next()).await
        {
        }
        mids
    });
    killed.await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    broker.kill();
    // A send made while the broker is down goes out after the restart.
    let late = Session::start(options(&url, &carol_token));
    let late_send = tokio::spawn(async move {
        let sent = late.send("bob@x", &body(1000)).await;
        (late, sent)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _broker = Broker::start_on(dir.path(), addr).await;
    restart_tx.send(()).unwrap();

    let mids = tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("every send answered")
        .unwrap();
    let bob_seen = bob_seen.await.unwrap();
    let laptop_seen = laptop_seen.await.unwrap();
    for (who, seen) in [("bob", &bob_seen), ("alice's laptop", &laptop_seen)] {
        assert_eq!(seen.twice, 0, "{who} saw a seq twice");
        assert_eq!(seen.out_of_order, 0, "{who} saw seqs out of order");
        let bodies: Vec<String> = seen
            .by_seq
            .values()
            .filter(|(_, body)| body != "1000")
            .map(|(_, body)| body.clone())
            .collect();
        let expected: Vec<String> = (1..=SENDS).map(|n| n.to_string()).collect();
        assert_eq!(
            bodies, expected,
            "{who}: every message once, in the order sent"
        );
        let got: Vec<u64> = seen
            .by_seq
            .values()
            .filter(|(_, body)| body != "1000")
            .map(|(mid, _)| *mid)
            .collect();
        assert_eq!(got, mids, "{who}: the mids the sender was told");
    }
    let (_late, late_sent) = late_send.await.unwrap();
    late_sent.expect("the send made while the broker was down is answered after the restart");
}

/// A second login with the same token replaces the first connection (4003): that session
/// stops and does not reconnect (two copies of one device would replace each other forever);
/// the newer one stays connected.
#[tokio::test]
async fn a_replaced_session_stops_instead_of_fighting_back() {
    let server = TestServer::start().await;
    let answer = server.device_token("alice@x", "a-phone").await;
    let token = answer["user"]["token"].as_str().unwrap();
    let url = server.ws_url();
    let mut first = Session::start(options(&url, token));
    assert!(matches!(
        first.next().await,
        Some(SessionEvent::Connected(_))
    ));
    let mut second = Session::start(options(&url, token));
    assert!(matches!(
        second.next().await,
        Some(SessionEvent::Connected(_))
    ));
    assert_eq!(stopped(&mut first).await, Some(4003));
    assert!(first.next().await.is_none(), "nothing after Stopped");
    // The newer connection is left alone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(event) = tokio::time::timeout_at(deadline, second.next()).await {
        assert!(
            matches!(event, Some(SessionEvent::Live(ServerFrame::Synced(_)))),
            "the newer session was disturbed: {event:?}"
        );
    }
}

/// `tokendel` revokes the token: the session stops with 4004, and its unanswered sends fail
/// with `Stopped` instead of waiting forever.
#[tokio::test]
async fn a_revoked_token_stops_the_session() {
    let server = TestServer::start().await;
    let answer = server.device_token("alice@x", "a-phone").await;
    let token = answer["user"]["token"].as_str().unwrap();
    let uid = answer["user"]["uid"].as_u64().unwrap();
    let mut session = Session::start(options(&server.ws_url(), token));
    assert!(matches!(
        session.next().await,
        Some(SessionEvent::Connected(_))
    ));
    let revoked = server.backend(json!({"op": "tokendel", "uid": uid})).await;
    assert_eq!(revoked["result"], json!(true), "{revoked}");
    assert_eq!(stopped(&mut session).await, Some(4004));
    let late = session.send("bob@x", &body(1)).await;
    assert!(matches!(late, Err(SendError::Stopped)), "{late:?}");
}

/// A store resuming from a cursor replays only what came after it, once; a cursor from
/// another log (another epoch) gets `Resync` with the head, then that log refilled from
/// history instead of a partial replay.
#[tokio::test]
async fn a_stored_cursor_resumes_and_a_foreign_one_resyncs() {
    let server = TestServer::start().await;
    let mut bob_dev = server.device("bob@x", "b-phone").await;
    let answer = server.device_token("alice@x", "a-phone").await;
    let token = answer["user"]["token"].as_str().unwrap().to_string();
    for n in 1..=5 {
        bob_dev
            .send_msg(&format!("m{n}"), "alice@x", json!(n))
            .await;
    }
    let epoch = server.epoch(answer["user"]["uid"].as_u64().unwrap()).await;

    // Resuming after seq 2 of alice's log: 3, 4, 5 once each, then live.
    let store = Arc::new(MemoryStore::default());
    store.set_cursor(Cursor {
        seq: 2,
        epoch: epoch.clone(),
    });
    let mut options_resume = options(&server.ws_url(), &token);
    options_resume.store = store.clone();
    let mut session = Session::start(options_resume);
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), session.next()).await {
            Ok(Some(SessionEvent::Event(frame))) => seqs.push(frame.log_seq().unwrap()),
            Ok(Some(SessionEvent::Resync { .. })) => panic!("resynced a resumable cursor"),
            Ok(Some(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seqs, [3, 4, 5]);
    // Taking the next event marks the last one handled: it becomes the stored cursor (after
    // the next acknowledgement).
    let _ = tokio::time::timeout(Duration::from_millis(100), session.next()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.cursor().map(|c| c.seq) != Some(5) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cursor {:?}",
            store.cursor()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    session.close();

    // A cursor from another log: Resync at the head, then the session refills this log from
    // history by itself: 1..=5 once each, in order, then Refilled (complete), then live.
    let foreign_store = Arc::new(MemoryStore::default());
    foreign_store.set_cursor(Cursor {
        seq: 3,
        epoch: "0000000000000000".into(),
    });
    let mut options_foreign = options(&server.ws_url(), &token);
    options_foreign.store = foreign_store.clone();
    let mut session = Session::start(options_foreign);
    assert!(matches!(
        session.next().await,
        Some(SessionEvent::Connected(_))
    ));
    match session.next().await {
        Some(SessionEvent::Resync { head }) => assert_eq!(head, 5),
        other => panic!("expected Resync, got {other:?}"),
    }
    let mut refilled = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), session.next()).await {
            Ok(Some(SessionEvent::Event(frame))) => refilled.push(frame.log_seq().unwrap()),
            Ok(Some(SessionEvent::Refilled { head, complete })) => {
                assert_eq!((head, complete), (5, true));
                break;
            }
            other => panic!("expected the refill, got {other:?}"),
        }
    }
    assert_eq!(refilled, [1, 2, 3, 4, 5]);
    // Once the app took them, the foreign cursor is replaced by this log's.
    let _ = tokio::time::timeout(Duration::from_millis(100), session.next()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while foreign_store.cursor()
        != Some(Cursor {
            seq: 5,
            epoch: epoch.clone(),
        })
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cursor {:?}",
            foreign_store.cursor()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A user linked to another person (`token.linkto`) is closed with 4004 "linked to another
/// person": the session logs in again at once with the same token, now in that person's log,
/// instead of stopping as it does for a revoked token.
#[tokio::test]
async fn a_user_linked_to_another_person_logs_in_again() {
    let server = TestServer::start().await;
    server.device_token("bob@x", "b-phone").await;
    let answer = server
        .backend(
            json!({"op": "useradd", "user": {"address": "carol@x", "token": {"appid": APPID}}}),
        )
        .await;
    let token = answer["user"]["token"].as_str().unwrap();
    let mut session = Session::start(options(&server.ws_url(), token));
    match session.next().await {
        Some(SessionEvent::Connected(welcome)) => assert_eq!(welcome.primary.address, "carol@x"),
        other => panic!("{other:?}"),
    }
    let linked = server
        .backend(json!({"op": "useradd", "user": {"address": "carol@x", "token": {"appid": APPID, "linkto": "bob@x"}}}))
        .await;
    assert_eq!(linked["result"], json!(true), "{linked}");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), session.next()).await {
            Ok(Some(SessionEvent::Disconnected { code })) => assert_eq!(code, Some(4004)),
            Ok(Some(SessionEvent::Connected(welcome))) => {
                assert_eq!(welcome.primary.address, "bob@x");
                break;
            }
            Ok(Some(SessionEvent::Stopped { code, reason })) => {
                panic!("stopped: {code:?} {reason}")
            }
            Ok(Some(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// A TCP proxy in front of the broker that can lose everything the broker sends (as a network
/// that died one way would) and cut every connection through it.
struct Proxy {
    addr: std::net::SocketAddr,
    hold: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (held, cuts) = (hold.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let (hold, mut cut) = (held.clone(), cuts.subscribe());
                tokio::spawn(async move {
                    let up = tokio::io::copy(&mut client_rx, &mut server_tx);
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match server_rx.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if hold.load(Ordering::SeqCst) {
                                continue; // lost on the way
                            }
                            if client_tx.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    // Dropping both halves closes both connections without a close frame.
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, hold, cut }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// The broker stores a send but its `sent` is lost, and then the connection dies: the session
/// reconnects, resends the frame with the same client id, and gets the original `sent` (the
/// same mid); the peer gets the message once.
#[tokio::test]
async fn a_send_whose_sent_was_lost_is_resent_with_its_id_and_stored_once() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr).await;
    let answer = server.device_token("alice@x", "a-phone").await;
    let token = answer["user"]["token"].as_str().unwrap();
    let mut bob = server.device("bob@x", "b-phone").await;
    let mut alice = connected(options(&proxy.url(), token)).await;

    proxy.hold.store(true, Ordering::SeqCst);
    let sender = alice.sender();
    let sending =
        tokio::spawn(async move { sender.send_with_id("retry-1", "bob@x", &body(7)).await });
    let message = bob.expect("message").await;
    assert_eq!(message["body"], json!(7));
    proxy.cut.send_modify(|n| *n += 1);
    proxy.hold.store(false, Ordering::SeqCst);

    let sent = tokio::time::timeout(Duration::from_secs(10), sending)
        .await
        .expect("the resend is answered")
        .unwrap()
        .expect("sent");
    assert_eq!(sent.id, "retry-1");
    assert_eq!(json!(sent.mid), message["mid"], "the original `sent`");
    let mut reconnected = false;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(300), alice.next()).await
    {
        reconnected |= matches!(event, SessionEvent::Connected(_));
    }
    assert!(reconnected, "the session logged in again");
    bob.expect_silence().await;
}

//! `octet::client::Session` after `welcome.recovered: false`: it tells the app (`Resync`), refills
//! the gap from `history` by itself and hands the events over once each, in order, saying
//! whether the gap was whole (`Refilled`); a refill cut by a broker restart is done again after
//! it, and nothing of the cut one reaches the app.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use octet::client::{
    Backend, Cursor, MemoryStore, Session, SessionEvent, SessionOptions, SessionStore,
};
use octet::state::now_millis;
use serde_json::json;

use crate::harness::{APP_TOKEN, APPID, Broker, TestServer};

fn options(url: &str, token: &str, store: Arc<MemoryStore>) -> SessionOptions {
    let mut options = SessionOptions::new(url, token, APPID);
    options.backoff_min = Duration::from_millis(50);
    options.backoff_max = Duration::from_millis(500);
    options.store = store;
    options
}

/// Everything the app is told until `Refilled` (which is included), within 30 s.
async fn until_refilled(session: &mut Session) -> Vec<SessionEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let event = tokio::time::timeout_at(deadline, session.next())
            .await
            .unwrap_or_else(|_| panic!("no Refilled; saw {seen:?}"))
            .expect("the session goes on");
        let done = matches!(event, SessionEvent::Refilled { .. });
        if let SessionEvent::Stopped { code, reason } = &event {
            panic!("stopped: {code:?} {reason}");
        }
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// The seqs of the logged events among `events`, in the order the app got them.
fn seqs(events: &[SessionEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Event(frame) => frame.log_seq(),
            _ => None,
        })
        .collect()
}

fn resyncs(events: &[SessionEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, SessionEvent::Resync { .. }))
        .count()
}

/// Alice's stored cursor (seq 1 of her real log) predates retention: events 2 and 3 were
/// pruned. The session gets `Resync`, then the retained 4, 5, 6 once each in order, then
/// `Refilled` saying the gap was not whole; then live events go on after the head.
/// Broken locally by reporting every refill complete (`complete: true` in `refill.rs`) -> the
/// `Refilled` assertion fails; by skipping `hand` for the refilled events -> the seqs are empty.
#[tokio::test]
async fn a_cursor_older_than_retention_resyncs_and_refills_what_is_left_once_in_order() {
    let server = TestServer::start().await;
    let mut bob = server.device("bob@x", "b-phone").await;
    let answer = server.device_token("alice@x", "a-phone").await;
    let token = answer["user"]["token"].as_str().unwrap().to_string();
    let epoch = server.epoch(answer["user"]["uid"].as_u64().unwrap()).await;
    for n in 1..=3 {
        bob.send_msg(&format!("m{n}"), "alice@x", json!(n)).await;
    }
    // Events are pruned by time: 1..=3 are older than the cutoff, 4..=6 newer.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = now_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for n in 4..=6 {
        bob.send_msg(&format!("m{n}"), "alice@x", json!(n)).await;
    }
    let pruned = server.state.store.prune(cutoff, 0, 1000).await.unwrap();
    assert_eq!(pruned, 6, "three messages in two logs");

    let store = Arc::new(MemoryStore::default());
    store.set_cursor(Cursor {
        seq: 1,
        epoch: epoch.clone(),
    });
    let mut session = Session::start(options(&server.ws_url(), &token, store.clone()));
    let events = until_refilled(&mut session).await;
    assert!(
        matches!(events[0], SessionEvent::Connected(ref w) if !w.recovered),
        "{events:?}"
    );
    assert!(
        matches!(events[1], SessionEvent::Resync { head: 6 }),
        "{events:?}"
    );
    assert_eq!(seqs(&events), [4, 5, 6], "{events:?}");
    assert!(
        matches!(
            events.last(),
            Some(SessionEvent::Refilled {
                head: 6,
                complete: false
            })
        ),
        "2 and 3 are gone: the gap must not be called whole: {events:?}"
    );

    // Live after the head, and nothing of the refill again.
    // Not `send_msg`: Alice's acks bring Bob receipts, which may come before this `sent`.
    bob.send_json(json!({"op":"send","id":"m7","to":"alice@x","body":7}))
        .await;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), session.next()).await {
            Ok(Some(SessionEvent::Event(frame))) => {
                assert_eq!(frame.log_seq(), Some(7));
                break;
            }
            Ok(Some(SessionEvent::Live(_))) => {}
            other => panic!("expected seq 7, got {other:?}"),
        }
    }
    // Once taken, the cursor follows (after the next acknowledgement).
    let _ = tokio::time::timeout(Duration::from_millis(100), session.next()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.cursor().map(|c| c.seq) != Some(7) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            store.cursor()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy that, once armed, loses everything the broker sends from its first `history`
/// answer on (the refill's page never arrives), until the broker goes away.
struct Proxy {
    addr: std::net::SocketAddr,
    armed: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let armed_all = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue; // the broker is down: the client sees the close and retries
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let armed = armed_all.clone();
                tokio::spawn(async move {
                    let up = tokio::io::copy(&mut client_rx, &mut server_tx);
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut holding = false;
                        loop {
                            let n = match server_rx.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            // Server frames are not masked: the answer's op is readable.
                            let text = String::from_utf8_lossy(&buf[..n]);
                            if armed.load(Ordering::SeqCst) && text.contains(r#""op":"history""#) {
                                holding = true;
                            }
                            if holding {
                                continue;
                            }
                            if client_tx.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        Proxy { addr, armed }
    }
}

/// The refill's answer is lost and the broker is killed and restarted mid-refill: the app gets
/// one `Resync`, nothing of the cut refill, and after the restart the whole refill (1..=5 of
/// the log its foreign cursor did not know) once each, in order, then `Refilled`, complete.
/// Broken locally by taking the new epoch and head before the refill is done (as before this
/// change) -> the next login recovers from the head, nothing is refilled and the wait for
/// `Refilled` times out; by dropping the `refilling` flag -> a second `Resync` fails the count.
#[tokio::test]
async fn a_refill_cut_by_a_broker_restart_completes_after_it() {
    let _heavy = crate::harness::heavy().await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path()).await;
    let addr = broker.addr;
    let backend = Backend::new(&format!("http://{addr}"), APP_TOKEN);
    let alice = backend
        .device_token("alice@x", "a-phone", APPID)
        .await
        .unwrap()
        .token;
    let bob_token = backend
        .device_token("bob@x", "b-phone", APPID)
        .await
        .unwrap()
        .token;
    let bob = Session::start(options(
        &broker.ws(),
        &bob_token,
        Arc::new(MemoryStore::default()),
    ));
    for n in 1..=5u64 {
        let body = serde_json::value::RawValue::from_string(n.to_string()).unwrap();
        bob.send("alice@x", &body).await.expect("sent");
    }

    let proxy = Proxy::start(addr).await;
    proxy.armed.store(true, Ordering::SeqCst);
    let store = Arc::new(MemoryStore::default());
    store.set_cursor(Cursor {
        seq: 3,
        epoch: "0000000000000000".into(),
    });
    let url = format!("ws://{}/ws", proxy.addr);
    let mut session = Session::start(options(&url, &alice, store.clone()));
    let mut before = Vec::new();
    while !matches!(before.last(), Some(SessionEvent::Resync { .. })) {
        let event = tokio::time::timeout(Duration::from_secs(10), session.next())
            .await
            .expect("Connected, then Resync")
            .expect("the session goes on");
        before.push(event);
    }
    // The refill's page is being lost; give it time to have been asked and answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.armed.store(false, Ordering::SeqCst);
    let mut broker = broker;
    broker.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _broker = Broker::start_on(dir.path(), addr).await;

    let after = until_refilled(&mut session).await;
    let all: Vec<&SessionEvent> = before.iter().chain(after.iter()).collect();
    assert_eq!(
        resyncs(&before) + resyncs(&after),
        1,
        "one Resync for one gap: {all:?}"
    );
    assert!(seqs(&before).is_empty(), "{before:?}");
    assert_eq!(seqs(&after), [1, 2, 3, 4, 5], "{after:?}");
    assert!(
        matches!(
            after.last(),
            Some(SessionEvent::Refilled {
                head: 5,
                complete: true
            })
        ),
        "{after:?}"
    );
    assert!(
        after
            .iter()
            .any(|e| matches!(e, SessionEvent::Disconnected { .. })),
        "the refill was cut: {after:?}"
    );
}

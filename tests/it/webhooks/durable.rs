//! The outbox across `kill -9` (the real binary), the Python receiver of proto/webhooks.md
//! against a real broker, and the webhook settings' errors from `check-config`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use octet::client::{Backend, Connection, Incoming};
use octet::config::WebhookConfig;
use serde_json::{Value, json};

use super::receiver::Receiver;
use super::{SECRET, ids};
use crate::harness::{APP_TOKEN, APPID, Broker, TestServer, WAIT, client_login};

/// The Python receiver as a child process, killed when dropped.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real binary with webhooks to `url`.
async fn broker(data_dir: &std::path::Path, url: &str) -> Broker {
    let listen = "127.0.0.1:0".parse().unwrap();
    Broker::start_with(
        data_dir,
        listen,
        &["--webhook-url", url, "--webhook-secret", SECRET],
    )
    .await
}

/// Sends a message and waits for its `sent`; returns the mid.
pub(super) async fn send(conn: &mut Connection, id: &str, to: &str) -> u64 {
    let frame = json!({"op": "send", "id": id, "to": to, "body": {"text": id}});
    conn.send_text(&frame.to_string()).await.unwrap();
    loop {
        let incoming = tokio::time::timeout(WAIT, conn.recv())
            .await
            .expect("sent in time")
            .unwrap();
        if let Incoming::Frame(text, _) = incoming {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["op"] == "sent" {
                return value["mid"].as_u64().unwrap();
            }
        }
    }
}

pub(super) async fn pending(backend: &Backend) -> Value {
    backend.call(json!({"op": "webhooks"})).await.unwrap()["pending"].clone()
}

#[tokio::test]
async fn events_pending_at_kill_9_are_all_delivered_after_the_restart_none_twice() {
    let rx = Receiver::start(&[], 200).await;
    let dir = tempfile::tempdir().unwrap();
    let first = broker(dir.path(), &rx.url()).await;
    let backend = Backend::new(&format!("http://{}", first.addr), APP_TOKEN);
    let alice = backend
        .device_token("alice@example.com", "alice-phone", APPID)
        .await
        .unwrap();
    backend
        .device_token("bob@example.com", "bob-phone", APPID)
        .await
        .unwrap();
    let url = format!("ws://{}/ws", first.addr);
    let (mut conn, _) = client_login(&url, &alice.token, None).await;
    // One event the receiver takes (answered 2xx and deleted before the kill) ...
    let m0 = send(&mut conn, "m0", "bob@example.com").await;
    rx.delivered_at_least(1, WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while pending(&backend).await != json!(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "m0 never left the outbox"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // ... then the receiver goes down and five more wait in the outbox.
    rx.answer(503);
    let mut mids = Vec::new();
    for n in 1..=5 {
        mids.push(send(&mut conn, &format!("m{n}"), "bob@example.com").await);
    }
    // Attempts back off up to 1 s, then 2 s: one with all five comes within a few seconds.
    rx.wait_for(
        Duration::from_secs(10),
        "an attempt with all five",
        |hits| {
            hits.iter()
                .any(|h| h.status == 503 && h.events().len() == 5)
        },
    )
    .await;
    drop(conn);
    let mut first = first;
    first.kill(); // SIGKILL

    rx.answer(200);
    let _second = broker(dir.path(), &rx.url()).await;
    let events = rx.delivered_at_least(6, Duration::from_secs(15)).await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in ids(&events) {
        *counts.entry(id).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = std::iter::once(m0)
        .chain(mids.iter().copied())
        .map(|mid| (format!("msg-{mid}"), 1))
        .collect();
    assert_eq!(counts, expected, "each event delivered exactly once");
    // In seq order for bob.
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
}

/// The ```python block of proto/webhooks.md.
fn documented_receiver() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/webhooks.md");
    let text = std::fs::read_to_string(path).expect("proto/webhooks.md");
    let start = text.find("```python\n").expect("a ```python block") + "```python\n".len();
    let end = start + text[start..].find("```").expect("the block ends");
    text[start..end].to_string()
}

async fn next_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), lines.recv())
        .await
        .expect("a line from the receiver within 10 s")
        .expect("the receiver is running")
}

#[tokio::test]
async fn the_documented_python_receiver_verifies_real_requests() {
    let script = documented_receiver();
    assert!(
        script.lines().count() <= 25,
        "the receiver should stay short"
    );
    // Python 3 is on every machine this project runs on: its absence is a failure, not a skip.
    assert!(
        Command::new("python3").arg("--version").output().is_ok(),
        "python3 not found: the documented receiver cannot be run"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receiver.py");
    std::fs::write(&file, script).unwrap();
    let mut python = Proc {
        child: Command::new("python3")
            .arg(&file)
            .env("WEBHOOK_SECRET", SECRET)
            .env("PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    let stdout = python.child.stdout.take().unwrap();
    // Read on a thread, awaited here: a blocking wait would stall this test's runtime, which
    // also runs the broker.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let listening = next_line(&mut lines).await;
    let port: u16 = listening
        .strip_prefix("listening ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {listening:?}"));
    let url = format!("http://127.0.0.1:{port}/");

    // A forged request is refused.
    let forged = reqwest::Client::new()
        .post(&url)
        .header("X-Octet-Signature", "t=1,v1=00")
        .body(r#"{"events":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);

    let server =
        TestServer::start_with(|c| c.webhook = Some(WebhookConfig::new(url.clone(), SECRET))).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    server.device_token("bob@example.com", "bob-phone").await;
    let sent = alice
        .send_msg("c1", "bob@example.com", json!({"text": "hi"}))
        .await;
    assert_eq!(
        next_line(&mut lines).await,
        format!("message msg-{} bob@example.com", sent["mid"])
    );
    // It answered 2xx: the event left the outbox.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.backend(json!({"op": "webhooks"})).await["pending"] != json!(0) {
        assert!(tokio::time::Instant::now() < deadline, "never answered 2xx");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    drop(python);
}

#[test]
fn check_config_names_each_bad_webhook_setting() {
    for (text, says) in [
        (
            "webhook_url = \"http://127.0.0.1:9000/hooks\"\n",
            "webhook_secret: is required with webhook_url",
        ),
        (
            "webhook_url = \"ftp://example.com/hooks\"\nwebhook_secret = \"0123456789abcdef\"\n",
            "webhook_url: ftp://example.com/hooks is not an http URL",
        ),
        (
            "webhook_url = \"http://\"\nwebhook_secret = \"0123456789abcdef\"\n",
            "webhook_url: http:// is not an http URL",
        ),
        (
            "webhook_ca_file = \"/etc/octet/ca.pem\"\n",
            "webhook_ca_file: has no effect without webhook_url",
        ),
        (
            "webhook_url = \"http://127.0.0.1:9000/\"\nwebhook_secret = \"short\"\n",
            "webhook_secret: use at least 16 characters",
        ),
        (
            "webhook_secret = \"0123456789abcdef\"\n",
            "webhook_secret: has no effect without webhook_url",
        ),
        (
            "webhook_url = \"http://127.0.0.1:9000/\"\nwebhook_secret = \"0123456789abcdef\"\nwebhook_secret_file = \"/nonexistent\"\n",
            "webhook_secret: set either webhook_secret or webhook_secret_file, not both",
        ),
        (
            "webhook_url = \"http://127.0.0.1:9000/\"\nwebhook_secret_file = \"/nonexistent/octet-webhook-secret\"\n",
            "/nonexistent/octet-webhook-secret",
        ),
        (
            "push_grace = 5\n",
            "push_grace: has no effect without webhook_url",
        ),
        (
            "webhook_presence = true\n",
            "webhook_presence: has no effect without webhook_url",
        ),
        (
            "webhook_url = \"http://127.0.0.1:9000/\"\nwebhook_secret = \"0123456789abcdef\"\nwebhook_retry_hours = 0\n",
            "webhook_retry_hours: 0 is out of range",
        ),
        (
            "webhook_url = \"http://127.0.0.1:9000/\"\nwebhook_secret = \"0123456789abcdef\"\npush_grace = 4000\n",
            "push_grace: 4000 is out of range",
        ),
        (
            "webhook_url = \"http://127.0.0.1:9000/\"\nwebhook_secret = \"0123456789abcdef\"\nwebhook_max_pending = 0\n",
            "webhook_max_pending: 0 is out of range",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("octet.toml");
        std::fs::write(&file, text).unwrap();
        let out = crate::harness::check_config(&file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?} was accepted");
        assert!(
            stderr.contains(says),
            "{text:?}: expected {says:?} in {stderr}"
        );
    }
    // And complete ones are valid, the secret inline or in a file.
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, "  0123456789abcdef\n").unwrap();
    let file = dir.path().join("octet.toml");
    std::fs::write(
        &file,
        "webhook_url = \"http://127.0.0.1:9000/hooks\"\nwebhook_secret = \"0123456789abcdef\"\npush_grace = 0\nwebhook_include_body = true\nwebhook_presence = true\nwebhook_retry_hours = 48\nwebhook_max_pending = 5000\n",
    )
    .unwrap();
    let out = crate::harness::check_config(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        &file,
        format!(
            "webhook_url = \"http://127.0.0.1:9000/hooks\"\nwebhook_secret_file = {:?}\n",
            secret_file.display().to_string()
        ),
    )
    .unwrap();
    let out = crate::harness::check_config(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

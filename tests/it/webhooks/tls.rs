//! https:// receivers: trusted through `--webhook-ca-file` (the real binary), refused without
//! it (a failed attempt that names the certificate in the `webhooks` op's `retrying`, retried,
//! then dead; sends unaffected), and a CA file
//! that cannot be used refused at startup. The CA and the receiver's certificate are made at
//! test time (rcgen), so nothing in the repository expires.

use std::sync::Arc;
use std::time::Duration;

use octet::client::Backend;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::PrivateKeyDer;
use serde_json::json;

use super::durable::{pending, send};
use super::receiver::Receiver;
use super::{SECRET, assert_signed, ids, server};
use crate::harness::{APP_TOKEN, APPID, Broker, WAIT, client_login};

/// The `last_error` of an event the receiver's certificate was refused for: the CA is unknown.
const UNTRUSTED: &str = "certificate not trusted: 127.0.0.1's certificate is not issued by a public CA nor by one in --webhook-ca-file (add the CA with --webhook-ca-file)";

/// A private CA (its PEM) and a TLS server config for 127.0.0.1 and localhost signed by it.
fn private_pki() -> (String, Arc<rustls::ServerConfig>) {
    private_pki_for(&["127.0.0.1", "localhost"])
}

/// [`private_pki`] with a server certificate naming only `names`.
fn private_pki_for(names: &[&str]) -> (String, Arc<rustls::ServerConfig>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "octet test private CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut leaf = CertificateParams::new(names).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "octet test receiver");
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), Arc::new(config))
}

#[tokio::test]
async fn an_https_receiver_signed_by_the_ca_file_gets_one_signed_event() {
    let (ca_pem, tls) = private_pki();
    let rx = Receiver::start_tls(&[], 200, tls).await;
    assert!(rx.url().starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("private-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let url = rx.url();
    let ca = ca_file.display().to_string();
    let broker = Broker::start_with(
        &dir.path().join("data"),
        "127.0.0.1:0".parse().unwrap(),
        &[
            "--webhook-url",
            &url,
            "--webhook-secret",
            SECRET,
            "--webhook-ca-file",
            &ca,
        ],
    )
    .await;
    let backend = Backend::new(&format!("http://{}", broker.addr), APP_TOKEN);
    let alice = backend
        .device_token("alice@example.com", "alice-phone", APPID)
        .await
        .unwrap();
    backend
        .device_token("bob@example.com", "bob-phone", APPID)
        .await
        .unwrap();
    let (mut conn, _) = client_login(&broker.ws(), &alice.token, None).await;
    // Bob has no live device: the message is pushed at once.
    let mid = send(&mut conn, "m1", "bob@example.com").await;
    rx.delivered_at_least(1, WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while pending(&backend).await != json!(0) {
        assert!(tokio::time::Instant::now() < deadline, "never answered 2xx");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let hits = rx.hits();
    assert_eq!(hits.len(), 1, "exactly one request");
    assert_signed(&hits[0]);
    let events = hits[0].events();
    assert_eq!(ids(&events), vec![format!("msg-{mid}")]);
    assert_eq!(events[0]["type"], json!("message"));
    assert_eq!(events[0]["user"]["address"], json!("bob@example.com"));
    assert_eq!(rx.handshakes_failed(), 0);
}

#[tokio::test]
async fn without_the_ca_file_the_event_waits_and_names_the_certificate() {
    let (_, tls) = private_pki();
    let rx = Receiver::start_tls(&[], 200, tls).await;
    // A short retry window, so the refused event is dead-lettered (and its last error shown)
    // within the test.
    let server = server(&rx, |w| w.retry_window = Duration::from_secs(2)).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    server.device_token("bob@example.com", "bob-phone").await;
    let first = alice
        .send_msg("c1", "bob@example.com", json!({"text": "one"}))
        .await;
    assert!(first["mid"].is_u64(), "{first}");
    // The broker reached the receiver and refused its certificate: the event waits.
    let deadline = tokio::time::Instant::now() + WAIT;
    while rx.handshakes_failed() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never tried");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The op says why while the event waits, long before it could be dead (the attempt is
    // recorded just after the handshake fails).
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        let status = server.backend(json!({"op": "webhooks"})).await;
        if status.get("retrying").is_some() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never retrying: {status}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(status["pending"], json!(1), "{status}");
    assert_eq!(status["dead"], json!([]), "{status}");
    let retrying = &status["retrying"];
    assert_eq!(retrying["event"], json!(format!("msg-{}", first["mid"])));
    assert_eq!(retrying["last_error"], json!(UNTRUSTED), "{status}");
    assert!(retrying["attempts"].as_u64().unwrap() >= 1, "{status}");
    assert!(retrying["next_attempt"].is_u64(), "{status}");
    // Sends go on while the receiver is refused.
    let second = alice
        .send_msg("c2", "bob@example.com", json!({"text": "two"}))
        .await;
    assert!(second["mid"].is_u64(), "{second}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = server.backend(json!({"op": "webhooks"})).await;
        if status["dead"].as_array().is_some_and(|d| d.len() == 2) {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for dead in status["dead"].as_array().unwrap() {
        assert_eq!(dead["last_error"], json!(UNTRUSTED), "{status}");
    }
    assert!(rx.hits().is_empty(), "nothing was delivered");
    // Bob's phone still gets both messages when it connects.
    let bob = server.device_token("bob@example.com", "bob-phone").await;
    let token = bob["user"]["token"].as_str().unwrap();
    let mut phone = server.login_since(token, Some(0), None).await;
    phone.expect("welcome").await;
    let one = phone.expect("message").await;
    let two = phone.expect("message").await;
    assert_eq!(
        (&one["body"]["text"], &two["body"]["text"]),
        (&json!("one"), &json!("two"))
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_and_says_so() {
    // Trusted CA, but the receiver's certificate names only localhost; the URL says 127.0.0.1.
    let (ca_pem, tls) = private_pki_for(&["localhost"]);
    let rx = Receiver::start_tls(&[], 200, tls).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let ca_certs = octet::webhooks::tls::load_ca_file(&ca_file).unwrap();
    let server = server(&rx, |w| w.ca_certs = ca_certs).await;
    let mut alice = server.device("alice@example.com", "alice-phone").await;
    server.device_token("bob@example.com", "bob-phone").await;
    alice
        .send_msg("c1", "bob@example.com", json!({"text": "one"}))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let retrying = loop {
        let status = server.backend(json!({"op": "webhooks"})).await;
        if let Some(retrying) = status.get("retrying") {
            break retrying.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never retrying: {status}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let error = retrying["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("certificate not valid for 127.0.0.1: ")
            && error.contains("localhost")
            && error.ends_with("use a URL with a name the certificate lists"),
        "{error}"
    );
    assert!(rx.hits().is_empty());
}

/// `octet <args>` with nothing from the test runner's environment.
fn octet(args: &[&str]) -> std::process::Output {
    crate::harness::octet_command().args(args).output().unwrap()
}

/// Runs `octet <args>` for at most 10 s: whether it exited with a failure, and its stderr.
/// A broker that starts is killed (and counts as not refused) rather than hanging the test.
fn serve(args: &[&str]) -> (bool, String) {
    let mut child = crate::harness::octet_command()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break !status.success();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (refused, stderr)
}

#[test]
fn a_ca_file_that_cannot_be_used_stops_the_broker_at_startup() {
    let (ca_pem, _) = private_pki();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(path("ca.pem"), &ca_pem).unwrap();
    std::fs::write(
        path("key.pem"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    std::fs::write(path("text.pem"), "this is not a certificate\n").unwrap();
    let url = "https://hooks.example.com/octet";
    let config = |extra: &str| {
        let file = path("octet.toml");
        std::fs::write(
            &file,
            format!("webhook_url = \"{url}\"\nwebhook_secret = \"0123456789abcdef\"\n{extra}"),
        )
        .unwrap();
        octet(&["check-config", &file])
    };
    for (ca, says) in [
        (
            path("missing.pem"),
            format!("webhook_ca_file: {} cannot be read", path("missing.pem")),
        ),
        (
            path("key.pem"),
            format!("webhook_ca_file: {} holds no certificate", path("key.pem")),
        ),
        (
            path("text.pem"),
            format!("webhook_ca_file: {} holds no certificate", path("text.pem")),
        ),
    ] {
        let out = config(&format!("webhook_ca_file = {ca:?}\n"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{ca} was accepted");
        assert!(stderr.contains(&says), "expected {says:?} in {stderr}");
        // `serve` refuses the same file before it listens.
        let data = path("data");
        let (refused, stderr) = serve(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--webhook-url",
            url,
            "--webhook-secret",
            "0123456789abcdef",
            "--webhook-ca-file",
            &ca,
        ]);
        assert!(refused, "serve started with {ca}");
        assert!(stderr.contains(&says), "expected {says:?} in {stderr}");
    }
    // A CA file with an http:// receiver, or without any, does nothing: refused too.
    let out = config(&format!("webhook_ca_file = {:?}\n", path("ca.pem")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        path("octet.toml"),
        format!(
            "webhook_url = \"http://127.0.0.1:9000/\"\nwebhook_secret = \"0123456789abcdef\"\nwebhook_ca_file = {:?}\n",
            path("ca.pem")
        ),
    )
    .unwrap();
    let out = octet(&["check-config", &path("octet.toml")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("webhook_ca_file: has no effect with the http:// webhook_url"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

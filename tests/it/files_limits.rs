//! Files under abuse: the per-person upload quota, upload rate and concurrency, dedupe that
//! says nothing about other persons' files, the token's appid binding, and uploads under
//! `--sync full`.

use std::io::{Read, Write};

use octet::config::SyncMode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::files::{
    count, get, get_with, png, stored, until, upload, upload_dir_entries, upload_ok,
};
use crate::harness::{APPID, TestServer, WAIT};

/// Everything a refused upload must not change: every table's rows (the harness snapshot plus
/// the files' tables), the stored bytes and the upload dir.
fn everything(server: &TestServer) -> (Vec<String>, i64, i64, usize, usize) {
    (
        server.snapshot(),
        count(server, "files"),
        count(server, "blobs"),
        stored(server).len(),
        upload_dir_entries(server),
    )
}

/// Bytes no other test uploads (distinct per `seed`).
fn noise(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// `POST /files` with a chunked body of `total` bytes (no `Content-Length`, so the broker
/// learns the size only while streaming); returns the raw HTTP answer.
async fn upload_chunked(server: &TestServer, token: &str, total: usize) -> String {
    let addr = server.addr;
    let token = token.to_string();
    tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            socket,
            "POST /files?name=s.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut left = total;
        while left > 0 {
            let n = left.min(0x2000);
            if write!(socket, "{n:x}\r\n").is_err() || socket.write_all(&vec![5u8; n]).is_err() {
                break;
            }
            let _ = write!(socket, "\r\n");
            left -= n;
        }
        let _ = write!(socket, "0\r\n\r\n");
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap()
}

fn refused(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(
        (answer.0, answer.1["error"].as_str()),
        (status, Some(code)),
        "{}",
        answer.1
    );
    assert!(
        !answer.1["message"].as_str().unwrap_or_default().is_empty(),
        "{}",
        answer.1
    );
}

#[tokio::test]
async fn the_upload_quota_counts_every_upload_of_a_person_and_refuses_without_storing() {
    let server = TestServer::start_with(|c| c.upload_quota_bytes = 100_000).await;
    let addr = server.addr.to_string();
    let alice = server.device("alice@example.com", "phone").await;
    let bob = server.device("bob@example.com", "b").await;
    // A second device of alice's person.
    let linked = server
        .backend(serde_json::json!({"op":"useradd","user":{"address":"alice-tab@example.com","token":{"appid":APPID,"expiry":60,"device":"tab","linkto":"alice@example.com"}}}))
        .await;
    assert_eq!(linked["result"], true, "{linked}");
    let tablet = linked["user"]["token"].as_str().unwrap().to_string();

    let x = noise(60_000, 1);
    upload_ok(&server, &alice.token, x.clone(), "x.bin").await;
    let before = everything(&server);

    // Declared too large for what is left: refused before the body is stored.
    let answer = upload(&addr, &alice.token, noise(50_000, 2), "y.bin").await;
    refused(&answer, 413, "quota_exceeded");
    assert!(
        answer.1["message"]
            .as_str()
            .unwrap()
            .contains("--upload-quota-mib")
    );
    // The same from the person's other device: the quota is the person's.
    let answer = upload(&addr, &tablet, noise(50_000, 2), "y.bin").await;
    refused(&answer, 413, "quota_exceeded");
    // Streamed without a length: refused once the bytes pass what is left.
    let raw = upload_chunked(&server, &alice.token, 50_000).await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("quota_exceeded"), "{raw}");
    // Bytes already stored count too (a dedupe hit is an upload like any other).
    let answer = upload(&addr, &alice.token, x.clone(), "x-again.bin").await;
    refused(&answer, 413, "quota_exceeded");
    until("a refused upload left its bytes", || {
        upload_dir_entries(&server) == 0
    })
    .await;
    assert_eq!(
        everything(&server),
        before,
        "a refused upload changed something"
    );

    // Up to the quota exactly is fine; then not one byte more.
    upload_ok(&server, &tablet, noise(40_000, 3), "z.bin").await;
    let full = everything(&server);
    let answer = upload(&addr, &alice.token, vec![1], "one.bin").await;
    refused(&answer, 413, "quota_exceeded");
    assert_eq!(everything(&server), full);

    // Another person has a quota of its own.
    upload_ok(&server, &bob.token, noise(60_000, 4), "b.bin").await;
}

#[tokio::test]
async fn uploads_are_rate_limited_per_person_with_retry_after() {
    let server = TestServer::start_with(|c| c.upload_rate = 2).await;
    let alice = server.device("alice@example.com", "a").await;
    let bob = server.device("bob@example.com", "b").await;
    upload_ok(&server, &alice.token, noise(1000, 1), "1.bin").await;
    upload_ok(&server, &alice.token, noise(1000, 2), "2.bin").await;
    let before = everything(&server);
    let response = reqwest::Client::new()
        .post(server.http_url("/files?name=3.bin"))
        .bearer_auth(&alice.token)
        .body(noise(1000, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    until("a refused upload left its bytes", || {
        upload_dir_entries(&server) == 0
    })
    .await;
    assert_eq!(everything(&server), before);
    // Bob is not slowed down by alice.
    upload_ok(&server, &bob.token, noise(1000, 4), "b.bin").await;
}

#[tokio::test]
async fn a_person_has_a_limited_number_of_uploads_in_progress() {
    let server = TestServer::start_with(|c| c.upload_concurrency = 1).await;
    let addr = server.addr.to_string();
    let alice = server.device("alice@example.com", "a").await;
    let bob = server.device("bob@example.com", "b").await;
    // One upload under way, its body half sent.
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /files?name=slow.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n",
        alice.token
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&noise(50_000, 1)).await.unwrap();
    until("the first upload never started", || {
        upload_dir_entries(&server) == 1
    })
    .await;
    let before = (count(&server, "files"), stored(&server).len());
    let answer = upload(&addr, &alice.token, noise(1000, 2), "2.bin").await;
    refused(&answer, 429, "rate_limited");
    assert!(
        answer.1["message"]
            .as_str()
            .unwrap()
            .contains("in progress")
    );
    assert_eq!((count(&server, "files"), stored(&server).len()), before);
    // Another person is not held up.
    upload_ok(&server, &bob.token, noise(1000, 3), "b.bin").await;
    // The first upload ends: alice may upload again.
    socket.write_all(&noise(50_000, 4)).await.unwrap();
    let mut answer = vec![0u8; 12];
    tokio::time::timeout(WAIT, socket.read_exact(&mut answer))
        .await
        .expect("the first upload is answered in time")
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    upload_ok(&server, &alice.token, noise(1000, 5), "3.bin").await;
}

/// Dedupe is per person: bytes another person stored take the whole path of new bytes (the
/// image is decoded again), so an upload learns nothing about other persons' files; only the
/// person's own earlier upload is reused. The disk keeps one copy either way.
#[tokio::test]
async fn dedupe_does_not_reveal_another_persons_files() {
    let server = TestServer::start().await;
    let alice = server.device("alice@example.com", "a").await;
    let bob = server.device("bob@example.com", "b").await;
    let picture = png(200, 100, false);
    let previews = || server.state.metrics.file_previews.get();
    let first = upload_ok(&server, &alice.token, picture.clone(), "a.png").await;
    assert_eq!(previews(), 1);
    let second = upload_ok(&server, &bob.token, picture.clone(), "b.png").await;
    assert_eq!(previews(), 2, "bob's upload reused alice's blob");
    let again = upload_ok(&server, &alice.token, picture.clone(), "c.png").await;
    assert_eq!(previews(), 2, "alice's own bytes were decoded again");
    for file in [&second, &again] {
        for key in ["sha256", "size", "width", "height", "blurhash"] {
            assert_eq!(file[key], first[key], "{key}");
        }
        for key in ["size", "width", "height", "type"] {
            assert_eq!(file["thumb"][key], first["thumb"][key], "thumb {key}");
        }
    }
    assert_eq!(count(&server, "files"), 3);
    assert_eq!(count(&server, "blobs"), 1);
    assert_eq!(
        stored(&server).len(),
        2,
        "one copy of the bytes and one preview"
    );
    let thumb = get(
        &server,
        &format!("/files/{}/thumb", second["id"].as_str().unwrap()),
        Some(&bob.token),
    )
    .await;
    assert_eq!(thumb.status().as_u16(), 200);
}

#[tokio::test]
async fn an_appid_header_must_name_the_tokens_appid() {
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let alice = server.device("alice@example.com", "a").await;
    let before = everything(&server);
    for appid in ["com.other.app", " "] {
        let response = reqwest::Client::new()
            .post(server.http_url("/files?name=x.bin"))
            .bearer_auth(&alice.token)
            .header("Octet-Appid", appid)
            .body(noise(1000, 1))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "appid {appid:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "auth_failed", "{body}");
        assert!(body["message"].as_str().unwrap().contains("Octet-Appid"));
    }
    assert_eq!(everything(&server), before);
    let response = reqwest::Client::new()
        .post(server.http_url("/files?name=x.bin"))
        .bearer_auth(&alice.token)
        .header("Octet-Appid", APPID)
        .body(noise(1000, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let file: Value = response.json().await.unwrap();
    let path = format!("/files/{}", file["file"]["id"].as_str().unwrap());
    // A download with the wrong appid learns nothing: the same 404 as for a stranger.
    let wrong = get_with(
        &server,
        &path,
        Some(&alice.token),
        &[("Octet-Appid", "com.other.app")],
    )
    .await;
    assert_eq!(wrong.status().as_u16(), 404);
    let right = get_with(
        &server,
        &path,
        Some(&alice.token),
        &[("Octet-Appid", APPID)],
    )
    .await;
    assert_eq!(right.status().as_u16(), 200);
    // Without the header the token alone decides (see proto/files.md).
    let (status, _) = upload(&addr, &alice.token, noise(1000, 2), "y.bin").await;
    assert_eq!(status, 200);
}

/// `--sync full`: the upload is moved into place with the files and directories fsynced (the
/// power-loss half cannot be shown here; this runs that path and reads the result back after a
/// restart).
#[tokio::test]
async fn a_full_sync_upload_is_in_place_after_a_restart() {
    let server = TestServer::start_with(|c| c.sync = SyncMode::Full).await;
    let alice = server.device("alice@example.com", "a").await;
    let picture = png(64, 64, true);
    let file = upload_ok(&server, &alice.token, picture.clone(), "p.png").await;
    let token = alice.token.clone();
    drop(alice);
    let server = server.restart().await;
    let id = file["id"].as_str().unwrap();
    let data = get(&server, &format!("/files/{id}"), Some(&token)).await;
    assert_eq!(data.status().as_u16(), 200);
    assert_eq!(data.bytes().await.unwrap().as_ref(), &picture[..]);
    let thumb = get(&server, &format!("/files/{id}/thumb"), Some(&token)).await;
    assert_eq!(thumb.status().as_u16(), 200);
}

/// Two uploads of one person running at once both pass the check made before their bodies
/// arrive; the one recorded second is refused by the check in the store's transaction.
#[tokio::test]
async fn uploads_running_at_once_cannot_pass_the_quota_together() {
    let server = TestServer::start_with(|c| c.upload_quota_bytes = 100_000).await;
    let alice = server.device("alice@example.com", "a").await;
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /files?name=first.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 60000\r\nConnection: close\r\n\r\n",
        alice.token
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&noise(30_000, 1)).await.unwrap();
    until("the first upload never started", || {
        upload_dir_entries(&server) == 1
    })
    .await;
    upload_ok(&server, &alice.token, noise(60_000, 2), "second.bin").await;
    // As now, once the first upload's partial file is gone.
    let mut before = everything(&server);
    before.4 = 0;
    before.0.retain(|row| !row.starts_with("files/tmp/"));
    socket.write_all(&noise(30_000, 3)).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, socket.read_to_string(&mut answer))
        .await
        .expect("the first upload is answered in time")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("quota_exceeded"), "{answer}");
    until("a refused upload left its bytes", || {
        upload_dir_entries(&server) == 0
    })
    .await;
    assert_eq!(everything(&server), before);
}

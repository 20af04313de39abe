//! Files: upload, attachments on every device (live, catch-up, history, a new device),
//! authorized downloads, Range/ETag, signed URLs, previews, hostile images, limits and pruning.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Broker, Device, TestServer, WAIT};

/// A PNG of `w`×`h` with a gradient (and transparency when `alpha`).
pub fn png(w: u32, h: u32, alpha: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let picture: image::DynamicImage = if alpha {
        image::RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([x as u8, y as u8, 90, (x % 255) as u8])
        })
        .into()
    } else {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 90])).into()
    };
    picture
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A JPEG of `w`×`h`.
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::DynamicImage::from(image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x / 4) as u8, (y / 4) as u8, 200])
    }))
    .write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    out
}

/// `POST /files?name=…` with the bytes as the body.
pub async fn upload(server_addr: &str, token: &str, bytes: Vec<u8>, name: &str) -> (u16, Value) {
    let name = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    let response = reqwest::Client::new()
        .post(format!("http://{server_addr}/files?name={name}"))
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .expect("upload answered");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

pub async fn upload_ok(server: &TestServer, token: &str, bytes: Vec<u8>, name: &str) -> Value {
    let (status, answer) = upload(&server.addr.to_string(), token, bytes, name).await;
    assert_eq!(status, 200, "upload refused: {answer}");
    assert_eq!(answer["result"], true);
    answer["file"].clone()
}

pub async fn get(server: &TestServer, path: &str, token: Option<&str>) -> reqwest::Response {
    get_with(server, path, token, &[]).await
}

pub async fn get_with(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(server.http_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("download answered")
}

/// Every stored blob and preview on disk (not the upload dir).
pub fn stored(server: &TestServer) -> Vec<PathBuf> {
    let root = server.state.config.data_dir.join("files");
    let mut found = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if dir.file_name().unwrap() == "tmp" {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            found.push(file.unwrap().path());
        }
    }
    found.sort();
    found
}

pub fn upload_dir_entries(server: &TestServer) -> usize {
    std::fs::read_dir(server.state.config.data_dir.join("files/tmp"))
        .unwrap()
        .count()
}

pub fn count(server: &TestServer, table: &str) -> i64 {
    let db = rusqlite::Connection::open(server.state.config.data_dir.join("octet.db")).unwrap();
    db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Waits (at most [`WAIT`]) until `done`; fails with `what` otherwise.
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send_files(dev: &mut Device, id: &str, to: &str, files: &[&Value], body: Option<Value>) {
    let mut frame = json!({"op":"send","id":id,"to":to,"files":files.iter().map(|f| f["id"].clone()).collect::<Vec<_>>()});
    if let Some(body) = body {
        frame["body"] = body;
    }
    dev.send_json(frame).await;
}

#[tokio::test]
async fn a_photo_reaches_every_device_of_both_persons_with_its_preview() {
    let server = TestServer::start().await;
    let mut a1 = server.device("alice@example.com", "phone").await;
    let mut a2 = server.device("alice@example.com", "laptop").await;
    let mut b1 = server.device("bob@example.com", "phone").await;
    let mut b2 = server.device("bob@example.com", "tablet").await;

    let photo = upload_ok(&server, &a1.token, png(640, 480, false), "beach.png").await;
    assert_eq!(photo["type"], "image/png");
    assert_eq!(photo["name"], "beach.png");
    assert_eq!(
        (photo["width"].clone(), photo["height"].clone()),
        (json!(640), json!(480))
    );
    assert_eq!(photo["thumb"]["width"], 320);
    assert_eq!(photo["thumb"]["height"], 240);
    assert!(photo["blurhash"].as_str().unwrap().len() >= 6, "{photo}");
    let id = photo["id"].as_str().unwrap().to_string();
    assert_eq!(photo["url"], format!("/files/{id}"));

    send_files(
        &mut a1,
        "p1",
        "bob@example.com",
        &[&photo],
        Some(json!({"caption":"sunset"})),
    )
    .await;
    let sent = a1.expect("sent").await;
    assert_eq!(sent["id"], "p1");
    for dev in [&mut a2, &mut b1, &mut b2] {
        let message = dev.expect("message").await;
        assert_eq!(message["files"], json!([photo.clone()]), "{message}");
        assert_eq!(message["body"], json!({"caption":"sunset"}));
    }
    // A message of files alone needs no body.
    send_files(&mut a1, "p2", "bob@example.com", &[&photo], None).await;
    a1.expect("sent").await;
    let message = b1.expect("message").await;
    assert_eq!(message["body"], Value::Null);
    assert_eq!(message["files"][0]["id"], json!(id));

    // Every device of both persons downloads the same bytes.
    let bytes = png(640, 480, false);
    for dev in [&a1, &a2, &b1, &b2] {
        let response = get(&server, &format!("/files/{id}"), Some(&dev.token)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "image/png");
        assert_eq!(
            response.headers()["content-length"],
            bytes.len().to_string().as_str()
        );
        assert_eq!(
            response.headers()["content-disposition"],
            "inline; filename=\"beach.png\"; filename*=UTF-8''beach.png"
        );
        assert_eq!(response.bytes().await.unwrap().as_ref(), &bytes[..]);
        let thumb = get(&server, &format!("/files/{id}/thumb"), Some(&dev.token)).await;
        assert_eq!(thumb.status(), 200);
        assert_eq!(thumb.headers()["content-type"], "image/jpeg");
        let preview = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
        assert_eq!((preview.width(), preview.height()), (320, 240));
    }
}

#[tokio::test]
async fn offline_and_newly_linked_devices_see_attachments_on_catch_up_and_history() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let b1 = server.device("bob@example.com", "b1").await;
    let (token, bob_person) = (b1.token.clone(), b1.uid);
    b1.conn.close().await.unwrap();

    let doc = upload_ok(&server, &alice.token, b"%PDF-1.7\n...".to_vec(), "menu.pdf").await;
    assert_eq!(doc["type"], "application/pdf");
    assert!(
        doc.get("thumb").is_none() && doc.get("width").is_none(),
        "{doc}"
    );
    send_files(
        &mut alice,
        "d1",
        "bob@example.com",
        &[&doc],
        Some(json!("tonight?")),
    )
    .await;
    alice.expect("sent").await;

    // The device that was away catches up with the attachment.
    let mut b1 = server
        .login_since(&token, Some(0), Some(&server.epoch(bob_person).await))
        .await;
    b1.expect("welcome").await;
    let replayed = b1.expect("message").await;
    assert_eq!(replayed["files"], json!([doc.clone()]));
    b1.expect("synced").await;

    // A device linked afterwards finds it in history, and may download it.
    let mut b3 = server.device("bob@example.com", "new-laptop").await;
    b3.send_json(json!({"op":"history"})).await;
    let page = b3.expect("history").await;
    let event = &page["events"][0];
    assert_eq!(event["files"], json!([doc.clone()]), "{page}");
    let response = get(&server, doc["url"].as_str().unwrap(), Some(&b3.token)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"%PDF-1.7\n...");
}

#[tokio::test]
async fn only_the_persons_of_the_conversation_may_download() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a").await;
    let bob = server.device("bob@example.com", "b").await;
    let carol = server.device("carol@example.com", "c").await;
    let file = upload_ok(&server, &alice.token, b"secret plans".to_vec(), "plans.txt").await;
    let url = file["url"].as_str().unwrap().to_string();

    // Before it is sent: the uploader only.
    assert_eq!(get(&server, &url, Some(&alice.token)).await.status(), 200);
    assert_eq!(get(&server, &url, Some(&bob.token)).await.status(), 404);

    send_files(&mut alice, "s1", "bob@example.com", &[&file], None).await;
    alice.expect("sent").await;
    assert_eq!(get(&server, &url, Some(&bob.token)).await.status(), 200);

    // A stranger, a missing file and a revoked token all get the same 404.
    let stranger = get(&server, &url, Some(&carol.token)).await;
    assert_eq!(stranger.status(), 404);
    let body: Value = stranger.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert_eq!(
        get(&server, "/files/f_0000", Some(&bob.token))
            .await
            .status(),
        404
    );
    let thumb = get(&server, &format!("{url}/thumb"), Some(&bob.token)).await;
    assert_eq!(thumb.status(), 404, "a text file has no preview");
    let revoked = server
        .backend(json!({"op":"tokendel","user":{"address":bob.address}}))
        .await;
    assert_eq!(revoked["result"], true, "{revoked}");
    assert_eq!(get(&server, &url, Some(&bob.token)).await.status(), 404);
    // No token at all: told how to authenticate.
    let anonymous = get(&server, &url, None).await;
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"], "auth_failed");
    assert!(
        body["message"].as_str().unwrap().contains("Bearer"),
        "{body}"
    );
}

#[tokio::test]
async fn attaching_a_file_the_person_may_not_use_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let alice = server.device("alice@example.com", "a").await;
    let mut carol = server.device("carol@example.com", "c").await;
    server.device_token("bob@example.com", "b").await;
    let file = upload_ok(&server, &alice.token, b"mine".to_vec(), "a.txt").await;
    let own = upload_ok(&server, &carol.token, b"carol's".to_vec(), "c.txt").await;
    let before = server.snapshot();

    send_files(&mut carol, "x1", "bob@example.com", &[&own, &file], None).await;
    let error = carol.expect("error").await;
    assert_eq!(error["code"], "no_such_file");
    assert_eq!(error["id"], "x1");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(file["id"].as_str().unwrap())
    );

    carol
        .send_json(json!({"op":"send","id":"x2","to":"bob@example.com","files":["f_nope"]}))
        .await;
    assert_eq!(carol.expect("error").await["code"], "no_such_file");
    let many: Vec<&Value> = std::iter::repeat_n(&own, 17).collect();
    send_files(&mut carol, "x3", "bob@example.com", &many, None).await;
    assert_eq!(carol.expect("error").await["code"], "bad_value");
    carol
        .send_json(json!({"op":"send","id":"x4","to":"bob@example.com"}))
        .await;
    let missing = carol.expect("error").await;
    assert_eq!(missing["code"], "missing_field");
    assert!(
        missing["message"].as_str().unwrap().contains("files"),
        "{missing}"
    );
    assert_eq!(server.snapshot(), before);
    assert_eq!(count(&server, "message_files"), 0);

    // A retry must carry the same files.
    send_files(&mut carol, "y1", "bob@example.com", &[&own], None).await;
    carol.expect("sent").await;
    carol
        .send_json(json!({"op":"send","id":"y1","to":"bob@example.com","files":[]}))
        .await;
    assert_eq!(carol.expect("error").await["code"], "missing_field");
    carol
        .send_json(json!({"op":"send","id":"y1","to":"bob@example.com","body":null,"files":[]}))
        .await;
    assert_eq!(carol.expect("error").await["code"], "duplicate_id");
    send_files(&mut carol, "y1", "bob@example.com", &[&own], None).await;
    assert_eq!(
        carol.expect("sent").await["mid"],
        1,
        "a true retry is answered again"
    );
}

#[tokio::test]
async fn the_same_bytes_uploaded_twice_are_stored_once() {
    let server = TestServer::start().await;
    let alice = server.device("alice@example.com", "a").await;
    let bob = server.device("bob@example.com", "b").await;
    let first = upload_ok(&server, &alice.token, jpeg(200, 100), "one.jpg").await;
    let second = upload_ok(&server, &bob.token, jpeg(200, 100), "two.jpg").await;
    assert_ne!(first["id"], second["id"]);
    assert_eq!(first["sha256"], second["sha256"]);
    assert_eq!(second["name"], "two.jpg");
    for key in ["width", "height", "size", "type"] {
        assert_eq!(
            first["thumb"][key], second["thumb"][key],
            "the preview is made once"
        );
    }
    let sha = first["sha256"].as_str().unwrap();
    let on_disk: Vec<String> = stored(&server)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_disk, vec![sha.to_string(), format!("{sha}.thumb")]);
    assert_eq!(count(&server, "blobs"), 1);
    assert_eq!(count(&server, "files"), 2);
    assert_eq!(upload_dir_entries(&server), 0);
}

#[tokio::test]
async fn uploads_over_the_limit_or_without_a_token_are_refused_and_leave_nothing() {
    let server = TestServer::start_with(|c| c.max_file_bytes = 64 * 1024).await;
    let alice = server.device("alice@example.com", "a").await;
    let addr = server.addr.to_string();
    let (status, answer) = upload(&addr, &alice.token, vec![7u8; 64 * 1024 + 1], "big.bin").await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"], "file_too_large");
    assert!(
        answer["message"].as_str().unwrap().contains("65536"),
        "{answer}"
    );

    // Without a declared length (chunked), the limit holds while streaming.
    // Blocking socket work off the runtime's thread, which also runs the broker.
    let (socket_addr, token) = (server.addr, alice.token.clone());
    let answer = tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(socket_addr).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        // Read while writing: the answer comes before the body ends, and the broker then closes.
        let reader = std::thread::spawn({
            let mut socket = socket.try_clone().unwrap();
            move || {
                let mut answer = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = socket.read(&mut buf) {
                    answer.extend_from_slice(&buf[..n]);
                }
                String::from_utf8_lossy(&answer).into_owned()
            }
        });
        write!(
            socket,
            "POST /files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
            token
        )
        .unwrap();
        for _ in 0..20 {
            if write!(socket, "2000\r\n").is_err() || socket.write_all(&[1u8; 0x2000]).is_err() {
                break;
            }
            let _ = write!(socket, "\r\n");
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = write!(socket, "0\r\n\r\n");
        reader.join().unwrap()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "answer: {answer:?}");
    assert!(answer.contains("file_too_large"), "{answer}");

    let (status, answer) = upload(&addr, "octu_not-a-token", b"x".to_vec(), "x").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("auth_failed"))
    );
    let (status, answer) = upload(&addr, &alice.token, Vec::new(), "empty").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("bad_request"))
    );

    // Exactly the limit is fine.
    upload_ok(&server, &alice.token, vec![7u8; 64 * 1024], "edge.bin").await;
    assert_eq!(count(&server, "files"), 1);
    assert_eq!(stored(&server).len(), 1);
    until("a refused upload left its bytes", || {
        upload_dir_entries(&server) == 0
    })
    .await;
}

#[tokio::test]
async fn an_interrupted_upload_leaves_nothing_behind() {
    let server = TestServer::start().await;
    let alice = server.device("alice@example.com", "a").await;
    let mut socket = std::net::TcpStream::connect(server.addr).unwrap();
    write!(
        socket,
        "POST /files?name=half.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 1000000\r\n\r\n",
        alice.token
    )
    .unwrap();
    socket.write_all(&vec![3u8; 100_000]).unwrap();
    socket.flush().unwrap();
    // The upload is under way: its partial file exists.
    until("the upload never started", || {
        upload_dir_entries(&server) > 0
    })
    .await;
    drop(socket);
    until("the partial upload was left behind", || {
        upload_dir_entries(&server) == 0
    })
    .await;
    assert_eq!(count(&server, "files"), 0);
    assert_eq!(count(&server, "blobs"), 0);
    assert!(stored(&server).is_empty());
}

#[tokio::test]
async fn multipart_uploads_take_the_file_field_and_its_name() {
    let server = TestServer::start().await;
    let alice = server.device("alice@example.com", "a").await;
    let boundary = "octet-test-boundary";
    let mut body = Vec::new();
    write!(
        body,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"caption\"\r\n\r\nhello\r\n"
    )
    .unwrap();
    write!(body, "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\nContent-Type: text/plain\r\n\r\n").unwrap();
    body.extend_from_slice(&jpeg(64, 48));
    // A field after the file is read too (browsers send form fields in page order).
    write!(
        body,
        "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"after\"\r\n\r\n{}\r\n",
        "y".repeat(10_000)
    )
    .unwrap();
    write!(body, "--{boundary}--\r\n").unwrap();
    let response = reqwest::Client::new()
        .post(server.http_url("/files"))
        .bearer_auth(&alice.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    // The type comes from the bytes, not from the part's Content-Type.
    assert_eq!(answer["file"]["type"], "image/jpeg");
    assert_eq!(answer["file"]["name"], "photo.jpg");
    assert_eq!(answer["file"]["width"], 64);
    assert_eq!(answer["file"]["size"], jpeg(64, 48).len());
}

#[tokio::test]
async fn ranges_and_etags_let_clients_resume_and_cache() {
    let server = TestServer::start().await;
    let alice = server.device("alice@example.com", "a").await;
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let file = upload_ok(&server, &alice.token, data.clone(), "data.bin").await;
    let url = file["url"].as_str().unwrap();
    let token = Some(alice.token.as_str());

    let whole = get(&server, url, token).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.headers()["content-type"], "application/octet-stream");
    assert!(
        whole.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"data.bin\"")
    );
    let etag = whole.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", file["sha256"].as_str().unwrap()));

    let part = get_with(&server, url, token, &[("range", "bytes=100-199")]).await;
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 100-199/10000");
    assert_eq!(part.headers()["content-length"], "100");
    assert_eq!(part.bytes().await.unwrap().as_ref(), &data[100..200]);

    let tail = get_with(&server, url, token, &[("range", "bytes=-10")]).await;
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &data[9_990..]);
    let open_ended = get_with(&server, url, token, &[("range", "bytes=9000-")]).await;
    assert_eq!(open_ended.bytes().await.unwrap().as_ref(), &data[9_000..]);

    let past = get_with(&server, url, token, &[("range", "bytes=20000-")]).await;
    assert_eq!(past.status(), 416);
    assert_eq!(past.headers()["content-range"], "bytes */10000");
    let body: Value = past.json().await.unwrap();
    assert_eq!(body["error"], "range_not_satisfiable");

    // A stale copy (If-Range with another tag) gets the whole file.
    let stale = get_with(
        &server,
        url,
        token,
        &[("range", "bytes=0-9"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!(stale.status(), 200);
    let cached = get_with(&server, url, token, &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status(), 304);
    assert!(cached.bytes().await.unwrap().is_empty());
    let changed = get_with(&server, url, token, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(changed.status(), 200);
}

#[tokio::test]
async fn signed_urls_work_without_a_token_until_they_expire() {
    let server = TestServer::start_with(|c| c.file_url_ttl = Duration::from_secs(2)).await;
    let mut alice = server.device("alice@example.com", "a").await;
    let mut carol = server.device("carol@example.com", "c").await;
    let file = upload_ok(&server, &alice.token, png(100, 100, true), "dot.png").await;
    assert_eq!(file["thumb"]["type"], "image/png", "transparency keeps PNG");

    let asked = octet::state::now_millis();
    alice
        .send_json(json!({"op":"file_url","id":file["id"]}))
        .await;
    let signed = alice.expect("file_url").await;
    let answered = octet::state::now_millis();
    assert_eq!(signed["id"], file["id"]);
    // The 2 s setting, not the 10-minute default: `expires` is 2 s after the broker signed.
    let expires = signed["expires"].as_i64().unwrap();
    assert!(
        (asked + 2000..=answered + 2000).contains(&expires),
        "expires {} ms after the request (answered after {} ms)",
        expires - asked,
        answered - asked
    );
    let url = signed["url"].as_str().unwrap().to_string();
    assert!(url.contains(&format!("?exp={expires}&")), "{url}");
    let thumb_url = signed["thumb_url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("{}?exp=", file["url"].as_str().unwrap())),
        "{url}"
    );
    assert_eq!(get(&server, &url, None).await.status(), 200);
    let thumb = get(&server, &thumb_url, None).await;
    assert_eq!(thumb.status(), 200);
    assert_eq!(thumb.headers()["content-type"], "image/png");

    // Tampering or swapping the variant is caught.
    let tampered = url.replace("sig=", "sig=00");
    assert_eq!(get(&server, &tampered, None).await.status(), 404);
    let swapped = format!(
        "{}/thumb?{}",
        file["url"].as_str().unwrap(),
        url.split('?').nth(1).unwrap()
    );
    assert_eq!(get(&server, &swapped, None).await.status(), 404);
    // Someone the file was never shared with gets no URL.
    carol
        .send_json(json!({"op":"file_url","id":file["id"]}))
        .await;
    let refused = carol.expect("error").await;
    assert_eq!(refused["code"], "no_such_file");

    // Still valid three quarters of the way (500 ms spare for a slow request), refused as soon
    // as `expires` has passed (the broker and this test read the same clock). Both waits are
    // capped: `expires` was checked above.
    let wait_until = |at: i64| {
        let ms = (at - octet::state::now_millis()).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(ms))
    };
    wait_until(asked + 1500).await;
    assert_eq!(
        get(&server, &url, None).await.status(),
        200,
        "expired early"
    );
    wait_until(expires + 1).await;
    assert_eq!(get(&server, &url, None).await.status(), 404);
    assert_eq!(get(&server, &thumb_url, None).await.status(), 404);
}

/// A PNG whose header claims `w`×`h` and whose data is `zeros` bytes of deflated zeros.
fn bomb(w: u32, h: u32, zeros: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        let data = miniz_oxide::deflate::compress_to_vec_zlib(&vec![0u8; zeros], 9);
        writer.write_chunk(png::chunk::IDAT, &data).unwrap();
        writer.finish().unwrap();
    }
    out
}

#[tokio::test]
async fn hostile_and_corrupt_images_are_refused_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path()).await;
    let backend = octet::client::Backend::new(
        &format!("http://{}", broker.addr),
        crate::harness::APP_TOKEN,
    );
    let token = backend
        .device_token("alice@example.com", "a", crate::harness::APPID)
        .await
        .unwrap()
        .token;
    let addr = broker.addr.to_string();

    // 50,000 × 50,000 pixels (2.5 GB decoded) from a few kilobytes of zeros.
    let payload = bomb(50_000, 50_000, 8 << 20);
    assert!(
        payload.len() < 64 * 1024,
        "a real bomb is small: {}",
        payload.len()
    );
    let (status, answer) = upload(&addr, &token, payload, "bomb.png").await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"], "image_too_large");
    assert!(
        answer["message"].as_str().unwrap().contains("50000x50000"),
        "{answer}"
    );

    // Within the pixel limit but over the decoder's memory limit (16-bit RGBA, 512 MB).
    let mut wide = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut wide, 8_000, 8_000);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Sixteen);
        let mut writer = encoder.write_header().unwrap();
        writer
            .write_chunk(
                png::chunk::IDAT,
                &miniz_oxide::deflate::compress_to_vec_zlib(&[0u8; 4096], 9),
            )
            .unwrap();
        writer.finish().unwrap();
    }
    let (status, answer) = upload(&addr, &token, wide, "wide.png").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("image_too_large")),
        "{answer}"
    );

    // A PNG signature with garbage behind it.
    let mut corrupt = png(10, 10, false);
    corrupt.truncate(40);
    corrupt.extend_from_slice(&[0xAB; 200]);
    let (status, answer) = upload(&addr, &token, corrupt, "broken.png").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("bad_image")),
        "{answer}"
    );
    assert!(
        answer["message"].as_str().unwrap().contains("image/png"),
        "{answer}"
    );

    // The broker never held the decoded bomb: its peak memory stayed small.
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB");
    let db = rusqlite::Connection::open(dir.path().join("octet.db")).unwrap();
    for table in ["files", "blobs"] {
        let rows: i64 = db
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "a refused upload left a row in {table}");
    }
    let files = dir.path().join("files");
    let leftovers: Vec<_> = walk(&files);
    assert!(leftovers.is_empty(), "refused uploads left {leftovers:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn pruning_removes_unreferenced_files_only() {
    let server = TestServer::start_with(|c| {
        c.retention = None;
        c.upload_grace = Duration::from_millis(300);
        c.prune_every = Duration::from_millis(100);
    })
    .await;
    let mut alice = server.device("alice@example.com", "a").await;
    let bob = server.device("bob@example.com", "b").await;
    let sent = upload_ok(&server, &alice.token, b"kept".to_vec(), "kept.txt").await;
    let unsent = upload_ok(&server, &alice.token, b"dropped".to_vec(), "dropped.txt").await;
    send_files(&mut alice, "m1", "bob@example.com", &[&sent], None).await;
    alice.expect("sent").await;

    until("the unsent upload was never pruned", || {
        count(&server, "files") <= 1
    })
    .await;
    let url = |f: &Value| f["url"].as_str().unwrap().to_string();
    assert_eq!(
        get(&server, &url(&unsent), Some(&alice.token))
            .await
            .status(),
        404
    );
    assert_eq!(
        stored(&server).len(),
        1,
        "the pruned bytes are gone from disk"
    );

    // Deleting the sender leaves the file in the recipient's log, and readable there.
    let removed = server
        .backend(json!({"op":"userdel","user":{"address":"alice@example.com"}}))
        .await;
    assert_eq!(removed["result"], true, "{removed}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let kept = get(&server, &url(&sent), Some(&bob.token)).await;
    assert_eq!(kept.status(), 200);
    assert_eq!(kept.bytes().await.unwrap().as_ref(), b"kept");
    assert_eq!(stored(&server).len(), 1);
}

#[tokio::test]
async fn files_go_with_the_events_that_carried_them() {
    let server = TestServer::start_with(|c| {
        c.retention = Some(Duration::from_millis(1));
        c.upload_grace = Duration::from_secs(3600);
        c.prune_every = Duration::from_millis(100);
    })
    .await;
    let mut alice = server.device("alice@example.com", "a").await;
    server.device_token("bob@example.com", "b").await;
    let sent = upload_ok(&server, &alice.token, b"old news".to_vec(), "old.txt").await;
    send_files(&mut alice, "m1", "bob@example.com", &[&sent], None).await;
    alice.expect("sent").await;
    // Uploaded after the send: young, never sent, kept for its grace period.
    let fresh = upload_ok(&server, &alice.token, b"draft".to_vec(), "draft.txt").await;

    until("the expired file was never pruned", || {
        count(&server, "blobs") <= 1
    })
    .await;
    let status = |f: &Value| {
        let url = f["url"].as_str().unwrap().to_string();
        let token = alice.token.clone();
        let server = &server;
        async move { get(server, &url, Some(&token)).await.status() }
    };
    assert_eq!(status(&sent).await, 404);
    assert_eq!(status(&fresh).await, 200);
    assert_eq!(stored(&server).len(), 1);
}

#[test]
fn bomb_fixture_is_a_png_header_the_decoder_reads() {
    let bytes = bomb(50_000, 50_000, 1024);
    let mut reader = std::io::Cursor::new(&bytes);
    let mut head = [0u8; 8];
    reader.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"\x89PNG\r\n\x1a\n");
    let dims =
        image::ImageReader::with_format(std::io::Cursor::new(&bytes), image::ImageFormat::Png)
            .into_dimensions()
            .unwrap();
    assert_eq!(dims, (50_000, 50_000));
}

#[tokio::test]
async fn gif_and_webp_get_previews_too_and_uploads_are_counted() {
    let server = TestServer::start().await;
    let alice = server.device("alice@example.com", "a").await;
    let frame = image::RgbaImage::from_fn(500, 250, |x, _| image::Rgba([x as u8, 20, 200, 255]));
    let mut gif = Vec::new();
    image::DynamicImage::from(frame.clone())
        .write_to(&mut std::io::Cursor::new(&mut gif), image::ImageFormat::Gif)
        .unwrap();
    let mut webp = Vec::new();
    image::DynamicImage::from(frame)
        .write_to(
            &mut std::io::Cursor::new(&mut webp),
            image::ImageFormat::WebP,
        )
        .unwrap();
    for (bytes, kind) in [(gif, "image/gif"), (webp, "image/webp")] {
        let file = upload_ok(&server, &alice.token, bytes, "anim").await;
        assert_eq!(file["type"], kind);
        assert_eq!(
            (file["width"].as_u64(), file["height"].as_u64()),
            (Some(500), Some(250))
        );
        assert_eq!(file["thumb"]["width"], 320, "{file}");
        assert_eq!(file["thumb"]["height"], 160, "{file}");
        assert!(file["blurhash"].is_string());
        let thumb = get(
            &server,
            file["thumb"]["url"].as_str().unwrap(),
            Some(&alice.token),
        )
        .await;
        assert_eq!(thumb.status(), 200);
        let preview = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
        assert_eq!((preview.width(), preview.height()), (320, 160));
    }
    let metrics = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("octet_files_uploaded_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("octet_file_downloads_total 2"),
        "{metrics}"
    );
}

/// Alice, a 400 × 300 JPEG she uploaded, and its `file_url` answer.
async fn signed_photo(server: &TestServer) -> (Device, Value, Value) {
    let mut alice = server.device("alice@example.com", "a").await;
    let file = upload_ok(server, &alice.token, jpeg(400, 300), "cat.jpg").await;
    alice
        .send_json(json!({"op":"file_url","id":file["id"]}))
        .await;
    let signed = alice.expect("file_url").await;
    (alice, file, signed)
}

#[tokio::test]
async fn files_and_signed_urls_survive_a_restart() {
    let server = TestServer::start().await;
    let (alice, file, signed) = signed_photo(&server).await;
    let token = alice.token.clone();
    drop(alice);
    // Bytes no file refers to (a commit that failed after the move) are removed at start.
    let orphan = server.state.config.data_dir.join("files/00/00orphan");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"left behind").unwrap();
    let server = server.restart().await;
    assert!(!orphan.exists(), "the orphan was kept");
    let url = file["url"].as_str().unwrap();
    let whole = get(&server, url, Some(&token)).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.unwrap().as_ref(), &jpeg(400, 300)[..]);
    // The signing key is kept in the database: links handed out before still work.
    let thumb = get(&server, signed["thumb_url"].as_str().unwrap(), None).await;
    assert_eq!(thumb.status(), 200);
    assert_eq!(thumb.headers()["content-type"], "image/jpeg");
}

/// A page on its own origin that loads the `signed` and `bare` query URLs as images and puts
/// what happened in its title.
const IMG_PAGE: &str = r#"<!doctype html><title>loading</title><script>
const q = new URLSearchParams(location.search);
const results = {};
for (const name of ['signed', 'bare']) {
  const img = new Image();
  img.onload = () => { results[name] = img.naturalWidth + 'x' + img.naturalHeight; done(); };
  img.onerror = () => { results[name] = 'error'; done(); };
  img.src = q.get(name);
}
function done() { if (Object.keys(results).length == 2) document.title = JSON.stringify(results); }
</script>"#;

#[tokio::test]
async fn a_browser_shows_a_signed_url_in_an_img_and_not_a_bare_one() {
    let server = TestServer::start().await;
    let (_alice, file, signed) = signed_photo(&server).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::response::Html(IMG_PAGE) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let base = format!("http://{}", server.addr);
    let query = |url: &str| {
        percent_encoding::utf8_percent_encode(url, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let page_url = format!(
        "http://{page_addr}/?signed={}&bare={}",
        query(&format!("{base}{}", signed["url"].as_str().unwrap())),
        query(&format!("{base}{}", file["url"].as_str().unwrap())),
    );
    let browser = crate::browser::Browser::launch().await;
    let mut cdp = browser.connect().await;
    let page = cdp.open_page(&page_url).await;
    let title = cdp
        .wait_for(
            &page,
            "both images to load or fail",
            "document.title",
            |t| t.as_str().is_some_and(|t| t.starts_with('{')),
        )
        .await;
    let results: Value = serde_json::from_str(title.as_str().unwrap()).unwrap();
    assert_eq!(results, json!({"signed":"400x300","bare":"error"}));
    browser.close(cdp).await;
}

#[tokio::test]
async fn other_methods_are_told_which_one_to_use() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    for (method, path, allow) in [
        (reqwest::Method::GET, "/files", "POST"),
        (reqwest::Method::DELETE, "/files/f_x", "GET"),
        (reqwest::Method::PUT, "/files/f_x/thumb", "GET"),
    ] {
        let response = client
            .request(method, server.http_url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{path}");
        assert_eq!(response.headers()["allow"], allow);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed");
        assert_eq!(body["message"], format!("use {allow} on this path"));
    }
}

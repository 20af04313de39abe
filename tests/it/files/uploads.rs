//! Upload limits and refusals, interrupted and multipart uploads, ranges and ETags, and the methods each path takes.

use super::*;

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

//! Attachments on every device (live, catch-up, history, a new device), who may download and attach, and stored-once bytes.

use super::*;

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

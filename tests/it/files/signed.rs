//! Signed URLs: without a token until they expire, across a restart, and in a real browser's <img>.

use super::*;

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

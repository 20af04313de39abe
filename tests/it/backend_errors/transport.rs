//! Refusals at the HTTP layer: other methods and bodies over the limit.

use super::*;

// ---------------------------------------------------------------------------------------------
// 11. Transport
// ---------------------------------------------------------------------------------------------

/// One raw HTTP request.
struct Request<'a> {
    method: reqwest::Method,
    path: &'a str,
    content_type: Option<&'a str>,
    body: String,
}

/// Asserts a transport refusal: `status`, a JSON body with `code`, and no row changed.
async fn transport_refused(
    server: &TestServer,
    request: Request<'_>,
    status: u16,
    code: &str,
    needles: &[&str],
) -> Answer {
    let before = server.snapshot();
    let Request {
        method,
        path,
        content_type,
        body,
    } = request;
    let what = format!("{method} {path} ({content_type:?}, {} bytes)", body.len());
    let answer = http(server, method, path, content_type, body).await;
    assert_eq!(answer.status, status, "{what} -> {}", answer.text);
    let content_type = answer
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{what} -> {content_type}"
    );
    let json = answer.json();
    assert_refusal(&json, code, needles, &what);
    assert_eq!(server.snapshot(), before, "{what} changed the database");
    answer
}

#[tokio::test]
async fn other_methods_on_backend_are_405_with_allow_post() {
    let server = populated().await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let body = authed(json!({"op":"userdel","uid":1}));
        let answer = transport_refused(
            &server,
            Request {
                method,
                path: "/backend",
                content_type: Some("application/json"),
                body,
            },
            405,
            "method_not_allowed",
            &["POST"],
        )
        .await;
        assert_eq!(
            answer
                .headers
                .get(reqwest::header::ALLOW)
                .map(|v| v.to_str().unwrap()),
            Some("POST")
        );
    }
}

/// A valid `useradd` of `address` padded with an ignored field to exactly `len` bytes.
fn padded_useradd(address: &str, len: usize) -> String {
    let bare = authed(json!({"op":"useradd","user":{"address":address},"pad":""}));
    let body = bare.replace(
        r#""pad":"""#,
        &format!(r#""pad":"{}""#, "x".repeat(len - bare.len())),
    );
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn body_over_64_kib_is_413() {
    let server = populated().await;
    for len in [64 * 1024 + 1, 256 * 1024] {
        let body = padded_useradd("big@example.com", len);
        transport_refused(
            &server,
            Request {
                method: reqwest::Method::POST,
                path: "/backend",
                content_type: Some("application/json"),
                body,
            },
            413,
            "body_too_large",
            &["65536"],
        )
        .await;
    }
    // Exactly 64 KiB is read and served.
    let body = padded_useradd("big@example.com", 64 * 1024);
    let answer = post(&server, &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json()["result"], json!(true), "{}", answer.text);
}

#[tokio::test]
async fn multipart_body_is_415() {
    let server = populated().await;
    let body = authed(json!({"op":"useradd","user":{"address":"form@example.com"}}));
    for content_type in [
        "multipart/form-data; boundary=XyZ",
        "application/xml",
        "image/png",
    ] {
        transport_refused(
            &server,
            Request {
                method: reqwest::Method::POST,
                path: "/backend",
                content_type: Some(content_type),
                body: body.clone(),
            },
            415,
            "unsupported_media_type",
            &[content_type.split(';').next().unwrap(), "application/json"],
        )
        .await;
    }
}

#[tokio::test]
async fn json_sent_as_curl_d_form_urlencoded_is_accepted() {
    let server = populated().await;
    let body = authed(json!({"op":"useradd","id":"curl",
        "user":{"address":"curl@example.com","token":{"appid":APPID}}}));
    let answer = http(
        &server,
        reqwest::Method::POST,
        "/backend",
        Some("application/x-www-form-urlencoded"),
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let json = answer.json();
    assert_eq!(json["result"], json!(true), "{json}");
    assert_eq!(json["id"], "curl");
    assert_eq!(json["user"]["address"], "curl@example.com");
    let devices = server.devices("curl@example.com").await;
    assert_eq!(devices["result"], json!(true), "{devices}");
}

#[tokio::test]
async fn unknown_path_is_404() {
    let server = populated().await;
    let body = authed(json!({"op":"userdel","uid":1}));
    for (method, path) in [
        (reqwest::Method::GET, "/nope"),
        (reqwest::Method::POST, "/nope"),
        (reqwest::Method::POST, "/backend/userdel"),
        (reqwest::Method::POST, "/api/backend"),
    ] {
        transport_refused(
            &server,
            Request {
                method,
                path,
                content_type: Some("application/json"),
                body: body.clone(),
            },
            404,
            "not_found",
            &["/backend"],
        )
        .await;
    }
}

//! Every way a backend request can be wrong: each refusal is HTTP 200 with
//! `{"op","result":false,"error","message"}` (4xx only for transport errors), names what to fix,
//! echoes `op` and `id`, and leaves every row of the database as it was.

mod fields;
mod requests;
mod transport;
mod users;

use serde_json::{Value, json};

use crate::harness::{APP_TOKEN, APPID, TestServer};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One HTTP answer, kept raw so tests can compare bytes.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|err| panic!("answer is not JSON ({err}): {:?}", self.text))
    }
}

/// Sends `method path` with `content_type` (none when `None`) and `body`.
async fn http(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut request = reqwest::Client::new()
        .request(method, server.http_url(path))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header(reqwest::header::CONTENT_TYPE, content_type);
    }
    let response = request.send().await.expect("the server answers");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.expect("a readable body"),
    }
}

/// `POST /backend` with `Content-Type: application/json`.
async fn post(server: &TestServer, body: &str) -> Answer {
    http(
        server,
        reqwest::Method::POST,
        "/backend",
        Some("application/json"),
        body.to_string(),
    )
    .await
}

/// The request text with the right app token in `token`.
fn authed(mut request: Value) -> String {
    request
        .as_object_mut()
        .expect("a request object")
        .insert("token".into(), json!(APP_TOKEN));
    request.to_string()
}

/// Asserts `answer` is a refusal with `code` whose message contains every one of `needles`,
/// and that it carries nothing but the envelope and the error.
fn assert_refusal(answer: &Value, code: &str, needles: &[&str], request: &str) {
    assert_eq!(answer["result"], json!(false), "{request} -> {answer}");
    assert_eq!(answer["error"], json!(code), "{request} -> {answer}");
    let message = answer["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {request} -> {answer}"));
    for needle in needles {
        assert!(
            message.contains(needle),
            "message should mention {needle:?}: {request} -> {message}"
        );
    }
    for key in answer.as_object().unwrap().keys() {
        assert!(
            ["op", "result", "error", "message", "id"].contains(&key.as_str()),
            "unexpected field `{key}` in a refusal: {request} -> {answer}"
        );
    }
}

/// Asserts the answer echoes the request's `op` (when it is a string) and `id` (when given).
fn assert_echoes(answer: &Value, request: &str) {
    let parsed: Option<Value> = serde_json::from_str(request).ok();
    let object = parsed.as_ref().and_then(Value::as_object);
    match object.and_then(|m| m.get("op")).and_then(Value::as_str) {
        Some(op) => assert_eq!(
            answer["op"],
            json!(op),
            "op not echoed: {request} -> {answer}"
        ),
        None => assert!(
            answer.get("op").is_none_or(|op| op == ""),
            "op invented: {request} -> {answer}"
        ),
    }
    match object.and_then(|m| m.get("id")) {
        Some(id) => assert_eq!(&answer["id"], id, "id not echoed: {request} -> {answer}"),
        None => assert!(
            answer.get("id").is_none(),
            "id invented: {request} -> {answer}"
        ),
    }
}

/// Posts `request`, asserts HTTP 200 and a refusal with `code` naming every one of `needles`,
/// the echoes, and that not one row of the database changed. Returns the raw answer.
async fn refused(server: &TestServer, request: &str, code: &str, needles: &[&str]) -> Answer {
    let before = server.snapshot();
    let answer = post(server, request).await;
    assert_eq!(answer.status, 200, "{request} -> {}", answer.text);
    let json = answer.json();
    assert_refusal(&json, code, needles, request);
    assert_echoes(&json, request);
    assert_eq!(
        server.snapshot(),
        before,
        "a refused request changed the database: {request}"
    );
    answer
}

/// [`refused`] for a request built with `json!`, with the right app token added.
async fn refused_authed(server: &TestServer, request: Value, code: &str, needles: &[&str]) {
    refused(server, &authed(request), code, needles).await;
}

/// Posts `request` with the app token and asserts it succeeded.
async fn accepted(server: &TestServer, request: Value) -> Value {
    let answer = server.backend(request.clone()).await;
    assert_eq!(answer["result"], json!(true), "{request} -> {answer}");
    answer
}

/// A server with something in every table:
/// uid 1 `xyz@example.com` (device `phone`), uid 2 `xyz@example.com-linked-1` (device
/// `laptop`), uid 3 `abc@example.com` (a plain token), uid 4 `lone@example.com` (no token);
/// the phone uploaded a file (`files/`) and sent it to abc, who read it (a message with its
/// file, its events and receipts, a read marker). Every session has ended, so the snapshot
/// only changes when a request changes something.
async fn populated() -> TestServer {
    let server = TestServer::start().await;
    let phone = server.device_token("xyz@example.com", "phone").await;
    server.device_token("xyz@example.com", "laptop").await;
    let abc = accepted(
        &server,
        json!({"op":"useradd","user":{"address":"abc@example.com","name":"Abc",
            "token":{"appid":APPID}}}),
    )
    .await;
    accepted(
        &server,
        json!({"op":"useradd","user":{"address":"lone@example.com","name":"Lone"}}),
    )
    .await;
    let mut phone = server.login(phone["user"]["token"].as_str().unwrap()).await;
    phone.expect("welcome").await;
    let file =
        crate::files::upload_ok(&server, &phone.token, b"fixture bytes".to_vec(), "f.txt").await;
    let mut abc = server.login(abc["user"]["token"].as_str().unwrap()).await;
    abc.expect("welcome").await;
    phone
        .send_json(
            json!({"op":"send","id":"fx","to":"abc@example.com","body":"hi",
            "files":[file["id"]]}),
        )
        .await;
    let mid = phone.expect("sent").await["mid"].clone();
    assert_eq!(abc.expect("message").await["mid"], mid);
    abc.send_json(json!({"op":"read","peer":"xyz@example.com","upto":mid}))
        .await;
    assert_eq!(abc.expect("read").await["upto"], mid);
    drop((phone, abc));
    server.sessions_settled().await;
    let snapshot = server.snapshot();
    for table in [
        "app: ",
        "users: ",
        "tokens: ",
        "persons: ",
        "meta: ",
        "messages: ",
        "events: ",
        "read_marks: ",
        "blobs: ",
        "files: ",
        "message_files: ",
        "files/",
    ] {
        assert!(
            snapshot.iter().any(|row| row.starts_with(table)),
            "the fixture should fill `{table}`: {snapshot:#?}"
        );
    }
    assert!(
        snapshot
            .iter()
            .any(|row| row.starts_with("files/") && row.ends_with(" 13")),
        "the uploaded bytes are not under files/: {snapshot:#?}"
    );
    server
}

/// mesibo's "Specifying a Login Device" request, pasted verbatim: no comma after 525600.
const MESIBO_DEVICE_EXAMPLE: &str = r#"{
"op":"useradd",
"token": "ptlk9hdel1gqxf3p0s15f5f5gtusldej18tl794suzit",
"user": {
"address":"xyz@example.com",
"name":"User Name",
"token": {
"appid": "com.example.mesiboapp",
"expiry": 525600
"device": "myphone-123"
}
}
}"#;

/// mesibo's "Manually Specifying Linked User" request, pasted verbatim: no comma after 525600
/// and a trailing comma after `linkto`.
const MESIBO_LINKTO_EXAMPLE: &str = r#"{
"op":"useradd",
"token": "ptlk9hdel1gqxf3p0s15f5f5gtusldej18tl794suzit",
"user": {
"address":"abc@example.com",
"token": {
"appid": "com.example.mesiboapp",
"expiry": 525600
"linkto":"xyz@example.com",
}
}
}"#;

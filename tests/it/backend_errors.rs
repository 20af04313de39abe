//! Every way a backend request can be wrong: each refusal is HTTP 200 with
//! `{"op","result":false,"error","message"}` (4xx only for transport errors), names what to fix,
//! echoes `op` and `id`, and leaves every row of the database as it was.

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

// ---------------------------------------------------------------------------------------------
// 1. Malformed JSON
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mesibo_device_example_verbatim_points_at_the_missing_comma() {
    let server = populated().await;
    // Line 9 is `"expiry": 525600`; the parser trips on the `"` that opens line 10.
    refused(
        &server,
        MESIBO_DEVICE_EXAMPLE,
        "bad_json",
        &["line 10, column 1", "comma"],
    )
    .await;
}

#[tokio::test]
async fn mesibo_device_example_indented_with_crlf_points_at_the_missing_comma() {
    // As it looks on mesibo's page (four spaces a level), saved with Windows line ends.
    let indented = r#"{
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
    let server = populated().await;
    refused(
        &server,
        indented,
        "bad_json",
        &["line 10, column 13", "comma"],
    )
    .await;
    let crlf = indented.replace('\n', "\r\n");
    refused(&server, &crlf, "bad_json", &["line 10, column 13", "comma"]).await;
}

#[tokio::test]
async fn mesibo_linkto_example_verbatim_points_at_the_missing_comma() {
    let server = populated().await;
    // The first error wins: the `"` that opens line 9, right after `"expiry": 525600`.
    refused(
        &server,
        MESIBO_LINKTO_EXAMPLE,
        "bad_json",
        &["line 9, column 1", "comma"],
    )
    .await;
}

#[tokio::test]
async fn mesibo_linkto_example_trailing_comma_points_at_the_closing_brace() {
    let server = populated().await;
    // With the missing comma fixed, the trailing comma after `linkto` is next: the `}` on
    // line 10 closes an object right after a comma.
    let fixed_comma = MESIBO_LINKTO_EXAMPLE.replace("525600\n", "525600,\n");
    assert_ne!(fixed_comma, MESIBO_LINKTO_EXAMPLE);
    refused(
        &server,
        &fixed_comma,
        "bad_json",
        &["line 10, column 1", "trailing comma"],
    )
    .await;
}

#[tokio::test]
async fn empty_body_is_bad_json() {
    let server = populated().await;
    for body in ["", "   ", "\n"] {
        let answer = refused(&server, body, "bad_json", &["line "]).await.json();
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains("empty") || message.contains("EOF"),
            "{body:?} -> {message}"
        );
    }
}

#[tokio::test]
async fn body_that_is_json_but_not_an_object_is_bad_request() {
    let server = populated().await;
    for body in [
        r#"[{"op":"useradd","id":"x"}]"#,
        r#""useradd""#,
        "42",
        "null",
        "true",
    ] {
        refused(&server, body, "bad_request", &["object"]).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. op
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_op_lists_the_known_ops() {
    let server = populated().await;
    for op in ["usermod", "USERADD", ""] {
        refused_authed(
            &server,
            json!({"op":op,"id":"req-1","user":{"address":"xyz@example.com"}}),
            "unknown_op",
            &["useradd, userdel, tokendel, devices"],
        )
        .await;
    }
    // Even without the app token: nothing is learned about users from an unknown op.
    refused(
        &server,
        r#"{"op":"nope","id":7}"#,
        "unknown_op",
        &["`nope`", "useradd, userdel, tokendel, devices"],
    )
    .await;
}

#[tokio::test]
async fn missing_op_is_missing_field() {
    let server = populated().await;
    refused_authed(
        &server,
        json!({"id":"req-2","user":{"address":"new@example.com","token":{"appid":APPID}}}),
        "missing_field",
        &["`op`", "useradd"],
    )
    .await;
    refused(&server, "{}", "missing_field", &["`op`"]).await;
}

#[tokio::test]
async fn op_that_is_not_a_string_is_wrong_type() {
    let server = populated().await;
    for op in [
        json!(1),
        json!(["useradd"]),
        json!({"name":"useradd"}),
        json!(null),
    ] {
        refused_authed(
            &server,
            json!({"op":op,"id":"req-3","user":{"address":"new@example.com"}}),
            "wrong_type",
            &["op", "string"],
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. App token
// ---------------------------------------------------------------------------------------------

/// Every way an app token can be wrong, as the `token` field (absent for `None`).
fn bad_app_tokens() -> Vec<Option<Value>> {
    vec![
        None,
        Some(json!("wrong-token")),
        Some(json!("")),
        Some(json!(format!("{APP_TOKEN} "))),
        Some(json!(APP_TOKEN.to_uppercase())),
        Some(json!(APP_TOKEN.len())),
        Some(json!(null)),
        Some(json!(true)),
        Some(json!([APP_TOKEN])),
        Some(json!({"token":APP_TOKEN})),
    ]
}

fn with_token(mut request: Value, token: &Option<Value>) -> String {
    if let Some(token) = token {
        request["token"] = token.clone();
    }
    request.to_string()
}

#[tokio::test]
async fn bad_app_token_gives_the_same_answer_whether_the_user_exists_or_not() {
    let server = populated().await;
    // Pairs of requests alike but for naming an existing user or a missing one.
    let pairs = [
        (
            json!({"op":"useradd","id":"q","user":{"address":"xyz@example.com",
                "token":{"appid":APPID,"device":"phone"}}}),
            json!({"op":"useradd","id":"q","user":{"address":"ghost@example.com",
                "token":{"appid":APPID,"device":"phone"}}}),
        ),
        (
            json!({"op":"useradd","id":"q","user":{"address":"abc@example.com",
                "token":{"appid":APPID,"linkto":"xyz@example.com"}}}),
            json!({"op":"useradd","id":"q","user":{"address":"abc@example.com",
                "token":{"appid":APPID,"linkto":"ghost@example.com"}}}),
        ),
        (
            json!({"op":"userdel","id":"q","uid":1}),
            json!({"op":"userdel","id":"q","uid":999}),
        ),
        (
            json!({"op":"userdel","id":"q","user":{"address":"xyz@example.com"}}),
            json!({"op":"userdel","id":"q","user":{"address":"ghost@example.com"}}),
        ),
        (
            json!({"op":"devices","id":"q","uid":2}),
            json!({"op":"devices","id":"q","uid":999}),
        ),
        (
            json!({"op":"devices","id":"q","user":{"address":"xyz@example.com-linked-1"}}),
            json!({"op":"devices","id":"q","user":{"address":"ghost@example.com"}}),
        ),
        (
            json!({"op":"tokendel","id":"q","uid":3}),
            json!({"op":"tokendel","id":"q","uid":999}),
        ),
        (
            json!({"op":"tokendel","id":"q","user":{"address":"abc@example.com"}}),
            json!({"op":"tokendel","id":"q","user":{"address":"ghost@example.com"}}),
        ),
        // Nor does a bad token reveal whether the rest of the request would pass.
        (
            json!({"op":"useradd","id":"q","user":{"address":"xyz@example.com"}}),
            json!({"op":"useradd","id":"q"}),
        ),
    ];
    for token in bad_app_tokens() {
        for (existing, missing) in &pairs {
            let existing = with_token(existing.clone(), &token);
            let missing = with_token(missing.clone(), &token);
            let a = refused(&server, &existing, "bad_app_token", &["`token`"]).await;
            let b = refused(&server, &missing, "bad_app_token", &["`token`"]).await;
            assert_eq!(
                a.text, b.text,
                "the answer differs with the user's existence: {existing} vs {missing}"
            );
            assert_eq!(
                a.headers.get("content-length"),
                b.headers.get("content-length")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Missing fields
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn useradd_names_the_missing_field() {
    let server = populated().await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"m1"}),
        "missing_field",
        &["`user`"],
    )
    .await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"m2","user":{"name":"No Address","token":{"appid":APPID}}}),
        "missing_field",
        &["`user.address`"],
    )
    .await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"m3","user":{"address":"xyz@example.com",
            "token":{"expiry":525600,"device":"tablet"}}}),
        "missing_field",
        &["`user.token.appid`"],
    )
    .await;
}

#[tokio::test]
async fn userdel_tokendel_devices_without_a_user_name_the_missing_field() {
    let server = populated().await;
    for op in ["userdel", "tokendel", "devices"] {
        for request in [
            json!({"op":op,"id":"m4"}),
            json!({"op":op,"id":"m4","user":{}}),
            json!({"op":op,"id":"m4","user":{"name":"xyz@example.com"}}),
            json!({"op":op,"id":"m4","address":"xyz@example.com"}),
        ] {
            refused_authed(
                &server,
                request,
                "missing_field",
                &["`uid`", "user.address"],
            )
            .await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Wrong types
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn wrong_types_name_the_field_path() {
    let server = populated().await;
    let cases = [
        (
            json!({"op":"useradd","id":"t1","user":{"address":12345}}),
            "user.address",
        ),
        (
            json!({"op":"useradd","id":"t2","user":{"address":"xyz@example.com",
                "token":{"appid":APPID,"expiry":"525600","device":"tablet"}}}),
            "user.token.expiry",
        ),
        (
            json!({"op":"useradd","id":"t3","user":{"address":"xyz@example.com",
                "token":{"appid":APPID,"expiry":1.5}}}),
            "user.token.expiry",
        ),
        (
            json!({"op":"useradd","id":"t4","user":{"address":"xyz@example.com",
                "token":{"appid":7}}}),
            "user.token.appid",
        ),
        (
            json!({"op":"useradd","id":"t5","user":{"address":"xyz@example.com",
                "token":"com.example.app"}}),
            "user.token",
        ),
        (
            json!({"op":"useradd","id":"t6","user":"xyz@example.com"}),
            "user",
        ),
        (json!({"op":"userdel","id":"t8","uid":"1"}), "uid"),
        (json!({"op":"tokendel","id":"t9","uid":"3"}), "uid"),
        (json!({"op":"devices","id":"t10","uid":"1"}), "uid"),
        (json!({"op":"userdel","id":"t11","uid":-1}), "uid"),
        (
            json!({"op":"devices","id":"t12","user":{"uid":"1"}}),
            "user.uid",
        ),
        (
            json!({"op":"devices","id":"t13","user":{"address":1}}),
            "user.address",
        ),
        (
            json!({"op":"userdel","id":"t14","user":"xyz@example.com"}),
            "user",
        ),
        (json!({"op":"tokendel","id":"t15","user":true}), "user"),
    ];
    for (request, path) in cases {
        refused_authed(&server, request, "wrong_type", &[path]).await;
    }
}

#[tokio::test]
async fn arrays_are_not_objects() {
    // serde would read a struct from a JSON array by position; `user` and `user.token` must be
    // objects, and a positional array must neither create, nor delete, nor list anyone.
    let server = populated().await;
    let cases = [
        (
            json!({"op":"useradd","id":"a1","user":["xyz@example.com"]}),
            "user",
        ),
        (
            json!({"op":"useradd","id":"a2","user":["new@example.com","New",[APPID]]}),
            "user",
        ),
        (
            json!({"op":"useradd","id":"a3","user":{"address":"xyz@example.com",
                "token":[APPID,525600,"tablet"]}}),
            "user.token",
        ),
        (json!({"op":"devices","id":"a4","user":[1]}), "user"),
        (json!({"op":"tokendel","id":"a5","user":[3]}), "user"),
        (json!({"op":"userdel","id":"a6","user":[1]}), "user"),
        (
            json!({"op":"userdel","id":"a7","user":[null,"xyz@example.com"]}),
            "user",
        ),
    ];
    for (request, path) in cases {
        refused_authed(&server, request, "wrong_type", &[path]).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 6. linkto naming no user
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn linkto_naming_no_user_creates_nothing() {
    let server = populated().await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"l1","user":{"address":"new@example.com","name":"New",
            "token":{"appid":APPID,"expiry":525600,"linkto":"ghost@example.com"}}}),
        "no_such_user",
        &["ghost@example.com", "linkto"],
    )
    .await;
    let devices = server.devices("new@example.com").await;
    assert_eq!(devices["error"], "no_such_user", "{devices}");
    // An existing user is neither renamed nor given a token.
    refused_authed(
        &server,
        json!({"op":"useradd","id":"l2","user":{"address":"lone@example.com","name":"Renamed",
            "token":{"appid":APPID,"linkto":"ghost@example.com","device":"tablet"}}}),
        "no_such_user",
        &["ghost@example.com"],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 7. expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn expiry_outside_one_minute_to_ten_years_is_bad_expiry() {
    let server = populated().await;
    for expiry in [0_i64, -5, 5_256_001, i64::MAX, i64::MIN] {
        for token in [
            json!({"appid":APPID,"expiry":expiry}),
            json!({"appid":APPID,"expiry":expiry,"device":"tablet"}),
            json!({"appid":APPID,"expiry":expiry,"linkto":"xyz@example.com"}),
        ] {
            refused_authed(
                &server,
                json!({"op":"useradd","id":"e1","user":{"address":"new@example.com","token":token}}),
                "bad_expiry",
                &["user.token.expiry", &expiry.to_string(), "5256000"],
            )
            .await;
        }
    }
}

/// `expires_at - created_at` of the token of `uid`, in milliseconds.
fn token_lifetime(server: &TestServer, uid: u64) -> i64 {
    let conn = rusqlite::Connection::open(server.state.config.data_dir.join("octet.db")).unwrap();
    conn.query_row(
        "SELECT expires_at - created_at FROM tokens WHERE uid = ?1",
        [uid],
        |row| row.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn expiry_of_one_minute_and_of_ten_years_is_accepted() {
    let server = populated().await;
    for (address, expiry) in [
        ("short@example.com", 1_i64),
        ("long@example.com", 5_256_000),
    ] {
        let answer = accepted(
            &server,
            json!({"op":"useradd","user":{"address":address,"token":{"appid":APPID,"expiry":expiry}}}),
        )
        .await;
        assert!(answer["user"]["token"].is_string(), "{answer}");
        let uid = answer["user"]["uid"].as_u64().unwrap();
        assert_eq!(token_lifetime(&server, uid), expiry * 60_000);
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Values
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_addresses_are_bad_value() {
    let server = populated().await;
    let too_long = "a".repeat(256);
    let cases = [
        ("", "empty"),
        (too_long.as_str(), "255"),
        ("xyz @example.com", "spaces or control"),
        ("xyz\u{1}@example.com", "spaces or control"),
        ("xyz@example.com\n", "spaces or control"),
        ("xyz\t@example.com", "spaces or control"),
        ("xyz\u{7f}@example.com", "spaces or control"),
    ];
    for (address, why) in cases {
        for token in [
            json!(null),
            json!({"appid":APPID}),
            json!({"appid":APPID,"device":"d"}),
        ] {
            let mut user = json!({"address":address});
            if !token.is_null() {
                user["token"] = token;
            }
            refused_authed(
                &server,
                json!({"op":"useradd","id":"v1","user":user}),
                "bad_value",
                &["user.address", why],
            )
            .await;
        }
        for op in ["userdel", "tokendel", "devices"] {
            refused_authed(
                &server,
                json!({"op":op,"id":"v2","user":{"address":address}}),
                "bad_value",
                &["user.address", why],
            )
            .await;
        }
        refused_authed(
            &server,
            json!({"op":"useradd","id":"v3","user":{"address":"new@example.com",
                "token":{"appid":APPID,"linkto":address}}}),
            "bad_value",
            &["user.token.linkto", why],
        )
        .await;
    }
}

#[tokio::test]
async fn empty_device_id_and_empty_appid_are_bad_value() {
    let server = populated().await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"v4","user":{"address":"xyz@example.com",
            "token":{"appid":APPID,"device":""}}}),
        "bad_value",
        &["user.token.device", "empty"],
    )
    .await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"v5","user":{"address":"new@example.com",
            "token":{"appid":APPID,"device":"my phone"}}}),
        "bad_value",
        &["user.token.device", "spaces"],
    )
    .await;
    for address in ["xyz@example.com", "new@example.com"] {
        for token in [
            json!({"appid":""}),
            json!({"appid":"","device":"tablet"}),
            json!({"appid":"","linkto":"xyz@example.com"}),
        ] {
            refused_authed(
                &server,
                json!({"op":"useradd","id":"v6","user":{"address":address,"token":token}}),
                "bad_value",
                &["user.token.appid", "empty"],
            )
            .await;
        }
    }
}

#[tokio::test]
async fn address_of_255_characters_is_accepted() {
    let server = populated().await;
    let address = format!("{}@example.com", "a".repeat(255 - "@example.com".len()));
    assert_eq!(address.chars().count(), 255);
    let answer = accepted(
        &server,
        json!({"op":"useradd","user":{"address":address,"token":{"appid":APPID,"device":"phone"}}}),
    )
    .await;
    assert_eq!(answer["user"]["address"], json!(address));
    let devices = accepted(&server, json!({"op":"devices","user":{"address":address}})).await;
    assert_eq!(devices["primary"]["address"], json!(address));
    // 255 characters, not bytes.
    let wide = "é".repeat(255);
    accepted(&server, json!({"op":"useradd","user":{"address":wide}})).await;
}

#[tokio::test]
async fn linked_address_the_server_made_can_name_its_user() {
    // A second device of a 255-character primary gets `<primary>-linked-1`, 264 characters:
    // whatever address the server hands out must be usable to name that user again.
    let server = populated().await;
    let address = "b".repeat(255);
    server.device_token(&address, "phone").await;
    let linked = server.device_token(&address, "laptop").await;
    let linked_address = linked["user"]["address"].as_str().unwrap().to_string();
    for op in ["devices", "tokendel", "userdel"] {
        let answer = server
            .backend(json!({"op":op,"user":{"address":linked_address}}))
            .await;
        assert_eq!(
            answer["result"],
            json!(true),
            "{op} of the server-issued address {} characters long -> {answer}",
            linked_address.chars().count()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. No such user
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn userdel_tokendel_devices_of_a_missing_user_is_no_such_user() {
    let server = populated().await;
    for op in ["userdel", "tokendel", "devices"] {
        refused_authed(
            &server,
            json!({"op":op,"id":"n1","uid":999}),
            "no_such_user",
            &["999"],
        )
        .await;
        refused_authed(
            &server,
            json!({"op":op,"id":"n2","user":{"uid":998}}),
            "no_such_user",
            &["998"],
        )
        .await;
        refused_authed(
            &server,
            json!({"op":op,"id":"n3","user":{"address":"ghost@example.com"}}),
            "no_such_user",
            &["ghost@example.com"],
        )
        .await;
        // Addresses are exact: no case folding, no prefix match.
        refused_authed(
            &server,
            json!({"op":op,"id":"n4","user":{"address":"XYZ@example.com"}}),
            "no_such_user",
            &["XYZ@example.com"],
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Linking
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn primary_linking_to_its_own_person_is_bad_link() {
    let server = populated().await;
    // To itself, and to its own linked user; the name in the request is not applied either.
    for linkto in ["xyz@example.com", "xyz@example.com-linked-1"] {
        refused_authed(
            &server,
            json!({"op":"useradd","id":"k1","user":{"address":"xyz@example.com","name":"Renamed",
                "token":{"appid":APPID,"expiry":525600,"linkto":linkto}}}),
            "bad_link",
            &["xyz@example.com", "itself"],
        )
        .await;
    }
}

#[tokio::test]
async fn user_linked_to_another_person_is_bad_link() {
    let server = populated().await;
    // lone@ joins xyz's person; then neither it nor xyz's device user may join abc's.
    accepted(
        &server,
        json!({"op":"useradd","user":{"address":"lone@example.com",
            "token":{"appid":APPID,"linkto":"xyz@example.com"}}}),
    )
    .await;
    for address in ["lone@example.com", "xyz@example.com-linked-1"] {
        refused_authed(
            &server,
            json!({"op":"useradd","id":"k2","user":{"address":address,"name":"Renamed",
                "token":{"appid":APPID,"linkto":"abc@example.com"}}}),
            "bad_link",
            &[address, "already linked", "userdel"],
        )
        .await;
    }
}

#[tokio::test]
async fn primary_with_linked_users_is_bad_link() {
    let server = populated().await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"k3","user":{"address":"xyz@example.com","name":"Renamed",
            "token":{"appid":APPID,"linkto":"abc@example.com"}}}),
        "bad_link",
        &["xyz@example.com", "linked users"],
    )
    .await;
}

#[tokio::test]
async fn ninth_device_is_device_limit() {
    let server = populated().await;
    for n in 3..=8 {
        server
            .device_token("xyz@example.com", &format!("dev-{n}"))
            .await;
    }
    let devices = server.devices("xyz@example.com").await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 8, "{devices}");
    // A new device, named from the primary or from a linked address, with a new name.
    for address in ["xyz@example.com", "xyz@example.com-linked-3"] {
        refused_authed(
            &server,
            json!({"op":"useradd","id":"k4","user":{"address":address,"name":"Renamed",
                "token":{"appid":APPID,"expiry":525600,"device":"dev-9"}}}),
            "device_limit",
            &["xyz@example.com", "8 devices", "userdel"],
        )
        .await;
    }
    // linkto from an existing user and from a user that would be created.
    for address in ["lone@example.com", "new@example.com"] {
        refused_authed(
            &server,
            json!({"op":"useradd","id":"k5","user":{"address":address,"name":"Renamed",
                "token":{"appid":APPID,"linkto":"xyz@example.com-linked-1"}}}),
            "device_limit",
            &["xyz@example.com", "8 devices"],
        )
        .await;
    }
    // A device the person already has still gets a fresh token.
    let again = server.device_token("xyz@example.com", "dev-8").await;
    assert_eq!(again["linked"], "true");
}

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

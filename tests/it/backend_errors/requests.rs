//! Malformed JSON, a missing or unknown `op`, and bad app tokens.

use super::*;

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

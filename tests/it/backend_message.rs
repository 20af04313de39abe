//! The backend's `message` op: a message sent as a user goes through the same log, fan-out and
//! idempotency as a device's `send`; every bad field is refused, names the field and stores
//! nothing.

use serde_json::{Value, json};

use crate::harness::{APP_TOKEN, Device, TestServer};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

/// A backend `message` request.
fn message(from: &str, to: &str, body: Value, id: Option<Value>) -> Value {
    let mut msg = json!({"from": from, "to": to, "message": body, "expiry": 3600});
    if let Some(id) = id {
        msg["id"] = id;
    }
    json!({"op": "message", "message": msg})
}

/// Sends a `message` and asserts it was accepted; returns the answer.
async fn sent(server: &TestServer, request: Value) -> Value {
    let answer = server.backend(request.clone()).await;
    assert_eq!(answer["result"], json!(true), "{request} -> {answer}");
    answer
}

/// The next frame of `dev`, which must be a `message`.
async fn got(dev: &mut Device) -> Value {
    dev.expect("message").await
}

#[tokio::test]
async fn one_recipient_reaches_every_device_of_both_persons_and_the_logs() {
    let server = TestServer::start().await;
    let mut a_phone = server.device(ALICE, "a-phone").await;
    let mut a_laptop = server.device(ALICE, "a-laptop").await;
    let mut b_phone = server.device(BOB, "b-phone").await;
    let mut b_tablet = server.device(BOB, "b-tablet").await;

    // Each person's log begins with the `devices_changed` of its second device (seq 1).
    let answer = sent(
        &server,
        message(
            ALICE,
            BOB,
            json!({"text": "welcome", "n": 1}),
            Some(json!(7)),
        ),
    )
    .await;
    assert_eq!(answer["mid"], json!(1), "{answer}");
    assert_eq!(answer["mids"], json!([1]), "{answer}");

    for dev in [&mut b_phone, &mut b_tablet] {
        let m = got(dev).await;
        assert_eq!(m["mid"], json!(1));
        assert_eq!(m["seq"], json!(2));
        assert_eq!(m["from"], json!(ALICE));
        assert_eq!(m["to"], json!(BOB));
        assert_eq!(m["body"], json!({"text": "welcome", "n": 1}));
        assert!(
            m.get("out").is_none(),
            "the recipient's copy is not out: {m}"
        );
    }
    // No device sent it, so every device of the sender's person gets the `out` copy.
    for dev in [&mut a_phone, &mut a_laptop] {
        let m = got(dev).await;
        assert_eq!(m["mid"], json!(1));
        assert_eq!(m["seq"], json!(2));
        assert_eq!(m["out"], json!(true), "{m}");
    }

    // It is in both logs: history shows it as a device's send would be shown.
    b_phone.send_json(json!({"op": "history"})).await;
    let history = b_phone.expect("history").await;
    let events = history["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{history}");
    assert_eq!(events[1]["mid"], json!(1));
    assert_eq!(events[1]["from"], json!(ALICE));
    a_laptop.send_json(json!({"op": "history"})).await;
    let history = a_laptop.expect("history").await;
    assert_eq!(history["events"][1]["out"], json!(true), "{history}");

    // A device's reply continues both logs with no gap, and receipts work as for any message.
    b_phone.send_json(json!({"op": "ack", "seq": 2})).await;
    for dev in [&mut a_phone, &mut a_laptop] {
        let r = dev.expect("receipt").await;
        assert_eq!(r["mid"], json!(1), "{r}");
        assert_eq!(r["status"], json!("delivered"), "{r}");
        assert_eq!(r["seq"], json!(3), "{r}");
    }
    let reply = b_phone.send_msg("r1", ALICE, json!("thanks")).await;
    assert_eq!(reply["seq"], json!(3), "{reply}");
    for dev in [&mut a_phone, &mut a_laptop] {
        assert_eq!(got(dev).await["seq"], json!(4));
    }
    assert_eq!(got(&mut b_tablet).await["out"], json!(true));
    for dev in [&mut a_phone, &mut a_laptop, &mut b_phone, &mut b_tablet] {
        dev.expect_silence().await;
    }
}

#[tokio::test]
async fn a_linked_user_sends_as_its_primary_and_its_own_device_gets_the_copy() {
    let server = TestServer::start().await;
    let mut a_phone = server.device(ALICE, "a-phone").await;
    let mut a_laptop = server.device(ALICE, "a-laptop").await;
    assert_eq!(a_laptop.address, format!("{ALICE}-linked-1"));
    let mut b_phone = server.device(BOB, "b-phone").await;

    let linked = format!("{ALICE}-linked-1");
    sent(
        &server,
        message(&linked, BOB, json!("hi"), Some(json!("x1"))),
    )
    .await;
    let m = got(&mut b_phone).await;
    assert_eq!(
        m["from"],
        json!(ALICE),
        "a linked address never reaches others: {m}"
    );
    // The linked user's own device is not "the sending device": it gets the copy too.
    for dev in [&mut a_phone, &mut a_laptop] {
        let m = got(dev).await;
        assert_eq!(m["out"], json!(true));
        assert_eq!(m["from"], json!(ALICE));
    }
    // The id belongs to the person: the primary's address retries the same message.
    let again = sent(&server, message(ALICE, BOB, json!("hi"), Some(json!("x1")))).await;
    assert_eq!(again["mids"], json!([1]), "{again}");
    b_phone.expect_silence().await;
}

#[tokio::test]
async fn several_recipients_get_one_message_each_in_order() {
    let server = TestServer::start().await;
    let mut a_phone = server.device(ALICE, "a-phone").await;
    let mut b_phone = server.device(BOB, "b-phone").await;
    let mut c_phone = server.device(CAROL, "c-phone").await;

    let answer = sent(
        &server,
        message(
            ALICE,
            &format!("{BOB}, {CAROL}"),
            json!("news"),
            Some(json!(1)),
        ),
    )
    .await;
    assert_eq!(answer["mid"], json!(1), "{answer}");
    assert_eq!(answer["mids"], json!([1, 2]), "{answer}");

    let m = got(&mut b_phone).await;
    assert_eq!((m["mid"].clone(), m["seq"].clone()), (json!(1), json!(1)));
    assert_eq!(m["to"], json!(BOB));
    let m = got(&mut c_phone).await;
    assert_eq!((m["mid"].clone(), m["seq"].clone()), (json!(2), json!(1)));
    assert_eq!(m["to"], json!(CAROL));
    for (mid, seq, to) in [(1, 1, BOB), (2, 2, CAROL)] {
        let m = got(&mut a_phone).await;
        assert_eq!(m["mid"], json!(mid), "{m}");
        assert_eq!(m["seq"], json!(seq), "{m}");
        assert_eq!(m["to"], json!(to), "{m}");
        assert_eq!(m["out"], json!(true), "{m}");
    }

    // The whole request again: the same mids, nothing delivered twice.
    let again = sent(
        &server,
        message(
            ALICE,
            &format!("{BOB},{CAROL}"),
            json!("news"),
            Some(json!(1)),
        ),
    )
    .await;
    assert_eq!(again["mids"], json!([1, 2]), "{again}");
    for dev in [&mut a_phone, &mut b_phone, &mut c_phone] {
        dev.expect_silence().await;
    }
}

#[tokio::test]
async fn a_repeated_id_is_idempotent_and_apart_from_device_ids() {
    let server = TestServer::start().await;
    let mut a_phone = server.device(ALICE, "a-phone").await;
    let mut b_phone = server.device(BOB, "b-phone").await;

    let first = sent(&server, message(ALICE, BOB, json!("once"), Some(json!(42)))).await;
    got(&mut b_phone).await;
    got(&mut a_phone).await;
    let before = server.snapshot();
    let retry = sent(&server, message(ALICE, BOB, json!("once"), Some(json!(42)))).await;
    assert_eq!(retry["mids"], first["mids"], "{retry}");
    b_phone.expect_silence().await;
    a_phone.expect_silence().await;
    assert_eq!(server.snapshot(), before, "a retry stored something");

    // The same id for another body is refused, as a device's reused client id is.
    let answer = server
        .backend(message(ALICE, BOB, json!("other"), Some(json!(42))))
        .await;
    assert_eq!(answer["error"], json!("duplicate_id"), "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("`message.id` 42"),
        "{answer}"
    );
    assert_eq!(server.snapshot(), before);

    // A device of the sender counting its own client ids does not collide with the backend's.
    let own = a_phone.send_msg("42", BOB, json!("once")).await;
    assert_eq!(own["mid"], json!(2), "{own}");
    // Without an id every request is a new message.
    let a = sent(&server, message(ALICE, BOB, json!("x"), None)).await;
    let b = sent(&server, message(ALICE, BOB, json!("x"), None)).await;
    assert_ne!(a["mid"], b["mid"]);
}

/// Expects `request` (a backend body) to be refused with `code` and a message containing
/// `needle`, leaving every row as it was.
async fn refused(server: &TestServer, request: Value, code: &str, needle: &str) {
    let before = server.snapshot();
    let answer = server.backend(request.clone()).await;
    assert_eq!(answer["result"], json!(false), "{request} -> {answer}");
    assert_eq!(answer["op"], json!("message"), "{answer}");
    assert_eq!(answer["error"], json!(code), "{request} -> {answer}");
    let text = answer["message"].as_str().unwrap();
    assert!(
        text.contains(needle),
        "{request}: `{text}` lacks `{needle}`"
    );
    assert_eq!(
        server.snapshot(),
        before,
        "a refusal changed the store: {request}"
    );
}

#[tokio::test]
async fn each_bad_field_is_named_and_changes_nothing() {
    let server = TestServer::start_with(|c| c.max_frame_bytes = 4096).await;
    for address in [ALICE, BOB, CAROL] {
        server.device_token(address, "phone").await;
    }
    // Bob's second device: a linked user, another address of his person.
    let linked = server.device_token(BOB, "laptop").await["user"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let ok = |f: &dyn Fn(&mut Value)| {
        let mut request = message(ALICE, BOB, json!("hi"), Some(json!(1)));
        f(&mut request["message"]);
        request
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"op": "message"}), "missing_field", "`message`"),
        (
            json!({"op": "message", "message": [ALICE, BOB]}),
            "wrong_type",
            ".message",
        ),
        (
            json!({"op": "message", "message": "hi"}),
            "wrong_type",
            ".message",
        ),
        (
            ok(&|m| drop(m.as_object_mut().unwrap().remove("from"))),
            "missing_field",
            "message.from",
        ),
        (
            ok(&|m| drop(m.as_object_mut().unwrap().remove("to"))),
            "missing_field",
            "message.to",
        ),
        (
            ok(&|m| drop(m.as_object_mut().unwrap().remove("message"))),
            "missing_field",
            "message.message",
        ),
        (ok(&|m| m["from"] = json!(5)), "wrong_type", ".message.from"),
        (ok(&|m| m["to"] = json!([BOB])), "wrong_type", ".message.to"),
        (
            ok(&|m| m["from"] = json!("")),
            "bad_value",
            "`message.from`",
        ),
        (ok(&|m| m["to"] = json!("")), "bad_value", "`message.to`"),
        (
            ok(&|m| m["to"] = json!(format!("{BOB},,{CAROL}"))),
            "bad_value",
            "position 2",
        ),
        (
            ok(&|m| m["to"] = json!(format!("{BOB},{BOB}"))),
            "bad_value",
            "twice",
        ),
        (
            ok(&|m| m["to"] = json!(format!("{BOB},{linked}"))),
            "bad_value",
            "names the person",
        ),
        (
            ok(&|m| m["to"] = json!("has space@x")),
            "bad_value",
            "`message.to`",
        ),
        (
            ok(&|m| m["to"] = json!(vec![BOB; 101].join(","))),
            "bad_value",
            "at most 100",
        ),
        (
            ok(&|m| m["from"] = json!("nobody@example.com")),
            "no_such_user",
            "`message.from`",
        ),
        // A bad second recipient refuses the whole request: nothing reaches the first.
        (
            ok(&|m| m["to"] = json!(format!("{BOB},nobody@example.com"))),
            "unknown_recipient",
            "nobody@example.com",
        ),
        (
            ok(&|m| m["message"] = json!("x".repeat(5000))),
            "bad_value",
            "at most 4096 bytes",
        ),
        (
            ok(&|m| m["expiry"] = json!(-1)),
            "bad_value",
            "`message.expiry`",
        ),
        (
            ok(&|m| m["expiry"] = json!(0)),
            "bad_value",
            "`message.expiry`",
        ),
        (
            ok(&|m| m["expiry"] = json!(315_360_001)),
            "bad_value",
            "`message.expiry`",
        ),
        (
            ok(&|m| m["expiry"] = json!("1h")),
            "wrong_type",
            ".message.expiry",
        ),
        (ok(&|m| m["id"] = json!(-3)), "bad_value", "`message.id`"),
        (ok(&|m| m["id"] = json!("")), "bad_value", "`message.id`"),
        (
            ok(&|m| m["id"] = json!("i".repeat(129))),
            "bad_value",
            "`message.id`",
        ),
        (
            ok(&|m| m["id"] = json!({"n": 1})),
            "wrong_type",
            ".message.id",
        ),
    ];
    for (request, code, needle) in cases {
        refused(&server, request, code, needle).await;
    }

    // Bodies that are not I-JSON, sent raw since a JSON value cannot hold them.
    let raw = |body: &str| {
        format!(
            r#"{{"op":"message","token":"{APP_TOKEN}","message":{{"from":"{ALICE}","to":"{BOB}","message":{body}}}}}"#
        )
    };
    // A number beyond f64 already fails the request's own JSON parse (`bad_json`); duplicate
    // keys parse, and only the body's I-JSON check (a device send's) refuses them.
    for (body, code, needle) in [
        (
            r#"{"a":1,"a":2}"#,
            "bad_value",
            "`message.message` is not I-JSON",
        ),
        ("1e400", "bad_json", "out of range"),
    ] {
        let before = server.snapshot();
        let (status, answer) = server.backend_raw(&raw(body)).await;
        assert_eq!(status, 200);
        assert_eq!(answer["error"], json!(code), "{body} -> {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(needle),
            "{body} -> {answer}"
        );
        assert_eq!(server.snapshot(), before);
    }
    // The body is relayed as its exact text: spacing and key order kept.
    let mut b_phone = server.device(BOB, "phone").await;
    let (_, answer) = server.backend_raw(&raw(r#"{ "z" : 1,"a":[ 2 ] }"#)).await;
    assert_eq!(answer["result"], json!(true), "{answer}");
    let frame = b_phone.conn.recv().await.unwrap();
    let octet::client::Incoming::Frame(text, _) = frame else {
        panic!("no frame: {frame:?}")
    };
    assert!(text.contains(r#""body":{ "z" : 1,"a":[ 2 ] }"#), "{text}");
}

#[tokio::test]
async fn a_curl_style_request_is_read_as_the_other_ops_are() {
    // `curl -d` sends form-urlencoded, Windows tools write a byte order mark: the backend reads
    // both as JSON for every op, `message` included (its body is taken from the same text).
    let server = TestServer::start().await;
    let mut b_phone = server.device(BOB, "b-phone").await;
    server.device_token(ALICE, "a-phone").await;
    let body = format!(
        "\u{feff}{{\"op\":\"message\",\"token\":\"{APP_TOKEN}\",\"message\":{{\"from\":\"{ALICE}\",\"to\":\"{BOB}\",\"message\":{{\"k\": [1, 2]}},\"id\":9}}}}"
    );
    let answer: Value = reqwest::Client::new()
        .post(server.http_url("/backend"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["mids"], json!([1]), "{answer}");
    let frame = b_phone.conn.recv().await.unwrap();
    let octet::client::Incoming::Frame(text, _) = frame else {
        panic!("no frame: {frame:?}")
    };
    assert!(text.contains(r#""body":{"k": [1, 2]}"#), "{text}");
}

//! Request ids on `history`, `profile`, `devices` and `revoke`: a device tags a request with
//! `id` and gets the tag back on the answer and on any `error` that refuses it, so answers are
//! matched by id instead of by order. Without `id` everything is as before (old clients keep working), and a bad id
//! is refused with `bad_value` naming the field, changing nothing.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::harness::{Device, TestServer};
use octet::client::Incoming;
use octet::protocol::MAX_OUT_FRAME;

/// Alice's and Bob's first devices, Alice with `n` messages sent to Bob.
async fn pair(server: &TestServer, n: u64) -> (Device, Device) {
    let mut alice = server.device("alice@example.com", "a-phone").await;
    let bob = server.device("bob@example.com", "b-phone").await;
    for i in 1..=n {
        alice
            .send_msg(&format!("m{i}"), "bob@example.com", json!(i))
            .await;
    }
    (alice, bob)
}

fn seqs(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn the_id_comes_back_on_the_answer() {
    let server = TestServer::start().await;
    let (mut alice, _bob) = pair(&server, 3).await;

    alice
        .send_json(json!({"op":"history","limit":2,"id":"page-1"}))
        .await;
    let page = alice.expect("history").await;
    assert_eq!(page["id"], json!("page-1"), "{page}");
    assert_eq!(seqs(&page), vec![2, 3]);
    assert_eq!(page["more"], json!(true));

    alice
        .send_json(json!({"op":"profile","get":"bob@example.com","id":"prof-1"}))
        .await;
    let profile = alice.expect("profile").await;
    assert_eq!(
        profile,
        json!({"op":"profile","id":"prof-1","address":"bob@example.com","profile":{},"version":0})
    );

    // Ids count characters, like a send's: 128 four-byte characters are fine.
    let wide = "𝄞".repeat(128);
    alice
        .send_json(json!({"op":"history","before":2,"id":wide}))
        .await;
    let page = alice.expect("history").await;
    assert_eq!(page["id"], json!(wide));
    assert_eq!(seqs(&page), vec![1]);
}

#[tokio::test]
async fn requests_in_flight_are_told_apart_by_id() {
    let server = TestServer::start().await;
    let (mut alice, _bob) = pair(&server, 4).await;

    // Three requests written at once, one of them refused, and a refused `read` (no id) among
    // them: each answer names the request it belongs to.
    alice
        .send_json(json!({"op":"history","limit":1,"id":"a"}))
        .await;
    alice
        .send_json(json!({"op":"read","peer":"nobody@example.com","upto":1}))
        .await;
    alice
        .send_json(json!({"op":"history","limit":0,"id":"b"}))
        .await;
    alice
        .send_json(json!({"op":"history","before":3,"limit":1,"id":"c"}))
        .await;
    let mut by_id = std::collections::BTreeMap::new();
    let mut untagged = Vec::new();
    for _ in 0..4 {
        let frame = alice.next().await;
        match frame["id"].as_str() {
            Some(id) => {
                by_id.insert(id.to_string(), frame);
            }
            None => untagged.push(frame),
        }
    }
    assert_eq!(seqs(&by_id["a"]), vec![4]);
    assert_eq!(by_id["b"]["code"], json!("bad_value"));
    assert_eq!(seqs(&by_id["c"]), vec![2]);
    assert_eq!(untagged.len(), 1, "{untagged:?}");
    assert_eq!(untagged[0]["code"], json!("unknown_recipient"));
}

#[tokio::test]
async fn refusals_echo_the_id() {
    let server = TestServer::start().await;
    let (mut alice, _bob) = pair(&server, 2).await;

    let cases = [
        (
            json!({"op":"history","limit":0,"id":"h-limit"}),
            "bad_value",
            "`limit` is 0; use 1 to 500",
        ),
        (
            json!({"op":"history","before":9,"id":"h-before"}),
            "bad_value",
            "`before` is 9, beyond the newest seq 2",
        ),
        (
            json!({"op":"history","limit":"ten","id":"h-type"}),
            "wrong_type",
            "",
        ),
        (
            json!({"op":"profile","get":"nobody@example.com","id":"p-get"}),
            "unknown_recipient",
            "",
        ),
        (
            json!({"op":"profile","set":{"nick":"x"},"id":"p-set"}),
            "bad_value",
            "unknown profile key `nick`; use name, status, avatar or fields",
        ),
        (
            json!({"op":"profile","id":"p-none"}),
            "bad_value",
            "profile takes exactly one of `set` (an object) or `get` (an address)",
        ),
    ];
    for (frame, code, message) in cases {
        let id = frame["id"].clone();
        alice.send_json(frame).await;
        let err = alice.expect("error").await;
        assert_eq!(err["id"], id, "{err}");
        assert_eq!(err["code"], json!(code), "{err}");
        if !message.is_empty() {
            assert_eq!(err["message"], json!(message), "{err}");
        }
    }
    alice.expect_silence().await;
}

#[tokio::test]
async fn without_an_id_nothing_changes() {
    let server = TestServer::start().await;
    let (mut alice, _bob) = pair(&server, 2).await;

    alice.send_json(json!({"op":"history","limit":1})).await;
    let page = alice.expect("history").await;
    assert!(page.get("id").is_none(), "{page}");
    assert_eq!(seqs(&page), vec![2]);

    alice
        .send_json(json!({"op":"profile","get":"alice@example.com"}))
        .await;
    let profile = alice.expect("profile").await;
    assert_eq!(
        profile,
        json!({"op":"profile","address":"alice@example.com","profile":{},"version":0})
    );

    alice.send_json(json!({"op":"history","limit":501})).await;
    let err = alice.expect("error").await;
    assert_eq!(
        err,
        json!({"op":"error","code":"bad_value","message":"`limit` is 501; use 1 to 500"})
    );

    // A profile change is an event of the log: it never carries an id, even when `set` had one.
    alice
        .send_json(json!({"op":"profile","set":{"name":"Alice"},"id":"p-set"}))
        .await;
    let change = alice.expect("profile").await;
    assert!(change.get("id").is_none(), "{change}");
    assert_eq!(change["version"], json!(1));
}

#[tokio::test]
async fn a_bad_id_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let (mut alice, _bob) = pair(&server, 1).await;

    let long = "x".repeat(129);
    for frame in [
        json!({"op":"history","id":long}),
        json!({"op":"history","id":""}),
        json!({"op":"profile","get":"bob@example.com","id":long}),
        json!({"op":"profile","set":{"name":"Mallory"},"id":long}),
    ] {
        let id = frame["id"].clone();
        alice.send_json(frame).await;
        let err = alice.expect("error").await;
        assert_eq!(
            err,
            json!({"op":"error","code":"bad_value","message":"`id` must be 1 to 128 characters","id":id})
        );
    }
    // An id that is not a string is a type error, named by its field.
    alice.send_json(json!({"op":"history","id":7})).await;
    let err = alice.expect("error").await;
    assert_eq!(err["code"], json!("wrong_type"), "{err}");
    assert!(err["message"].as_str().unwrap().contains("id"), "{err}");
    assert!(err.get("id").is_none(), "{err}");

    // Nothing was answered, and the refused `set` changed nothing.
    alice.expect_silence().await;
    alice
        .send_json(json!({"op":"profile","get":"alice@example.com","id":"check"}))
        .await;
    let profile = alice.expect("profile").await;
    assert_eq!(profile["version"], json!(0), "{profile}");
}

/// The answer page as sent: its text length and its events' exact texts.
async fn raw_page(dev: &mut Device) -> (usize, Vec<String>, bool) {
    #[derive(Deserialize)]
    struct Page {
        events: Vec<Box<RawValue>>,
        more: bool,
    }
    let incoming = tokio::time::timeout(crate::harness::WAIT, dev.conn.recv())
        .await
        .expect("a page in time")
        .expect("receive");
    let Incoming::Frame(text, _) = incoming else {
        panic!("closed instead of a page: {incoming:?}");
    };
    let page: Page = serde_json::from_str(&text).expect("a history page");
    let events = page.events.iter().map(|e| e.get().to_string()).collect();
    (text.len(), events, page.more)
}

/// A page whose events fill the 1 MiB frame almost to the byte still fits once a long id (128
/// characters that each take 6 bytes escaped) is written into it: the id counts against the
/// page's budget, so the oldest event goes to the next page instead.
#[tokio::test]
async fn a_long_id_still_fits_the_page_in_a_mebibyte() {
    let server = TestServer::start().await;
    let mut alice = server.device("alice@example.com", "a-phone").await;
    let _bob = server.device("bob@example.com", "b-phone").await;
    let big = "x".repeat(60_000);
    for i in 1..=17 {
        alice
            .send_msg(&format!("m{i:02}"), "bob@example.com", json!(big))
            .await;
    }
    alice.send_json(json!({"op":"history","limit":500})).await;
    let (_, events, more) = raw_page(&mut alice).await;
    assert_eq!((events.len(), more), (17, false));
    // One more message, sized so that the page without an id ends 100 bytes under the limit
    // (its frame differs from the 17th's in the body's length alone: the same digits count).
    let overhead = events[16].len() - big.len();
    let used: usize = events.iter().map(|e| e.len() + 1).sum::<usize>() + 42;
    let filler = MAX_OUT_FRAME - 100 - used - overhead;
    alice
        .send_msg("m18", "bob@example.com", json!("y".repeat(filler)))
        .await;

    alice.send_json(json!({"op":"history","limit":500})).await;
    let (len, events, more) = raw_page(&mut alice).await;
    assert_eq!(
        (events.len(), more),
        (18, false),
        "the page without id fits"
    );
    assert!(len <= MAX_OUT_FRAME - 50, "{len}");

    let id = "\u{1}".repeat(128);
    alice
        .send_json(json!({"op":"history","limit":500,"id":id}))
        .await;
    let (len, events, more) = raw_page(&mut alice).await;
    assert!(len <= MAX_OUT_FRAME, "a page of {len} bytes");
    assert_eq!((events.len(), more), (17, true));
}

/// `devices` and `revoke` take the same `id`: echoed on the answer, absent when not asked.
/// Broken locally by building both answers with `id: None` in `gateway/devices.rs`: the
/// first assertion fails.
#[tokio::test]
async fn devices_and_revoke_answers_echo_the_id() {
    let server = TestServer::start_with(|c| c.device_self_revoke = true).await;
    let mut phone = server.device("alice@example.com", "a-phone").await;
    let mut laptop = server.device("alice@example.com", "a-laptop").await;
    let _linked = phone.expect("devices_changed").await;

    phone.send_json(json!({"op":"devices","id":"d-1"})).await;
    let list = phone.expect("devices").await;
    assert_eq!(list["id"], json!("d-1"), "{list}");
    assert_eq!(list["devices"].as_array().unwrap().len(), 2, "{list}");
    phone.send_json(json!({"op":"devices"})).await;
    let list = phone.expect("devices").await;
    assert!(list.get("id").is_none(), "{list}");

    // A logout: the answer with its id comes before the close.
    laptop
        .send_json(json!({"op":"revoke","uid":laptop.uid,"id":"bye"}))
        .await;
    let answer = laptop.expect("revoke").await;
    assert_eq!(
        answer,
        json!({"op":"revoke","id":"bye","uid":laptop.uid,"revoked":1})
    );
    let (code, _) = laptop.expect_closed().await;
    assert_eq!(code, 4004);
}

/// Every refusal of `devices` or `revoke` carries the request's id, and a bad id is refused
/// with `bad_value` before anything is done: the device named stays connected and logged in.
/// Broken locally by answering the `forbidden` refusal with `id: None` -> the first loop fails;
/// by skipping `check_id` in `revoke` -> the laptop is revoked and the bad-id loop fails.
#[tokio::test]
async fn devices_and_revoke_refusals_echo_the_id_and_a_bad_id_changes_nothing() {
    let off = TestServer::start().await;
    let mut phone = off.device("alice@example.com", "a-phone").await;
    phone
        .send_json(json!({"op":"revoke","uid":phone.uid,"id":"r-off"}))
        .await;
    let err = phone.expect("error").await;
    assert_eq!(err["code"], json!("forbidden"), "{err}");
    assert_eq!(err["id"], json!("r-off"), "{err}");

    let server = TestServer::start_with(|c| c.device_self_revoke = true).await;
    let mut phone = server.device("alice@example.com", "a-phone").await;
    let mut laptop = server.device("alice@example.com", "a-laptop").await;
    let _linked = phone.expect("devices_changed").await;
    for (frame, code) in [
        (
            json!({"op":"revoke","uid":999_999,"id":"r-nobody"}),
            "no_such_user",
        ),
        (json!({"op":"revoke","id":"r-no-uid"}), "missing_field"),
        (json!({"op":"revoke","uid":"x","id":"r-type"}), "wrong_type"),
    ] {
        let id = frame["id"].clone();
        phone.send_json(frame).await;
        let err = phone.expect("error").await;
        assert_eq!(err["code"], json!(code), "{err}");
        assert_eq!(err["id"], id, "{err}");
    }

    let long = "x".repeat(129);
    for frame in [
        json!({"op":"devices","id":""}),
        json!({"op":"devices","id":long}),
        json!({"op":"revoke","uid":laptop.uid,"id":""}),
        json!({"op":"revoke","uid":laptop.uid,"id":long}),
    ] {
        let id = frame["id"].clone();
        phone.send_json(frame).await;
        let err = phone.expect("error").await;
        assert_eq!(
            err,
            json!({"op":"error","code":"bad_value","message":"`id` must be 1 to 128 characters","id":id})
        );
    }
    // Nothing answered, nothing revoked: the laptop is still there and still logs in.
    phone.expect_silence().await;
    laptop.expect_silence().await;
    phone.send_json(json!({"op":"devices","id":"check"})).await;
    let list = phone.expect("devices").await;
    let laptop_entry = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["uid"] == json!(laptop.uid))
        .cloned()
        .expect("the laptop is still a device");
    assert_eq!(laptop_entry["online"], json!(true), "{list}");
    let mut again = server.login(&laptop.token).await;
    let welcome = again.expect("welcome").await;
    assert_eq!(welcome["uid"], json!(laptop.uid), "{welcome}");
}

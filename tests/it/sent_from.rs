//! `origin` on a person's own copies of what it sent (issue 16, item 6): the device that sent
//! it, live, on catch-up and in `history`; never on the peer's copy.

use serde_json::{Value, json};

use crate::harness::TestServer;

fn origin_of(frame: &Value) -> &Value {
    &frame["origin"]
}

#[tokio::test]
async fn own_copies_name_the_sending_device_live_on_catch_up_and_in_history() {
    let server = TestServer::start().await;
    let mut phone = server.device("alice@x", "a-phone").await;
    let mut laptop = server.device("alice@x", "a-laptop").await;
    let mut bob = server.device("bob@x", "b-phone").await;

    let sent = laptop
        .send_msg("c-1", "bob@x", json!("from the laptop"))
        .await;
    assert_eq!(sent["op"], "sent", "{sent}");
    let own = phone.expect("message").await;
    assert_eq!(own["out"], true);
    assert_eq!(
        origin_of(&own),
        &json!({"uid": laptop.uid, "device": "a-laptop"})
    );
    // The peer never learns which of alice's users sent it.
    let theirs = bob.expect("message").await;
    assert!(theirs.get("origin").is_none(), "{theirs}");
    // A note to self: the sender's other devices see where it came from.
    phone.send_msg("n-1", "alice@x", json!("note")).await;
    let note = laptop.expect("message").await;
    assert_eq!(
        origin_of(&note),
        &json!({"uid": phone.uid, "device": "a-phone"})
    );
    // A reply from bob is not alice's own: no origin.
    bob.send_msg("b-1", "alice@x", json!("reply")).await;
    let reply = phone.expect("message").await;
    assert!(reply.get("origin").is_none(), "{reply}");

    // Catch-up on a new device of alice's from the start of the log.
    let token = server.device_token("alice@x", "a-tablet").await["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut tablet = server.login_since(&token, Some(0), None).await;
    tablet.expect("welcome").await;
    let replayed: Vec<Value> = [
        tablet.expect("message").await,
        tablet.expect("message").await,
        tablet.expect("message").await,
    ]
    .into();
    tablet.expect("synced").await;
    let origins: Vec<&Value> = replayed.iter().map(origin_of).collect();
    assert_eq!(
        origins,
        [
            &json!({"uid": laptop.uid, "device": "a-laptop"}),
            &json!({"uid": phone.uid, "device": "a-phone"}),
            &Value::Null,
        ]
    );

    // History, on either person. Alice's seq 1 is the laptop's link (`devices_changed`).
    tablet
        .send_json(json!({"op": "history", "before": 5, "limit": 10}))
        .await;
    let page = tablet.expect("history").await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 4, "{page}");
    assert_eq!(events[0]["op"], json!("devices_changed"));
    assert_eq!(
        origin_of(&events[1]),
        &json!({"uid": laptop.uid, "device": "a-laptop"})
    );
    assert!(events[3].get("origin").is_none());
    bob.send_json(json!({"op": "history", "before": 3, "limit": 10}))
        .await;
    let page = bob.expect("history").await;
    let events = page["events"].as_array().unwrap();
    // Bob's log: alice's message (not his own: no origin), then his reply (his own).
    assert_eq!(events.len(), 2, "{page}");
    assert!(events[0].get("origin").is_none(), "{page}");
    assert_eq!(
        origin_of(&events[1]),
        &json!({"uid": bob.uid, "device": "b-phone"})
    );
}

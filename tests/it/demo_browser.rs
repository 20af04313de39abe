//! The web demo in a real headless Chromium (the project's DevTools client, `browser.rs`):
//! two persons, three tabs each. Every tab shows every message once, in the same order; a call
//! rings on both of the callee's tabs and stops on the other when one answers; a closed tab
//! catches up when reopened; a photo shows on every tab; a reloaded tab keeps its device and
//! its conversation.

use serde_json::{Value, json};

use crate::browser::{Browser, Cdp, PageSession};
use crate::harness::{TestServer, WAIT};

/// What the tab shows: its device, its connection state and its messages' texts in order.
const SHOWN: &str = r##"JSON.stringify({
  device: document.getElementById("device").textContent,
  state: document.getElementById("state").textContent,
  seq: document.getElementById("seq").textContent,
  held: window.demoClient ? window.demoClient.position.held : null,
  newest: Math.max(0, ...[...document.querySelectorAll("#messages li")].map((e) => Number(e.dataset.seq))),
  error: document.getElementById("error").hidden ? "" : document.getElementById("error").textContent,
  call: document.getElementById("call").hidden ? "" : document.getElementById("call-text").textContent,
  answer: !document.getElementById("answer").hidden && !document.getElementById("call").hidden,
  texts: [...document.querySelectorAll("#messages li .text")].map((e) => e.textContent),
})"##;

async fn shown(
    cdp: &mut Cdp,
    page: &PageSession,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let value = cdp
        .wait_for(page, what, SHOWN, |v| {
            v.as_str()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .is_some_and(|v| ready(&v))
        })
        .await;
    serde_json::from_str(value.as_str().unwrap()).unwrap()
}

/// Opens the demo in a new tab, joins as `name` and waits until the tab is live.
async fn join(cdp: &mut Cdp, server: &TestServer, name: &str) -> PageSession {
    let page = cdp.open_page(&server.http_url("/demo")).await;
    cdp.wait_for(
        &page,
        "the page's script ran",
        "document.body.dataset.ready",
        |v| v == "true",
    )
    .await;
    let script = format!(
        "document.getElementById('name').value = {}; document.getElementById('join').requestSubmit(); true",
        json!(name)
    );
    cdp.evaluate(&page, &script).await;
    shown(cdp, &page, &format!("{name}'s tab is live"), |v| {
        v["state"] == "live"
    })
    .await;
    page
}

async fn send(cdp: &mut Cdp, page: &PageSession, to: &str, text: &str) {
    let script = format!(
        "document.getElementById('peer').value = {}; document.getElementById('text').value = {}; \
         document.getElementById('compose').requestSubmit(); true",
        json!(to),
        json!(text)
    );
    cdp.evaluate(page, &script).await;
}

/// Waits until the tab's client handed over (and stored) everything it received so far.
async fn idle(cdp: &mut Cdp, page: &PageSession) {
    cdp.evaluate(
        page,
        "delete document.body.dataset.idle; \
         window.demoClient.idle().then(() => { document.body.dataset.idle = 'yes'; }); true",
    )
    .await;
    cdp.wait_for(
        page,
        "the tab's client is idle",
        "document.body.dataset.idle ?? ''",
        |v| v == "yes",
    )
    .await;
}

async fn click(cdp: &mut Cdp, page: &PageSession, id: &str) {
    cdp.evaluate(
        page,
        &format!("document.getElementById({}).click(); true", json!(id)),
    )
    .await;
}

/// Two persons × three tabs of the demo in headless Chromium. With `OCTET_DEMO_SCREENSHOT=<file>`
/// it also writes one of bob's tabs as base64 PNG to `<file>`; `base64 -d <file> > docs/demo.png`
/// retakes README's screenshot.
#[tokio::test]
async fn demo_tabs_stay_in_sync_in_a_real_browser() {
    let server = TestServer::start_with(|c| c.demo = true).await;
    let browser = Browser::launch().await;
    let mut cdp = browser.connect().await;
    let a1 = join(&mut cdp, &server, "alice").await;
    let a2 = join(&mut cdp, &server, "alice").await;
    let b1 = join(&mut cdp, &server, "bob").await;
    let b2 = join(&mut cdp, &server, "bob").await;
    let a3 = join(&mut cdp, &server, "alice").await;
    let b3 = join(&mut cdp, &server, "bob").await;
    let tabs = [&a1, &a2, &a3, &b1, &b2, &b3];
    let mut devices = Vec::new();
    for tab in tabs {
        devices.push(shown(&mut cdp, tab, "the device", |_| true).await["device"].clone());
    }
    devices.sort_by_key(|d| d.to_string());
    devices.dedup();
    assert_eq!(devices.len(), 6, "each tab is its own device: {devices:?}");

    // Each tab sends one, waiting for it to show before the next, so the order is known.
    let sends = [
        (&a1, "bob", "a1"),
        (&b1, "alice", "b1"),
        (&a2, "bob", "a2"),
        (&b2, "alice", "b2"),
        (&a3, "bob", "a3"),
        (&b3, "alice", "b3"),
    ];
    for (i, (tab, to, text)) in sends.iter().enumerate() {
        send(&mut cdp, tab, to, text).await;
        for other in tabs {
            shown(
                &mut cdp,
                other,
                &format!("message {text} everywhere"),
                |v| v["texts"].as_array().is_some_and(|t| t.len() == i + 1),
            )
            .await;
        }
    }
    for tab in tabs {
        // The tab's seq is where its client is: past its newest message, not one event behind.
        let v = shown(&mut cdp, tab, "the tab's seq where its client is", |v| {
            v["seq"].as_str() == Some(v["held"].to_string().as_str())
                && v["held"].as_u64() >= v["newest"].as_u64()
        })
        .await;
        assert_eq!(
            v["texts"],
            json!(["a1", "b1", "a2", "b2", "a3", "b3"]),
            "{v}"
        );
        assert_eq!(v["error"], "", "{v}");
    }

    // A call from alice rings on both of bob's tabs; answered on one, it stops on the other.
    cdp.evaluate(&a1, "document.getElementById('peer').value = 'bob'; true")
        .await;
    click(&mut cdp, &a1, "call-button").await;
    for tab in [&b1, &b2, &b3] {
        shown(&mut cdp, tab, "bob's tabs ring", |v| v["answer"] == true).await;
    }
    click(&mut cdp, &b2, "answer").await;
    for tab in [&b1, &b3] {
        shown(&mut cdp, tab, "the other tabs stop ringing", |v| {
            v["answer"] == false && v["call"] == "answered on another device"
        })
        .await;
    }
    shown(&mut cdp, &a1, "the caller is in the call", |v| {
        v["call"] == "in a call with bob@demo"
    })
    .await;

    // A closed tab (its socket and its device's lock go) misses two messages; a new tab takes
    // that device back and catches up from the device's IndexedDB cursor.
    let closed_device = shown(&mut cdp, &a2, "a2", |_| true).await["device"].clone();
    cdp.call(&a2, "Page.close", json!({})).await;
    // Only once the broker saw it go: else the closing page could still take a message.
    let tab_id = closed_device
        .as_str()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = server.devices("alice@demo").await;
        let gone = list["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["device"] == tab_id.as_str() && d["online"] == false);
        if gone {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed tab's device is still online: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    send(&mut cdp, &b1, "alice", "while away 1").await;
    send(&mut cdp, &a1, "bob", "while away 2").await;
    shown(&mut cdp, &a1, "a1 has both", |v| {
        v["texts"].as_array().is_some_and(|t| t.len() == 8)
    })
    .await;
    let a2 = join(&mut cdp, &server, "alice").await;
    let tabs = [&a1, &a2, &a3, &b1, &b2, &b3];
    let back = shown(&mut cdp, &a2, "the reopened tab catches up", |v| {
        v["state"] == "live" && v["texts"].as_array().is_some_and(|t| t.len() == 8)
    })
    .await;
    assert_eq!(back["device"], closed_device, "{back}");
    let handed = cdp.evaluate(&a2, "document.body.dataset.handed").await;
    assert_eq!(handed, "2", "only the two missed messages were replayed");
    assert_eq!(
        back["texts"],
        json!([
            "a1",
            "b1",
            "a2",
            "b2",
            "a3",
            "b3",
            "while away 1",
            "while away 2"
        ]),
        "{back}"
    );

    // A photo attached on one tab shows (downloaded with its signed URL) on the others.
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("dot.png");
    // A 96×64 gradient, big enough to see in the README's screenshot.
    image::RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, 160])
    })
    .save(&photo)
    .unwrap();
    let document = cdp.call(&b2, "DOM.getDocument", json!({})).await;
    let input = cdp
        .call(
            &b2,
            "DOM.querySelector",
            json!({"nodeId": document["root"]["nodeId"], "selector": "#photo"}),
        )
        .await;
    cdp.call(
        &b2,
        "DOM.setFileInputFiles",
        json!({"nodeId": input["nodeId"], "files": [photo.to_str().unwrap()]}),
    )
    .await;
    send(&mut cdp, &b2, "alice", "a photo").await;
    for tab in tabs {
        cdp.wait_for(
            tab,
            "the photo shows",
            "[...document.querySelectorAll('#messages img')].filter((i) => i.complete && i.naturalWidth === 96).length",
            |v| v == 1,
        )
        .await;
    }

    // `OCTET_DEMO_SCREENSHOT=<file>`: one of bob's tabs as PNG, base64 (README's docs/demo.png:
    // `base64 -d <file> > docs/demo.png`).
    if let Ok(path) = std::env::var("OCTET_DEMO_SCREENSHOT") {
        // Only the tab in front is painted.
        cdp.call(&b1, "Page.bringToFront", json!({})).await;
        let shot = cdp
            .call(&b1, "Page.captureScreenshot", json!({"format": "png"}))
            .await;
        std::fs::write(path, shot["data"].as_str().unwrap()).unwrap();
    }

    // A reload keeps the tab's device and its conversation: the cursor comes back from
    // IndexedDB, so not one message is handed over again.
    idle(&mut cdp, &a2).await;
    let before = shown(&mut cdp, &a2, "a2", |_| true).await;
    cdp.call(&a2, "Page.reload", json!({})).await;
    let after = shown(&mut cdp, &a2, "a2 back after the reload", |v| {
        v["state"] == "live" && v["texts"].as_array().is_some_and(|t| t.len() == 9)
    })
    .await;
    assert_eq!(after["device"], before["device"], "{after}");
    assert_eq!(after["texts"], before["texts"], "{after}");
    idle(&mut cdp, &a2).await;
    let handed = cdp
        .evaluate(&a2, "document.body.dataset.handed ?? 'none'")
        .await;
    assert_eq!(
        handed, "none",
        "a message was handed over again after the reload"
    );

    browser.close(cdp).await;
}

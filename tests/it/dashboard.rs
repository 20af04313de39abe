//! `/dashboard`: the admin-token gate over plain HTTP, and the live page in a real headless
//! Chromium (`/usr/bin/chromium`, Debian's package) driven over the Chrome DevTools Protocol:
//! the test reads the numbers the page shows, makes traffic through the harness and waits for
//! the page to show it. Every wait is bounded; the browser is closed (and killed on drop).
//!
//! The browser test never skips: without `/usr/bin/chromium` it fails and says how to install
//! it (`.ci/run` installs it when it is missing).

use serde_json::{Value, json};

use crate::browser::{Browser, Cdp, PageSession};
use crate::harness::{APP_TOKEN, TestServer, WAIT};

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

async fn server() -> TestServer {
    TestServer::start_with(|c| c.admin_token = Some(ADMIN_TOKEN.into())).await
}

fn dashboard_url(server: &TestServer, token: &str) -> String {
    server.http_url(&format!("/dashboard?token={token}"))
}

async fn get(url: &str) -> reqwest::Response {
    tokio::time::timeout(WAIT, reqwest::get(url))
        .await
        .unwrap_or_else(|_| panic!("no answer from {url} within {WAIT:?}"))
        .expect("request")
}

#[tokio::test]
async fn page_and_feed_refuse_a_missing_or_wrong_token() {
    let server = server().await;
    let wrong = [
        "".to_string(),
        "?token=".to_string(),
        "?token=wrong".to_string(),
        format!("?token={}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
        format!("?token={ADMIN_TOKEN}x"),
        // The app token is not the admin token.
        format!("?token={APP_TOKEN}"),
        format!("?tok={ADMIN_TOKEN}"),
    ];
    for path in ["/dashboard", "/dashboard/events"] {
        for query in &wrong {
            let url = server.http_url(&format!("{path}{query}"));
            let response = get(&url).await;
            assert_eq!(response.status(), 401, "{url}");
            let body = response.text().await.unwrap();
            assert!(
                body.contains("needs the admin token") && body.contains("?token=<admin token>"),
                "{url}: the 401 should say what is missing: {body}"
            );
        }
    }

    let page = get(&dashboard_url(&server, ADMIN_TOKEN)).await;
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(headers.contains_key("content-security-policy"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<canvas id=\"rates\""), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page must load nothing from elsewhere: {html}"
    );

    for (asset, kind) in [("app.js", "text/javascript"), ("style.css", "text/css")] {
        let response = get(&server.http_url(&format!("/dashboard/{asset}"))).await;
        assert_eq!(response.status(), 200, "{asset}");
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{asset}: {content_type}");
        let text = response.text().await.unwrap();
        assert!(
            !text.contains("://"),
            "{asset} must not load anything remote"
        );
    }

    let mut feed = get(&server.http_url(&format!("/dashboard/events?token={ADMIN_TOKEN}"))).await;
    assert_eq!(feed.status(), 200);
    assert_eq!(feed.headers()["content-type"], "text/event-stream");
    let first = read_feed_until(&mut feed, "event: snapshot").await;
    assert!(first.starts_with("event: history\n"), "{first}");
}

/// Reads the feed until `needle` has arrived; returns everything read.
async fn read_feed_until(feed: &mut reqwest::Response, needle: &str) -> String {
    let mut text = String::new();
    tokio::time::timeout(WAIT, async {
        while !text.contains(needle) {
            let chunk = feed.chunk().await.expect("feed reads").expect("feed open");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `{needle}` on the feed within {WAIT:?}; got: {text}"));
    text
}

#[tokio::test]
async fn errors_sent_to_clients_are_counted_by_code() {
    let server = server().await;
    let mut dev = server.device("alice@example.com", "a1").await;
    dev.send_text("not json").await;
    dev.expect("error").await;
    dev.send_json(json!({"op": "send", "id": "", "to": "bob@example.com", "body": 1}))
        .await;
    dev.expect("error").await;
    server
        .backend_raw(r#"{"op":"devices","token":"wrong","user":{"address":"a@b"}}"#)
        .await;
    let metrics = get(&server.http_url("/metrics"))
        .await
        .text()
        .await
        .unwrap();
    for line in [
        r#"octet_errors_total{code="bad_json"} 1"#,
        r#"octet_errors_total{code="bad_value"} 1"#,
        r#"octet_errors_total{code="bad_app_token"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn an_open_feed_does_not_hold_up_shutdown() {
    let server = server().await;
    let mut feed = get(&server.http_url(&format!("/dashboard/events?token={ADMIN_TOKEN}"))).await;
    read_feed_until(&mut feed, "event: snapshot").await;
    // `restart` fails the test if the old server takes longer than WAIT to stop.
    let _server = server.restart().await;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match feed.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the feed stays open after shutdown");
}

#[tokio::test]
async fn the_page_in_a_real_browser_follows_traffic() {
    let server = server().await;
    let browser = Browser::launch().await;
    let mut cdp = browser.connect().await;
    let page = cdp.open_page(&dashboard_url(&server, ADMIN_TOKEN)).await;

    let before = wait_for(
        &mut cdp,
        &page,
        "the page is live with its first snapshot",
        |dom| dom.status() == "live" && dom.number("connections").is_some(),
    )
    .await;
    assert_eq!(before.number("connections"), Some(0.0), "{before:?}");
    assert_eq!(before.number("persons"), Some(0.0), "{before:?}");
    assert_eq!(before.number("msg-total"), Some(0.0), "{before:?}");
    assert_eq!(before.number("del-total"), Some(0.0), "{before:?}");
    assert!(before.errors().is_empty(), "{before:?}");
    assert_eq!(before.text("lat-p50"), "–", "{before:?}");

    // Traffic: two persons on three devices, five messages (each reaching bob's device and
    // alice's other device), a frame that is not JSON, and a backend call with a wrong token.
    let mut a1 = server.device("alice@example.com", "a1").await;
    let mut a2 = server.device("alice@example.com", "a2").await;
    let mut b1 = server.device("bob@example.com", "b1").await;
    for i in 0..5 {
        a1.send_msg(&format!("m{i}"), "bob@example.com", json!({"text": i}))
            .await;
        a2.expect("message").await;
        b1.expect("message").await;
    }
    b1.send_text("not json").await;
    let error = b1.expect("error").await;
    assert_eq!(error["code"], "bad_json");
    let (_, refused) = server
        .backend_raw(r#"{"op":"devices","token":"wrong","user":{"address":"bob@example.com"}}"#)
        .await;
    assert_eq!(refused["error"], "bad_app_token");

    let after = wait_for(&mut cdp, &page, "the page shows the traffic", |dom| {
        dom.number("connections") == Some(3.0)
            && dom.number("devices") == Some(3.0)
            && dom.number("persons") == Some(2.0)
            && dom.number("msg-total") == Some(5.0)
            && dom.number("del-total") == Some(10.0)
            && dom.number("rate-peak").is_some_and(|peak| peak > 0.0)
            && dom.number("lat-count") == Some(5.0)
            && dom.error_count("bad_json") == Some(1)
            && dom.error_count("bad_app_token") == Some(1)
    })
    .await;
    assert_eq!(after.number("errors-total"), Some(2.0), "{after:?}");
    for percentile in ["lat-p50", "lat-p99"] {
        let shown = after.text(percentile);
        assert!(
            shown.starts_with('≤') || shown.starts_with('>'),
            "{percentile} should be a bucket bound, shows {shown:?}"
        );
    }

    // A page opened now still shows the recent history (the server keeps it).
    let late = cdp.open_page(&dashboard_url(&server, ADMIN_TOKEN)).await;
    let late_dom = wait_for(
        &mut cdp,
        &late,
        "a page opened late shows the recent chart",
        |dom| dom.status() == "live" && dom.number("msg-total") == Some(5.0),
    )
    .await;
    assert!(
        late_dom.number("rate-peak").is_some_and(|peak| peak > 0.0),
        "the chart of a page opened late misses the traffic: {late_dom:?}"
    );

    // Devices going away bring the numbers down again.
    drop((a1, a2, b1));
    wait_for(&mut cdp, &page, "the page shows the devices gone", |dom| {
        dom.number("connections") == Some(0.0) && dom.number("persons") == Some(0.0)
    })
    .await;

    browser.close(cdp).await;
}

/// A headless Chromium with a fresh profile, killed when dropped.
/// Every number the page shows, as text, and the top-errors table.
const READ_DOM: &str = r#"(() => {
  const ids = ['connections', 'devices', 'persons', 'msg-rate', 'del-rate', 'msg-total',
    'del-total', 'errors-total', 'rate-peak', 'lat-p50', 'lat-p99', 'lat-count'];
  const shown = {};
  for (const id of ids) {
    const el = document.getElementById(id);
    shown[id] = el ? el.textContent : null;
  }
  const status = document.getElementById('status');
  shown.status = status ? status.dataset.state : null;
  shown.errors = [...document.querySelectorAll('#top-errors tr[data-code]')]
    .map((row) => ({ code: row.dataset.code, count: row.cells[1].textContent }));
  return shown;
})()"#;

/// Reads the page's numbers until `ready` holds.
async fn wait_for(
    cdp: &mut Cdp,
    page: &PageSession,
    what: &str,
    ready: impl Fn(&Dom) -> bool,
) -> Dom {
    let value = cdp
        .wait_for(page, what, READ_DOM, |value| ready(&Dom(value.clone())))
        .await;
    Dom(value)
}

/// The page's numbers as `READ_DOM` returns them.
#[derive(Debug)]
struct Dom(Value);

impl Dom {
    fn text(&self, id: &str) -> &str {
        self.0[id].as_str().unwrap_or("")
    }

    fn number(&self, id: &str) -> Option<f64> {
        self.text(id).trim().parse().ok()
    }

    fn status(&self) -> &str {
        self.text("status")
    }

    /// `(code, count)` rows of the top-errors table.
    fn errors(&self) -> Vec<(String, u64)> {
        self.0["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                let code = row["code"].as_str().unwrap_or("").to_string();
                let count = row["count"].as_str().and_then(|c| c.parse().ok());
                (code, count.unwrap_or(0))
            })
            .collect()
    }

    fn error_count(&self, code: &str) -> Option<u64> {
        self.errors()
            .into_iter()
            .find(|(c, _)| c == code)
            .map(|(_, n)| n)
    }
}

//! Cross-site WebSocket hijacking, in a real browser: with an allow-list set, a page from a
//! foreign origin cannot open `/ws`, and a page from an allowed origin can.

use std::net::SocketAddr;

use axum::response::Html;
use axum::routing::get;

use crate::browser::Browser;
use crate::harness::TestServer;

/// A page that opens a WebSocket to the `ws` query parameter and puts the outcome in its title.
const PAGE: &str = r#"<!doctype html><title>connecting</title><script>
const ws = new WebSocket(new URLSearchParams(location.search).get('ws'));
ws.onopen = () => { document.title = 'open'; ws.close(); };
ws.onerror = () => { document.title = 'refused'; };
</script>"#;

/// Serves [`PAGE`] on a loopback port of its own: an origin of its own.
async fn page_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/", get(|| async { Html(PAGE) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn a_foreign_page_cannot_open_a_websocket_when_origins_are_listed() {
    let allowed = page_server().await;
    let foreign = page_server().await;
    let server =
        TestServer::start_with(|c| c.allowed_origins = vec![format!("http://{allowed}")]).await;
    let browser = Browser::launch().await;
    let mut cdp = browser.connect().await;
    let done = |title: &serde_json::Value| title == "open" || title == "refused";
    for (origin, expected) in [(foreign, "refused"), (allowed, "open")] {
        let url = format!("http://{origin}/?ws=ws://{}/ws", server.addr);
        let page = cdp.open_page(&url).await;
        let title = cdp
            .wait_for(
                &page,
                &format!("the page at {origin} to connect or fail"),
                "document.title",
                done,
            )
            .await;
        assert_eq!(title, expected, "page from {origin}");
    }
    browser.close(cdp).await;
}

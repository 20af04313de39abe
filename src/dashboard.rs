//! The live dashboard: `GET /dashboard?token=<admin token>`.
//!
//! Owns the page and its assets (`src/dashboard/`: one HTML page, one script, one stylesheet,
//! compiled into the binary with `include_str!`; no CDN, no fonts), the admin-token gate in
//! front of the page and its feed, the Server-Sent Events feed `GET /dashboard/events`, and the
//! short in-memory history the feed draws from.
//!
//! The history is a ring of at most [`HISTORY`] per-second [`Point`]s, filled by one sampler
//! task that [`routes`] starts; the task holds only a weak reference and ends once the routes
//! are dropped (when `server::run` returns). A page opened late therefore still shows the last
//! few minutes. Nothing here is durable: a restart starts an empty chart.
//!
//! The feed sends one `history` event (every point in the ring) when a page connects, then one
//! `snapshot` event per second: the live gauges, the totals, the newest point, send→deliver
//! latency percentiles over the last [`LATENCY_WINDOW`] samples and the most frequent error
//! codes. The percentiles come from the `octet_send_to_deliver_seconds` histogram's buckets,
//! so they are bucket upper bounds ("≤ 2.5 ms"), not exact values. The feed ends when the
//! server starts shutting down, so an open dashboard never holds up a graceful shutdown.
//!
//! The page and the feed answer 401 without the admin token (compared in constant time by
//! [`ServerState::admin_token_ok`]). The script and stylesheet are public: they are the same
//! static text in every octet binary and carry no data.

mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router as Routes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use tokio::sync::watch;

use crate::state::ServerState;
pub use stats::Point;
use stats::{Dashboard, sample_forever};

/// Per-second points the ring keeps: five minutes.
pub const HISTORY: usize = 300;
/// Seconds of samples the latency percentiles cover.
pub const LATENCY_WINDOW: usize = 60;
/// How often the sampler samples and the feed sends a snapshot.
const TICK: Duration = Duration::from_secs(1);
/// Error codes a snapshot lists, most frequent first.
const TOP_ERRORS: usize = 8;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// The page may load only its own script and style and talk only to its own origin.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const UNAUTHORIZED: &str = "401 Unauthorized: the dashboard needs the admin token.\n\
     Open /dashboard?token=<admin token>: the token octet printed once at its first start, \
     or the one given with --admin-token (OCTET_ADMIN_TOKEN).\n";

/// `/dashboard`, its assets and its feed; starts the sampler task (when called inside a tokio
/// runtime, as `server::run` does).
pub fn routes(state: Arc<ServerState>) -> Routes<Arc<ServerState>> {
    let dashboard = Arc::new(Dashboard::new(state));
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(sample_forever(Arc::downgrade(&dashboard)));
    }
    Routes::new()
        .route("/dashboard", get(page))
        .route("/dashboard/events", get(events))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/style.css", get(style))
        .with_state(dashboard)
}

type TokenQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Whether the request carries the admin token in `?token=`.
fn authorized(dashboard: &Dashboard, query: &TokenQuery) -> bool {
    let given = match query {
        Ok(Query(params)) => params.get("token").map(String::as_str).unwrap_or(""),
        Err(_) => "",
    };
    dashboard.state.admin_token_ok(given)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        UNAUTHORIZED,
    )
        .into_response()
}

/// `GET /dashboard?token=`.
async fn page(State(dashboard): State<Arc<Dashboard>>, query: TokenQuery) -> Response {
    if !authorized(&dashboard, &query) {
        return unauthorized();
    }
    let headers: [(HeaderName, HeaderValue); 6] = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        // The token is in the URL: never send it on.
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    (headers, PAGE).into_response()
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        STYLE,
    )
}

/// `GET /dashboard/events?token=`: the Server-Sent Events feed.
async fn events(State(dashboard): State<Arc<Dashboard>>, query: TokenQuery) -> Response {
    if !authorized(&dashboard, &query) {
        return unauthorized();
    }
    let shutdown = dashboard.state.shutdown.subscribe();
    Sse::new(feed(dashboard, shutdown)).into_response()
}

/// `history` once, then a `snapshot` every [`TICK`] until shutdown starts.
fn feed(
    dashboard: Arc<Dashboard>,
    shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, axum::Error>> {
    struct Feed {
        dashboard: Arc<Dashboard>,
        shutdown: watch::Receiver<bool>,
        tick: tokio::time::Interval,
        started: bool,
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        dashboard,
        shutdown,
        tick,
        started: false,
    };
    futures::stream::unfold(feed, |mut feed| async move {
        if *feed.shutdown.borrow() {
            return None;
        }
        if !feed.started {
            feed.started = true;
            let event = Event::default()
                .event("history")
                .json_data(feed.dashboard.history());
            return Some((event, feed));
        }
        tokio::select! {
            _ = feed.tick.tick() => {}
            // Shutdown started (or the server is gone): end the response.
            _ = feed.shutdown.wait_for(|closing| *closing) => return None,
        }
        let event = Event::default()
            .event("snapshot")
            .json_data(feed.dashboard.snapshot());
        Some((event, feed))
    })
}

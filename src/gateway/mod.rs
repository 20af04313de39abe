//! `GET /ws`: the WebSocket gateway devices connect to.
//!
//! Owns WebSocket limits and the upgrade; [`session`] runs each connection and [`writer`] is the
//! only code that writes to a socket.

pub mod admission;
mod calls;
mod ops;
mod session;
mod sync;
mod writer;

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use crate::api::transport_error;
use crate::limits::{client_ip, ip_key, origin_allowed};
use crate::protocol::ErrorCode;
use crate::state::ServerState;

/// Per-connection socket buffers: small, so idle connections stay cheap (tungstenite's default
/// read buffer is 128 KiB per connection). The read buffer grows for a larger frame when one
/// comes; most frames are a few hundred bytes. 512 bytes rather than 2 KiB: 1.5 KiB less per idle
/// connection (8.35 -> 7.0 KiB RSS at 10,000 connections, loadtest/RESULTS.md).
const READ_BUFFER: usize = 512;
const WRITE_BUFFER: usize = 4 * 1024;

/// The gateway's WebSocket settings, shared by the real endpoint and the conformance echo.
fn configure(ws: WebSocketUpgrade, max: usize) -> WebSocketUpgrade {
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
}

/// `--conformance` only: echoes every text and binary message, with exactly the gateway's
/// WebSocket settings, so a conformance suite tests the socket layer devices get. The one
/// place besides `writer.rs` that writes to a socket: it has no session and no queue.
pub async fn echo(State(state): State<Arc<ServerState>>, ws: WebSocketUpgrade) -> Response {
    configure(ws, state.config.max_frame_bytes).on_upgrade(|mut socket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            let reply = match message {
                Message::Text(_) | Message::Binary(_) => message,
                // tungstenite answers close and ping itself on the next read; keep reading
                // until the stream ends so that answer goes out.
                Message::Close(_) | Message::Ping(_) | Message::Pong(_) => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}

/// Upgrades to a WebSocket with the gateway's limits and runs the session.
pub async fn upgrade(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let config = &state.config;
    // A page from another site must not open a socket in a signed-in user's browser.
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !origin_allowed(origin, &config.allowed_origins) {
        tracing::info!(peer = %peer, origin = origin.unwrap_or(""), "websocket refused: origin not allowed");
        return transport_error(
            &state.metrics,
            StatusCode::FORBIDDEN,
            ErrorCode::OriginNotAllowed,
            format!(
                "origin {} may not open WebSockets to this broker",
                origin.unwrap_or("")
            ),
        );
    }
    // No failed-login check here: a valid token is never refused for others' failures behind
    // the same address; only failed logins are slowed (`Session::login`).
    let client = client_ip(
        peer.ip(),
        &headers,
        &config.trusted_proxies,
        config.proxy_header,
    );
    let slot = match state.admission.anonymous(
        ip_key(client),
        config.max_anonymous,
        config.max_anonymous_per_ip,
    ) {
        Ok(slot) => slot,
        Err(refused) => {
            // At debug, like the accept-time refusals: counted in octet_errors_total.
            tracing::debug!(peer = %peer, client = %client, "websocket refused: {refused}");
            return transport_error(
                &state.metrics,
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyConnections,
                format!(
                    "{refused}; log in on the sockets you opened (send login right after connecting) or close them"
                ),
            );
        }
    };
    configure(ws, config.max_frame_bytes)
        .on_upgrade(move |socket| session::run(state, socket, peer, client, slot))
}

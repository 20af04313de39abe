//! `GET /ws`: the WebSocket gateway devices connect to.
//!
//! Owns WebSocket limits and the upgrade; [`session`] runs each connection and [`writer`] is the
//! only code that writes to a socket.

mod session;
mod writer;

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;

use crate::state::ServerState;

/// Per-connection socket buffers: small, so idle connections stay cheap (tungstenite's default
/// read buffer is 128 KiB per connection).
const READ_BUFFER: usize = 8 * 1024;
const WRITE_BUFFER: usize = 8 * 1024;

/// Upgrades to a WebSocket with the gateway's limits and runs the session.
pub async fn upgrade(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let max = state.config.max_frame_bytes;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| session::run(state, socket, peer))
}

//! `GET /ws`: the WebSocket gateway devices connect to.
//!
//! Owns WebSocket limits and the upgrade ([`socket`]); [`session`] runs each connection and
//! [`writer`] is the only code that writes to a socket.

pub mod admission;
mod calls;
mod devices;
mod login;
mod ops;
mod presence;
mod replies;
mod session;
mod socket;
mod sync;
mod typing;
mod writer;

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;

use crate::api::transport_error;
use crate::limits::{client_ip, ip_key, origin_allowed};
use crate::protocol::{CloseCode, ErrorCode};
use crate::router::{Bounds, Mailbox, Outbound, OwnQueue};
use crate::state::ServerState;
use crate::wire::Frame;
use socket::{Handshake, Upgraded};

/// The read buffer: small, so idle connections stay cheap (tungstenite's default is 128 KiB
/// per connection). It grows for a larger frame when one comes; most frames are a few hundred
/// bytes. 512 bytes rather than 2 KiB: 1.5 KiB less per idle connection (8.35 -> 7.0 KiB RSS at
/// 10,000 connections, loadtest/RESULTS.md). Nothing is written through tungstenite but its
/// pongs and close answers, so its write buffer stays at its minimum.
const READ_BUFFER: usize = 512;

/// The gateway's WebSocket settings, shared by the real endpoint and the conformance echo.
fn ws_config(max: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// `--conformance` only: echoes every text and binary message through exactly the gateway's
/// socket layer (the same reader settings, mailbox, encoder and writer), so a conformance
/// suite tests what devices get.
pub async fn echo(State(state): State<Arc<ServerState>>, handshake: Handshake) -> Response {
    handshake.accept(move |upgraded: Upgraded| {
        async move {
            let config = &state.config;
            let (read, leftover, write) = upgraded.into_parts();
            let write = Arc::new(write);
            let mailbox = Mailbox::with_socket(
                Bounds {
                    frames: config.queue_frames,
                    bytes: config.queue_bytes,
                },
                Some(write.clone()),
            );
            let writer = tokio::spawn(writer::run(
                write,
                mailbox.clone(),
                state.metrics.clone(),
                writer::Ending {
                    slow_close_wait: config.idle_timeout,
                    shutdown: state.shutdown.subscribe(),
                },
            ));
            let queue = OwnQueue::new(mailbox.clone(), config.idle_timeout, state.metrics.clone());
            let mut stream =
                Upgraded::reader(read, leftover, mailbox, ws_config(config.max_frame_bytes)).await;
            while let Some(read) = stream.next().await {
                let reply = match read {
                    Ok(Message::Text(text)) => Frame::text(&text),
                    Ok(Message::Binary(data)) => Frame::binary(&data),
                    // tungstenite queues its answer to a close; flushing hands it to the
                    // writer, which then sends no close of its own.
                    Ok(Message::Close(_)) => {
                        let _ = futures::SinkExt::flush(&mut stream).await;
                        break;
                    }
                    Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                    // The device broke the protocol: fail the connection with the code that
                    // says how (RFC 6455 §7.4.1), as the gateway does.
                    Err(err) => {
                        let code = match err {
                            WsError::Utf8(_) => CloseCode::InvalidPayload,
                            WsError::Capacity(_) => CloseCode::MessageTooBig,
                            _ => CloseCode::ProtocolError,
                        };
                        let _ = queue.send(Outbound::Close(code, String::new())).await;
                        break;
                    }
                };
                if queue.send(Outbound::Frame(reply)).await.is_err() {
                    break;
                }
            }
            drop(queue);
            let _ = writer.await;
        }
        .instrument(tracing::Span::current())
    })
}

pub async fn upgrade(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    handshake: Handshake,
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
    handshake.accept(move |upgraded| session::run(state, upgraded, peer, client, slot))
}

//! A device's socket after the HTTP upgrade: the handshake, and the split between reading
//! (tungstenite, which checks everything a client sends) and writing (octet's own encoded
//! frames, `crate::wire`, written by `writer.rs` alone).
//!
//! tungstenite answers pings and closes by itself while it reads. Those answers must not reach
//! the socket beside the writer (two writers would interleave bytes), so its write side here
//! is the connection's mailbox: each answer becomes one more queued frame, written in order by
//! the writer like every other.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::router::Mailbox;
use crate::wire::Frame;

/// What a device sends, read and checked by tungstenite.
pub type DeviceStream = WebSocketStream<DeviceIo>;

/// A valid WebSocket upgrade request (RFC 6455 §4.2.1), not answered yet.
pub struct Handshake {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// Why a request to a WebSocket path is not an upgrade.
fn not_an_upgrade(status: StatusCode, what: &str) -> Response {
    (status, format!("{what}; open it as a WebSocket (RFC 6455)")).into_response()
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Handshake, Response> {
        if parts.method != Method::GET {
            return Err(not_an_upgrade(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket opens with GET",
            ));
        }
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(not_an_upgrade(
                StatusCode::BAD_REQUEST,
                "the Connection header must include `upgrade`",
            ));
        }
        if !header_has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(not_an_upgrade(
                StatusCode::BAD_REQUEST,
                "the Upgrade header must be `websocket`",
            ));
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v != "13")
        {
            return Err(not_an_upgrade(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Version must be 13",
            ));
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Err(not_an_upgrade(
                StatusCode::BAD_REQUEST,
                "the Sec-WebSocket-Key header is missing",
            ));
        };
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return Err(not_an_upgrade(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            ));
        };
        Ok(Handshake { key, on_upgrade })
    }
}

/// A device's upgraded connection: the read half (with whatever the HTTP server had already
/// read past the request) and the write half.
pub struct Upgraded {
    read: OwnedReadHalf,
    leftover: Bytes,
    /// The only way to the device's socket; `writer.rs` owns it.
    pub write: OwnedWriteHalf,
}

impl Upgraded {
    /// The reading side as a WebSocket stream limited by `config`; what tungstenite writes
    /// (pongs, the answer to a close) is queued in `mailbox`.
    pub async fn reader(
        read: OwnedReadHalf,
        leftover: Bytes,
        mailbox: Arc<Mailbox>,
        config: WebSocketConfig,
    ) -> DeviceStream {
        let io = DeviceIo {
            read,
            leftover,
            mailbox,
        };
        WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
    }

    /// Splits into the parts [`Upgraded::reader`] takes and the write half.
    pub fn into_parts(self) -> (OwnedReadHalf, Bytes, OwnedWriteHalf) {
        (self.read, self.leftover, self.write)
    }
}

impl Handshake {
    /// Answers `101 Switching Protocols` and runs `session` on the upgraded socket.
    pub fn accept<F, Fut>(self, session: F) -> Response
    where
        F: FnOnce(Upgraded) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            // octet's own accept loop serves every connection as TokioIo<TcpStream>
            // (`server::run`), so the socket comes back whole.
            let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => parts,
                Err(_) => {
                    tracing::error!("an upgraded connection is not a TCP stream");
                    return;
                }
            };
            let (read, write) = parts.io.into_inner().into_split();
            session(Upgraded {
                read,
                leftover: unshared(parts.read_buf),
                write,
            })
            .await;
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(axum::body::Body::empty())
            .expect("a valid 101 response")
    }
}

/// `bytes`, without keeping hyper's whole read buffer alive when nothing is left of it (an
/// empty slice of it still holds its allocation, kilobytes per idle connection).
fn unshared(bytes: Bytes) -> Bytes {
    if bytes.is_empty() {
        Bytes::new()
    } else {
        bytes
    }
}

/// tungstenite's view of the socket: reads from the read half, writes into the mailbox.
pub struct DeviceIo {
    read: OwnedReadHalf,
    leftover: Bytes,
    mailbox: Arc<Mailbox>,
}

impl AsyncRead for DeviceIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.leftover.is_empty() {
            let n = self.leftover.len().min(buf.remaining());
            let head = self.leftover.split_to(n);
            buf.put_slice(&head);
            let rest = std::mem::take(&mut self.leftover);
            self.leftover = unshared(rest);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for DeviceIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // tungstenite writes whole frames from its buffer, so one call is whole frames.
        match self
            .mailbox
            .push_control(Frame::raw(Bytes::copy_from_slice(buf)))
        {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The writer shuts the socket down after its close frame.
        Poll::Ready(Ok(()))
    }
}

//! The network edge under abuse: caps on open HTTP connections (in total and per client
//! address) checked at accept, before any byte is read, and who may read `/metrics`.
//!
//! The caps are checked on the TCP peer: headers are not read yet. A trusted proxy
//! (`trusted_proxies`) carries many clients on its connections, so it is exempt from the
//! per-address cap (the total still applies); the WebSocket caps per address
//! (`gateway::admission`) use the forwarded client address instead.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use crate::api::transport_error;
use crate::auth::TokenHash;
use crate::config::Config;
use crate::limits::{client_ip, ip_key, trusted};
use crate::metrics::Metrics;
use crate::protocol::{BackendResponse, ErrorBody, ErrorCode};

/// Open HTTP connections, in total and per client address. An upgraded WebSocket leaves it
/// once hyper hands the socket over.
#[derive(Debug, Default)]
pub struct HttpConnections {
    total: AtomicUsize,
    per_key: Mutex<HashMap<IpAddr, usize>>,
    /// Refused sockets still being drained (`refuse`).
    draining: Arc<AtomicUsize>,
}

/// The most refused sockets drained at once; past it a refused socket is closed at once.
const MAX_DRAINING: usize = 256;
/// How long a refused socket's input is drained.
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_millis(500);

/// One open HTTP connection's place; dropping it gives the place back.
pub struct HttpSlot {
    conns: Arc<HttpConnections>,
    key: Option<IpAddr>,
}

/// Why a new connection was refused at accept.
#[derive(Debug, thiserror::Error)]
pub enum HttpRefused {
    /// `max_http_connections` are open.
    #[error("the broker has {0} HTTP connections open, its limit; try again later")]
    Total(usize),
    /// `max_http_connections_per_ip` are open from this address.
    #[error("{0} has {1} HTTP connections open, the most one address may; reuse or close them")]
    PerAddress(IpAddr, usize),
}

impl HttpRefused {
    /// The status and stable code of the refusal.
    pub fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            HttpRefused::Total(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServerFull),
            HttpRefused::PerAddress(..) => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyConnections)
            }
        }
    }
}

impl HttpConnections {
    /// Takes a place for a connection from `peer`, or says why not.
    pub fn admit(self: &Arc<Self>, peer: IpAddr, config: &Config) -> Result<HttpSlot, HttpRefused> {
        let total = self.total.fetch_add(1, Ordering::AcqRel);
        let mut slot = HttpSlot {
            conns: self.clone(),
            key: None,
        };
        if total >= config.max_http_connections {
            return Err(HttpRefused::Total(total));
        }
        if trusted(peer, &config.trusted_proxies) {
            return Ok(slot);
        }
        let key = ip_key(peer);
        let mut per_key = self.per_key.lock().unwrap_or_else(|p| p.into_inner());
        let held = per_key.entry(key).or_insert(0);
        if *held >= config.max_http_connections_per_ip {
            return Err(HttpRefused::PerAddress(key, *held));
        }
        *held += 1;
        slot.key = Some(key);
        Ok(slot)
    }

    /// HTTP connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        self.conns.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(key) = self.key {
            let mut per_key = self.conns.per_key.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(held) = per_key.get_mut(&key) {
                *held -= 1;
                if *held == 0 {
                    per_key.remove(&key);
                }
            }
        }
    }
}

/// The bytes of a complete HTTP/1.1 refusal (JSON body in the usual refusal shape, then the
/// connection closes), written to a connection refused at accept without reading its request.
fn raw_refusal(metrics: &Metrics, refused: &HttpRefused) -> Vec<u8> {
    let (status, code) = refused.status_and_code();
    metrics.errors.with_label_values(&[code.as_str()]).inc();
    let body = serde_json::to_vec(&BackendResponse {
        op: String::new(),
        result: false,
        id: None,
        body: ErrorBody {
            error: code,
            message: refused.to_string(),
        },
    })
    .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl HttpConnections {
    /// Answers a socket refused at accept: one non-blocking write of the answer (a fresh
    /// socket's send buffer has room), then its write side is shut. Closing a socket whose
    /// request is unread (or still arriving) makes the kernel reset it, and the reset destroys
    /// the answer in flight, so the client would see "connection reset" instead of the 429/503:
    /// the request is read and discarded for at most `DRAIN_FOR` first, by at most
    /// `MAX_DRAINING` sockets at once (past that a refused socket is closed at once).
    pub fn refuse(&self, stream: tokio::net::TcpStream, metrics: &Metrics, refused: &HttpRefused) {
        let _ = stream.try_write(&raw_refusal(metrics, refused));
        if self.draining.fetch_add(1, Ordering::AcqRel) >= MAX_DRAINING {
            self.draining.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let draining = self.draining.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = stream;
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(DRAIN_FOR, async {
                // Bounded in bytes too: 16 reads at most.
                for _ in 0..16 {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            draining.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Whether this request may read `/metrics`: with `metrics_token` set, only with
/// `Authorization: Bearer <token>` (compared in constant time); without it, only a client on
/// loopback (behind a trusted proxy, the forwarded client). `Some` is the refusal to send.
pub fn metrics_refusal(
    config: &Config,
    metrics: &Metrics,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Option<Response> {
    match &config.metrics_token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if TokenHash::of(token.expose()).matches(&TokenHash::of(given)) {
                return None;
            }
            let mut refusal = transport_error(
                metrics,
                StatusCode::UNAUTHORIZED,
                ErrorCode::BadMetricsToken,
                "/metrics needs the metrics token: send Authorization: Bearer <metrics_token>"
                    .into(),
            );
            refusal.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            Some(refusal)
        }
        None => {
            let client = client_ip(
                peer.ip(),
                headers,
                &config.trusted_proxies,
                config.proxy_header,
            );
            let loopback = match client {
                IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
                IpAddr::V4(v4) => v4.is_loopback(),
            };
            // A reverse proxy on this host makes every client look like loopback: a request
            // that a proxy forwarded (it names a client in a forwarding header) from a peer
            // that is not a trusted proxy is not taken as a local scrape.
            let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
                .iter()
                .any(|name| headers.contains_key(*name));
            let direct = !forwarded || trusted(peer.ip(), &config.trusted_proxies);
            if loopback && direct {
                return None;
            }
            Some(transport_error(
                metrics,
                StatusCode::FORBIDDEN,
                ErrorCode::BadMetricsToken,
                "/metrics answers only loopback clients (not requests forwarded by an untrusted proxy) unless the broker runs with --metrics-token; scrape it with that token".into(),
            ))
        }
    }
}

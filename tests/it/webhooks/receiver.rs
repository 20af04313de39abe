//! A webhook receiver for the tests: a small axum server on 127.0.0.1 that records every
//! request and answers from a script (then with a default status the test can change), over
//! plain http or, with [`Receiver::start_tls`], https.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// One request as received.
#[derive(Clone, Debug)]
pub struct Hit {
    pub signature: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }

    pub fn events(&self) -> Vec<Value> {
        self.json()["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Log {
    hits: Vec<Hit>,
    script: VecDeque<u16>,
    otherwise: u16,
    /// TLS handshakes that failed (a client refusing the certificate ends its handshake).
    handshakes_failed: usize,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Log>>);

pub struct Receiver {
    pub addr: SocketAddr,
    scheme: &'static str,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hook(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut log = shared.0.lock().unwrap();
    let status = log.script.pop_front().unwrap_or(log.otherwise);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    log.hits.push(Hit {
        signature: header("x-octet-signature"),
        content_type: header("content-type"),
        body: body.to_vec(),
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    /// Answers `script` in order, then `otherwise`.
    pub async fn start(script: &[u16], otherwise: u16) -> Receiver {
        let (shared, app, listener, addr) = Receiver::setup(script, otherwise).await;
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let scheme = "http";
        Receiver {
            addr,
            scheme,
            shared,
            task,
        }
    }

    /// [`Receiver::start`] over TLS with `tls` (its certificate and key): an https receiver.
    pub async fn start_tls(
        script: &[u16],
        otherwise: u16,
        tls: Arc<rustls::ServerConfig>,
    ) -> Receiver {
        let (shared, app, listener, addr) = Receiver::setup(script, otherwise).await;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let failures = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, app, failures) = (acceptor.clone(), app.clone(), failures.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        failures.0.lock().unwrap().handshakes_failed += 1;
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let scheme = "https";
        Receiver {
            addr,
            scheme,
            shared,
            task,
        }
    }

    async fn setup(
        script: &[u16],
        otherwise: u16,
    ) -> (Shared, axum::Router, tokio::net::TcpListener, SocketAddr) {
        let shared = Shared::default();
        {
            let mut log = shared.0.lock().unwrap();
            log.script = script.iter().copied().collect();
            log.otherwise = otherwise;
        }
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (shared, app, listener, addr)
    }

    pub fn url(&self) -> String {
        format!("{}://{}/hook", self.scheme, self.addr)
    }

    /// TLS handshakes that failed so far (a client that refused the certificate).
    pub fn handshakes_failed(&self) -> usize {
        self.shared.0.lock().unwrap().handshakes_failed
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.shared.0.lock().unwrap().otherwise = status;
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.shared.0.lock().unwrap().hits.clone()
    }

    /// Events of the requests answered 2xx, in arrival order.
    pub fn delivered(&self) -> Vec<Value> {
        self.hits()
            .iter()
            .filter(|h| (200..300).contains(&h.status))
            .flat_map(Hit::events)
            .collect()
    }

    /// Waits (at most `within`) until `done` holds for the hits so far.
    pub async fn wait_for(&self, within: Duration, what: &str, done: impl Fn(&[Hit]) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if done(&self.hits()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {within:?} for {what}; requests so far: {:?}",
                self.hits()
                    .iter()
                    .map(|h| (h.status, String::from_utf8_lossy(&h.body).into_owned()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until at least `n` events were delivered (answered 2xx); returns them all.
    pub async fn delivered_at_least(&self, n: usize, within: Duration) -> Vec<Value> {
        self.wait_for(within, &format!("{n} delivered events"), |hits| {
            hits.iter()
                .filter(|h| (200..300).contains(&h.status))
                .map(|h| h.events().len())
                .sum::<usize>()
                >= n
        })
        .await;
        self.delivered()
    }
}

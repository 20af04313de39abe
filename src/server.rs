//! Wires store, router and the HTTP routes together, and owns startup and shutdown.
//!
//! One port serves `POST /backend` (the app backend's API), `GET /ws` (devices),
//! `GET /healthz` and `GET /readyz`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router as Routes;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::routing::{get, post};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket};
use tower::ServiceExt;

use crate::api;
use crate::auth::{PlainToken, TokenHash};
use crate::config::{Config, SyncMode};
use crate::fanout::Fanout;
use crate::gateway;
use crate::metrics::Metrics;
use crate::protocol::CloseCode;
use crate::router::Router;
use crate::state::ServerState;
use crate::store::sqlite::MAX_BATCH;
use crate::store::{SqliteStore, Store, StoreError, StoreOptions};
use crate::webhooks::Webhooks;
use housekeeping::{last_seen_forever, prune_forever};
use probes::{metrics, readyz};

mod housekeeping;
mod probes;

/// Pending connections the listen socket queues. tokio's default (128) makes a burst of logins
/// wait for TCP's one-second retry.
const LISTEN_BACKLOG: u32 = 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data dir could not be created.
    #[error("creating data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The store failed to open.
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// The `meta` key holding the hash of the app token configured at the last start.
const APP_TOKEN_CONFIGURED: &str = "app_token_configured";

/// A server that is ready to run: the store is open and the app token settled.
pub struct Prepared {
    /// The shared state.
    pub state: Arc<ServerState>,
    /// The app token generated on this start (first start without `--app-token`): print it once.
    pub generated_app_token: Option<PlainToken>,
    /// The admin token generated on this start: print it once.
    pub generated_admin_token: Option<PlainToken>,
}

/// Opens the store in the data dir and settles the app token: the operator's when it changed
/// since the last start, else the stored one (rotations survive restarts), else a new one
/// (returned so the caller can show it once).
pub async fn prepare(config: Config) -> Result<Prepared, StartError> {
    let metrics = Arc::new(Metrics::new());
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let observer = {
        let metrics = metrics.clone();
        Box::new(move |jobs, took| metrics.observe_batch(jobs, took))
    };
    // The router exists before the store, since the store's commits feed the fan-out.
    let router = Arc::new(Router::new(metrics.clone()));
    let shards = match config.fanout_shards {
        0 => Fanout::default_shards(),
        n => n,
    };
    let fanout = Fanout::start(router.clone(), metrics.clone(), shards);
    let webhooks = config.webhook.clone().map(Webhooks::new);
    let options = StoreOptions {
        max_batch: MAX_BATCH,
        full_sync: config.sync == SyncMode::Full,
        observer: Some(observer),
        sink: Arc::new(fanout),
        outbox: webhooks.as_ref().map(|w| w.outbox_options()),
        online: {
            let router = router.clone();
            Arc::new(move |person| router.online(person).to_vec())
        },
    };
    let store = SqliteStore::open_with(&config.data_dir, options)?;
    // The operator's tokens win; else the stored ones; else new ones, shown once.
    let mut creds = store.app_credentials().await?;
    let mut generated_app_token = None;
    let mut generated_admin_token = None;
    match &config.app_token {
        // A configured app token replaces the stored one only when it is not the one configured
        // at the previous start: a rotation (`apptokenrotate`) survives a plain restart with
        // the same configuration, and an operator who changes the configured token wins.
        Some(given) => {
            let hash = TokenHash::of(given.expose());
            let configured = hex::encode(hash.0);
            let previous = store.meta(APP_TOKEN_CONFIGURED).await?;
            if creds.app.is_none() || previous.as_deref() != Some(configured.as_str()) {
                creds.app = Some(hash);
                store.set_meta(APP_TOKEN_CONFIGURED, &configured).await?;
            }
        }
        None if creds.app.is_none() => {
            let token = PlainToken::app();
            creds.app = Some(token.hash());
            generated_app_token = Some(token);
        }
        None => {}
    }
    match &config.admin_token {
        Some(given) => creds.admin = Some(TokenHash::of(given.expose())),
        None if creds.admin.is_none() => {
            let token = PlainToken::admin();
            creds.admin = Some(token.hash());
            generated_admin_token = Some(token);
        }
        None => {}
    }
    store.set_app_credentials(creds).await?;
    let files = crate::files::Files::open(
        &config.data_dir,
        store.url_key().await?,
        config.upload_rate,
        config.upload_concurrency,
    )
    .map_err(|source| StartError::DataDir {
        path: config.data_dir.join("files").display().to_string(),
        source,
    })?;
    let send_rates = crate::limits::SendRates::new(config.send_rate, config.send_burst);
    let presence = crate::presence::Presence::new(router.clone(), config.presence_grace);
    if let Some(hooks) = webhooks.as_ref().filter(|w| w.config.presence) {
        presence.set_webhook(hooks.presence_sink());
        // Before any device can connect, so this comes before their new `online` events.
        let offline = store
            .outbox_presence_restart(crate::state::now_millis())
            .await?;
        if offline > 0 {
            tracing::info!(
                persons = offline,
                "webhooks: persons last reported online are reported offline after the restart"
            );
        }
    }
    let state = Arc::new(ServerState {
        config,
        store: Box::new(store),
        router,
        presence,
        metrics,
        credentials: std::sync::RwLock::new(creds),
        rotation: Default::default(),
        files,
        shutdown: tokio::sync::watch::channel(false).0,
        login_failures: Default::default(),
        send_rates,
        typing_rates: crate::limits::SendRates::new(
            crate::router::typing::TYPING_RATE,
            crate::router::typing::TYPING_BURST,
        ),
        presence_rates: crate::limits::SendRates::new(
            crate::presence::ADDRESS_RATE,
            crate::presence::ADDRESS_BURST,
        ),
        admission: Default::default(),
        http_connections: Default::default(),
        last_seen: Default::default(),
        webhooks,
    });
    Ok(Prepared {
        state,
        generated_app_token,
        generated_admin_token,
    })
}

/// Binds the listen address with a deep accept backlog.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let bind = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_nodelay(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bind().map_err(|source| StartError::Bind { addr, source })
}

/// The HTTP routes.
pub fn routes(state: Arc<ServerState>) -> Routes {
    let routes = Routes::new();
    // Only with --conformance: an echo endpoint for WebSocket conformance suites.
    let routes = if state.config.conformance {
        routes
            .route("/", get(gateway::echo))
            .route("/conformance", get(gateway::echo))
    } else {
        routes
    };
    routes
        .route(
            "/backend",
            post(api::backend)
                .fallback(api::method_not_allowed("POST", "use POST with a JSON body")),
        )
        .route(
            "/ws",
            get(gateway::upgrade).fallback(api::method_not_allowed(
                "GET",
                "/ws is the WebSocket gateway: open it with a GET upgrade request",
            )),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // Browsers opening the dashboard ask for it; a 404 would count as a client error.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .merge(crate::dashboard::routes(state.clone()))
        .merge(crate::demo::routes(&state))
        .merge(crate::files::http::routes())
        .fallback(api::not_found)
        .with_state(state)
}

/// Serves until `shutdown` resolves, then closes every WebSocket with "going away", waits for
/// the sessions and flushes the store.
///
/// The accept loop is octet's own (hyper's HTTP/1 server, with upgrades) rather than
/// `axum::serve`, because `axum::serve` sets no deadline for reading a request's headers: a
/// socket that connects and sends nothing would hold a file descriptor forever (slowloris).
/// Here the headers must arrive within `login_timeout`.
pub async fn run(
    listener: TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = routes(state.clone());
    let pruner = tokio::spawn(prune_forever(state.clone()));
    let last_seen = tokio::spawn(last_seen_forever(state.clone()));
    let webhooks = state.webhooks.clone().map(|w| w.spawn(state.clone()));
    // HTTP connections in flight (an upgraded WebSocket leaves this count once it is handed
    // over), capped in total and per client address.
    let http_open = state.http_connections.clone();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.login_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match http_open.admit(peer.ip(), &state.config) {
            Ok(slot) => slot,
            Err(refused) => {
                // Refused before reading anything (`HttpConnections::refuse`). At debug: a
                // flood must not become a flood of log lines; the refusals are counted in
                // octet_errors_total.
                tracing::debug!(peer = %peer, "connection refused: {refused}");
                http_open.refuse(stream, &state.metrics, &refused);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let conn = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let mut down = state.shutdown.subscribe();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = async { let _ = down.wait_for(|d| *d).await; } => {
                    // Finish the request in flight, take no more on this connection.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = ended {
                tracing::debug!(error = %err, peer = %peer, "http connection ended");
            }
            drop(slot);
        });
    }
    tracing::info!("shutting down: closing every connection with going-away");
    // Sessions still logging in watch this; registered ones are kicked.
    state.shutdown.send_replace(true);
    state
        .router
        .kick_all(CloseCode::GoingAway, "server shutting down; reconnect");
    drop(listener);
    // In-flight HTTP requests (backend ops) finish and get their answers.
    let deadline = tokio::time::Instant::now() + state.config.shutdown_timeout;
    while http_open.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    pruner.abort();
    last_seen.abort();
    // An event whose request was cut off stays in the outbox and is sent after the restart.
    if let Some(webhooks) = webhooks {
        webhooks.abort();
    }
    drain(&state).await;
    Ok(())
}

/// Waits (at most `shutdown_timeout`) for every session to end, then for every store write
/// queued so far to commit, so nothing acknowledged or in flight is lost.
async fn drain(state: &ServerState) {
    let deadline = tokio::time::Instant::now() + state.config.shutdown_timeout;
    while state.metrics.connections.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let open = state.metrics.connections.get();
    if open > 0 {
        tracing::warn!(
            connections = open,
            "shutdown timeout: closing with connections open"
        );
    }
    // The sessions' last-seen times, then everything queued before them.
    let flushed = async {
        state.last_seen.flush(&*state.store).await?;
        state.store.flush().await
    };
    match tokio::time::timeout_at(deadline, flushed).await {
        Ok(Ok(())) => tracing::info!("store flushed; shutdown complete"),
        Ok(Err(err)) => tracing::error!(error = %err, "store flush failed at shutdown"),
        Err(_) => tracing::error!("shutdown timeout: store writes still in flight"),
    }
}

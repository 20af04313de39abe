//! `GET /metrics` and `GET /readyz`: what monitoring and load balancers ask the broker.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;

use crate::state::ServerState;
use crate::store::StoreError;

/// `GET /metrics`, behind the metrics token (or loopback only without one): the numbers tell
/// an outsider how busy the broker is and which errors it gives.
pub(super) async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(refusal) =
        crate::edge::metrics_refusal(&state.config, &state.metrics, peer, &headers)
    {
        return refusal;
    }
    state
        .metrics
        .persons_online
        .set(state.router.person_count() as i64);
    state
        .metrics
        .routed_connections
        .set(state.router.connection_count() as i64);
    state
        .metrics
        .anonymous_connections
        .set(state.admission.anonymous_count() as i64);
    state
        .metrics
        .http_connections
        .set(state.http_connections.open() as i64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Ready means the store answers both ways within [`READY_WAIT`]: a real read through a reader
/// connection, and an empty transaction through the writer's queue. A database that another
/// process locks still reads (WAL) but can take no message, and a store that does not answer
/// must not hang a load balancer's probe. The body names what failed.
pub(super) async fn readyz(
    axum::extract::State(state): axum::extract::State<Arc<ServerState>>,
) -> (StatusCode, &'static str) {
    /// Longer than any healthy batch, shorter than SQLite's 5 s busy timeout and than a
    /// typical probe timeout.
    const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
    async fn bounded<T>(
        check: impl Future<Output = Result<T, StoreError>>,
        what: &'static str,
    ) -> Result<(), &'static str> {
        match tokio::time::timeout(READY_WAIT, check).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => {
                tracing::error!(error = %err, "readiness check: {what}");
                Err(what)
            }
            Err(_) => {
                tracing::error!("readiness check: {what} (no answer within {READY_WAIT:?})");
                Err(what)
            }
        }
    }
    let (read, write) = tokio::join!(
        bounded(state.store.app_credentials(), "store unreadable"),
        bounded(state.store.flush(), "store not writable"),
    );
    match read.and(write) {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(what) => (StatusCode::SERVICE_UNAVAILABLE, what),
    }
}

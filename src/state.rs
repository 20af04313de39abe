//! The server's shared state: one `Arc<ServerState>` handed to every handler. No globals.

use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use crate::auth::TokenHash;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::Millis;
use crate::router::Router;
use crate::store::Store;

/// Everything a handler may touch, wired once in [`crate::server`].
pub struct ServerState {
    /// The validated configuration.
    pub config: Config,
    /// Durable state.
    pub store: Box<dyn Store>,
    /// The live routing table and call state.
    pub router: Arc<Router>,
    /// The app token's hash, checked in constant time on every backend request.
    pub app_token: TokenHash,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The event log's epoch (fixed for the life of the database).
    pub epoch: String,
}

/// Milliseconds since the Unix epoch, the unit of every timestamp octet stores or sends.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or_default()
}

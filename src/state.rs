//! The server's shared state: one `Arc<ServerState>` handed to every handler. No globals.

use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use std::sync::RwLock;

use tokio::sync::watch;

use crate::auth::TokenHash;
use crate::config::Config;
use crate::limits::LoginLimiter;
use crate::metrics::Metrics;
use crate::protocol::Millis;
use crate::router::Router;
use crate::store::{AppCredentials, Store};

/// Everything a handler may touch, wired once in [`crate::server`].
pub struct ServerState {
    /// The validated configuration.
    pub config: Config,
    /// Durable state.
    pub store: Box<dyn Store>,
    /// The live routing table and call state.
    pub router: Arc<Router>,
    /// The app and admin tokens' hashes, checked in constant time. Behind a lock because the
    /// app token can be rotated while serving; never held across an await.
    pub credentials: RwLock<AppCredentials>,
    /// Failed logins per IP address.
    pub login_failures: LoginLimiter,
    /// Set once when shutdown starts: sessions still logging in close with going-away.
    pub shutdown: watch::Sender<bool>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The event log's epoch (fixed for the life of the database).
    pub epoch: String,
    /// Where uploaded files live, and the key download URLs are signed with.
    pub files: crate::files::Files,
}

impl ServerState {
    /// Whether `given` is the app token (or the previous one within its grace period).
    pub fn app_token_ok(&self, given: &str) -> bool {
        let hash = TokenHash::of(given);
        let creds = *self.credentials.read().unwrap_or_else(|p| p.into_inner());
        !given.is_empty() & creds.app_matches(&hash, now_millis())
    }

    /// Whether `given` is the admin token.
    pub fn admin_token_ok(&self, given: &str) -> bool {
        let hash = TokenHash::of(given);
        let creds = *self.credentials.read().unwrap_or_else(|p| p.into_inner());
        !given.is_empty() & creds.admin_matches(&hash)
    }
}

/// Milliseconds since the Unix epoch, the unit of every timestamp octet stores or sends.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or_default()
}

//! The server's shared state: one `Arc<ServerState>` handed to every handler. No globals.

use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use tokio::sync::watch;

use crate::auth::TokenHash;
use crate::config::Config;
use crate::limits::{LoginLimiter, SendRates};
use crate::metrics::Metrics;
use crate::protocol::{Millis, Uid};
use crate::router::Router;
use crate::store::{AppCredentials, Store, StoreError};

/// Everything a handler may touch, wired once in [`crate::server`].
pub struct ServerState {
    /// The validated configuration.
    pub config: Config,
    /// Durable state.
    pub store: Box<dyn Store>,
    /// The live routing table and call state.
    pub router: Arc<Router>,
    /// Persons' aggregated online status and the `presence` subscriptions.
    pub presence: Arc<crate::presence::Presence>,
    /// The app and admin tokens' hashes, checked in constant time. Behind a lock because the
    /// app token can be rotated while serving; never held across an await.
    pub credentials: RwLock<AppCredentials>,
    /// Held by `apptokenrotate` from reading the current token to publishing the new one, so
    /// two rotations never both succeed from the same token (the loser's token would be dead).
    pub rotation: tokio::sync::Mutex<()>,
    /// Failed logins per client address.
    pub login_failures: LoginLimiter,
    /// Each person's send-rate budget, shared by its devices and kept across reconnects.
    pub send_rates: SendRates,
    /// Each person's budget of `typing` frames (`router::typing::TYPING_RATE`), apart from
    /// the send rate so typing never delays a message.
    pub typing_rates: SendRates,
    /// Each person's budget of addresses named in `presence` frames (`presence::ADDRESS_RATE`).
    pub presence_rates: SendRates,
    /// Caps on WebSockets not logged in yet, and the count of logged-in ones.
    pub admission: Arc<crate::gateway::admission::Admission>,
    /// Open HTTP connections, capped at accept.
    pub http_connections: Arc<crate::edge::HttpConnections>,
    /// Set once when shutdown starts: sessions still logging in close with going-away.
    pub shutdown: watch::Sender<bool>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Where uploaded files live, and the key download URLs are signed with.
    pub files: crate::files::Files,
    /// Last-seen times not yet written to the store.
    pub last_seen: LastSeen,
    /// Event webhooks, when `--webhook-url` is set.
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
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

/// Last-seen times written per store transaction.
const LAST_SEEN_CHUNK: usize = 1000;

/// Last-seen times recorded at login and disconnect, written to the store together (one
/// transaction a second, `server::last_seen_forever`, and at shutdown) instead of one awaited
/// store write per login and per disconnect. `devices` answers with the newer of the stored and
/// the pending time, so what it reports does not depend on when the last write happened.
#[derive(Default)]
pub struct LastSeen {
    pending: Mutex<HashMap<Uid, Millis>>,
}

impl LastSeen {
    /// Records that `uid` was seen at `at`. Never waits for the store.
    pub fn record(&self, uid: Uid, at: Millis) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let seen = pending.entry(uid).or_insert(at);
        *seen = (*seen).max(at);
    }

    /// The newer of `stored` and the pending time for `uid`.
    pub fn merged(&self, uid: Uid, stored: Option<Millis>) -> Option<Millis> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match (pending.get(&uid).copied(), stored) {
            (Some(p), Some(s)) => Some(p.max(s)),
            (p, s) => p.or(s),
        }
    }

    /// Writes every pending time in one store transaction. An entry leaves the pending set
    /// only after its write committed (and only if it was not recorded again meanwhile), so
    /// `merged` never goes back to an older time while a write is in flight.
    pub async fn flush(&self, store: &dyn Store) -> Result<(), StoreError> {
        let seen: Vec<(Uid, Millis)> = {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.iter().map(|(&uid, &at)| (uid, at)).collect()
        };
        // In transactions of LAST_SEEN_CHUNK, so sends queued behind a login storm's times
        // wait for a short transaction, not one of ten thousand updates.
        for chunk in seen.chunks(LAST_SEEN_CHUNK) {
            store.touch(chunk.to_vec()).await?;
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (uid, at) in chunk {
                if pending.get(uid) == Some(at) {
                    pending.remove(uid);
                }
            }
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch, the unit of every timestamp octet stores or sends.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or_default()
}

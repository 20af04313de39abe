//! Event webhooks: the app's backend hears of what needs a push (a message its recipient's
//! devices did not ack within `--push-grace`, or that reached a person with no live device)
//! and of reads (so it can clear notifications on the reader's other devices).
//!
//! Events are durable before they are sent: the store writes each one into the outbox in the
//! same transaction as the message or read marker it reports (`store/sqlite/outbox.rs`), so a
//! committed event survives `kill -9` and is sent after a restart. One task (`deliver.rs`)
//! reads the outbox in order, POSTs up to 100 events per request, signed (`sign.rs`), and
//! deletes them after a 2xx; anything else is retried with exponential backoff and full
//! jitter until the retry window ends, then dead-lettered (`webhooks`/`webhookretry` ops).
//! Delivery is at least once: a crash between a 2xx and the delete resends, with the same
//! event ids. An https:// receiver is verified against the public roots plus
//! `--webhook-ca-file` (`tls.rs`); a refused certificate is a failed attempt like a 500.

mod deliver;
mod presence;
pub mod sign;
pub mod tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::presence::PresenceChange;

use crate::config::WebhookConfig;
use crate::state::ServerState;
use crate::store::OutboxOptions;

/// How long one webhook request may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook sender: its configuration, HTTP client and wake-up.
pub struct Webhooks {
    pub(crate) config: WebhookConfig,
    http: reqwest::Client,
    /// The receiver's host, for TLS errors ("certificate not trusted: <host>'s ...").
    host: String,
    wake: Notify,
    presence_tx: UnboundedSender<PresenceChange>,
    /// Taken by [`Webhooks::spawn`].
    presence_rx: Mutex<Option<UnboundedReceiver<PresenceChange>>>,
}

impl Webhooks {
    /// A sender for `config`; nothing runs until [`Webhooks::spawn`].
    pub fn new(config: WebhookConfig) -> Arc<Webhooks> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // A signed POST is not followed elsewhere: a 3xx is an answer that is not 2xx.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("octet/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls::client_config(&config.ca_certs))
            .build()
            .expect("a rustls::ClientConfig of reqwest's rustls version always builds");
        let host = reqwest::Url::parse(&config.url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_string))
            .unwrap_or_else(|| config.url.clone());
        let (presence_tx, presence_rx) = unbounded_channel();
        Arc::new(Webhooks {
            config,
            http,
            host,
            wake: Notify::new(),
            presence_tx,
            presence_rx: Mutex::new(Some(presence_rx)),
        })
    }

    /// What the store needs to write events: the grace period, and a poke after each commit
    /// that wrote some, so an event due now does not wait for the next tick.
    pub fn outbox_options(self: &Arc<Self>) -> OutboxOptions {
        let hooks = Arc::downgrade(self);
        OutboxOptions {
            grace_ms: self.config.push_grace.as_millis() as i64,
            wake: Some(Arc::new(move || {
                if let Some(hooks) = hooks.upgrade() {
                    hooks.wake.notify_one();
                }
            })),
        }
    }

    /// Looks at the outbox now (after `webhookretry`).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Where `Presence` sends persons' status changes, to become `presence` events.
    pub fn presence_sink(&self) -> UnboundedSender<PresenceChange> {
        self.presence_tx.clone()
    }

    /// Starts the delivery loop and the presence writer; they run until aborted.
    pub fn spawn(self: Arc<Self>, state: Arc<ServerState>) -> tokio::task::JoinHandle<()> {
        let changes = self
            .presence_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        tokio::spawn(async move {
            match changes {
                Some(changes) => {
                    let writer = presence::run(changes, state.clone());
                    tokio::join!(deliver::run(self, state), writer);
                }
                None => deliver::run(self, state).await,
            }
        })
    }
}

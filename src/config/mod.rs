//! Every setting in one place: a TOML file (`--config`), environment variables (`OCTET_*`) and
//! flags, in that order of precedence, validated into the [`Config`] the server runs on.
//!
//! [`Settings`] is both the flag set and the file format, so its doc comments are the `--help`
//! text and the documentation of the file's keys. Nothing reads environment variables after
//! startup; tests build a [`Config`] directly.

mod settings;
mod validate;

pub use settings::PresencePolicy;
pub use settings::{Cli, Command, LogFormat, ProxyHeader, Serve, Settings, SyncMode};
pub use validate::ConfigError;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::Secret;

/// The validated configuration the server runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// An app token given by the operator, replacing the stored one.
    pub app_token: Option<Secret>,
    /// An admin token given by the operator, replacing the stored one.
    pub admin_token: Option<Secret>,
    /// How long a call rings.
    pub ring_timeout: Duration,
    /// How long a connection has to log in.
    pub login_timeout: Duration,
    /// The largest WebSocket frame (and message) a device may send.
    pub max_frame_bytes: usize,
    /// The largest backend request body.
    pub max_body_bytes: usize,
    /// How long events are kept; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// How often the background pruning runs.
    pub prune_every: Duration,
    /// The largest upload.
    pub max_file_bytes: u64,
    /// How long a signed download URL works.
    pub file_url_ttl: Duration,
    /// How long an upload no message carries is kept.
    pub upload_grace: Duration,
    /// Bytes a person may upload in any 24 hours.
    pub upload_quota_bytes: u64,
    /// Uploads a person may start per minute (and in a burst).
    pub upload_rate: u32,
    /// Uploads of one person in progress at once.
    pub upload_concurrency: usize,
    /// Frames a connection's outbound queue holds before the device counts as a slow consumer.
    pub queue_frames: usize,
    /// Bytes of frames each outbound queue of a connection holds until they are written.
    pub queue_bytes: usize,
    /// SQLite durability.
    pub sync: SyncMode,
    /// Log output.
    pub log_format: LogFormat,
    /// How long a graceful shutdown may take.
    pub shutdown_timeout: Duration,
    /// Silence after which a connection counts as dead.
    pub idle_timeout: Duration,
    /// Frames per second a person may send on average.
    pub send_rate: u32,
    /// Burst above the rate.
    pub send_burst: u32,
    /// Failed logins per minute per client address.
    pub login_attempts: u32,
    /// Most logged-in connections at once.
    pub max_connections: usize,
    /// Allowed browser origins; empty allows any.
    pub allowed_origins: Vec<String>,
    /// Deepest JSON nesting accepted.
    pub max_json_depth: usize,
    /// Serve the WebSocket echo endpoint for conformance suites.
    pub conformance: bool,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// Most HTTP connections open at once.
    pub max_http_connections: usize,
    /// Most HTTP connections per client address (trusted proxies exempt).
    pub max_http_connections_per_ip: usize,
    /// Most WebSockets not logged in yet.
    pub max_anonymous: usize,
    /// Most WebSockets not logged in yet per client address.
    pub max_anonymous_per_ip: usize,
    /// Proxies whose forwarded client address is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header they name the client in.
    pub proxy_header: ProxyHeader,
    /// The bearer token `/metrics` requires; `None` serves loopback clients only.
    pub metrics_token: Option<Secret>,
    /// Fan-out shard tasks; 0 means one per CPU the process may use. Not a flag: tests set it
    /// to check ordering across more shards than this machine has cores.
    pub fanout_shards: usize,
    /// Who may subscribe to a person's presence.
    pub presence: PresencePolicy,
    /// How long a person stays online after its last device left.
    pub presence_grace: Duration,
    /// Devices may revoke other devices of their own person (`revoke`).
    pub device_self_revoke: bool,
    /// Serve the web demo at /demo and its token endpoint (`--demo`).
    pub demo: bool,
    /// Event webhooks to the app's backend; `None` (the default) writes no outbox at all.
    pub webhook: Option<WebhookConfig>,
}

/// Where and how events are POSTed to the app's backend (`--webhook-url` and friends).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The receiver (http://).
    pub url: String,
    /// The HMAC-SHA256 key requests are signed with.
    pub secret: Secret,
    /// How long a message waits for a live device's ack before it is pushed.
    pub push_grace: Duration,
    /// Put the first 256 bytes of a message's body into its event.
    pub include_body: bool,
    /// Send `presence` events (off by default: every login and logout of every person).
    pub presence: bool,
    /// How long an event is retried before it is dead-lettered (a Duration, so tests can use
    /// seconds).
    pub retry_window: Duration,
    /// Most events waiting; past it the oldest are dead-lettered.
    pub max_pending: u64,
    /// CA certificates trusted for an https:// receiver besides the public roots
    /// (`--webhook-ca-file`, read by `webhooks::tls::load_ca_file`).
    pub ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl WebhookConfig {
    /// The defaults for a receiver at `url` with `secret`.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret: Secret::from(secret.into()),
            push_grace: Duration::from_secs(2),
            include_body: false,
            presence: false,
            retry_window: Duration::from_secs(24 * 3600),
            max_pending: 1_000_000,
            ca_certs: Vec::new(),
        }
    }
}

impl Config {
    /// Defaults for everything but the data dir (what tests start from).
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            data_dir,
            app_token: None,
            admin_token: None,
            ring_timeout: Duration::from_secs(60),
            login_timeout: Duration::from_secs(10),
            max_frame_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024,
            retention: Some(Duration::from_secs(30 * 86_400)),
            prune_every: Duration::from_secs(3600),
            max_file_bytes: 25 * 1024 * 1024,
            file_url_ttl: Duration::from_secs(600),
            upload_grace: Duration::from_secs(86_400),
            upload_quota_bytes: 2048 * 1024 * 1024,
            upload_rate: 60,
            upload_concurrency: 4,
            queue_frames: 1024,
            queue_bytes: 2048 * 1024,
            sync: SyncMode::Normal,
            log_format: LogFormat::Human,
            shutdown_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_rate: 100,
            send_burst: 200,
            login_attempts: 30,
            max_connections: 20_000,
            allowed_origins: Vec::new(),
            max_json_depth: 32,
            conformance: false,
            body_timeout: Duration::from_secs(10),
            max_http_connections: 10_000,
            max_http_connections_per_ip: 512,
            max_anonymous: 5_000,
            max_anonymous_per_ip: 256,
            trusted_proxies: Vec::new(),
            proxy_header: ProxyHeader::XForwardedFor,
            metrics_token: None,
            fanout_shards: 0,
            presence: PresencePolicy::Contacts,
            presence_grace: Duration::from_secs(5),
            webhook: None,
            device_self_revoke: false,
            demo: false,
        }
    }

    /// `octet serve`: flags and environment over the file over the defaults.
    pub fn load(serve: Serve) -> Result<Config, ConfigError> {
        let file = match &serve.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        Config::from_settings(serve.settings.or(file))
    }
}

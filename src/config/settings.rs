//! The flag set and the TOML file format: [`Cli`], its subcommands and [`Settings`], with
//! reading a file and merging flags and environment over it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use super::ConfigError;

/// octet: a real-time message broker for people signed in on up to eight devices at once.
// No Debug derives on the flag types: they may hold tokens in clear.
#[derive(Parser)]
#[command(name = "octet", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the broker: backend API (POST /backend), WebSocket gateway (GET /ws), health,
    /// metrics and the dashboard on one port.
    Serve(Box<Serve>),
    /// Check a config file and say exactly what is wrong with it (exit 0 when it is valid).
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
}

/// Flags of `octet serve`.
#[derive(Clone, clap::Args)]
pub struct Serve {
    /// A TOML config file; its keys are the flag names with `_` for `-`. Environment
    /// variables override it, and flags override both.
    #[arg(long, env = "OCTET_CONFIG")]
    pub config: Option<PathBuf>,
    /// The settings.
    #[command(flatten)]
    pub settings: Settings,
}

/// SQLite durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// An acknowledged message survives a crash of the process (kill -9). The default: it
    /// costs no fsync per commit.
    #[default]
    Normal,
    /// It also survives power loss: every commit waits for an fsync.
    Full,
}

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Which header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (what most proxies append to).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// Who may subscribe to a person's presence (the backend's per-person lists refine it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresencePolicy {
    /// Anyone who knows the address.
    Open,
    /// Persons that exchanged a message with it. The default: when someone is awake is
    /// personal, and an address alone (a phone number) should not let a stranger watch it.
    #[default]
    Contacts,
    /// Nobody: every subscription is refused (allow lists included).
    Off,
}

/// Every setting. Unset ones fall back to the file, then to the default shown.
#[derive(Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address for everything (backend API, WebSocket, health, metrics, dashboard)
    /// [default: 127.0.0.1:8080].
    #[arg(long, env = "OCTET_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Directory for the SQLite database [default: ./octet-data].
    #[arg(long, env = "OCTET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Use this app token (it replaces the stored one). Without it, the first start generates
    /// one and prints it once. Prefer --app-token-file: flags show in the process list.
    #[arg(long, env = "OCTET_APP_TOKEN", hide_env_values = true)]
    pub app_token: Option<String>,

    /// Read the app token from this file (surrounding whitespace ignored).
    #[arg(long, env = "OCTET_APP_TOKEN_FILE")]
    pub app_token_file: Option<PathBuf>,

    /// Use this admin token (dashboard, `stats`). Without it, the first start generates one
    /// and prints it once.
    #[arg(long, env = "OCTET_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Read the admin token from this file.
    #[arg(long, env = "OCTET_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Seconds a call may ring unanswered before it ends as missed [default: 60].
    #[arg(long, env = "OCTET_RING_TIMEOUT")]
    pub ring_timeout: Option<u64>,

    /// Seconds a new WebSocket connection has to send its login frame [default: 10].
    #[arg(long, env = "OCTET_LOGIN_TIMEOUT")]
    pub login_timeout: Option<u64>,

    /// Days events are kept in each person's log; 0 keeps them forever [default: 30].
    #[arg(long, env = "OCTET_RETENTION_DAYS")]
    pub retention_days: Option<u64>,

    /// SQLite durability: normal survives a process crash, full also power loss
    /// [default: normal].
    #[arg(long, env = "OCTET_SYNC", value_enum)]
    pub sync: Option<SyncMode>,

    /// Log format [default: human].
    #[arg(long, env = "OCTET_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Seconds a graceful shutdown (SIGTERM, SIGINT) may take before the process exits
    /// anyway [default: 10].
    #[arg(long, env = "OCTET_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<u64>,

    /// Largest WebSocket frame a device may send, in KiB, at most 960 (the broker's own
    /// frames stay within 1 MiB) [default: 64].
    #[arg(long, env = "OCTET_MAX_FRAME_KIB")]
    pub max_frame_kib: Option<usize>,

    /// Largest backend request body, in KiB [default: 64].
    #[arg(long, env = "OCTET_MAX_BODY_KIB")]
    pub max_body_kib: Option<usize>,

    /// Largest file a device may upload (POST /files), in MiB [default: 25].
    #[arg(long, env = "OCTET_MAX_FILE_MIB")]
    pub max_file_mib: Option<u64>,

    /// Seconds a signed download URL (the `file_url` frame) stays valid [default: 600].
    #[arg(long, env = "OCTET_FILE_URL_TTL")]
    pub file_url_ttl: Option<u64>,

    /// Bytes a person (all of its devices together) may upload in any 24 hours, in MiB; every
    /// upload counts, also one of bytes already stored [default: 2048].
    #[arg(long, env = "OCTET_UPLOAD_QUOTA_MIB")]
    pub upload_quota_mib: Option<u64>,

    /// Uploads a person may start per minute, on average (a burst of as many is allowed)
    /// [default: 60].
    #[arg(long, env = "OCTET_UPLOAD_RATE")]
    pub upload_rate: Option<u32>,

    /// Uploads of one person in progress at once [default: 4].
    #[arg(long, env = "OCTET_UPLOAD_CONCURRENCY")]
    pub upload_concurrency: Option<usize>,

    /// Frames a connection's outbound queue holds before the device is closed as a slow
    /// consumer [default: 1024].
    #[arg(long, env = "OCTET_QUEUE_FRAMES")]
    pub queue_frames: Option<usize>,

    /// KiB of frames each of a connection's two outbound queues (replies, live events) holds,
    /// counted until written to the socket, before the device has to wait or is closed as a
    /// slow consumer [default: 2048].
    #[arg(long, env = "OCTET_QUEUE_KIB")]
    pub queue_kib: Option<usize>,

    /// Seconds without any frame from a device (pongs included) before its connection is
    /// closed as dead; the broker pings every third of it [default: 60].
    #[arg(long, env = "OCTET_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,

    /// Frames per second a person (all of its devices and connections together, across
    /// reconnects) may send, on average (token bucket) [default: 100].
    #[arg(long, env = "OCTET_SEND_RATE")]
    pub send_rate: Option<u32>,

    /// Frames a person may send in a burst above the rate [default: 200].
    #[arg(long, env = "OCTET_SEND_BURST")]
    pub send_burst: Option<u32>,

    /// Failed logins per minute one client address (IPv6: one /64) may make; past it each
    /// further failed login is answered 1 s late with too_many_logins. A valid token is never
    /// refused [default: 30].
    #[arg(long, env = "OCTET_LOGIN_ATTEMPTS")]
    pub login_attempts: Option<u32>,

    /// Most logged-in WebSocket connections at once; a login past it is closed with 1013.
    /// Sockets not logged in yet do not count (see max_anonymous) [default: 20000].
    #[arg(long, env = "OCTET_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Browser origins allowed to open WebSockets (comma-separated, e.g.
    /// https://app.example.com); empty allows any origin [default: empty].
    #[arg(long, env = "OCTET_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,

    /// Deepest JSON nesting accepted in a frame or a backend request [default: 32].
    #[arg(long, env = "OCTET_MAX_JSON_DEPTH")]
    pub max_json_depth: Option<usize>,

    /// Also serve a WebSocket echo endpoint at / and /conformance, with exactly the gateway's
    /// WebSocket settings, for protocol conformance suites (Autobahn). Never in production.
    #[arg(long, env = "OCTET_CONFORMANCE", num_args = 0..=1, default_missing_value = "true")]
    pub conformance: Option<bool>,

    // The network edge under abuse: body deadline, connection caps, proxies, /metrics.
    /// Seconds a request body (POST /backend) has to arrive in full; a slower one is answered
    /// 408 `request_timeout` and its connection closed [default: login_timeout].
    #[arg(long, env = "OCTET_BODY_TIMEOUT")]
    pub body_timeout: Option<u64>,

    /// Most HTTP connections open at once (a WebSocket leaves this count once upgraded); more
    /// are answered 503 `server_full` and closed [default: 10000].
    #[arg(long, env = "OCTET_MAX_HTTP_CONNECTIONS")]
    pub max_http_connections: Option<usize>,

    /// Most HTTP connections one client address (IPv6: one /64) may hold; more are answered
    /// 429 `too_many_connections`. Trusted proxies are exempt [default: 512].
    #[arg(long, env = "OCTET_MAX_HTTP_CONNECTIONS_PER_IP")]
    pub max_http_connections_per_ip: Option<usize>,

    /// Most WebSockets open that have not logged in yet; past it the oldest of them is closed
    /// with 4002. They do not count against max_connections [default: 5000].
    #[arg(long, env = "OCTET_MAX_ANONYMOUS")]
    pub max_anonymous: Option<usize>,

    /// Most WebSockets one client address (IPv6: one /64) may hold before logging in; more are
    /// refused with HTTP 429 `too_many_connections` [default: 256].
    #[arg(long, env = "OCTET_MAX_ANONYMOUS_PER_IP")]
    pub max_anonymous_per_ip: Option<usize>,

    /// Reverse proxies (comma-separated CIDRs, e.g. 10.0.0.0/8,::1/128) whose forwarded client
    /// address is believed: the rightmost untrusted hop of proxy_header is the client
    /// [default: none].
    #[arg(long, env = "OCTET_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,

    /// The header trusted proxies name the client in [default: x-forwarded-for].
    #[arg(long, env = "OCTET_PROXY_HEADER", value_enum)]
    pub proxy_header: Option<ProxyHeader>,

    /// Bearer token GET /metrics requires. Without it, /metrics answers loopback clients only
    /// [default: none].
    #[arg(long, env = "OCTET_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Read the metrics token from this file.
    #[arg(long, env = "OCTET_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,

    /// Who may subscribe to a person's presence: open (anyone), contacts (persons that
    /// exchanged a message with it) or off; the backend's `presence` op adds per-person allow
    /// and deny lists [default: contacts].
    #[arg(long, env = "OCTET_PRESENCE", value_enum)]
    pub presence: Option<PresencePolicy>,

    /// Seconds a person stays online after its last device disconnected, so a reconnect (a
    /// phone switching networks) does not show as offline and back [default: 5].
    #[arg(long, env = "OCTET_PRESENCE_GRACE")]
    pub presence_grace: Option<u64>,
    /// POST events (a message to a person with no live device or not acked within push_grace,
    /// a read) to the app's backend at this http:// or https:// URL, signed with
    /// webhook_secret (proto/webhooks.md) [default: none].
    #[arg(long, env = "OCTET_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// The HMAC-SHA256 key webhook requests are signed with (at least 16 characters; required
    /// with webhook_url). Prefer --webhook-secret-file: flags show in the process list.
    #[arg(long, env = "OCTET_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Read the webhook secret from this file.
    #[arg(long, env = "OCTET_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// Seconds a message waits for one of its recipient's live devices to ack it before it is
    /// pushed through the webhook; 0 pushes every message [default: 2].
    #[arg(long, env = "OCTET_PUSH_GRACE")]
    pub push_grace: Option<u64>,

    /// Put the first 256 bytes of a message's body into its webhook event [default: false].
    #[arg(long, env = "OCTET_WEBHOOK_INCLUDE_BODY", num_args = 0..=1, default_missing_value = "true")]
    pub webhook_include_body: Option<bool>,

    /// Send `presence` webhook events (a person online, or offline after the presence grace)
    /// [default: false].
    #[arg(long, env = "OCTET_WEBHOOK_PRESENCE", num_args = 0..=1, default_missing_value = "true")]
    pub webhook_presence: Option<bool>,

    /// Hours a webhook event is retried (exponential backoff with jitter, at most 10 minutes
    /// apart) before it is dead-lettered [default: 24].
    #[arg(long, env = "OCTET_WEBHOOK_RETRY_HOURS")]
    pub webhook_retry_hours: Option<u64>,

    /// Most webhook events kept waiting on disk; past it the oldest are dead-lettered
    /// ("outbox full"), never a send refused [default: 1000000].
    #[arg(long, env = "OCTET_WEBHOOK_MAX_PENDING")]
    pub webhook_max_pending: Option<u64>,

    /// PEM file of CA certificates (one or more) an https:// webhook receiver may be signed by,
    /// besides the public web PKI: a private CA [default: none].
    #[arg(long, env = "OCTET_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,

    /// Let a device revoke the tokens of another device of its own person (the `revoke` op:
    /// "log out my lost phone"); the revoked device's connections close with 4004. Off, the
    /// op is refused with `forbidden` and only the backend's `tokendel` revokes [default: false].
    #[arg(long, env = "OCTET_DEVICE_SELF_REVOKE", num_args = 0..=1, default_missing_value = "true")]
    pub device_self_revoke: Option<bool>,

    /// Serve the web demo at /demo, with POST /demo/token handing out a device token for
    /// `<name>@demo` to anyone who asks: for trying octet out, never in production
    /// [default: false].
    #[arg(long, env = "OCTET_DEMO", num_args = 0..=1, default_missing_value = "true")]
    pub demo: Option<bool>,
}

macro_rules! prefer {
    ($high:expr, $low:expr, $($field:ident),+) => {
        Settings { $($field: $high.$field.or($low.$field)),+ }
    };
}

impl Settings {
    /// Reads a TOML file; the error names the line, the column and the key.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::File {
            path: path.display().to_string(),
            message: err.to_string(),
        })?;
        toml::from_str(&text).map_err(|err| ConfigError::File {
            path: path.display().to_string(),
            message: err.to_string().trim_end().to_string(),
        })
    }

    /// Field by field: `self` where set, else `lower`.
    pub fn or(self, lower: Settings) -> Settings {
        prefer!(
            self,
            lower,
            listen,
            data_dir,
            app_token,
            app_token_file,
            admin_token,
            admin_token_file,
            ring_timeout,
            login_timeout,
            retention_days,
            sync,
            log_format,
            shutdown_timeout,
            max_frame_kib,
            max_body_kib,
            max_file_mib,
            file_url_ttl,
            upload_quota_mib,
            upload_rate,
            upload_concurrency,
            queue_frames,
            queue_kib,
            idle_timeout,
            send_rate,
            send_burst,
            login_attempts,
            max_connections,
            allowed_origins,
            max_json_depth,
            conformance,
            body_timeout,
            max_http_connections,
            max_http_connections_per_ip,
            max_anonymous,
            max_anonymous_per_ip,
            trusted_proxies,
            proxy_header,
            metrics_token,
            metrics_token_file,
            presence,
            presence_grace,
            webhook_url,
            webhook_secret,
            webhook_secret_file,
            push_grace,
            webhook_include_body,
            webhook_presence,
            webhook_retry_hours,
            webhook_max_pending,
            webhook_ca_file,
            device_self_revoke,
            demo
        )
    }
}

//! Every setting in one place: a TOML file (`--config`), environment variables (`OCTET_*`) and
//! flags, in that order of precedence, validated into the [`Config`] the server runs on.
//!
//! [`Settings`] is both the flag set and the file format, so its doc comments are the `--help`
//! text and the documentation of the file's keys. Nothing reads environment variables after
//! startup; tests build a [`Config`] directly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::auth::Secret;

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
            metrics_token_file
        )
    }
}

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
}

/// A setting that cannot work, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range.
    #[error("{key}: {message}")]
    Invalid {
        /// The setting's name (flag and file key).
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The config file or a token file cannot be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong, with line and column for TOML.
        message: String,
    },
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

    /// Validates settings into a config.
    pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        let defaults = Config::new(PathBuf::from("./octet-data"));
        let seconds =
            |key: &'static str, value: Option<u64>, default: Duration, max: u64| match value {
                None => Ok(default),
                Some(v) if (1..=max).contains(&v) => Ok(Duration::from_secs(v)),
                Some(v) => Err(ConfigError::Invalid {
                    key,
                    message: format!("{v} is out of range; use 1 to {max} seconds"),
                }),
            };
        let bounded =
            |key: &'static str, value: Option<usize>, default: usize, min: usize, max: usize| {
                match value {
                    None => Ok(default),
                    Some(v) if (min..=max).contains(&v) => Ok(v),
                    Some(v) => Err(ConfigError::Invalid {
                        key,
                        message: format!("{v} is out of range; use {min} to {max}"),
                    }),
                }
            };
        let retention = match s.retention_days {
            None => defaults.retention,
            Some(0) => None,
            Some(days) if days <= 36_500 => Some(Duration::from_secs(days * 86_400)),
            Some(days) => {
                return Err(ConfigError::Invalid {
                    key: "retention_days",
                    message: format!("{days} is out of range; use 0 (forever) to 36500 days"),
                });
            }
        };
        let login_timeout = seconds(
            "login_timeout",
            s.login_timeout,
            defaults.login_timeout,
            300,
        )?;
        Ok(Config {
            body_timeout: seconds("body_timeout", s.body_timeout, login_timeout, 300)?,
            max_http_connections: bounded(
                "max_http_connections",
                s.max_http_connections,
                defaults.max_http_connections,
                1,
                1 << 24,
            )?,
            max_http_connections_per_ip: bounded(
                "max_http_connections_per_ip",
                s.max_http_connections_per_ip,
                defaults.max_http_connections_per_ip,
                1,
                1 << 24,
            )?,
            max_anonymous: bounded(
                "max_anonymous",
                s.max_anonymous,
                defaults.max_anonymous,
                1,
                1 << 24,
            )?,
            max_anonymous_per_ip: bounded(
                "max_anonymous_per_ip",
                s.max_anonymous_per_ip,
                defaults.max_anonymous_per_ip,
                1,
                1 << 24,
            )?,
            trusted_proxies: proxies(s.trusted_proxies.unwrap_or_default())?,
            proxy_header: s.proxy_header.unwrap_or_default(),
            metrics_token: secret("metrics_token", s.metrics_token, s.metrics_token_file)?,
            fanout_shards: 0,
            listen: s
                .listen
                .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid")),
            data_dir: s.data_dir.unwrap_or(defaults.data_dir),
            app_token: secret("app_token", s.app_token, s.app_token_file)?,
            admin_token: secret("admin_token", s.admin_token, s.admin_token_file)?,
            ring_timeout: seconds("ring_timeout", s.ring_timeout, defaults.ring_timeout, 3600)?,
            login_timeout,
            shutdown_timeout: seconds(
                "shutdown_timeout",
                s.shutdown_timeout,
                defaults.shutdown_timeout,
                600,
            )?,
            // At most 960 KiB: a message frame (the body plus its envelope) must stay within
            // the 1 MiB every frame octet sends is held to (`protocol::MAX_OUT_FRAME`).
            max_frame_bytes: bounded("max_frame_kib", s.max_frame_kib, 64, 1, 960)? * 1024,
            max_body_bytes: bounded("max_body_kib", s.max_body_kib, 64, 1, 16 * 1024)? * 1024,
            queue_frames: bounded("queue_frames", s.queue_frames, 1024, 8, 1 << 20)?,
            queue_bytes: bounded("queue_kib", s.queue_kib, 2048, 64, 1 << 20)? * 1024,
            retention,
            prune_every: defaults.prune_every,
            max_file_bytes: bounded(
                "max_file_mib",
                s.max_file_mib.map(|v| v as usize),
                25,
                1,
                4096,
            )? as u64
                * 1024
                * 1024,
            file_url_ttl: seconds(
                "file_url_ttl",
                s.file_url_ttl,
                defaults.file_url_ttl,
                7 * 86_400,
            )?,
            upload_grace: defaults.upload_grace,
            upload_quota_bytes: bounded(
                "upload_quota_mib",
                s.upload_quota_mib.map(|v| v as usize),
                2048,
                1,
                1 << 20,
            )? as u64
                * 1024
                * 1024,
            upload_rate: bounded(
                "upload_rate",
                s.upload_rate.map(|v| v as usize),
                60,
                1,
                100_000,
            )? as u32,
            upload_concurrency: bounded("upload_concurrency", s.upload_concurrency, 4, 1, 1024)?,
            idle_timeout: seconds("idle_timeout", s.idle_timeout, defaults.idle_timeout, 3600)?,
            send_rate: bounded(
                "send_rate",
                s.send_rate.map(|v| v as usize),
                100,
                1,
                100_000,
            )? as u32,
            send_burst: bounded(
                "send_burst",
                s.send_burst.map(|v| v as usize),
                200,
                1,
                100_000,
            )? as u32,
            login_attempts: bounded(
                "login_attempts",
                s.login_attempts.map(|v| v as usize),
                30,
                1,
                100_000,
            )? as u32,
            max_connections: bounded("max_connections", s.max_connections, 20_000, 1, 1 << 24)?,
            allowed_origins: origins(s.allowed_origins.unwrap_or_default())?,
            max_json_depth: bounded("max_json_depth", s.max_json_depth, 32, 2, 128)?,
            conformance: s.conformance.unwrap_or(false),
            sync: s.sync.unwrap_or_default(),
            log_format: s.log_format.unwrap_or_default(),
        })
    }
}

/// Origins as browsers send them: scheme, host and optional port, no path.
fn origins(list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    list.into_iter()
        .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
        .filter(|o| !o.is_empty())
        .map(|o| {
            let ok = (o.starts_with("http://") || o.starts_with("https://"))
                && !o
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.contains('/'));
            if ok {
                Ok(o)
            } else {
                Err(ConfigError::Invalid {
                    key: "allowed_origins",
                    message: format!("{o} is not an origin; write it as https://host[:port]"),
                })
            }
        })
        .collect()
}

/// Trusted proxies as CIDRs; a bare address is one host.
fn proxies(list: Vec<String>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| ConfigError::Invalid {
                    key: "trusted_proxies",
                    message: format!(
                        "{p} is not a CIDR; write it as 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32"
                    ),
                })
        })
        .collect()
}

/// A token given inline or in a file (not both), checked for shape.
fn secret(
    key: &'static str,
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    let token = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid {
                key,
                message: format!("set either {key} or {key}_file, not both"),
            });
        }
        (Some(token), None) => token,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|err| ConfigError::File {
                path: path.display().to_string(),
                message: format!("reading {key}_file: {err}"),
            })?
            .trim()
            .to_string(),
        (None, None) => return Ok(None),
    };
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::Invalid {
            key,
            message: "use at least 16 characters without spaces".into(),
        });
    }
    Ok(Some(Secret::from(token)))
}

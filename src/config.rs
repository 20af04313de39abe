//! Command-line flags and environment variables, and the validated [`Config`] the server runs on.
//!
//! Nothing reads environment variables after startup. Tests build a [`Config`] directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::auth::Secret;

/// octet: a real-time message broker for people signed in on up to eight devices at once.
// No Debug derives on the flag types: they hold the app token in clear.
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
    /// Run the broker: backend API (POST /backend), WebSocket gateway (GET /ws) and health on one port.
    Serve(Serve),
}

/// Flags of `octet serve`. Each can also come from the environment variable shown.
#[derive(Clone, clap::Args)]
pub struct Serve {
    /// Address for the backend API, the WebSocket gateway and health checks.
    #[arg(long, env = "OCTET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the SQLite database (created if missing).
    #[arg(long, env = "OCTET_DATA_DIR", default_value = "./octet-data")]
    pub data_dir: PathBuf,

    /// Use this app token instead of the stored or a generated one (it replaces the stored one).
    /// Without it, the first start generates a token and prints it once.
    #[arg(long, env = "OCTET_APP_TOKEN", hide_env_values = true)]
    pub app_token: Option<String>,

    /// Seconds a call may ring unanswered before it ends as missed on every device.
    #[arg(long, env = "OCTET_RING_TIMEOUT", default_value_t = 60)]
    pub ring_timeout: u64,

    /// Days events are kept in each person's log; 0 keeps them forever. Older events are
    /// pruned in the background; a device further behind is told to page history instead.
    #[arg(long, env = "OCTET_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u64,

    /// Seconds a new WebSocket connection has to send its login frame.
    #[arg(long, env = "OCTET_LOGIN_TIMEOUT", default_value_t = 10)]
    pub login_timeout: u64,
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
    /// Frames a connection's outbound queue holds before the device counts as a slow consumer.
    pub queue_frames: usize,
}

/// A setting that cannot work, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range.
    #[error("--{flag}: {message}")]
    Invalid {
        /// The flag's name.
        flag: &'static str,
        /// What is wrong.
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
            ring_timeout: Duration::from_secs(60),
            login_timeout: Duration::from_secs(10),
            max_frame_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024,
            retention: Some(Duration::from_secs(30 * 86_400)),
            prune_every: Duration::from_secs(3600),
            queue_frames: 1024,
        }
    }

    /// Validates `octet serve`'s flags.
    pub fn from_serve(serve: Serve) -> Result<Config, ConfigError> {
        if serve.ring_timeout == 0 || serve.ring_timeout > 3600 {
            return Err(ConfigError::Invalid {
                flag: "ring-timeout",
                message: format!(
                    "{} is out of range; use 1 to 3600 seconds",
                    serve.ring_timeout
                ),
            });
        }
        if serve.login_timeout == 0 || serve.login_timeout > 300 {
            return Err(ConfigError::Invalid {
                flag: "login-timeout",
                message: format!(
                    "{} is out of range; use 1 to 300 seconds",
                    serve.login_timeout
                ),
            });
        }
        if let Some(token) = &serve.app_token
            && (token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(ConfigError::Invalid {
                flag: "app-token",
                message: "use at least 16 characters without spaces".into(),
            });
        }
        if serve.retention_days > 36_500 {
            return Err(ConfigError::Invalid {
                flag: "retention-days",
                message: format!(
                    "{} is out of range; use 0 (forever) to 36500 days",
                    serve.retention_days
                ),
            });
        }
        Ok(Config {
            listen: serve.listen,
            retention: (serve.retention_days > 0)
                .then(|| Duration::from_secs(serve.retention_days * 86_400)),
            app_token: serve.app_token.map(Secret::from),
            ring_timeout: Duration::from_secs(serve.ring_timeout),
            login_timeout: Duration::from_secs(serve.login_timeout),
            ..Config::new(serve.data_dir)
        })
    }
}

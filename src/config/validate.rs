//! Validating [`Settings`] into a [`Config`]: the range checks, origins, proxies and tokens,
//! and the [`ConfigError`] naming the key that is wrong.

use std::path::PathBuf;
use std::time::Duration;

use super::{Config, Settings, WebhookConfig};
use crate::auth::Secret;

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
        let webhook = webhook(&s)?;
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
            presence: s.presence.unwrap_or_default(),
            presence_grace: seconds(
                "presence_grace",
                s.presence_grace,
                defaults.presence_grace,
                3600,
            )?,
            webhook,
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
            device_self_revoke: s.device_self_revoke.unwrap_or(false),
            demo: s.demo.unwrap_or(false),
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

/// The webhook settings: a URL needs a secret, and the other keys need a URL.
fn webhook(s: &Settings) -> Result<Option<WebhookConfig>, ConfigError> {
    let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
    let Some(url) = s.webhook_url.as_deref().map(str::trim) else {
        let stray = [
            ("webhook_secret", s.webhook_secret.is_some()),
            ("webhook_secret_file", s.webhook_secret_file.is_some()),
            ("push_grace", s.push_grace.is_some()),
            ("webhook_include_body", s.webhook_include_body.is_some()),
            ("webhook_presence", s.webhook_presence.is_some()),
            ("webhook_retry_hours", s.webhook_retry_hours.is_some()),
            ("webhook_max_pending", s.webhook_max_pending.is_some()),
            ("webhook_ca_file", s.webhook_ca_file.is_some()),
        ];
        return match stray.into_iter().find(|(_, set)| *set) {
            Some((key, _)) => Err(invalid(
                key,
                "has no effect without webhook_url; set webhook_url too, or remove it".into(),
            )),
            None => Ok(None),
        };
    };
    // http:// or https:// (verified: the public roots plus webhook_ca_file); nothing else.
    let https = url.starts_with("https://");
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
    if !host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace)) {
        return Err(invalid(
            "webhook_url",
            format!(
                "{url} is not an http URL; write it as http://host[:port]/path or https://host[:port]/path"
            ),
        ));
    }
    let ca_certs = match &s.webhook_ca_file {
        None => Vec::new(),
        Some(_) if !https => {
            return Err(invalid(
                "webhook_ca_file",
                format!(
                    "has no effect with the http:// webhook_url {url}; use an https:// URL, or remove it"
                ),
            ));
        }
        Some(path) => {
            crate::webhooks::tls::load_ca_file(path).map_err(|m| invalid("webhook_ca_file", m))?
        }
    };
    let Some(secret) = secret(
        "webhook_secret",
        s.webhook_secret.clone(),
        s.webhook_secret_file.clone(),
    )?
    else {
        return Err(invalid(
            "webhook_secret",
            "is required with webhook_url (requests are signed with it); set webhook_secret or webhook_secret_file".into(),
        ));
    };
    let defaults = WebhookConfig::new(url, "");
    let push_grace = match s.push_grace {
        None => defaults.push_grace,
        Some(v) if v <= 3600 => Duration::from_secs(v),
        Some(v) => {
            return Err(invalid(
                "push_grace",
                format!("{v} is out of range; use 0 to 3600 seconds"),
            ));
        }
    };
    let retry_window = match s.webhook_retry_hours {
        None => defaults.retry_window,
        Some(h) if (1..=720).contains(&h) => Duration::from_secs(h * 3600),
        Some(h) => {
            return Err(invalid(
                "webhook_retry_hours",
                format!("{h} is out of range; use 1 to 720 hours"),
            ));
        }
    };
    let max_pending = match s.webhook_max_pending {
        None => defaults.max_pending,
        Some(n) if (1..=1_000_000_000).contains(&n) => n,
        Some(n) => {
            return Err(invalid(
                "webhook_max_pending",
                format!("{n} is out of range; use 1 to 1000000000"),
            ));
        }
    };
    Ok(Some(WebhookConfig {
        url: url.to_string(),
        secret,
        push_grace,
        include_body: s.webhook_include_body.unwrap_or(false),
        presence: s.webhook_presence.unwrap_or(false),
        retry_window,
        max_pending,
        ca_certs,
    }))
}

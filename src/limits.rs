//! Per-connection and per-address limits: the send-rate token bucket, failed logins per IP
//! address, and the browser `Origin` allow-list. Nothing here awaits.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// A connection's allowance of frames: `rate` per second, up to `burst` saved up.
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: std::time::Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: std::time::Instant::now(),
        }
    }

    /// Takes one token; false when none is left.
    pub fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Failed logins per IP address in fixed one-minute windows.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: DashMap<IpAddr, (Instant, u32)>,
}

/// The window failed logins are counted in.
const WINDOW: Duration = Duration::from_secs(60);

impl LoginLimiter {
    /// Whether `ip` has used up its `limit` of failed logins in the current window.
    pub fn blocked(&self, ip: IpAddr, limit: u32) -> bool {
        self.failures
            .get(&ip)
            .is_some_and(|entry| entry.0.elapsed() < WINDOW && entry.1 >= limit)
    }

    /// Counts one failed login from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let mut entry = self.failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        drop(entry);
        // Bounded memory: past windows are forgotten once the table grows.
        if self.failures.len() > 10_000 {
            self.failures
                .retain(|_, (start, _)| start.elapsed() < WINDOW);
        }
    }
}

/// Whether a browser `Origin` may open a WebSocket; `allowed` empty allows any, and a request
/// without `Origin` (not from a browser) is always allowed.
pub fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    match origin {
        None => true,
        Some(_) if allowed.is_empty() => true,
        Some(origin) => {
            let origin = origin.trim_end_matches('/').to_ascii_lowercase();
            allowed.contains(&origin)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(10, 3);
        assert!(bucket.take() && bucket.take() && bucket.take());
        assert!(!bucket.take());
        std::thread::sleep(Duration::from_millis(120));
        assert!(bucket.take());
    }

    #[test]
    fn failed_logins_block_an_address_not_others() {
        let limiter = LoginLimiter::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        for _ in 0..3 {
            assert!(!limiter.blocked(a, 3));
            limiter.failed(a);
        }
        assert!(limiter.blocked(a, 3));
        assert!(!limiter.blocked(b, 3));
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed(None, &allowed));
        assert!(origin_allowed(Some("https://APP.example.com/"), &allowed));
        assert!(!origin_allowed(Some("https://evil.example"), &allowed));
        assert!(origin_allowed(Some("https://evil.example"), &[]));
    }
}

//! Per-person and per-address limits: the send-rate token buckets (per person), failed logins
//! per client address (`login`), who the client is behind proxies (`client_ip`), and the browser
//! `Origin` allow-list. Nothing here awaits.

mod client_ip;
mod login;

pub use client_ip::{client_ip, ip_key, trusted};
pub use login::LoginLimiter;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::store::PersonId;

/// An allowance of frames: `rate` per second, up to `burst` saved up.
#[derive(Debug)]
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

    /// Whether the bucket has refilled completely: then it is the same as a new one.
    fn is_full(&self, now: Instant) -> bool {
        self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate >= self.burst
    }
}

/// Buckets are swept when the map grows past this many (or twice what the last sweep kept).
const SWEEP_FLOOR: usize = 4096;

/// The send-rate budget of every person: one [`TokenBucket`] per person, shared by all of its
/// devices and connections and kept across reconnects (logging in again does not refill it).
///
/// Bounded: a bucket that has refilled completely is indistinguishable from a new one, so
/// sweeps drop those losslessly. What remains are persons who sent within the last
/// `burst / rate` seconds; a sweep runs only when the map has doubled since the last one, so
/// its cost per frame is constant on average.
#[derive(Debug)]
pub struct SendRates {
    buckets: DashMap<PersonId, TokenBucket>,
    rate: u32,
    burst: u32,
    /// Entries, approximately (inserts since the last sweep plus what it kept).
    len: AtomicUsize,
    /// Sweep when `len` passes this.
    sweep_at: AtomicUsize,
}

impl SendRates {
    /// Every person starts with a full bucket of `burst`, refilled at `rate` per second.
    pub fn new(rate: u32, burst: u32) -> SendRates {
        SendRates {
            buckets: DashMap::new(),
            rate,
            burst,
            len: AtomicUsize::new(0),
            sweep_at: AtomicUsize::new(SWEEP_FLOOR),
        }
    }

    /// Takes one of `person`'s tokens; false when the person's devices used them all.
    pub fn take(&self, person: PersonId) -> bool {
        let allowed = match self.buckets.entry(person) {
            Entry::Occupied(mut bucket) => bucket.get_mut().take(),
            Entry::Vacant(vacant) => {
                let mut bucket = TokenBucket::new(self.rate, self.burst);
                let allowed = bucket.take();
                vacant.insert(bucket);
                self.len.fetch_add(1, Ordering::Relaxed);
                allowed
            }
        };
        if self.len.load(Ordering::Relaxed) > self.sweep_at.load(Ordering::Relaxed) {
            self.sweep();
        }
        allowed
    }

    /// Drops every bucket that has refilled (losslessly), and sets the next sweep's size.
    fn sweep(&self) {
        let now = Instant::now();
        self.buckets.retain(|_, bucket| !bucket.is_full(now));
        let kept = self.buckets.len();
        self.len.store(kept, Ordering::Relaxed);
        self.sweep_at
            .store((kept * 2).max(SWEEP_FLOOR), Ordering::Relaxed);
    }

    /// Buckets held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
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
    use std::time::Duration;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(10, 3);
        assert!(bucket.take() && bucket.take() && bucket.take());
        assert!(!bucket.take());
        std::thread::sleep(Duration::from_millis(120));
        assert!(bucket.take());
    }

    #[test]
    fn a_person_budget_is_shared_and_refilled_buckets_are_forgotten() {
        let rates = SendRates::new(1, 2);
        assert!(rates.take(7) && rates.take(7));
        assert!(
            !rates.take(7),
            "the burst is the person's, however it is spread"
        );
        assert!(rates.take(8), "another person has its own");
        // Many one-off senders: their buckets refill (rate 1 000 000/s) and are swept.
        let fast = SendRates::new(1_000_000, 1);
        for person in 0..(3 * SWEEP_FLOOR as PersonId) {
            fast.take(person);
        }
        assert!(fast.len() <= 2 * SWEEP_FLOOR, "{} buckets kept", fast.len());
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

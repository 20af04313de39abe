//! Failed logins per client address, in fixed one-minute windows, with bounded memory and
//! bounded work per failure.
//!
//! Only failures are counted and only failures are slowed: the limit is consulted when a login
//! has already failed, so a valid token is never refused because of other people's failures
//! behind the same address (a NAT, a load balancer).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window failed logins are counted in.
const WINDOW: Duration = Duration::from_secs(60);

/// Addresses tracked in one window. Past it, failures from addresses not yet tracked share one
/// counter: a flood from many addresses cannot grow the table or reset anyone's count.
const MAX_TRACKED: usize = 100_000;

/// Failed logins per client address (see [`super::ip_key`]: IPv6 per /64).
#[derive(Debug, Default)]
pub struct LoginLimiter {
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// When the current window started; `None` before the first failure.
    started: Option<Instant>,
    counts: HashMap<IpAddr, u32>,
    /// Failures from addresses that found the table full.
    overflow: u32,
}

impl LoginLimiter {
    /// Counts one failed login from `key` and says whether `key` is now over `limit` failures
    /// in the current window (the caller then slows and refuses this failure).
    ///
    /// O(1) per failure: the table is replaced once a window, never swept entry by entry, and
    /// the replaced table is dropped outside the lock.
    pub fn failed(&self, key: IpAddr, limit: u32) -> bool {
        self.failed_at(key, limit, Instant::now())
    }

    fn failed_at(&self, key: IpAddr, limit: u32, now: Instant) -> bool {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let expired = window
            .started
            .is_none_or(|started| now.duration_since(started) >= WINDOW);
        let old = if expired {
            window.started = Some(now);
            window.overflow = 0;
            Some(std::mem::take(&mut window.counts))
        } else {
            None
        };
        let tracked = window.counts.len() < MAX_TRACKED || window.counts.contains_key(&key);
        let count = if tracked {
            let count = window.counts.entry(key).or_insert(0);
            *count = count.saturating_add(1);
            *count
        } else {
            window.overflow = window.overflow.saturating_add(1);
            window.overflow
        };
        drop(window);
        drop(old);
        count > limit
    }

    /// Addresses tracked in the current window (for tests).
    pub fn tracked(&self) -> usize {
        self.window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_over_the_limit_are_flagged_per_address() {
        let limiter = LoginLimiter::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        for _ in 0..3 {
            assert!(!limiter.failed(a, 3));
        }
        assert!(limiter.failed(a, 3));
        assert!(!limiter.failed(b, 3));
    }

    #[test]
    fn a_new_window_forgets_the_old_one_at_once() {
        let limiter = LoginLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            limiter.failed_at(a, 3, t0);
        }
        assert!(limiter.failed_at(a, 3, t0));
        let later = t0 + WINDOW;
        assert!(!limiter.failed_at(a, 3, later));
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn the_table_is_bounded_and_the_rest_share_one_counter() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        for n in 0..MAX_TRACKED as u32 + 50 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            limiter.failed_at(ip, 30, t0);
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED);
        // The 50 untracked failures share one counter, over a limit of 30.
        let fresh = IpAddr::from(std::net::Ipv4Addr::new(192, 0, 2, 1));
        assert!(limiter.failed_at(fresh, 30, t0));
        // A tracked address keeps its own count.
        let first = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000));
        assert!(!limiter.failed_at(first, 30, t0));
    }
}

//! Who may hold a WebSocket: sockets that have not logged in yet have their own caps (in total
//! and per client address), and only logged-in connections count against `max_connections`,
//! so strangers holding sockets can never keep a device with a valid token out.
//!
//! Past the total anonymous cap the *oldest* anonymous socket is closed to make room (it has
//! waited longest without logging in; a real device logs in within a round trip), so filling
//! the cap does not lock out new logins either. Past the per-address cap the upgrade is refused.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The WebSocket admission state, one per server (in `ServerState`).
#[derive(Debug, Default)]
pub struct Admission {
    anonymous: Mutex<Anonymous>,
    logged_in: AtomicUsize,
}

#[derive(Debug, Default)]
struct Anonymous {
    next: u64,
    /// Sockets waiting for their login, oldest first, each with its eviction signal.
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
    /// Anonymous sockets per client key (evicted ones count until they are gone).
    per_key: HashMap<IpAddr, usize>,
}

/// Why an upgrade was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The client address already holds `max_anonymous_per_ip` sockets that have not logged in.
    #[error("{0} holds {1} WebSockets that have not logged in, the most one address may")]
    PerAddress(IpAddr, usize),
}

/// A socket's place among those not logged in yet; dropping it gives the place back.
pub struct AnonymousSlot {
    admission: Arc<Admission>,
    id: u64,
    key: IpAddr,
    evicted: oneshot::Receiver<()>,
}

/// A logged-in connection's place under `max_connections`; dropping it gives the place back.
pub struct ConnectionSlot {
    admission: Arc<Admission>,
}

impl Admission {
    /// A place for a new socket from `key` that has not logged in. At `max_total` the oldest
    /// waiting socket is told to close; at `max_per_key` for `key` the new one is refused.
    pub fn anonymous(
        self: &Arc<Self>,
        key: IpAddr,
        max_total: usize,
        max_per_key: usize,
    ) -> Result<AnonymousSlot, Refused> {
        let mut anon = self.anonymous.lock().unwrap_or_else(|p| p.into_inner());
        let held = anon.per_key.get(&key).copied().unwrap_or(0);
        if held >= max_per_key {
            return Err(Refused::PerAddress(key, held));
        }
        while anon.waiting.len() >= max_total {
            match anon.waiting.pop_first() {
                Some((_, evict)) => {
                    let _ = evict.send(());
                }
                None => break,
            }
        }
        let id = anon.next;
        anon.next += 1;
        let (evict, evicted) = oneshot::channel();
        anon.waiting.insert(id, evict);
        *anon.per_key.entry(key).or_insert(0) += 1;
        Ok(AnonymousSlot {
            admission: self.clone(),
            id,
            key,
            evicted,
        })
    }

    /// Sockets open that have not logged in.
    pub fn anonymous_count(&self) -> usize {
        let anon = self.anonymous.lock().unwrap_or_else(|p| p.into_inner());
        anon.per_key.values().sum()
    }

    /// Logged-in connections.
    pub fn logged_in_count(&self) -> usize {
        self.logged_in.load(Ordering::Relaxed)
    }
}

impl AnonymousSlot {
    /// Resolves when this socket was picked to make room for a newer one.
    pub async fn evicted(&mut self) {
        if (&mut self.evicted).await.is_err() {
            // The sender is gone without a signal only when the slot left the waiting list
            // some other way; never resolve then.
            std::future::pending::<()>().await;
        }
    }

    /// After a valid login: leaves the anonymous count and takes a place under `max`
    /// logged-in connections, or `None` when the broker is at `max`.
    pub fn logged_in(self, max: usize) -> Option<ConnectionSlot> {
        let admission = self.admission.clone();
        drop(self);
        admission
            .logged_in
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot { admission })
    }
}

impl Drop for AnonymousSlot {
    fn drop(&mut self) {
        let mut anon = self
            .admission
            .anonymous
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        anon.waiting.remove(&self.id);
        if let Some(held) = anon.per_key.get_mut(&self.key) {
            *held -= 1;
            if *held == 0 {
                anon.per_key.remove(&self.key);
            }
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.admission.logged_in.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_waiting_socket_makes_room_and_per_address_is_refused() {
        let admission = Arc::new(Admission::default());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let mut first = admission.anonymous(a, 2, 2).unwrap();
        let _second = admission.anonymous(a, 2, 2).unwrap();
        assert!(matches!(
            admission.anonymous(a, 2, 2),
            Err(Refused::PerAddress(..))
        ));
        let third = admission.anonymous(b, 2, 2).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), first.evicted())
            .await
            .expect("the oldest is evicted");
        assert_eq!(admission.anonymous_count(), 3);
        drop(first);
        assert_eq!(admission.anonymous_count(), 2);
        let slot = third.logged_in(1).expect("room for one");
        assert_eq!(admission.logged_in_count(), 1);
        let fourth = admission.anonymous(b, 2, 2).unwrap();
        assert!(fourth.logged_in(1).is_none());
        drop(slot);
        assert_eq!(admission.logged_in_count(), 0);
    }
}

//! Presence: whether a person has a device online, aggregated over its devices, and who is told.
//!
//! A person is `online` from its first device's login until its last device has been gone for
//! the grace period (`--presence-grace`): a device that reconnects within it, or a phone moving
//! between networks, changes nothing anyone sees. Subscribers (connections that sent
//! `presence` `subscribe`) get the status right after subscribing and every change, as
//! transient frames through the router (no seq: never logged, never replayed).
//!
//! The router's live table is the truth about connections; this module only keeps what the
//! table cannot say: the grace timers and the subscriptions. Every transition and every frame
//! it causes happen under one short lock (the router never awaits and never calls back here),
//! so a subscriber sees its first status and the changes after it in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use tokio::task::AbortHandle;

use crate::protocol::{Millis, PresenceEvent, PresenceStatus, ServerFrame};
use crate::router::{Frame, Router};
use crate::store::PersonId;

/// The most persons one connection may subscribe to: a contact list's worth on screen; an app
/// with more subscribes to those it shows.
pub const MAX_SUBSCRIPTIONS_PER_CONN: usize = 256;
/// The most connections subscribed to one person, so one status change costs a bounded fan-out.
pub const MAX_WATCHERS_PER_TARGET: usize = 4096;

/// Addresses a person (all of its devices) may name in `presence` frames per second, on
/// average: each costs store reads, so the frame rate alone would let one token keep the
/// readers busy. An app subscribes to what it shows, and again after a reconnect.
pub const ADDRESS_RATE: u32 = 50;
/// Addresses a person may name in a burst: two full frames (a reconnect of two devices).
pub const ADDRESS_BURST: u32 = 512;

/// A refused subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// The connection already has [`MAX_SUBSCRIPTIONS_PER_CONN`].
    ConnFull,
    /// The person already has [`MAX_WATCHERS_PER_TARGET`] watchers.
    TargetFull,
}

/// A subscribing connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watcher {
    /// The connection's person.
    pub person: PersonId,
    /// The connection.
    pub conn_id: u64,
}

enum Status {
    Online,
    /// The last device left at `since`; offline when the timer fires, unless one came back.
    Leaving {
        serial: u64,
        since: Millis,
        timer: AbortHandle,
    },
}

struct Target {
    /// The person's primary address, as frames name it.
    address: String,
    /// Subscribed connections and their persons.
    watchers: HashMap<u64, PersonId>,
}

#[derive(Default)]
struct Inner {
    /// Persons online or within their grace period; absent means offline.
    status: HashMap<PersonId, Status>,
    targets: HashMap<PersonId, Target>,
    by_conn: HashMap<u64, Vec<PersonId>>,
    next_serial: u64,
}

/// A person's aggregated status changed: for the `presence` webhook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceChange {
    /// The person.
    pub person: PersonId,
    /// Online now, or offline.
    pub online: bool,
    /// When it came online, or when its last device left (`last_seen`).
    pub ts: Millis,
}

/// Persons' aggregated online status and the subscriptions to it.
pub struct Presence {
    inner: Mutex<Inner>,
    router: Arc<Router>,
    grace: Duration,
    /// Where changes go for webhooks (set when `--webhook-url` is): sent under the lock, so in
    /// the order they happened.
    webhook: OnceLock<UnboundedSender<PresenceChange>>,
}

impl Presence {
    /// Nobody online, no subscriptions.
    pub fn new(router: Arc<Router>, grace: Duration) -> Arc<Presence> {
        Arc::new(Presence {
            inner: Mutex::default(),
            router,
            grace,
            webhook: OnceLock::new(),
        })
    }

    /// Sends every later change of a person's status to `sink` (the webhook writer).
    pub fn set_webhook(&self, sink: UnboundedSender<PresenceChange>) {
        let _ = self.webhook.set(sink);
    }

    fn changed(&self, person: PersonId, online: bool, ts: Millis) {
        if let Some(sink) = self.webhook.get() {
            // Fails only once the writer is gone (shutdown): nothing to tell then.
            let _ = sink.send(PresenceChange { person, online, ts });
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A device of `person` registered with the router: online now, announced only if it was
    /// offline (a return within the grace period is no change).
    pub fn joined(&self, person: PersonId) {
        let mut inner = self.lock();
        match inner.status.insert(person, Status::Online) {
            None => {
                self.announce(&inner, person, PresenceStatus::Online, None);
                self.changed(person, true, crate::state::now_millis());
            }
            Some(Status::Leaving { timer, .. }) => timer.abort(),
            Some(Status::Online) => {}
        }
    }

    /// A device of `person` unregistered at `now`. If it was the last, the grace period starts.
    pub fn left(self: &Arc<Self>, person: PersonId, now: Millis) {
        let mut inner = self.lock();
        // Checked under the lock: a device that registers meanwhile calls `joined` after this.
        if !self.router.online(person).is_empty() || !inner.status.contains_key(&person) {
            return;
        }
        inner.next_serial += 1;
        let serial = inner.next_serial;
        let this = self.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(this.grace).await;
            this.expire(person, serial);
        });
        let leaving = Status::Leaving {
            serial,
            since: now,
            timer: timer.abort_handle(),
        };
        if let Some(Status::Leaving { timer, .. }) = inner.status.insert(person, leaving) {
            timer.abort();
        }
    }

    /// The grace timer numbered `serial` fired: offline, unless a device came back.
    fn expire(&self, person: PersonId, serial: u64) {
        let mut inner = self.lock();
        let since = match inner.status.get(&person) {
            Some(Status::Leaving {
                serial: s, since, ..
            }) if *s == serial => *since,
            _ => return,
        };
        if !self.router.online(person).is_empty() {
            // Registered, its `joined` still to come: it finds the person online.
            inner.status.insert(person, Status::Online);
            return;
        }
        inner.status.remove(&person);
        self.announce(&inner, person, PresenceStatus::Offline, Some(since));
        self.changed(person, false, since);
    }

    /// Whether `person` counts as online (a device connected, or within the grace period).
    pub fn is_online(&self, person: PersonId) -> bool {
        self.lock().status.contains_key(&person)
    }

    /// Subscribes `watcher` to `target` (primary address `address`) and sends it the current
    /// status; `last_seen` is the stored one, for a target that is offline. Subscribing again
    /// only sends the status again.
    pub fn subscribe(
        &self,
        watcher: Watcher,
        target: PersonId,
        address: &str,
        last_seen: Option<Millis>,
    ) -> Result<(), SubscribeError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let subscribed = inner
            .targets
            .get(&target)
            .is_some_and(|t| t.watchers.contains_key(&watcher.conn_id));
        if !subscribed {
            let mine = inner.by_conn.get(&watcher.conn_id).map_or(0, Vec::len);
            if mine >= MAX_SUBSCRIPTIONS_PER_CONN {
                return Err(SubscribeError::ConnFull);
            }
            let theirs = inner.targets.get(&target).map_or(0, |t| t.watchers.len());
            if theirs >= MAX_WATCHERS_PER_TARGET {
                return Err(SubscribeError::TargetFull);
            }
            inner
                .targets
                .entry(target)
                .or_insert_with(|| Target {
                    address: address.to_string(),
                    watchers: HashMap::new(),
                })
                .watchers
                .insert(watcher.conn_id, watcher.person);
            inner
                .by_conn
                .entry(watcher.conn_id)
                .or_default()
                .push(target);
        }
        let (status, last_seen) = match inner.status.contains_key(&target) {
            true => (PresenceStatus::Online, None),
            false => (PresenceStatus::Offline, last_seen),
        };
        let frame = presence_frame(address, status, last_seen);
        self.router
            .deliver_to_conn(watcher.person, watcher.conn_id, &frame);
        Ok(())
    }

    /// Ends `conn_id`'s subscription to `target`. Returns whether there was one.
    pub fn unsubscribe(&self, conn_id: u64, target: PersonId) -> bool {
        let mut inner = self.lock();
        let Some(mine) = inner.by_conn.get_mut(&conn_id) else {
            return false;
        };
        let Some(idx) = mine.iter().position(|&t| t == target) else {
            return false;
        };
        mine.swap_remove(idx);
        if mine.is_empty() {
            inner.by_conn.remove(&conn_id);
        }
        remove_watcher(&mut inner, target, conn_id);
        true
    }

    /// The connection left: its subscriptions end.
    pub fn drop_conn(&self, conn_id: u64) {
        let mut inner = self.lock();
        for target in inner.by_conn.remove(&conn_id).unwrap_or_default() {
            remove_watcher(&mut inner, target, conn_id);
        }
    }

    /// Ends the subscriptions of `denied` persons' connections to `target` (the backend just
    /// denied them). Returns how many ended.
    pub fn revoke(&self, target: PersonId, denied: &[PersonId]) -> usize {
        let mut inner = self.lock();
        let Some(t) = inner.targets.get_mut(&target) else {
            return 0;
        };
        let gone: Vec<u64> = t
            .watchers
            .iter()
            .filter(|(_, person)| denied.contains(person))
            .map(|(&conn, _)| conn)
            .collect();
        for conn in &gone {
            if let Some(mine) = inner.by_conn.get_mut(conn) {
                mine.retain(|&t| t != target);
                if mine.is_empty() {
                    inner.by_conn.remove(conn);
                }
            }
            remove_watcher(&mut inner, target, *conn);
        }
        gone.len()
    }

    /// Subscriptions held (for tests: they must drain to zero).
    pub fn subscription_count(&self) -> usize {
        self.lock().by_conn.values().map(Vec::len).sum()
    }

    /// One frame for every watcher of `person`.
    fn announce(
        &self,
        inner: &Inner,
        person: PersonId,
        status: PresenceStatus,
        last_seen: Option<Millis>,
    ) {
        let Some(target) = inner.targets.get(&person) else {
            return;
        };
        let frame = presence_frame(&target.address, status, last_seen);
        for (&conn_id, &watcher) in &target.watchers {
            self.router.deliver_to_conn(watcher, conn_id, &frame);
        }
    }
}

fn remove_watcher(inner: &mut Inner, target: PersonId, conn_id: u64) {
    if let Some(t) = inner.targets.get_mut(&target) {
        t.watchers.remove(&conn_id);
        if t.watchers.is_empty() {
            inner.targets.remove(&target);
        }
    }
}

fn presence_frame(address: &str, status: PresenceStatus, last_seen: Option<Millis>) -> Frame {
    let frame = ServerFrame::Presence(PresenceEvent {
        address: address.to_string(),
        status,
        last_seen,
    });
    frame.to_text().into()
}

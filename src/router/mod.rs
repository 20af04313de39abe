//! The live routing table: person → its live connections (at most one per uid, at most eight),
//! and fan-out of pre-serialized frames to them. Call state lives beside it in [`calls`].
//!
//! The router never awaits and never touches the store. A frame is handed to each target's
//! bounded queue with `try_send`; a full queue means the device is a slow consumer and is
//! kicked with [`CloseCode::SlowConsumer`], never silently skipped.

mod call_push;
mod call_table;
pub mod calls;
pub mod mailbox;
mod own_queue;
pub mod typing;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use smallvec::SmallVec;

use crate::metrics::Metrics;
use crate::protocol::{CloseCode, Millis, Uid};
use crate::store::PersonId;

pub use call_push::{Acted, CallPush, Rang};
pub use calls::{CallEnded, CallError, CallOutcome, Party};
pub use mailbox::{Bounds, Mailbox, NotQueued};
pub use own_queue::OwnQueue;

/// An encoded WebSocket frame, header included; cloning shares the same bytes.
pub type Frame = crate::wire::Frame;

/// What a connection's writer task takes from its queue.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A text frame to write.
    Frame(Frame),
    /// A logged event's frame: the writer drops it if the catch-up already sent this `seq`.
    Event(u64, Frame),
    /// Sent by the session after the catch-up: live frames may flow, those with `seq ≤ after`
    /// were replayed and are dropped.
    Live {
        /// The last replayed seq.
        after: u64,
    },
    /// Write this close frame after everything queued before it, then end.
    Close(CloseCode, String),
    /// Send a WebSocket ping (keepalive).
    Ping,
    /// The rest of a frame a direct write (`Mailbox::offer`) began: written first, as it is.
    Rest(bytes::Bytes),
}

impl Outbound {
    /// The bytes this item holds while it waits (what the queues' byte bound counts).
    pub fn size(&self) -> usize {
        match self {
            Outbound::Frame(frame) | Outbound::Event(_, frame) => frame.len(),
            Outbound::Rest(rest) => rest.len(),
            Outbound::Close(_, reason) => reason.len(),
            Outbound::Live { .. } | Outbound::Ping => 0,
        }
    }
}

/// Deliveries gathered for one flush: frames for the same connection within a batch leave in
/// one write. The fan-out opens one per run of committed work and flushes it at the end.
#[derive(Debug, Default)]
pub struct Batch {
    touched: Vec<Arc<Mailbox>>,
}

impl Batch {
    /// Writes what the batch queued: one write per connection touched.
    pub fn flush(&mut self, metrics: &Metrics) {
        for mailbox in self.touched.drain(..) {
            mailbox.flush_deferred(metrics);
        }
    }
}

/// Why a connection is being closed from outside its own session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KickReason {
    /// The close code.
    pub code: CloseCode,
    /// The close reason text (≤ 123 bytes, as WebSocket allows).
    pub reason: String,
}

/// The router's handle to one live connection.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// The connection's user.
    pub uid: Uid,
    /// Unique per connection, so a late cleanup never removes a newer connection of the same uid.
    pub conn_id: u64,
    mailbox: Arc<Mailbox>,
}

impl ConnHandle {
    /// Builds a handle to the connection's mailbox (the session and writer share it).
    pub fn new(uid: Uid, conn_id: u64, mailbox: Arc<Mailbox>) -> ConnHandle {
        ConnHandle {
            uid,
            conn_id,
            mailbox,
        }
    }

    /// Closes the connection from outside: urgent, so it bypasses the (maybe full) queue.
    /// The first reason wins.
    pub fn kick(&self, code: CloseCode, reason: impl Into<String>) {
        self.mailbox.kick(code, reason);
    }

    /// Hands a frame to the connection without waiting: written at once, or (in a `batch`)
    /// when the batch is flushed. Returns false if it was kicked.
    fn offer(
        &self,
        frame: &Frame,
        seq: Option<u64>,
        metrics: &Metrics,
        batch: Option<&mut Batch>,
    ) -> bool {
        let item = match seq {
            Some(seq) => Outbound::Event(seq, frame.clone()),
            None => Outbound::Frame(frame.clone()),
        };
        let offered = match batch {
            None => self.mailbox.offer(item, metrics),
            Some(batch) => self.mailbox.offer_deferred(item).map(|first| {
                if first {
                    batch.touched.push(self.mailbox.clone());
                }
            }),
        };
        match offered {
            Ok(()) => true,
            Err(mailbox::Refused::Full) => {
                if self.mailbox.kick(
                    CloseCode::SlowConsumer,
                    "slow consumer: reconnect and resync",
                ) {
                    metrics.slow_consumer_closes.inc();
                    tracing::warn!(
                        user.uid = self.uid,
                        conn.id = self.conn_id,
                        "kicked uid {}: slow consumer",
                        self.uid
                    );
                }
                false
            }
            // The session is ending; its cleanup removes the handle.
            Err(mailbox::Refused::Closed) => false,
        }
    }
}

type Entry = SmallVec<[ConnHandle; 8]>;

/// The live routing table. Sharded by person (DashMap), so sends for different persons do not
/// queue on one lock; one shard entry holds a person's whole fan-out set.
pub struct Router {
    persons: DashMap<PersonId, Entry>,
    metrics: Arc<Metrics>,
    calls: calls::Calls,
    typing: typing::Typing,
    next_conn_id: AtomicU64,
}

impl Router {
    /// An empty table.
    pub fn new(metrics: Arc<Metrics>) -> Router {
        Router {
            persons: DashMap::new(),
            metrics,
            calls: calls::Calls::default(),
            typing: typing::Typing::default(),
            next_conn_id: AtomicU64::new(0),
        }
    }

    /// A fresh connection id.
    pub fn conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a connection under its person. An older connection of the same uid is removed
    /// and kicked with [`CloseCode::Replaced`] (one live connection per uid).
    pub fn register(&self, person: PersonId, handle: ConnHandle) {
        let mut entry = self.persons.entry(person).or_default();
        if let Some(idx) = entry.iter().position(|h| h.uid == handle.uid) {
            let old = entry.remove(idx);
            tracing::info!(
                user.uid = old.uid,
                conn.id = old.conn_id,
                "kicked uid {}: replaced by a newer login",
                old.uid
            );
            old.kick(
                CloseCode::Replaced,
                "replaced: this user logged in on a newer connection",
            );
        }
        entry.push(handle);
    }

    /// Removes a connection, if it is still the registered one for its uid. Returns the calls
    /// that ended (at `now`) because this connection was a party to them (for their records).
    pub fn unregister(&self, person: PersonId, conn_id: u64, now: Millis) -> Vec<CallEnded> {
        self.persons.remove_if_mut(&person, |_, entry| {
            entry.retain(|h| h.conn_id != conn_id);
            entry.is_empty()
        });
        // After the removal, so the `stop` does not go to the leaving connection itself.
        self.typing_end_for_conn(conn_id);
        self.calls_end_for_conn(conn_id, now)
    }

    /// Hands `frame` to every live device of `person` except `skip`. Returns how many took it.
    /// `seq` is the event's place in the person's log, for frames that are logged.
    pub fn deliver(
        &self,
        person: PersonId,
        frame: &Frame,
        seq: Option<u64>,
        skip: Option<Uid>,
    ) -> usize {
        self.deliver_via(None, person, frame, seq, skip)
    }

    /// Like [`Router::deliver`], but the frames wait in `batch` until it is flushed, so that
    /// several frames for one connection leave in one write.
    pub fn deliver_in(
        &self,
        batch: &mut Batch,
        person: PersonId,
        frame: &Frame,
        seq: Option<u64>,
        skip: Option<Uid>,
    ) -> usize {
        self.deliver_via(Some(batch), person, frame, seq, skip)
    }

    fn deliver_via(
        &self,
        mut batch: Option<&mut Batch>,
        person: PersonId,
        frame: &Frame,
        seq: Option<u64>,
        skip: Option<Uid>,
    ) -> usize {
        let Some(entry) = self.persons.get(&person) else {
            return 0;
        };
        let mut width = 0;
        for handle in entry.iter().filter(|h| Some(h.uid) != skip) {
            if handle.offer(frame, seq, &self.metrics, batch.as_deref_mut()) {
                width += 1;
            }
        }
        width
    }

    /// Hands `frame` to one device (`uid`) of `person`. Returns whether it took it.
    pub fn deliver_to(&self, person: PersonId, uid: Uid, frame: &Frame) -> bool {
        self.persons
            .get(&person)
            .and_then(|entry| {
                entry
                    .iter()
                    .find(|h| h.uid == uid)
                    .map(|h| h.offer(frame, None, &self.metrics, None))
            })
            .unwrap_or(false)
    }

    /// Hands `frame` to the connection `conn_id` of `person` (not to a newer login of the same
    /// uid, which did not ask for it). Returns whether it took it.
    pub fn deliver_to_conn(&self, person: PersonId, conn_id: u64, frame: &Frame) -> bool {
        self.persons
            .get(&person)
            .and_then(|entry| {
                entry
                    .iter()
                    .find(|h| h.conn_id == conn_id)
                    .map(|h| h.offer(frame, None, &self.metrics, None))
            })
            .unwrap_or(false)
    }

    /// Closes the live connection of `uid`, if any.
    pub fn kick(&self, person: PersonId, uid: Uid, code: CloseCode, reason: &str) {
        if let Some(entry) = self.persons.get(&person) {
            for handle in entry.iter().filter(|h| h.uid == uid) {
                tracing::info!(
                    user.uid = uid,
                    conn.id = handle.conn_id,
                    "kicked uid {uid}: {reason}"
                );
                handle.kick(code, reason);
            }
        }
    }

    /// Closes every live connection (shutdown).
    pub fn kick_all(&self, code: CloseCode, reason: &str) {
        for entry in self.persons.iter() {
            for handle in entry.iter() {
                handle.kick(code, reason);
            }
        }
    }

    /// The uids of `person` that hold a live connection.
    pub fn online(&self, person: PersonId) -> SmallVec<[Uid; 8]> {
        self.persons
            .get(&person)
            .map(|entry| entry.iter().map(|h| h.uid).collect())
            .unwrap_or_default()
    }

    /// Persons with at least one live connection.
    pub fn person_count(&self) -> usize {
        self.persons.len()
    }

    /// Live connections in the table.
    pub fn connection_count(&self) -> usize {
        self.persons.iter().map(|e| e.len()).sum()
    }
}

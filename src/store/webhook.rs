//! The webhook outbox as the store hands it out: events waiting for the app's backend, and the
//! dead-lettered ones. The SQL is in `sqlite/outbox.rs`; the delivery loop is `crate::webhooks`.

use std::sync::Arc;

use super::PersonId;
use crate::protocol::{Millis, Uid};

/// Given to the store when webhooks are configured (`StoreOptions::outbox`); without it no
/// outbox row is ever written, so a broker without webhooks pays nothing.
#[derive(Clone)]
pub struct OutboxOptions {
    /// How long a message waits for one of its recipient's live devices to ack it before it
    /// is pushed (`--push-grace`).
    pub grace_ms: Millis,
    /// Called on the writer thread after a commit that wrote outbox rows, so the worker does
    /// not wait for its next tick. Must not block.
    pub wake: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for OutboxOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxOptions")
            .field("grace_ms", &self.grace_ms)
            .finish_non_exhaustive()
    }
}

/// A webhook event that is its own store write (nothing else is stored with it): a ring, the
/// answer of a pushed ring, a presence change.
#[derive(Debug, Clone)]
pub enum NewOutboxEvent {
    /// `call` (no `reason`: a ring no callee device was live for), or `call_ended` with
    /// `reason` `answered` (the record is written later, at hangup).
    Call {
        /// The call id.
        call: String,
        /// The callee's person: the event is for it.
        callee: PersonId,
        /// The caller's primary address.
        from: String,
        /// When it started ringing (names the event with the callee and call id).
        rang_at: Millis,
        /// `call_ended`'s reason.
        reason: Option<&'static str>,
        /// When it happened.
        ts: Millis,
    },
    /// `presence`: the person came online, or went offline (last device gone at `ts`).
    Presence {
        /// The person.
        person: PersonId,
        /// Online or offline.
        online: bool,
        /// When: the first device's login, or the last device's leaving (`last_seen`).
        ts: Millis,
        /// The row of this person's previous presence event: still undelivered, it is
        /// replaced (a newer state makes it moot), so a person has at most one waiting.
        replaces: Option<i64>,
    },
}

/// One event waiting in the outbox, with what its payload needs.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// The row (delivery order).
    pub id: i64,
    /// Stable per event (`msg-<mid>`, `read-<person>-<seq>`, `call-<person>-<rang at>-<call>`,
    /// `call_ended-…`, `presence-<person>-<ts>-<status>`): receivers dedupe on it.
    pub event_id: String,
    /// `message`, `read`, `call`, `call_ended` or `presence`.
    pub kind: String,
    /// The person the event is about (a message's recipient, the reader, the callee).
    pub person: PersonId,
    /// The event's seq in that person's log.
    pub seq: u64,
    /// The message (for `read`: read up to this message).
    pub mid: Option<u64>,
    /// The event's other fields, a JSON object as written with the event.
    pub data: Option<String>,
    /// When the retry window started (the event, or its last `webhookretry`).
    pub created_at: Millis,
    /// Not pushed before this unless the person has no live device (a message's grace).
    pub due_at: Millis,
    /// Not tried again before this.
    pub next_at: Millis,
    /// Attempts so far.
    pub attempts: u32,
    /// The person's primary address; `None` once the person was deleted.
    pub address: Option<String>,
    /// The message body as stored (only when asked for).
    pub body: Option<String>,
    /// The person's devices.
    pub devices: Vec<OutboxDevice>,
}

/// One device of the person an event is about.
#[derive(Debug, Clone)]
pub struct OutboxDevice {
    /// The device's user.
    pub uid: Uid,
    /// Its installation id.
    pub device: Option<String>,
    /// The last seq it acked.
    pub acked: u64,
}

/// A dead-lettered event, as the `webhooks` op lists it.
#[derive(Debug, Clone)]
pub struct DeadEvent {
    /// The outbox row (what `webhookretry` takes).
    pub id: i64,
    /// The event id.
    pub event_id: String,
    /// `message`, `read`, `call`, `call_ended` or `presence`.
    pub kind: String,
    /// The person's primary address (`None`: deleted since).
    pub address: Option<String>,
    /// The person.
    pub person: PersonId,
    /// The seq in that person's log.
    pub seq: u64,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last one failed.
    pub last_error: Option<String>,
    /// When its retry window started.
    pub created_at: Millis,
}

/// The outbox at a glance.
#[derive(Debug, Clone)]
pub struct OutboxStatus {
    /// Events waiting (not dead).
    pub pending: u64,
    /// Dead events kept.
    pub dead_total: u64,
    /// Dead events, newest first.
    pub dead: Vec<DeadEvent>,
    /// The oldest waiting event whose last attempt failed (it holds the others back), and when
    /// it is tried next: why webhooks are not arriving, before anything is dead.
    pub retrying: Option<(DeadEvent, Millis)>,
}

//! What a write committed, handed from the store's writer thread to one sink after each
//! group commit.
//!
//! The writer only commits: serializing frames, handing them to devices and waking the callers
//! cost more than the SQL itself (about a third of the broker's CPU at 3,000 sends/s when the
//! writer did them in series), so they happen on the sink's side. The writer calls
//! [`CommitSink::publish`] once per transaction with every job's [`Outcome`], in commit order;
//! the sink keeps each person's events in that order. The store knows nothing of who listens:
//! the gateway's fan-out is one sink, a cluster bus would be another.

use std::time::Instant;

use serde_json::value::RawValue;

use super::{Appended, Marker, PersonId, StoreError};
use crate::protocol::Uid;

/// What one write committed that devices must hear of. A closed set: every kind of event a
/// write can add to a log that is delivered live.
#[derive(Debug)]
pub enum Committed {
    /// A new message (never a retry): to the recipient person's devices, and to the sender
    /// person's other devices marked `out`.
    Message(CommittedMessage),
    /// `delivered` receipts an `ack` appended to the senders' logs.
    Receipts(Vec<Marker>),
    /// A `read`: the marker in the reader's log and the receipt in the peer's.
    Read(Vec<Marker>),
    /// A call's record in both persons' logs.
    CallRecord(Vec<Marker>),
    /// A profile change in the person's log.
    Profile(Vec<Marker>),
    /// `devices_changed` events in the person's log (a device linked, renamed, revoked or
    /// removed).
    Devices(Vec<Marker>),
}

impl Committed {
    /// The events as (person, event) markers, for every kind but a message.
    pub fn markers(&self) -> Option<&[Marker]> {
        match self {
            Committed::Message(_) => None,
            Committed::Receipts(m)
            | Committed::Read(m)
            | Committed::CallRecord(m)
            | Committed::Profile(m)
            | Committed::Devices(m) => Some(m),
        }
    }
}

/// A stored message as its fan-out needs it.
#[derive(Debug)]
pub struct CommittedMessage {
    /// Where it landed.
    pub appended: Appended,
    /// The sender's person.
    pub sender: PersonId,
    /// The sending device (its own copy is not sent back to it; the person's other devices
    /// see it as the `origin`).
    pub sender_uid: Uid,
    /// That device's id, if it has one.
    pub sender_device: Option<String>,
    /// The body, raw.
    pub body: Box<RawValue>,
    /// When the gateway read the `send` (for the send-to-deliver latency).
    pub accepted: Instant,
}

/// Tells the waiting caller its result; runs on the sink's side, after the delivery the write
/// caused (so a `sent` never overtakes the sender's own devices' copies).
pub struct Answer(Box<dyn FnOnce() + Send>);

impl Answer {
    /// Wraps the closure that hands the result to the caller.
    pub(crate) fn new(send: impl FnOnce() + Send + 'static) -> Answer {
        Answer(Box::new(send))
    }

    /// Hands the result to the caller (a no-op if it stopped waiting).
    pub fn send(self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Answer(..)")
    }
}

/// One job of a committed (or failed) transaction.
#[derive(Debug)]
pub struct Outcome {
    /// What it committed for devices; `None` for a refusal, a failed commit, or a write
    /// nobody is told of live (`useradd`, `touch`, files).
    pub committed: Option<Committed>,
    /// The caller's answer.
    pub answer: Answer,
}

/// Receives every transaction's outcomes from the writer thread, in commit order. It must not
/// block: the next transaction waits for it.
pub trait CommitSink: Send + Sync + 'static {
    /// Takes one transaction's outcomes.
    fn publish(&self, outcomes: Vec<Outcome>);
}

/// The sink of a store nobody listens to (tools, unit tests): answers every caller in place.
#[derive(Debug, Default)]
pub struct AnswerOnly;

impl CommitSink for AnswerOnly {
    fn publish(&self, outcomes: Vec<Outcome>) {
        for outcome in outcomes {
            outcome.answer.send();
        }
    }
}

/// A job's result paired with what it committed; built by the writer's jobs.
pub(crate) type Committing<T> = Result<(T, Option<Committed>), StoreError>;

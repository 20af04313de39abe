//! Live call state: who is ringing whom, which device answered, and who gets which call event.
//!
//! A call has two parties once answered: the caller's device and the callee device that answered
//! first. Every transition is decided under one short lock (never held across an await), so
//! exactly one answer or reject wins. Frames are delivered through the router after the lock is
//! released. The ring timeout is a timer the session spawns and hands over
//! ([`Router::call_arm_timer`]); it is cancelled when the call stops ringing, however that
//! happens. The table is indexed by connection (`call_table.rs`), and a connection is a party to
//! at most [`MAX_CALLS_PER_CONN`] live calls, so no event's work grows with other calls.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::value::RawValue;
use tokio::task::AbortHandle;

use super::Router;
use super::call_push::{Acted, CallPush, Rang};
use super::call_table::{Call, CallTable};
use crate::protocol::{CallAction, CallEvent, CallEventKind, ErrorCode, Millis, ServerFrame, Uid};
use crate::store::PersonId;

/// The most live calls (ringing or answered) one connection may be a party to: a device with
/// call waiting needs a few; more is a client bug or an attempt to fill the broker's memory.
pub const MAX_CALLS_PER_CONN: usize = 8;

/// One device acting on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Party {
    /// The device's person.
    pub person: PersonId,
    /// The device's user.
    pub uid: Uid,
    /// The device's connection.
    pub conn_id: u64,
}

/// A refused call action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No live call with this id for this person.
    #[error("no live call {0} for this person")]
    NoSuchCall(String),
    /// The id is taken by a live call.
    #[error("call {0} is already live; pick a new call id")]
    CallExists(String),
    /// The action does not fit.
    #[error("{0}")]
    State(String),
    /// The connection is already a party to [`MAX_CALLS_PER_CONN`] live calls.
    #[error(
        "this connection is already in {MAX_CALLS_PER_CONN} live calls; hang one up before {0}"
    )]
    TooManyCalls(&'static str),
}

impl CallError {
    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            CallError::NoSuchCall(_) => ErrorCode::NoSuchCall,
            CallError::CallExists(_) => ErrorCode::CallExists,
            CallError::State(_) => ErrorCode::CallState,
            CallError::TooManyCalls(_) => ErrorCode::TooManyCalls,
        }
    }
}

/// How a call ended, for its record in both persons' logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// It was answered and then hung up.
    Answered,
    /// Nobody answered in time.
    Missed,
    /// The callee rejected it.
    Rejected,
    /// The caller hung up (or went away) while it rang.
    Cancelled,
}

impl CallOutcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Missed => "missed",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Cancelled => "cancelled",
        }
    }
}

/// A call that ended: the caller logs it in both persons' logs.
#[derive(Debug, Clone)]
pub struct CallEnded {
    /// The call id.
    pub call: String,
    /// The caller's person.
    pub caller: PersonId,
    /// The callee's person.
    pub callee: PersonId,
    /// The caller's primary address.
    pub from: String,
    /// The callee's primary address.
    pub to: String,
    /// How it ended.
    pub outcome: CallOutcome,
    /// When it started ringing.
    pub rang_at: Millis,
    /// How long it was connected (0 unless answered).
    pub duration_ms: i64,
    /// Its ring produced a `call` webhook event and no `call_ended` was written yet (one is
    /// written with the record).
    pub pushed: bool,
}

/// The record of a call that ended at `now`.
fn record_of(call: &Call, outcome: CallOutcome, now: Millis) -> CallEnded {
    let duration_ms = call.answered_at.map(|at| (now - at).max(0)).unwrap_or(0);
    CallEnded {
        call: call.id.clone(),
        caller: call.caller.person,
        callee: call.callee_person,
        from: call.from.clone(),
        to: call.to.clone(),
        outcome,
        rang_at: call.rang_at,
        duration_ms,
        pushed: call.pushed,
    }
}

/// All live calls.
#[derive(Debug, Default)]
pub(super) struct Calls {
    pub(super) live: Mutex<CallTable>,
    next_serial: AtomicU64,
}

/// Who gets a frame.
enum Target {
    /// Every device of a person except one uid.
    Person(PersonId, Option<Uid>),
    /// One device.
    Device(PersonId, Uid),
}

impl Router {
    /// Starts ringing at `now` (ms since the Unix epoch, like every time the router is
    /// given: the caller reads the clock). Returns the call's serial, for
    /// [`Router::call_timeout`], and the `call` webhook event to write when none of the
    /// callee's devices is live.
    #[allow(clippy::too_many_arguments)]
    pub fn call_ring(
        &self,
        caller: Party,
        callee_person: PersonId,
        from: &str,
        to: &str,
        call_id: &str,
        data: Option<&RawValue>,
        now: Millis,
    ) -> Result<Rang, CallError> {
        if callee_person == caller.person {
            return Err(CallError::State(
                "cannot call your own person; call another address".into(),
            ));
        }
        let serial = self.calls.next_serial.fetch_add(1, Ordering::Relaxed);
        // Read before the insert: a device that registers after this is rung by
        // `call_ring_late` (the push is what woke it).
        let pushed = self.online(callee_person).is_empty();
        {
            let mut live = self.calls.live.lock().unwrap_or_else(|p| p.into_inner());
            if live.taken(call_id, [caller.person, callee_person]) {
                return Err(CallError::CallExists(call_id.into()));
            }
            if live.count_for_conn(caller.conn_id) >= MAX_CALLS_PER_CONN {
                return Err(CallError::TooManyCalls("ringing another"));
            }
            live.insert(
                serial,
                Call {
                    id: call_id.into(),
                    caller,
                    callee_person,
                    callee: None,
                    from: from.into(),
                    to: to.into(),
                    rang_at: now,
                    answered_at: None,
                    timer: None,
                    data: data.map(|d| d.to_owned()),
                    pushed,
                },
            );
        }
        let event = |out| CallView {
            call: call_id,
            from,
            to,
            out,
        };
        self.send_call(
            Target::Person(callee_person, None),
            event(false),
            CallEventKind::Ring,
            data,
        );
        self.send_call(
            Target::Person(caller.person, Some(caller.uid)),
            event(true),
            CallEventKind::Ring,
            data,
        );
        let push = pushed.then(|| CallPush {
            call: call_id.into(),
            callee: callee_person,
            from: from.into(),
            rang_at: now,
        });
        Ok(Rang { serial, push })
    }

    /// Answer, reject, hangup or signal from a device, at `now`.
    pub fn call_act(
        &self,
        actor: Party,
        call_id: &str,
        action: CallAction,
        data: Option<&RawValue>,
        now: Millis,
    ) -> Result<Acted, CallError> {
        let mut live = self.calls.live.lock().unwrap_or_else(|p| p.into_inner());
        let serial = live
            .find(call_id, actor.person)
            .ok_or_else(|| CallError::NoSuchCall(call_id.into()))?;
        let call = live.get(serial).expect("found above");
        let is_caller = call.caller == actor;
        let is_callee = call.callee == Some(actor);
        let on_callee_side = call.callee_person == actor.person;
        let ringing = call.callee.is_none();
        let (caller, callee_person) = (call.caller, call.callee_person);
        let (from, to) = (call.from.clone(), call.to.clone());

        let mut ended = None;
        let mut answered = None;
        // (who, out, what, with the actor's data): data goes only to the other party.
        let mut sends: Vec<(Target, bool, CallEventKind, bool)> = Vec::new();
        match action {
            CallAction::Ring => {
                return Err(CallError::CallExists(call_id.into()));
            }
            CallAction::Answer | CallAction::Reject => {
                if !on_callee_side {
                    return Err(CallError::State(
                        "only the callee's devices can answer or reject; the caller hangs up"
                            .into(),
                    ));
                }
                if !ringing {
                    return Err(CallError::State(format!(
                        "call {call_id} was already answered on another device"
                    )));
                }
                let (direct, elsewhere) = if action == CallAction::Answer {
                    if live.count_for_conn(actor.conn_id) >= MAX_CALLS_PER_CONN {
                        return Err(CallError::TooManyCalls("answering another"));
                    }
                    if let Some(call) = live.get_mut(serial).filter(|c| c.pushed) {
                        // Its `call_ended` is written now; the hangup's record owes none.
                        call.pushed = false;
                        answered = Some(CallPush {
                            call: call.id.clone(),
                            callee: call.callee_person,
                            from: call.from.clone(),
                            rang_at: call.rang_at,
                        });
                    }
                    live.answered(serial, actor, now);
                    (CallEventKind::Answer, CallEventKind::AnsweredElsewhere)
                } else {
                    ended = live
                        .remove(serial)
                        .map(|c| record_of(&c, CallOutcome::Rejected, now));
                    (CallEventKind::Reject, CallEventKind::RejectedElsewhere)
                };
                sends.push((
                    Target::Device(caller.person, caller.uid),
                    true,
                    direct,
                    true,
                ));
                sends.push((
                    Target::Person(callee_person, Some(actor.uid)),
                    false,
                    elsewhere,
                    false,
                ));
                sends.push((
                    Target::Person(caller.person, Some(caller.uid)),
                    true,
                    elsewhere,
                    false,
                ));
            }
            CallAction::Hangup => {
                // While it rings, any of the caller's devices may cancel it.
                let cancels = ringing && actor.person == caller.person;
                if !is_caller && !is_callee && !cancels {
                    return Err(CallError::State(if ringing {
                        "a ringing call is declined with reject".into()
                    } else {
                        "only the two devices in the call can hang up".into()
                    }));
                }
                let outcome = if ringing {
                    CallOutcome::Cancelled
                } else {
                    CallOutcome::Answered
                };
                ended = live.remove(serial).map(|c| record_of(&c, outcome, now));
                sends.push((
                    Target::Person(caller.person, Some(actor.uid)),
                    true,
                    CallEventKind::Hangup,
                    false,
                ));
                sends.push((
                    Target::Person(callee_person, Some(actor.uid)),
                    false,
                    CallEventKind::Hangup,
                    false,
                ));
            }
            CallAction::Signal => {
                let Some(callee) = call.callee else {
                    return Err(CallError::State(
                        "signal needs an answered call; put the offer in ring's data".into(),
                    ));
                };
                let target = if is_caller {
                    Target::Device(callee.person, callee.uid)
                } else if is_callee {
                    Target::Device(caller.person, caller.uid)
                } else {
                    return Err(CallError::State(
                        "only the two devices in the call can signal".into(),
                    ));
                };
                sends.push((target, is_callee, CallEventKind::Signal, true));
            }
        }
        // Deliver after the lock: the router's shards are separate locks, but keep this one short.
        drop(live);
        for (target, out, kind, with_data) in sends {
            let view = CallView {
                call: call_id,
                from: &from,
                to: &to,
                out,
            };
            self.send_call(target, view, kind, data.filter(|_| with_data));
        }
        Ok(Acted { ended, answered })
    }

    /// Hands the ring timer of the call `serial` to the table, which cancels it when the call
    /// stops ringing (at once if it already has).
    pub fn call_arm_timer(&self, serial: u64, timer: AbortHandle) {
        let mut live = self.calls.live.lock().unwrap_or_else(|p| p.into_inner());
        live.arm(serial, timer);
    }

    /// The ring timer fired at `now`: a call still ringing since `serial` ends as missed on
    /// every device.
    pub fn call_timeout(&self, call_id: &str, serial: u64, now: Millis) -> Option<CallEnded> {
        let ended = {
            let mut live = self.calls.live.lock().unwrap_or_else(|p| p.into_inner());
            let same_call = live.get(serial).is_some_and(|c| c.id == call_id);
            same_call.then(|| live.remove_missed(serial)).flatten()
        };
        if let Some(call) = ended {
            let view = |out| CallView {
                call: call_id,
                from: &call.from,
                to: &call.to,
                out,
            };
            self.send_call(
                Target::Person(call.caller.person, None),
                view(true),
                CallEventKind::Missed,
                None,
            );
            self.send_call(
                Target::Person(call.callee_person, None),
                view(false),
                CallEventKind::Missed,
                None,
            );
            return Some(record_of(&call, CallOutcome::Missed, now));
        }
        None
    }

    /// A connection went away at `now`: its calls end with `hangup` on every other device.
    pub(super) fn calls_end_for_conn(&self, conn_id: u64, now: Millis) -> Vec<CallEnded> {
        let mut records = Vec::new();
        let gone_calls = {
            let mut live = self.calls.live.lock().unwrap_or_else(|p| p.into_inner());
            live.remove_for_conn(conn_id)
        };
        for call in gone_calls {
            let id = &call.id;
            let gone = if call.caller.conn_id == conn_id {
                call.caller.uid
            } else {
                call.callee.map(|p| p.uid).unwrap_or_default()
            };
            let view = |out| CallView {
                call: id,
                from: &call.from,
                to: &call.to,
                out,
            };
            self.send_call(
                Target::Person(call.caller.person, Some(gone)),
                view(true),
                CallEventKind::Hangup,
                None,
            );
            self.send_call(
                Target::Person(call.callee_person, Some(gone)),
                view(false),
                CallEventKind::Hangup,
                None,
            );
            let outcome = if call.callee.is_some() {
                CallOutcome::Answered
            } else {
                CallOutcome::Cancelled
            };
            records.push(record_of(&call, outcome, now));
        }
        records
    }

    fn send_call(
        &self,
        target: Target,
        view: CallView<'_>,
        kind: CallEventKind,
        data: Option<&RawValue>,
    ) {
        let frame = ServerFrame::Call(CallEvent {
            call: view.call.to_string(),
            action: kind,
            from: view.from.to_string(),
            to: view.to.to_string(),
            out: view.out,
            data: data.map(|d| d.to_owned()),
        });
        let text: super::Frame = frame.to_text().into();
        match target {
            Target::Person(person, skip) => {
                self.deliver(person, &text, None, skip);
            }
            Target::Device(person, uid) => {
                self.deliver_to(person, uid, &text);
            }
        }
    }
}

struct CallView<'a> {
    call: &'a str,
    from: &'a str,
    to: &'a str,
    out: bool,
}

//! Live call state: who is ringing whom, which device answered, and who gets which call event.
//!
//! A call has two parties once answered: the caller's device and the callee device that answered
//! first. Every transition is decided under one short lock (never held across an await), so
//! exactly one answer or reject wins. Frames are delivered through the router after the lock is
//! released. The ring timeout is a timer the session spawns; [`Router::call_timeout`] ignores it
//! if the call it was started for has ended.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::value::RawValue;

use super::Router;
use crate::protocol::{CallAction, CallEvent, CallEventKind, ErrorCode, Millis, ServerFrame, Uid};
use crate::state::now_millis;
use crate::store::PersonId;

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
}

impl CallError {
    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            CallError::NoSuchCall(_) => ErrorCode::NoSuchCall,
            CallError::CallExists(_) => ErrorCode::CallExists,
            CallError::State(_) => ErrorCode::CallState,
        }
    }
}

#[derive(Debug)]
struct Call {
    serial: u64,
    caller: Party,
    callee_person: PersonId,
    /// The device that answered; `None` while ringing.
    callee: Option<Party>,
    from: String,
    to: String,
    /// When it started ringing.
    rang_at: Millis,
    /// When it was answered.
    answered_at: Option<Millis>,
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
}

impl Call {
    fn ended(&self, id: &str, outcome: CallOutcome) -> CallEnded {
        let duration_ms = self
            .answered_at
            .map(|at| (now_millis() - at).max(0))
            .unwrap_or(0);
        CallEnded {
            call: id.to_string(),
            caller: self.caller.person,
            callee: self.callee_person,
            from: self.from.clone(),
            to: self.to.clone(),
            outcome,
            rang_at: self.rang_at,
            duration_ms,
        }
    }
}

/// All live calls.
#[derive(Debug, Default)]
pub(super) struct Calls {
    live: Mutex<CallTable>,
    next_serial: AtomicU64,
}

/// Live calls by call id. Ids are chosen by clients, so one id may name calls of unrelated
/// persons at once; a call is always looked up together with the acting person.
#[derive(Debug, Default)]
struct CallTable(HashMap<String, Vec<Call>>);

impl CallTable {
    fn involves(call: &Call, person: PersonId) -> bool {
        call.caller.person == person || call.callee_person == person
    }

    fn taken(&self, id: &str, persons: [PersonId; 2]) -> bool {
        self.0.get(id).is_some_and(|calls| {
            calls
                .iter()
                .any(|c| persons.iter().any(|p| Self::involves(c, *p)))
        })
    }

    fn insert(&mut self, id: &str, call: Call) {
        self.0.entry(id.to_string()).or_default().push(call);
    }

    fn get_mut(&mut self, id: &str, person: PersonId) -> Option<&mut Call> {
        self.0
            .get_mut(id)?
            .iter_mut()
            .find(|c| Self::involves(c, person))
    }

    /// Removes every call that `pred` picks.
    fn remove_where(&mut self, mut pred: impl FnMut(&str, &Call) -> bool) -> Vec<(String, Call)> {
        let mut removed = Vec::new();
        self.0.retain(|id, calls| {
            let mut idx = 0;
            while idx < calls.len() {
                if pred(id, &calls[idx]) {
                    removed.push((id.clone(), calls.swap_remove(idx)));
                } else {
                    idx += 1;
                }
            }
            !calls.is_empty()
        });
        removed
    }

    fn remove(&mut self, id: &str, person: PersonId) -> Option<Call> {
        let calls = self.0.get_mut(id)?;
        let idx = calls.iter().position(|c| Self::involves(c, person))?;
        let call = calls.swap_remove(idx);
        if calls.is_empty() {
            self.0.remove(id);
        }
        Some(call)
    }
}

/// Who gets a frame.
enum Target {
    /// Every device of a person except one uid.
    Person(PersonId, Option<Uid>),
    /// One device.
    Device(PersonId, Uid),
}

impl Router {
    /// Starts ringing. Returns the call's serial, for [`Router::call_timeout`].
    pub fn call_ring(
        &self,
        caller: Party,
        callee_person: PersonId,
        from: &str,
        to: &str,
        call_id: &str,
        data: Option<&RawValue>,
    ) -> Result<u64, CallError> {
        if callee_person == caller.person {
            return Err(CallError::State(
                "cannot call your own person; call another address".into(),
            ));
        }
        let serial = self.calls.next_serial.fetch_add(1, Ordering::Relaxed);
        {
            let mut live = self.calls.live.lock().unwrap_or_else(|p| p.into_inner());
            if live.taken(call_id, [caller.person, callee_person]) {
                return Err(CallError::CallExists(call_id.into()));
            }
            live.insert(
                call_id,
                Call {
                    serial,
                    caller,
                    callee_person,
                    callee: None,
                    from: from.into(),
                    to: to.into(),
                    rang_at: now_millis(),
                    answered_at: None,
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
        Ok(serial)
    }

    /// Answer, reject, hangup or signal from a device.
    pub fn call_act(
        &self,
        actor: Party,
        call_id: &str,
        action: CallAction,
        data: Option<&RawValue>,
    ) -> Result<Option<CallEnded>, CallError> {
        let mut live = self.calls.live.lock().unwrap_or_else(|p| p.into_inner());
        let call = live
            .get_mut(call_id, actor.person)
            .ok_or_else(|| CallError::NoSuchCall(call_id.into()))?;
        let is_caller = call.caller == actor;
        let is_callee = call.callee == Some(actor);
        let on_callee_side = call.callee_person == actor.person;
        let ringing = call.callee.is_none();
        let (caller, callee_person) = (call.caller, call.callee_person);
        let (from, to) = (call.from.clone(), call.to.clone());

        let mut ended = None;
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
                    call.callee = Some(actor);
                    call.answered_at = Some(now_millis());
                    (CallEventKind::Answer, CallEventKind::AnsweredElsewhere)
                } else {
                    ended = live
                        .remove(call_id, actor.person)
                        .map(|c| c.ended(call_id, CallOutcome::Rejected));
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
                ended = live
                    .remove(call_id, actor.person)
                    .map(|c| c.ended(call_id, outcome));
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
        Ok(ended)
    }

    /// The ring timer fired: a call still ringing since `serial` ends as missed on every device.
    pub fn call_timeout(&self, call_id: &str, serial: u64) -> Option<CallEnded> {
        let ended = {
            let mut live = self.calls.live.lock().unwrap_or_else(|p| p.into_inner());
            live.remove_where(|id, c| id == call_id && c.serial == serial && c.callee.is_none())
                .pop()
                .map(|(_, call)| call)
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
            return Some(call.ended(call_id, CallOutcome::Missed));
        }
        None
    }

    /// A connection went away: its calls end with `hangup` on every other device.
    pub(super) fn calls_end_for_conn(&self, conn_id: u64) -> Vec<CallEnded> {
        let mut records = Vec::new();
        let ended: Vec<(String, Call)> = {
            let mut live = self.calls.live.lock().unwrap_or_else(|p| p.into_inner());
            live.remove_where(|_, c| {
                c.caller.conn_id == conn_id || c.callee.is_some_and(|p| p.conn_id == conn_id)
            })
        };
        for (id, call) in ended {
            let gone = if call.caller.conn_id == conn_id {
                call.caller.uid
            } else {
                call.callee.map(|p| p.uid).unwrap_or_default()
            };
            let view = |out| CallView {
                call: &id,
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
            records.push(call.ended(&id, outcome));
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

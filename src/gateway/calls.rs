//! The `call` op and the records of calls that ended.

use std::sync::Arc;

use tracing::Instrument;

use super::replies::store_refusal;
use super::session::Online;
use crate::protocol::MAX_CLIENT_ID;
use crate::protocol::{CallAction, CallRequest, DecodeError, ErrorCode};
use crate::router::{CallEnded, CallError, CallPush, Party};
use crate::state::{ServerState, now_millis};
use crate::store::{CallRecord, NewOutboxEvent};

impl Online<'_> {
    /// `call`: rings a person, or acts on a live call (answer, reject, hangup, signal).
    pub(super) async fn call(&mut self, req: CallRequest) {
        let identity = &self.identity;
        let call_id = req.call.clone();
        if call_id.is_empty() || call_id.chars().count() > MAX_CLIENT_ID {
            let err = DecodeError::new(
                ErrorCode::BadValue,
                format!("`call` must be 1 to {MAX_CLIENT_ID} characters"),
            );
            return self.error(err, None, Some(call_id)).await;
        }
        let party = Party {
            person: identity.person,
            uid: identity.uid,
            conn_id: self.conn_id,
        };
        let router = &self.state.router;
        let result = if req.action == CallAction::Ring {
            let Some(to) = req.to.as_deref() else {
                let err = DecodeError::new(
                    ErrorCode::MissingField,
                    "missing field `to` (ring needs the callee's address)",
                );
                return self.error(err, None, Some(call_id)).await;
            };
            let (callee, callee_address) = match self.state.store.resolve(to).await {
                Ok(found) => found,
                Err(err) => {
                    let err = store_refusal(err, "ring", "internal error; ring again");
                    return self.error(err, None, Some(call_id)).await;
                }
            };
            router
                .call_ring(
                    party,
                    callee,
                    &identity.primary_address,
                    &callee_address,
                    &call_id,
                    req.data.as_deref(),
                    now_millis(),
                )
                .map(|rang| {
                    let serial = rang.serial;
                    let state = self.state.clone();
                    let call_id = call_id.clone();
                    let router = state.router.clone();
                    let timer = tokio::spawn(
                        async move {
                            tokio::time::sleep(state.config.ring_timeout).await;
                            if let Some(ended) =
                                state.router.call_timeout(&call_id, serial, now_millis())
                            {
                                record_call(&state, ended).await;
                            }
                        }
                        .instrument(tracing::Span::current()),
                    );
                    // Cancelled by the router when the call stops ringing.
                    router.call_arm_timer(serial, timer.abort_handle());
                    Acted {
                        ended: None,
                        answered: rang.push.map(|push| (push, None)),
                    }
                })
        } else {
            router
                .call_act(
                    party,
                    &call_id,
                    req.action,
                    req.data.as_deref(),
                    now_millis(),
                )
                .map(|acted| Acted {
                    ended: acted.ended,
                    answered: acted.answered.map(|push| (push, Some("answered"))),
                })
        };
        match result {
            Ok(acted) => {
                if let Some((push, reason)) = acted.answered {
                    queue_call_event(&self.state, push, reason).await;
                }
                if let Some(ended) = acted.ended {
                    record_call(&self.state, ended).await;
                }
            }
            Err(err) => {
                let err = call_error(err);
                self.error(err, None, Some(call_id)).await;
            }
        }
    }
}

/// What a call op leaves to write: a record, and a `call` (no reason) or `call_ended` event.
struct Acted {
    ended: Option<CallEnded>,
    answered: Option<(CallPush, Option<&'static str>)>,
}

/// Writes the `call` webhook event of a ring no callee device was live for, or the
/// `call_ended` (`answered`) of such a ring. Awaited before the op's next frame is read, so a
/// ring's `call` is in the outbox before anything that ends it.
async fn queue_call_event(state: &ServerState, push: CallPush, reason: Option<&'static str>) {
    // A ring's event is dated when it started ringing; an answer's, now.
    let ts = match reason {
        None => push.rang_at,
        Some(_) => now_millis(),
    };
    let event = NewOutboxEvent::Call {
        call: push.call,
        callee: push.callee,
        from: push.from,
        rang_at: push.rang_at,
        reason,
        ts,
    };
    if let Err(err) = state.store.outbox_write(event).await {
        tracing::error!(error = %err, "could not queue a call webhook event");
    }
}

/// Logs a call that ended in both persons' logs and delivers the records.
pub(super) async fn record_call(state: &Arc<ServerState>, ended: CallEnded) {
    let record = CallRecord {
        call: ended.call,
        caller: (ended.caller, ended.from),
        callee: (ended.callee, ended.to),
        status: ended.outcome.as_str(),
        duration_ms: ended.duration_ms,
        ts: now_millis(),
        pushed_at: ended.pushed.then_some(ended.rang_at),
    };
    if let Err(err) = state.store.append_call_record(record).await {
        tracing::error!(error = %err, "could not record a call");
    }
}

fn call_error(err: CallError) -> DecodeError {
    DecodeError::new(err.code(), err.to_string())
}

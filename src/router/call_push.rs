//! What the webhooks need from calls: a ring that reached none of the callee's devices is
//! "pushed" (the gateway writes a `call` event), its answer or end owes one `call_ended`, and
//! a callee device that logs in while a call rings its person is rung (a push woke it).

use super::Router;
use super::calls::CallEnded;
use crate::protocol::{CallEvent, CallEventKind, Millis, ServerFrame, Uid};
use crate::store::PersonId;

/// A ring that produced a `call` webhook event (none of the callee's devices was live), or
/// the answer that ends such a ring: what the webhook event needs.
#[derive(Debug, Clone)]
pub struct CallPush {
    /// The call id.
    pub call: String,
    /// The callee's person (the event is for it).
    pub callee: PersonId,
    /// The caller's primary address.
    pub from: String,
    /// When it started ringing (with the callee and call id, it names the event).
    pub rang_at: Millis,
}

/// A ring that started.
#[derive(Debug, Clone)]
pub struct Rang {
    /// For [`Router::call_timeout`] and [`Router::call_arm_timer`].
    pub serial: u64,
    /// Set when no callee device was live: the `call` webhook event to write.
    pub push: Option<CallPush>,
}

/// What a call action did.
#[derive(Debug, Clone, Default)]
pub struct Acted {
    /// The call ended: its record to write.
    pub ended: Option<CallEnded>,
    /// A pushed call was answered: the `call_ended` (`answered`) webhook event to write now,
    /// so the app cancels the ringing push at once rather than at hangup.
    pub answered: Option<CallPush>,
}

impl Router {
    /// A device of `person` registered: it is rung for every call still ringing its person
    /// (the device a `call` push woke gets the ring it was woken for). A ring that starts
    /// while the device registers may reach it twice, with the same call id.
    pub fn call_ring_late(&self, person: PersonId, uid: Uid) {
        let frames: Vec<super::Frame> = {
            let live = self.calls.live.lock().unwrap_or_else(|p| p.into_inner());
            live.ringing(person)
                .map(|call| {
                    let frame = ServerFrame::Call(CallEvent {
                        call: call.id.clone(),
                        action: CallEventKind::Ring,
                        from: call.from.clone(),
                        to: call.to.clone(),
                        out: false,
                        data: call.data.clone(),
                    });
                    frame.to_text().into()
                })
                .collect()
        };
        for frame in frames {
            self.deliver_to(person, uid, &frame);
        }
    }
}

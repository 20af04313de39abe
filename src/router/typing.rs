//! Typing indicators: who is typing to whom, per connection, and the `typing` frames that say so.
//!
//! Typing is transient like a call's `signal`: the frames go to live devices only, as
//! `Outbound::Frame` (no seq), so nothing is logged, replayed on catch-up or shown in `history`.
//! A `start` is shown until `stop`, until the typing device disconnects, or for
//! [`TYPING_TIMEOUT`] after the last `start`; the session arms that timer (the router reads no
//! clock) and the router cancels it on every refresh, `stop` or disconnect. Each transition is
//! decided under one short lock; frames are delivered after it is released.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use smallvec::SmallVec;
use tokio::task::AbortHandle;

use super::Router;
use super::calls::Party;
use crate::protocol::{ServerFrame, TypingEvent, TypingState};
use crate::store::PersonId;

/// How long a `start` is shown without a refresh before the broker sends `stop` itself.
pub const TYPING_TIMEOUT: Duration = Duration::from_secs(6);

/// The most persons one connection is shown typing to at once. A device types in one
/// conversation at a time (a split view: a few); a start past this ends the oldest, with a
/// `stop`, so a client bug cannot fill the table and no start is refused for it.
pub const MAX_TYPING_PER_CONN: usize = 4;

/// `typing` frames a person (all of its devices) may send per second, on average. A client
/// that refreshes every few seconds and stops on send needs well under one; the budget is
/// apart from the send rate, so typing never delays a message.
pub const TYPING_RATE: u32 = 2;
/// `typing` frames a person may send in a burst above [`TYPING_RATE`].
pub const TYPING_BURST: u32 = 10;

/// One connection typing to one person.
#[derive(Debug)]
struct Typist {
    /// The typing device.
    sender: Party,
    peer: PersonId,
    /// Changes on every refresh, so a timer armed for an older `start` does nothing.
    serial: u64,
    from: String,
    to: String,
    timer: Option<AbortHandle>,
}

impl Typist {
    fn cancel_timer(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

/// A typing state that ended, to announce with `stop`.
struct Ended {
    peer: PersonId,
    from: String,
    to: String,
}

/// Who is typing to whom, by connection.
#[derive(Debug, Default)]
pub(super) struct Typing {
    by_conn: Mutex<HashMap<u64, SmallVec<[Typist; 1]>>>,
    next_serial: AtomicU64,
}

impl Typing {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SmallVec<[Typist; 1]>>> {
        self.by_conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Router {
    /// `party` is typing to `peer` (`from`/`to`: the two primary addresses). Delivers `start`
    /// to `peer`'s live devices and to `party`'s person's other devices, and returns the serial
    /// the session arms the auto-stop timer with ([`Router::typing_arm_timer`]). A refresh
    /// delivers `start` again (a device of the peer that came online since learns of it).
    pub fn typing_start(&self, party: Party, peer: PersonId, from: &str, to: &str) -> u64 {
        let serial = self.typing.next_serial.fetch_add(1, Ordering::Relaxed) + 1;
        let evicted = {
            let mut table = self.typing.table();
            let typists = table.entry(party.conn_id).or_default();
            let mut evicted = None;
            if let Some(idx) = typists.iter().position(|t| t.peer == peer) {
                // Taken out and pushed back: the list stays ordered by last refresh.
                let mut old = typists.remove(idx);
                old.cancel_timer();
            } else if typists.len() >= MAX_TYPING_PER_CONN {
                let mut oldest = typists.remove(0);
                oldest.cancel_timer();
                evicted = Some(Ended {
                    peer: oldest.peer,
                    from: oldest.from,
                    to: oldest.to,
                });
            }
            typists.push(Typist {
                sender: party,
                peer,
                serial,
                from: from.to_string(),
                to: to.to_string(),
                timer: None,
            });
            evicted
        };
        if let Some(ended) = evicted {
            self.send_typing(party, &ended, TypingState::Stop);
        }
        let started = Ended {
            peer,
            from: from.to_string(),
            to: to.to_string(),
        };
        self.send_typing(party, &started, TypingState::Start);
        serial
    }

    /// Hands the auto-stop timer of the `start` numbered `serial` to the router, which cancels
    /// it on a refresh, a `stop` or a disconnect. A timer for a state already gone is cancelled.
    pub fn typing_arm_timer(&self, conn_id: u64, peer: PersonId, serial: u64, timer: AbortHandle) {
        let mut table = self.typing.table();
        let typist = table
            .get_mut(&conn_id)
            .and_then(|typists| typists.iter_mut().find(|t| t.peer == peer))
            .filter(|t| t.serial == serial);
        match typist {
            Some(typist) => typist.timer = Some(timer),
            None => timer.abort(),
        }
    }

    /// `party` stopped typing to `peer`: delivers `stop` if it was shown typing. Returns
    /// whether it was (a `stop` for nothing shown sends nothing).
    pub fn typing_stop(&self, party: Party, peer: PersonId) -> bool {
        let ended = self.typing_remove(party.conn_id, peer, None);
        match ended {
            Some(ended) => {
                self.send_typing(party, &ended, TypingState::Stop);
                true
            }
            None => false,
        }
    }

    /// The auto-stop timer of the `start` numbered `serial` fired: delivers `stop` unless that
    /// start was refreshed or ended meanwhile.
    pub fn typing_timeout(&self, party: Party, peer: PersonId, serial: u64) -> bool {
        // The timer that fires is let go, not aborted: it is the task running this.
        let ended = self.typing_remove(party.conn_id, peer, Some(serial));
        match ended {
            Some(ended) => {
                self.send_typing(party, &ended, TypingState::Stop);
                true
            }
            None => false,
        }
    }

    /// The connection left: every typing state it had ends with `stop`.
    pub(super) fn typing_end_for_conn(&self, conn_id: u64) {
        let typists = self.typing.table().remove(&conn_id);
        for mut typist in typists.into_iter().flatten() {
            typist.cancel_timer();
            let ended = Ended {
                peer: typist.peer,
                from: typist.from,
                to: typist.to,
            };
            self.send_typing(typist.sender, &ended, TypingState::Stop);
        }
    }

    /// Connections with a typing state (for tests: it must drain to zero).
    pub fn typing_count(&self) -> usize {
        self.typing.table().values().map(|t| t.len()).sum()
    }

    /// Removes `conn_id`'s state for `peer` (only the `start` numbered `serial`, when given).
    fn typing_remove(&self, conn_id: u64, peer: PersonId, serial: Option<u64>) -> Option<Ended> {
        let mut table = self.typing.table();
        let typists = table.get_mut(&conn_id)?;
        let idx = typists
            .iter()
            .position(|t| t.peer == peer && serial.is_none_or(|s| s == t.serial))?;
        let mut typist = typists.remove(idx);
        if typists.is_empty() {
            table.remove(&conn_id);
        }
        if serial.is_none() {
            typist.cancel_timer();
        }
        Some(Ended {
            peer: typist.peer,
            from: typist.from,
            to: typist.to,
        })
    }

    /// One frame for the peer's devices and one (`out`) for the typing person's other devices;
    /// typing to oneself reaches only the latter.
    fn send_typing(&self, party: Party, what: &Ended, state: TypingState) {
        let event = |out| {
            let frame = ServerFrame::Typing(TypingEvent {
                from: what.from.clone(),
                to: what.to.clone(),
                state,
                out,
            });
            let text: super::Frame = frame.to_text().into();
            text
        };
        if what.peer != party.person {
            self.deliver(what.peer, &event(false), None, None);
        }
        self.deliver(party.person, &event(true), None, Some(party.uid));
    }
}

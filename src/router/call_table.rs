//! The live calls, indexed so that no event scans the whole table: by serial (each ring gets
//! one), by the client-chosen call id (which may name calls of unrelated persons at once), and
//! by connection (the caller's and, once answered, the callee's). The ring timer's abort handle
//! lives with its call, so every way a call leaves the table cancels its timer.

use std::collections::HashMap;

use serde_json::value::RawValue;
use smallvec::SmallVec;
use tokio::task::AbortHandle;

use super::calls::Party;
use crate::protocol::Millis;
use crate::store::PersonId;

/// One live call.
#[derive(Debug)]
pub(super) struct Call {
    /// The call id the caller chose.
    pub id: String,
    pub caller: Party,
    pub callee_person: PersonId,
    /// The device that answered; `None` while ringing.
    pub callee: Option<Party>,
    pub from: String,
    pub to: String,
    /// When it started ringing.
    pub rang_at: Millis,
    /// When it was answered.
    pub answered_at: Option<Millis>,
    /// The ring timer, cancelled when the call stops ringing (answered or gone).
    pub timer: Option<AbortHandle>,
    /// The ring's data (the offer), rung again to a callee device that logs in meanwhile.
    pub data: Option<Box<RawValue>>,
    /// Whether the ring produced a `call` webhook event (no callee device was live), so its
    /// end owes a `call_ended` one.
    pub pushed: bool,
}

impl Call {
    fn involves(&self, person: PersonId) -> bool {
        self.caller.person == person || self.callee_person == person
    }

    /// The connections this call counts against.
    fn conns(&self) -> impl Iterator<Item = u64> + use<> {
        std::iter::once(self.caller.conn_id).chain(self.callee.map(|p| p.conn_id))
    }

    /// Cancels the ring timer, if it still runs.
    pub fn stop_ringing(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

/// Live calls and their indexes.
#[derive(Debug, Default)]
pub(super) struct CallTable {
    calls: HashMap<u64, Call>,
    by_id: HashMap<String, SmallVec<[u64; 1]>>,
    by_conn: HashMap<u64, SmallVec<[u64; 2]>>,
    /// Calls still ringing, by the callee's person: a device of it that logs in is rung.
    ringing: HashMap<PersonId, SmallVec<[u64; 1]>>,
}

impl CallTable {
    /// Whether `id` names a live call of either person.
    pub fn taken(&self, id: &str, persons: [PersonId; 2]) -> bool {
        self.serials(id)
            .iter()
            .any(|s| persons.iter().any(|p| self.calls[s].involves(*p)))
    }

    /// How many live calls a connection is a party to.
    pub fn count_for_conn(&self, conn_id: u64) -> usize {
        self.by_conn.get(&conn_id).map_or(0, SmallVec::len)
    }

    pub fn insert(&mut self, serial: u64, call: Call) {
        self.by_id.entry(call.id.clone()).or_default().push(serial);
        for conn in call.conns() {
            self.by_conn.entry(conn).or_default().push(serial);
        }
        if call.callee.is_none() {
            self.ringing
                .entry(call.callee_person)
                .or_default()
                .push(serial);
        }
        self.calls.insert(serial, call);
    }

    /// The serial of the call `id` that involves `person`.
    pub fn find(&self, id: &str, person: PersonId) -> Option<u64> {
        self.serials(id)
            .iter()
            .copied()
            .find(|s| self.calls[s].involves(person))
    }

    pub fn get(&self, serial: u64) -> Option<&Call> {
        self.calls.get(&serial)
    }

    pub fn get_mut(&mut self, serial: u64) -> Option<&mut Call> {
        self.calls.get_mut(&serial)
    }

    /// Records the device that answered (it now counts against its connection) and stops the
    /// ring timer.
    pub fn answered(&mut self, serial: u64, callee: Party, at: Millis) {
        let Some(call) = self.calls.get_mut(&serial) else {
            return;
        };
        call.callee = Some(callee);
        call.answered_at = Some(at);
        call.stop_ringing();
        unindex(&mut self.ringing, &call.callee_person, serial);
        self.by_conn.entry(callee.conn_id).or_default().push(serial);
    }

    /// Keeps the ring timer with its call; a call that already ended cancels it at once.
    pub fn arm(&mut self, serial: u64, timer: AbortHandle) {
        match self.calls.get_mut(&serial) {
            Some(call) if call.callee.is_none() => call.timer = Some(timer),
            _ => timer.abort(),
        }
    }

    /// Removes a call from the table and every index, cancelling its ring timer.
    pub fn remove(&mut self, serial: u64) -> Option<Call> {
        let mut call = self.calls.remove(&serial)?;
        call.stop_ringing();
        unindex(&mut self.by_id, &call.id, serial);
        unindex(&mut self.ringing, &call.callee_person, serial);
        for conn in call.conns() {
            unindex(&mut self.by_conn, &conn, serial);
        }
        Some(call)
    }

    /// Removes the call the ring timer of `serial` was for, if it still rings. The timer is the
    /// caller here, so it is let go rather than aborted (the record still has to be written).
    pub fn remove_missed(&mut self, serial: u64) -> Option<Call> {
        let call = self.calls.get_mut(&serial)?;
        if call.callee.is_some() {
            return None;
        }
        call.timer = None;
        self.remove(serial)
    }

    /// Removes every call a connection is a party to.
    pub fn remove_for_conn(&mut self, conn_id: u64) -> Vec<Call> {
        let serials = self.by_conn.remove(&conn_id).unwrap_or_default();
        serials.into_iter().filter_map(|s| self.remove(s)).collect()
    }

    /// The calls ringing `person`'s devices.
    pub fn ringing(&self, person: PersonId) -> impl Iterator<Item = &Call> {
        self.ringing
            .get(&person)
            .into_iter()
            .flatten()
            .filter_map(|s| self.calls.get(s))
    }

    fn serials(&self, id: &str) -> &[u64] {
        self.by_id.get(id).map_or(&[], |s| s.as_slice())
    }

    /// (calls, call ids indexed, connections indexed): all zero once every call ended.
    #[cfg(test)]
    pub fn sizes(&self) -> (usize, usize, usize) {
        assert!(
            self.ringing
                .values()
                .flatten()
                .all(|s| { self.calls.get(s).is_some_and(|c| c.callee.is_none()) })
        );
        assert!(!self.calls.is_empty() || self.ringing.is_empty());
        (self.calls.len(), self.by_id.len(), self.by_conn.len())
    }
}

/// Drops `serial` from one index entry, and the entry once it is empty.
fn unindex<K, const N: usize>(index: &mut HashMap<K, SmallVec<[u64; N]>>, key: &K, serial: u64)
where
    K: std::hash::Hash + Eq,
    [u64; N]: smallvec::Array<Item = u64>,
{
    if let Some(serials) = index.get_mut(key) {
        serials.retain(|s| *s != serial);
        if serials.is_empty() {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::metrics::Metrics;
    use crate::protocol::{CallAction, Millis};
    use crate::router::calls::{CallError, MAX_CALLS_PER_CONN, Party};
    use crate::router::{CallOutcome, Router};

    /// The router is told the time by its callers; these tests need no clock.
    const NOW: Millis = 1_000_000;

    const CALLER: Party = Party {
        person: 1,
        uid: 1,
        conn_id: 10,
    };
    const CALLEE: Party = Party {
        person: 2,
        uid: 2,
        conn_id: 20,
    };

    fn sizes(router: &Router) -> (usize, usize, usize) {
        router.calls.live.lock().unwrap().sizes()
    }

    /// Rings `id` from CALLER to CALLEE's person and arms a timer that never fires by itself.
    fn ring(router: &Router, id: &str) -> (u64, tokio::task::JoinHandle<()>) {
        let serial = router
            .call_ring(CALLER, CALLEE.person, "a", "b", id, None, NOW)
            .expect("rings")
            .serial;
        let timer = tokio::spawn(std::future::pending::<()>());
        router.call_arm_timer(serial, timer.abort_handle());
        (serial, timer)
    }

    async fn cancelled(timer: tokio::task::JoinHandle<()>) -> bool {
        tokio::time::timeout(Duration::from_secs(5), timer)
            .await
            .expect("the timer ends")
            .is_err_and(|e| e.is_cancelled())
    }

    #[tokio::test]
    async fn every_end_cancels_the_ring_timer_and_empties_the_indexes() {
        let router = Router::new(Arc::new(Metrics::new()));

        // Hung up while ringing.
        let (_, timer) = ring(&router, "c1");
        assert_eq!(sizes(&router), (1, 1, 1));
        let ended = router.call_act(CALLER, "c1", CallAction::Hangup, None, NOW);
        assert_eq!(
            ended.unwrap().ended.unwrap().outcome,
            CallOutcome::Cancelled
        );
        assert!(cancelled(timer).await);
        assert_eq!(sizes(&router), (0, 0, 0));

        // Answered: the timer stops at once, the callee's connection is indexed, and its
        // disconnect ends the call.
        let (_, timer) = ring(&router, "c2");
        router
            .call_act(CALLEE, "c2", CallAction::Answer, None, NOW)
            .unwrap();
        assert!(cancelled(timer).await);
        assert_eq!(sizes(&router), (1, 1, 2));
        let records = router.calls_end_for_conn(CALLEE.conn_id, NOW);
        assert_eq!(records.len(), 1);
        assert_eq!(sizes(&router), (0, 0, 0));

        // Rejected.
        let (_, timer) = ring(&router, "c3");
        router
            .call_act(CALLEE, "c3", CallAction::Reject, None, NOW)
            .unwrap();
        assert!(cancelled(timer).await);
        assert_eq!(sizes(&router), (0, 0, 0));

        // The caller's disconnect.
        let (_, timer) = ring(&router, "c4");
        router.calls_end_for_conn(CALLER.conn_id, NOW);
        assert!(cancelled(timer).await);
        assert_eq!(sizes(&router), (0, 0, 0));

        // A timer armed after its call ended is cancelled at once.
        let serial = router
            .call_ring(CALLER, CALLEE.person, "a", "b", "c5", None, NOW)
            .unwrap()
            .serial;
        router
            .call_act(CALLER, "c5", CallAction::Hangup, None, NOW)
            .unwrap();
        let timer = tokio::spawn(std::future::pending::<()>());
        router.call_arm_timer(serial, timer.abort_handle());
        assert!(cancelled(timer).await);

        // The timer that fires is let go, not aborted: it still has the record to write.
        let serial = router
            .call_ring(CALLER, CALLEE.person, "a", "b", "c6", None, NOW)
            .unwrap()
            .serial;
        let (fire, fired) = tokio::sync::oneshot::channel::<()>();
        let timer = tokio::spawn(async move {
            let _ = fired.await;
        });
        router.call_arm_timer(serial, timer.abort_handle());
        let missed = router
            .call_timeout("c6", serial, NOW)
            .expect("still ringing");
        assert_eq!(missed.outcome, CallOutcome::Missed);
        fire.send(()).unwrap();
        assert!(!cancelled(timer).await);
        assert_eq!(sizes(&router), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_connection_is_in_at_most_the_cap_of_live_calls() {
        let router = Router::new(Arc::new(Metrics::new()));
        for n in 0..MAX_CALLS_PER_CONN {
            ring(&router, &format!("c{n}"));
        }
        let over = router.call_ring(CALLER, CALLEE.person, "a", "b", "over", None, NOW);
        assert!(matches!(over, Err(CallError::TooManyCalls(_))), "{over:?}");
        // Another connection of the same person is not affected.
        let other = Party {
            conn_id: 11,
            uid: 3,
            ..CALLER
        };
        assert!(
            router
                .call_ring(other, CALLEE.person, "a", "b", "over", None, NOW)
                .is_ok()
        );
        // An answering device counts its calls too.
        for n in 0..MAX_CALLS_PER_CONN {
            let id = format!("c{n}");
            router
                .call_act(CALLEE, &id, CallAction::Answer, None, NOW)
                .unwrap();
        }
        let over = router.call_act(CALLEE, "over", CallAction::Answer, None, NOW);
        assert!(matches!(over, Err(CallError::TooManyCalls(_))), "{over:?}");
    }
}

//! `presence` events: persons' aggregated status changes (from `crate::presence`, after its
//! grace period) written to the outbox, coalesced so a flapping device cannot flood it.
//!
//! Two bounds: the grace period already keeps a device that reconnects within it from
//! changing anything, so a person changes at most about twice per `--presence-grace`; and a
//! person has at most one `presence` event waiting in the outbox: a newer one replaces the
//! older while that is undelivered (a receiver told "offline" needs no stale "online"), and
//! changes that queue up here while the store is busy are cut to each person's last.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::presence::PresenceChange;
use crate::state::ServerState;
use crate::store::{NewOutboxEvent, PersonId};

/// Persons whose last event row is remembered (to replace it); past this the memory is
/// dropped, which costs only a replacement or two.
const REMEMBERED: usize = 100_000;

/// Runs until the sender is gone or the task is aborted.
pub(super) async fn run(mut changes: UnboundedReceiver<PresenceChange>, state: Arc<ServerState>) {
    let mut last_row: HashMap<PersonId, i64> = HashMap::new();
    let mut batch = Vec::new();
    while let Some(first) = changes.recv().await {
        batch.clear();
        batch.push(first);
        while let Ok(more) = changes.try_recv() {
            batch.push(more);
        }
        for change in latest_per_person(&batch) {
            if last_row.len() >= REMEMBERED {
                last_row.clear();
            }
            let event = NewOutboxEvent::Presence {
                person: change.person,
                online: change.online,
                ts: change.ts,
                replaces: last_row.get(&change.person).copied(),
            };
            match state.store.outbox_write(event).await {
                Ok(Some(row)) => {
                    last_row.insert(change.person, row);
                }
                Ok(None) => {
                    last_row.remove(&change.person);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "webhook outbox: a presence event was lost")
                }
            }
        }
    }
}

/// Each person's last change in `batch`, in the order of those last changes.
fn latest_per_person(batch: &[PresenceChange]) -> Vec<PresenceChange> {
    let mut last: HashMap<PersonId, usize> = HashMap::new();
    for (i, change) in batch.iter().enumerate() {
        last.insert(change.person, i);
    }
    batch
        .iter()
        .enumerate()
        .filter(|(i, c)| last[&c.person] == *i)
        .map(|(_, c)| *c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_each_persons_last_change_in_order() {
        let c = |person, online, ts| PresenceChange { person, online, ts };
        let batch = [
            c(1, true, 1),
            c(2, true, 2),
            c(1, false, 3),
            c(3, true, 4),
            c(1, true, 5),
        ];
        assert_eq!(
            latest_per_person(&batch),
            vec![c(2, true, 2), c(3, true, 4), c(1, true, 5)]
        );
    }
}

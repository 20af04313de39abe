//! Retention: pruning the expired prefix of each person's log in short transactions, and the
//! messages no log holds any more.

use rusqlite::{Connection, params};

use super::log::HELD;
use crate::protocol::Millis;
use crate::store::{PersonId, StoreError};

/// Persons one pruning transaction looks at: each costs a primary-key seek even when nothing
/// of its log has expired, so a pass over many persons is split into short transactions.
pub(super) const PRUNE_PERSONS: usize = 512;

/// What one pruning transaction did.
pub(super) struct PruneStep {
    /// Events removed.
    pub(super) removed: usize,
    /// Where the next step starts (persons after this id).
    pub(super) next: PersonId,
    /// The step reached the last person: the pass is over.
    pub(super) wrapped: bool,
}

/// One step of retention, in log order and without a `ts` index (migration 0007 dropped
/// `events_ts` and `messages_ts`, which every send had to maintain for this job alone): for
/// at most [`PRUNE_PERSONS`] persons after `after`, deletes the oldest events of each log,
/// by seq, while their `ts` is before `before_ts` (a log's `ts` grows with its seq, up to the
/// clock's jitter between concurrent sends; the first event not expired stops the log's
/// prefix, so nothing newer than `before_ts` goes), at most `max_events` in all, recording
/// each person's horizon. Then removes messages no log references any more.
pub(super) fn prune_step(
    conn: &Connection,
    after: PersonId,
    before_ts: Millis,
    ids_before_ts: Millis,
    max_events: usize,
) -> Result<PruneStep, StoreError> {
    let persons = conn
        .prepare_cached("SELECT person FROM persons WHERE person > ?1 ORDER BY person LIMIT ?2")?
        .query_map(params![after, PRUNE_PERSONS as i64], |r| {
            r.get::<_, PersonId>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut removed = 0;
    let mut step = PruneStep {
        removed: 0,
        next: persons.last().copied().unwrap_or(0),
        wrapped: persons.len() < PRUNE_PERSONS,
    };
    // The log's two sources (see `log::log_select`): its events, and the messages it sent
    // not yet behind its horizon.
    let mut oldest = conn.prepare_cached(
        "SELECT seq, ts FROM events WHERE person = ?1
         UNION ALL
         SELECT m.sender_seq, m.ts FROM messages m
         WHERE m.sender_person = ?1
           AND m.sender_seq > (SELECT p.pruned_upto FROM persons p WHERE p.person = ?1)
         ORDER BY 1 LIMIT ?2",
    )?;
    for &person in &persons {
        if removed >= max_events {
            // This person's log may hold more: the next step starts with it.
            step.next = person - 1;
            step.wrapped = false;
            break;
        }
        let mut rows = oldest.query(params![person, (max_events - removed) as i64])?;
        let mut horizon = None;
        let mut count = 0;
        while let Some(row) = rows.next()? {
            let (seq, ts): (u64, Millis) = (row.get(0)?, row.get(1)?);
            if ts >= before_ts {
                break;
            }
            horizon = Some(seq);
            count += 1;
        }
        drop(rows);
        let Some(upto) = horizon else { continue };
        // The log's prefix up to the horizon: exactly the `count` entries read above (the
        // messages it sent among them leave its log with the horizon, and go below once no
        // log holds them).
        conn.prepare_cached("DELETE FROM events WHERE person = ?1 AND seq <= ?2")?
            .execute(params![person, upto])?;
        conn.prepare_cached("DELETE FROM event_data WHERE person = ?1 AND seq <= ?2")?
            .execute(params![person, upto])?;
        conn.prepare_cached(
            "UPDATE persons SET pruned_upto = max(pruned_upto, ?2) WHERE person = ?1",
        )?
        .execute(params![person, upto])?;
        removed += count;
        if removed >= max_events {
            step.next = person - 1;
            step.wrapped = false;
            break;
        }
    }
    if removed > 0 {
        prune_messages(conn, ids_before_ts, 2 * max_events)?;
    }
    step.removed = removed;
    Ok(step)
}

/// Removes messages no log holds any more that are older than `ids_before_ts` (with them go
/// their client ids, kept for idempotent retries; the caller keeps ids at least 24 h). Scans
/// at most `max_rows` of the oldest messages, by mid: `ts` grows with mid, so the expired ones
/// are a prefix; a message some log still holds (a receipt newer than it, say) is skipped and
/// looked at again next time.
fn prune_messages(
    conn: &Connection,
    ids_before_ts: Millis,
    max_rows: usize,
) -> Result<(), StoreError> {
    let oldest = conn
        .prepare_cached("SELECT mid, ts FROM messages ORDER BY mid LIMIT ?1")?
        .query_map([max_rows as i64], |r| {
            Ok((r.get::<_, u64>(0)?, r.get::<_, Millis>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut held = conn.prepare_cached(&format!(
        "SELECT 1 FROM messages m WHERE m.mid = ?1 AND {HELD}"
    ))?;
    let mut delete = conn.prepare_cached("DELETE FROM messages WHERE mid = ?1")?;
    let mut largest = None;
    for (mid, ts) in oldest {
        if ts >= ids_before_ts {
            break;
        }
        if !held.exists([mid])? {
            delete.execute([mid])?;
            largest = Some(mid);
        }
    }
    // The writer hands out mids past this floor after a restart (`Tx::take_mid`): recorded in
    // the same transaction as the deletes, so no committed state forgets a deleted mid.
    if let Some(mid) = largest {
        conn.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('mid_floor', ?1)
             ON CONFLICT (key) DO UPDATE
             SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
        )?
        .execute([mid])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Identity, NewMessage, NewUser, Store, TokenRequest};

    async fn users(store: &SqliteStore, n: usize) -> Vec<Identity> {
        let adds = (0..n).map(|i| {
            let req = NewUser {
                address: format!("u{i}@x"),
                name: None,
                token: TokenRequest::None,
            };
            store.useradd(req, 0)
        });
        futures::future::join_all(adds)
            .await
            .into_iter()
            .map(|issued| {
                let issued = issued.unwrap();
                Identity {
                    uid: issued.uid,
                    address: issued.address.clone(),
                    person: issued.uid,
                    primary_address: issued.address,
                    device: None,
                    token_expires: Millis::MAX,
                }
            })
            .collect()
    }

    async fn send(store: &SqliteStore, from: &Identity, to: &Identity, ts: Millis) {
        let msg = NewMessage {
            from: from.clone(),
            client_id: format!("{}-{ts}", to.address),
            to: to.address.clone(),
            body: RawValue::from_string("1".into()).unwrap(),
            files: Vec::new(),
            ts,
            accepted: std::time::Instant::now(),
        };
        store.append_message(msg).await.unwrap();
    }

    async fn count(store: &SqliteStore, table: &'static str) -> u64 {
        store
            .read(move |c| {
                Ok(c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
            })
            .await
            .unwrap()
    }

    /// Retention walks each log by seq in small chunks: exactly the expired prefix of every
    /// log goes, the chunks add up, each person's horizon is recorded, and messages no log
    /// holds any more go too.
    #[tokio::test]
    async fn pruning_in_log_order_takes_each_logs_expired_prefix_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let u = users(&store, 3).await;
        let (a, b, c) = (&u[0], &u[1], &u[2]);
        for ts in 1..=10 {
            send(&store, a, b, ts).await;
        }
        for ts in 1..=5 {
            send(&store, c, a, ts).await;
        }
        for ts in 100..=102 {
            send(&store, a, c, ts).await;
        }
        let mut total = 0;
        loop {
            let removed = store.prune(50, 50, 4).await.unwrap();
            assert!(removed <= 4);
            total += removed;
            if removed < 4 {
                break;
            }
        }
        // a: 15 expired then 3 kept; b: 10; c: 5 expired then 3 kept.
        assert_eq!(total, 30);
        assert_eq!(store.prune(50, 50, 4).await.unwrap(), 0);
        let head = store.head(a.person).await.unwrap();
        assert_eq!((head.seq, head.pruned_upto), (18, 15));
        let left = store.events_after(a.person, 0, 100, 100).await.unwrap();
        assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [16, 17, 18]);
        assert_eq!(store.head(b.person).await.unwrap().pruned_upto, 10);
        assert_eq!(store.head(c.person).await.unwrap().pruned_upto, 5);
        // What is left: c's events 6-8, the messages a sent it, which are also a's 16-18.
        assert_eq!(count(&store, "events").await, 3);
        assert_eq!(count(&store, "messages").await, 3);
    }

    /// A pass crosses the persons of more than one transaction.
    #[tokio::test]
    async fn pruning_reaches_persons_past_the_first_step() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let u = users(&store, PRUNE_PERSONS + 3).await;
        let last = u.iter().max_by_key(|i| i.person).unwrap();
        let first = u.iter().min_by_key(|i| i.person).unwrap();
        send(&store, last, first, 1).await;
        assert_eq!(store.prune(2, 0, 1000).await.unwrap(), 2);
        assert_eq!(count(&store, "events").await, 0);
        // Begun mid-way (after a step that hit the limit), a pass still goes round to the
        // persons before where it began.
        let mut sorted: Vec<&Identity> = u.iter().collect();
        sorted.sort_by_key(|i| i.person);
        let middle = sorted[PRUNE_PERSONS / 2];
        send(&store, middle, last, 3).await;
        assert_eq!(store.prune(10, 0, 1).await.unwrap(), 1);
        send(&store, first, first, 5).await;
        assert_eq!(store.prune(10, 0, 1000).await.unwrap(), 2);
        assert_eq!(count(&store, "events").await, 0);
    }
}

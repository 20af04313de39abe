//! The webhook outbox's SQL. Rows are written inside the same savepoint as the message or read
//! marker they concern (so an event is durable exactly when what it reports is), read in id
//! order by the delivery loop, and deleted once a receiver answered 2xx.

use rusqlite::{Connection, OptionalExtension, params};

use super::seqs::Tx;
use crate::protocol::{Millis, Origin};
use crate::store::{
    Appended, CallRecord, DeadEvent, EventKind, Identity, Marker, NewOutboxEvent, OutboxDevice,
    OutboxEvent, OutboxOptions, OutboxStatus, PersonId, StoreError,
};

/// Queues the push for a new message: for the recipient person, due once the grace period
/// ends. A note to oneself pushes nothing. Returns whether a row was written.
pub(super) fn on_message(
    conn: &Connection,
    opts: &OutboxOptions,
    from_person: PersonId,
    appended: &Appended,
) -> Result<bool, StoreError> {
    if appended.duplicate || appended.recipient == from_person {
        return Ok(false);
    }
    let data = serde_json::json!({ "ts": appended.ts, "from": appended.from }).to_string();
    insert(
        conn,
        &format!("msg-{}", appended.mid),
        "message",
        appended.recipient,
        appended.recipient_seq,
        Some(appended.mid),
        &data,
        appended.ts,
        appended.ts + opts.grace_ms,
    )?;
    Ok(true)
}

/// Queues a `read` event for the reader's own read marker (due now: it clears notifications on
/// the reader's other devices). Returns whether a row was written.
pub(super) fn on_read(
    conn: &Connection,
    who: &Identity,
    markers: &[Marker],
) -> Result<bool, StoreError> {
    let reader = who.person;
    let Some(marker) = markers.iter().find(|m| m.person == reader) else {
        return Ok(false); // the marker did not move: nothing happened
    };
    let EventKind::Read { upto, peer } = &marker.event.kind else {
        return Ok(false);
    };
    let ts = marker.event.ts;
    // The device that read: the app clears the notification on the person's other devices.
    let origin = Origin {
        uid: who.uid,
        device: who.device.clone(),
    };
    let data = serde_json::json!({ "ts": ts, "peer": peer, "origin": origin }).to_string();
    insert(
        conn,
        &format!("read-{reader}-{}", marker.event.seq),
        "read",
        reader,
        marker.event.seq,
        Some(*upto),
        &data,
        ts,
        ts,
    )?;
    Ok(true)
}

/// Queues `call_ended` for the callee of a pushed call that ended, at the callee's record's
/// seq (the record is in the same transaction). Returns whether a row was written.
pub(super) fn on_call_record(
    conn: &Connection,
    record: &CallRecord,
    markers: &[Marker],
) -> Result<bool, StoreError> {
    let Some(rang_at) = record.pushed_at else {
        return Ok(false);
    };
    let (callee, _) = &record.callee;
    let Some(marker) = markers.iter().find(|m| m.person == *callee) else {
        return Ok(false); // the callee was deleted meanwhile: nobody to push to
    };
    let data = serde_json::json!({
        "ts": record.ts, "from": record.caller.1, "call": record.call, "reason": record.status,
    });
    insert(
        conn,
        &format!("call_ended-{callee}-{rang_at}-{}", record.call),
        "call_ended",
        *callee,
        marker.event.seq,
        None,
        &data.to_string(),
        record.ts,
        record.ts,
    )?;
    Ok(true)
}

/// Writes an event that is its own write (a ring, an answer, a presence change) at the
/// person's current head: it reports no log event, and the head keeps it in order with the
/// person's other events (the loop sends by row, and a row written later has a head at or
/// past every earlier one's). Returns its row; `None` if the person is gone.
pub(super) fn write(conn: &Tx<'_>, event: &NewOutboxEvent) -> Result<Option<i64>, StoreError> {
    let (person, ts) = match event {
        NewOutboxEvent::Call { callee, ts, .. } => (*callee, *ts),
        NewOutboxEvent::Presence { person, ts, .. } => (*person, *ts),
    };
    let Some(head) = conn.head(person)? else {
        return Ok(None);
    };
    let (event_id, kind, data) = match event {
        NewOutboxEvent::Call {
            call,
            callee,
            from,
            rang_at,
            reason,
            ts,
        } => {
            let data =
                serde_json::json!({ "ts": ts, "from": from, "call": call, "reason": reason });
            match reason {
                None => (format!("call-{callee}-{rang_at}-{call}"), "call", data),
                Some(_) => (
                    format!("call_ended-{callee}-{rang_at}-{call}"),
                    "call_ended",
                    data,
                ),
            }
        }
        NewOutboxEvent::Presence {
            person, online, ts, ..
        } => {
            let status = if *online { "online" } else { "offline" };
            let last_seen = (!online).then_some(*ts);
            let data = serde_json::json!({ "ts": ts, "status": status, "last_seen": last_seen });
            reported(conn, *person, *online, *ts)?;
            (format!("presence-{person}-{ts}-{status}"), "presence", data)
        }
    };
    insert(
        conn,
        &event_id,
        kind,
        person,
        head.seq,
        None,
        &data.to_string(),
        ts,
        ts,
    )?;
    let row = conn.last_insert_rowid();
    if let NewOutboxEvent::Presence {
        replaces: Some(old),
        ..
    } = event
    {
        // Not yet delivered (nor dead): a newer state makes it moot. Deleted after the insert,
        // so the new row cannot take the old one's id (SQLite reuses the largest id once it is
        // deleted), which a request still in flight would then delete as delivered; and only
        // if it is still this person's row and not the new one, since ids come back once the
        // outbox drains (the old row long delivered, the new one may have its id).
        conn.prepare_cached(
            "DELETE FROM webhook_outbox
             WHERE id = ?1 AND id <> ?3 AND person = ?2 AND kind = 'presence' AND dead = 0",
        )?
        .execute(params![old, person, row])?;
    }
    Ok(Some(row))
}

/// Remembers the status a `presence` event reports for `person`, for [`presence_restart`].
fn reported(
    conn: &Connection,
    person: PersonId,
    online: bool,
    ts: Millis,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO webhook_presence (person, online, ts) VALUES (?1, ?2, ?3)
         ON CONFLICT (person) DO UPDATE SET online = excluded.online, ts = excluded.ts",
    )?
    .execute(params![person, online, ts])?;
    Ok(())
}

/// At startup: every person last reported online is reported offline, since its connections
/// ended with the previous process. `ts` is now; `last_seen` the latest time the person's
/// devices were seen (exact after a graceful shutdown, which records every disconnect; after a
/// kill -9, the last login or disconnect recorded); `reason` is `restart`. A presence event of
/// the person still waiting is replaced, as a newer status always does. Returns how many.
pub(super) fn presence_restart(conn: &Tx<'_>, now: Millis) -> Result<usize, StoreError> {
    let persons: Vec<(PersonId, Option<Millis>)> = conn
        .prepare_cached(
            "SELECT w.person, (SELECT max(u.last_seen) FROM users u
                               WHERE u.uid = w.person OR u.primary_uid = w.person)
             FROM webhook_presence w WHERE w.online = 1",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    // One pass over the outbox, not one per person: it has no index on `person`.
    conn.prepare_cached(
        "DELETE FROM webhook_outbox WHERE kind = 'presence' AND dead = 0
           AND person IN (SELECT person FROM webhook_presence WHERE online = 1)",
    )?
    .execute([])?;
    for &(person, seen) in &persons {
        let Some(head) = conn.head(person)? else {
            continue;
        };
        let last_seen = seen.unwrap_or(now).min(now);
        let data = serde_json::json!({
            "ts": now, "status": "offline", "last_seen": last_seen, "reason": "restart",
        });
        insert(
            conn,
            &format!("presence-{person}-{now}-offline"),
            "presence",
            person,
            head.seq,
            None,
            &data.to_string(),
            now,
            now,
        )?;
        reported(conn, person, false, now)?;
    }
    Ok(persons.len())
}

#[allow(clippy::too_many_arguments)]
fn insert(
    conn: &Connection,
    event_id: &str,
    kind: &str,
    person: PersonId,
    seq: u64,
    mid: Option<u64>,
    data: &str,
    now: Millis,
    due_at: Millis,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO webhook_outbox (event_id, kind, person, seq, mid, data, created_at, due_at, next_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)",
    )?
    .execute(params![event_id, kind, person, seq, mid, data, now, due_at])?;
    Ok(())
}

/// The oldest `limit` live (not dead) rows, in delivery order, each with its person's address
/// and devices (and the message body when `with_body`).
pub(super) fn peek(
    conn: &Connection,
    limit: usize,
    with_body: bool,
) -> Result<Vec<OutboxEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT o.id, o.event_id, o.kind, o.person, o.seq, o.mid, o.data, o.created_at,
                o.due_at, o.next_at, o.attempts, u.address,
                CASE WHEN ?2 AND o.kind = 'message' THEN m.body END
         FROM webhook_outbox o
         LEFT JOIN users u ON u.uid = o.person
         LEFT JOIN messages m ON m.mid = o.mid AND ?2 AND o.kind = 'message'
         WHERE o.dead = 0 ORDER BY o.id LIMIT ?1",
    )?;
    let mut events = stmt
        .query_map(params![limit as i64, with_body], |r| {
            Ok(OutboxEvent {
                id: r.get(0)?,
                event_id: r.get(1)?,
                kind: r.get(2)?,
                person: r.get(3)?,
                seq: r.get(4)?,
                mid: r.get(5)?,
                data: r.get(6)?,
                created_at: r.get(7)?,
                due_at: r.get(8)?,
                next_at: r.get(9)?,
                attempts: r.get(10)?,
                address: r.get(11)?,
                body: r.get(12)?,
                devices: Vec::new(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut devices = conn.prepare_cached(
        "SELECT uid, device_id, acked_seq FROM users
         WHERE uid = ?1 OR primary_uid = ?1 ORDER BY uid",
    )?;
    let mut seen: std::collections::HashMap<PersonId, Vec<OutboxDevice>> = Default::default();
    for event in &mut events {
        let list = match seen.entry(event.person) {
            std::collections::hash_map::Entry::Occupied(found) => found.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => slot.insert(
                devices
                    .query_map([event.person], |r| {
                        Ok(OutboxDevice {
                            uid: r.get(0)?,
                            device: r.get(1)?,
                            acked: r.get(2)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        event.devices = list.clone();
    }
    Ok(events)
}

/// Removes delivered (or skipped) rows.
pub(super) fn delete(conn: &Connection, ids: &[i64]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached("DELETE FROM webhook_outbox WHERE id = ?1")?;
    for id in ids {
        stmt.execute([id])?;
    }
    Ok(())
}

/// Records a failed attempt; rows whose retry window began before `window_start` become dead.
/// Returns how many did.
pub(super) fn failed(
    conn: &Connection,
    ids: &[i64],
    next_at: Millis,
    error: &str,
    window_start: Millis,
) -> Result<usize, StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE webhook_outbox SET attempts = attempts + 1, next_at = ?2, last_error = ?3,
                dead = (created_at < ?4)
         WHERE id = ?1 AND dead = 0 RETURNING dead",
    )?;
    let mut dead = 0;
    for id in ids {
        let became: Option<bool> = stmt
            .query_row(params![id, next_at, error, window_start], |r| r.get(0))
            .optional()?;
        dead += usize::from(became == Some(true));
    }
    Ok(dead)
}

/// Dead-letters the oldest live rows beyond `max_pending` ("outbox full"), and forgets the
/// oldest dead rows beyond as many again, so the table stays bounded while a receiver is down
/// for good. Returns how many were dead-lettered.
pub(super) fn bound(conn: &Connection, max_pending: u64) -> Result<usize, StoreError> {
    let pending: u64 = conn
        .prepare_cached("SELECT count(*) FROM webhook_outbox WHERE dead = 0")?
        .query_row([], |r| r.get(0))?;
    let mut n = 0;
    if pending > max_pending {
        n = conn
            .prepare_cached(
                "UPDATE webhook_outbox SET dead = 1, last_error = 'outbox full'
                 WHERE id IN (SELECT id FROM webhook_outbox WHERE dead = 0 ORDER BY id LIMIT ?1)",
            )?
            .execute([(pending - max_pending) as i64])?;
    }
    conn.prepare_cached(
        "DELETE FROM webhook_outbox WHERE id IN (
             SELECT id FROM webhook_outbox WHERE dead = 1 ORDER BY id DESC LIMIT -1 OFFSET ?1)",
    )?
    .execute([max_pending as i64])?;
    Ok(n)
}

/// Live rows counted, and the newest `limit` dead ones.
pub(super) fn status(conn: &Connection, limit: usize) -> Result<OutboxStatus, StoreError> {
    let count = |dead: bool| -> Result<u64, StoreError> {
        Ok(conn
            .prepare_cached("SELECT count(*) FROM webhook_outbox WHERE dead = ?1")?
            .query_row([dead], |r| r.get(0))?)
    };
    let (pending, dead_total) = (count(false)?, count(true)?);
    let dead = conn
        .prepare_cached(
            "SELECT o.id, o.event_id, o.kind, u.address, o.person, o.seq, o.attempts,
                    o.last_error, o.created_at
             FROM webhook_outbox o LEFT JOIN users u ON u.uid = o.person
             WHERE o.dead = 1 ORDER BY o.id DESC LIMIT ?1",
        )?
        .query_map([limit as i64], event_row)?
        .collect::<Result<Vec<_>, _>>()?;
    // Among the oldest live rows only, as the delivery loop reads them: a row that failed is
    // one of those, and the op stays one index range however long the outbox is.
    let retrying = conn
        .prepare_cached(
            "SELECT o.id, o.event_id, o.kind, u.address, o.person, o.seq, o.attempts,
                    o.last_error, o.created_at, o.next_at
             FROM (SELECT * FROM webhook_outbox WHERE dead = 0 ORDER BY id LIMIT 100) o
             LEFT JOIN users u ON u.uid = o.person
             WHERE o.attempts > 0 ORDER BY o.id LIMIT 1",
        )?
        .query_row([], |r| Ok((event_row(r)?, r.get(9)?)))
        .optional()?;
    Ok(OutboxStatus {
        pending,
        dead_total,
        dead,
        retrying,
    })
}

/// Requeues dead rows (the named ones, or all): attempts from 0, a fresh retry window from
/// `now`. Returns how many.
pub(super) fn retry(
    conn: &Connection,
    ids: Option<&[i64]>,
    now: Millis,
) -> Result<usize, StoreError> {
    const REQUEUE: &str = "UPDATE webhook_outbox
        SET dead = 0, attempts = 0, next_at = 0, created_at = ?1, last_error = NULL";
    match ids {
        None => Ok(conn
            .prepare_cached(&format!("{REQUEUE} WHERE dead = 1"))?
            .execute([now])?),
        Some(ids) => {
            let mut stmt = conn.prepare_cached(&format!("{REQUEUE} WHERE dead = 1 AND id = ?2"))?;
            let mut n = 0;
            for id in ids {
                n += stmt.execute(params![now, id])?;
            }
            Ok(n)
        }
    }
}

/// A dead or retrying row, from the first nine columns of the `status` queries.
fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadEvent> {
    Ok(DeadEvent {
        id: r.get(0)?,
        event_id: r.get(1)?,
        kind: r.get(2)?,
        address: r.get(3)?,
        person: r.get(4)?,
        seq: r.get(5)?,
        attempts: r.get(6)?,
        last_error: r.get(7)?,
        created_at: r.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use crate::store::sqlite::test_support::user;
    use crate::store::sqlite::{SqliteStore, StoreOptions};
    use crate::store::{NewOutboxEvent, OutboxOptions, Store};

    fn presence(person: u64, online: bool, ts: i64, replaces: Option<i64>) -> NewOutboxEvent {
        NewOutboxEvent::Presence {
            person,
            online,
            ts,
            replaces,
        }
    }

    async fn ids(store: &SqliteStore) -> Vec<String> {
        let events = store.outbox_peek(10, false).await.unwrap();
        events.into_iter().map(|e| e.event_id).collect()
    }

    /// Row ids come back once the outbox drains: a person's remembered row may by then be
    /// another person's waiting event, which a replacement must not delete; and the new row
    /// must not take the id of the one it replaces (a request in flight holds that id).
    #[tokio::test]
    async fn a_presence_replacement_deletes_only_its_own_persons_row() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            outbox: Some(OutboxOptions {
                grace_ms: 0,
                wake: None,
            }),
            ..StoreOptions::default()
        };
        let store = SqliteStore::open_with(dir.path(), options).unwrap();
        let a = user(&store, "a@x").await.person;
        let b = user(&store, "b@x").await.person;

        let a_online = store
            .outbox_write(presence(a, true, 1, None))
            .await
            .unwrap();
        let a_online = a_online.unwrap();
        store.outbox_delete(vec![a_online]).await.unwrap(); // delivered
        let b_online = store
            .outbox_write(presence(b, true, 2, None))
            .await
            .unwrap();
        assert_eq!(
            b_online,
            Some(a_online),
            "the drained outbox gives the id again"
        );
        store
            .outbox_write(presence(a, false, 3, Some(a_online)))
            .await
            .unwrap();
        assert_eq!(
            ids(&store).await,
            [
                format!("presence-{b}-2-online"),
                format!("presence-{a}-3-offline")
            ]
        );

        // b's own replacement: its old row goes, the new one has a new id.
        let b_offline = store
            .outbox_write(presence(b, false, 4, b_online))
            .await
            .unwrap();
        assert_ne!(b_offline, b_online);
        assert_eq!(
            ids(&store).await,
            [
                format!("presence-{a}-3-offline"),
                format!("presence-{b}-4-offline")
            ]
        );

        // Drained: a's row is delivered, and its replacement takes the same id, and stays.
        let rows = store.outbox_peek(10, false).await.unwrap();
        store
            .outbox_delete(rows.iter().map(|e| e.id).collect())
            .await
            .unwrap();
        let first = store
            .outbox_write(presence(a, true, 5, None))
            .await
            .unwrap();
        store.outbox_delete(vec![first.unwrap()]).await.unwrap();
        let next = store
            .outbox_write(presence(a, false, 6, first))
            .await
            .unwrap();
        assert_eq!(next, first);
        assert_eq!(ids(&store).await, [format!("presence-{a}-6-offline")]);
    }
}

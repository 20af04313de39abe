//! Each person's event log: its head, reading it back, and what appends to it from the
//! person's own actions (`send`, `read`, a profile change) and retention.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;

use super::files::readable_file;
use super::receipts::{append_marker, next_seq};
use super::seqs::{HEAD_SQL, Tx};
use super::users::{find_user, user_address};
use crate::protocol::Millis;
use crate::store::{
    Appended, EventKind, Identity, LogEvent, LogHead, MAX_PROFILE_BYTES, Marker, NewMessage,
    PersonId, StoreError, UserKey, attachment,
};

/// Where a person's log stands, from committed rows (the writer keeps no counter on disk:
/// see `seqs` for why this is the exact head).
pub(super) fn log_head(conn: &Connection, person: PersonId) -> Result<LogHead, StoreError> {
    let head = conn
        .prepare_cached(HEAD_SQL)?
        .query_row([person], |r| {
            Ok(LogHead {
                seq: r.get(0)?,
                pruned_upto: r.get(2)?,
                epoch: r.get(3)?,
            })
        })
        .optional()?;
    head.ok_or_else(|| StoreError::NoSuchUser(format!("with uid {person}")))
}

const EVENT_SELECT: &str = "SELECT e.seq, e.ts, e.kind, e.out, e.mid, m.from_address, m.to_address,
            m.body, e.peer, e.status, e.call, e.duration, e.data, e.version, coalesce(m.pv, 0),
            m.files
     FROM events e LEFT JOIN messages m ON m.mid = e.mid";

/// Maps one row of [`EVENT_SELECT`]; the inner result carries data that cannot be read back.
fn log_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<LogEvent, StoreError>> {
    let kind: String = r.get(2)?;
    let corrupt = |what: String| Ok(Err(StoreError::Corrupt(what)));
    let kind = match kind.as_str() {
        "message" => {
            let body: Option<String> = r.get(7)?;
            let body = match body.map(RawValue::from_string) {
                Some(Ok(body)) => body,
                Some(Err(err)) => return corrupt(format!("stored body: {err}")),
                None => return corrupt("a message event without its message".into()),
            };
            let files = match r.get::<_, Option<String>>(15)?.map(RawValue::from_string) {
                Some(Ok(files)) => Some(files),
                Some(Err(err)) => return corrupt(format!("stored attachments: {err}")),
                None => None,
            };
            EventKind::Message {
                out: r.get(3)?,
                mid: r.get(4)?,
                from: r.get(5)?,
                to: r.get(6)?,
                body,
                pv: r.get(14)?,
                files,
            }
        }
        "call" => EventKind::Call {
            call: r.get(10)?,
            peer: r.get(8)?,
            out: r.get(3)?,
            status: r.get(9)?,
            duration_ms: r.get(11)?,
        },
        "profile" => {
            let data: Option<String> = r.get(12)?;
            let profile = match data.map(RawValue::from_string) {
                Some(Ok(profile)) => profile,
                _ => return corrupt("a profile event without a readable profile".into()),
            };
            EventKind::Profile {
                address: r.get(8)?,
                profile,
                version: r.get(13)?,
            }
        }
        "receipt" => EventKind::Receipt {
            mid: r.get(4)?,
            peer: r.get(8)?,
            status: r.get(9)?,
        },
        "read" => EventKind::Read {
            upto: r.get(4)?,
            peer: r.get(8)?,
        },
        other => return corrupt(format!("unknown event kind {other}")),
    };
    Ok(Ok(LogEvent {
        seq: r.get(0)?,
        ts: r.get(1)?,
        kind,
    }))
}

/// Up to `limit` events of a person's log after `after`, up to `upto`, oldest first.
pub(super) fn events_after(
    conn: &Connection,
    person: PersonId,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<LogEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{EVENT_SELECT} WHERE e.person = ?1 AND e.seq > ?2 AND e.seq <= ?3
         ORDER BY e.seq LIMIT ?4"
    ))?;
    let rows = stmt.query_map(params![person, after, upto, limit as i64], log_event)?;
    rows.collect::<Result<Vec<_>, _>>()?.into_iter().collect()
}

/// Up to `limit` events of a person's log before `before`, oldest first.
pub(super) fn events_before(
    conn: &Connection,
    person: PersonId,
    before: u64,
    limit: usize,
) -> Result<Vec<LogEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{EVENT_SELECT} WHERE e.person = ?1 AND e.seq < ?2 ORDER BY e.seq DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![person, before, limit as i64], log_event)?;
    let mut events = rows
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    events.reverse();
    Ok(events)
}

/// The profile of the person at `address`: its primary address, the profile and its version.
pub(super) fn profile(
    conn: &Connection,
    address: String,
) -> Result<(String, Box<RawValue>, u64), StoreError> {
    let user = find_user(conn, &UserKey::Address(address.clone()))?
        .ok_or(StoreError::UnknownRecipient(address))?;
    let person = user.person();
    let (text, version): (String, u64) = conn
        .prepare_cached("SELECT profile, profile_version FROM persons WHERE person = ?1")?
        .query_row([person], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let profile = RawValue::from_string(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((user_address(conn, person)?, profile, version))
}

/// `set_profile`: merges the patch (null removes a key), bumps the version, logs the change.
pub(super) fn set_profile(
    conn: &Tx<'_>,
    person: PersonId,
    patch: serde_json::Map<String, serde_json::Value>,
    ts: Millis,
) -> Result<Vec<Marker>, StoreError> {
    let (text, version): (String, u64) = conn
        .prepare_cached("SELECT profile, profile_version FROM persons WHERE person = ?1")?
        .query_row([person], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| StoreError::NoSuchUser(format!("with uid {person}")))?;
    let mut profile: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("profile: {e}")))?;
    for (key, value) in patch {
        if value.is_null() {
            profile.remove(&key);
        } else {
            profile.insert(key, value);
        }
    }
    let text = serde_json::Value::Object(profile).to_string();
    if text.len() > MAX_PROFILE_BYTES {
        return Err(StoreError::ProfileTooLarge(text.len()));
    }
    let version = version + 1;
    conn.prepare_cached("UPDATE persons SET profile = ?2, profile_version = ?3 WHERE person = ?1")?
        .execute(params![person, text, version])?;
    conn.set_profile_version(person, version)?;
    let address = user_address(conn, person)?;
    let seq = next_seq(conn, person)?;
    conn.prepare_cached(
        "INSERT INTO events (person, seq, kind, ts, peer, data, version)
         VALUES (?1, ?2, 'profile', ?3, ?4, ?5, ?6)",
    )?
    .execute(params![person, seq, ts, address, text, version])?;
    let profile = RawValue::from_string(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(vec![Marker {
        person,
        event: LogEvent {
            seq,
            ts,
            kind: EventKind::Profile {
                address,
                profile,
                version,
            },
        },
    }])
}

/// `read`: a read marker in the reader's log and a `read` receipt in the peer's.
pub(super) fn mark_read(
    conn: &Tx<'_>,
    who: &Identity,
    peer: &str,
    upto: u64,
    ts: Millis,
) -> Result<Vec<Marker>, StoreError> {
    let peer_user = find_user(conn, &UserKey::Address(peer.to_string()))?
        .ok_or_else(|| StoreError::UnknownRecipient(peer.to_string()))?;
    let peer_person = peer_user.person();
    let peer_address = user_address(conn, peer_person)?;
    let theirs: bool = conn
        .prepare_cached(
            "SELECT 1 FROM messages WHERE mid = ?1 AND sender_person = ?2 AND recipient_person = ?3",
        )?
        .exists(params![upto, peer_person, who.person])?;
    if !theirs || peer_person == who.person {
        return Err(StoreError::BadPosition(format!(
            "mid {upto} is not a message from {peer} to you"
        )));
    }
    // A read marker only moves forward: reading older messages again changes nothing.
    let current: Option<u64> = conn
        .prepare_cached("SELECT upto FROM read_marks WHERE person = ?1 AND peer_person = ?2")?
        .query_row(params![who.person, peer_person], |r| r.get(0))
        .optional()?;
    if current.is_some_and(|c| upto <= c) {
        return Ok(Vec::new());
    }
    conn.prepare_cached(
        "INSERT INTO read_marks (person, peer_person, upto) VALUES (?1, ?2, ?3)
         ON CONFLICT (person, peer_person) DO UPDATE SET upto = excluded.upto",
    )?
    .execute(params![who.person, peer_person, upto])?;
    // Both persons exist: the reader is logged in and the peer was just found in this
    // transaction, so neither marker is skipped.
    let own = append_marker(conn, who.person, "read", upto, &peer_address, None, ts)?;
    let receipt = append_marker(
        conn,
        peer_person,
        "receipt",
        upto,
        &who.primary_address,
        Some("read"),
        ts,
    )?;
    let markers = [(who.person, own), (peer_person, receipt)];
    Ok(markers
        .into_iter()
        .filter_map(|(person, event)| event.map(|event| Marker { person, event }))
        .collect())
}

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
    let mut oldest =
        conn.prepare_cached("SELECT seq, ts FROM events WHERE person = ?1 ORDER BY seq LIMIT ?2")?;
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
        // The log's prefix up to the horizon: exactly the `count` events read above.
        conn.prepare_cached("DELETE FROM events WHERE person = ?1 AND seq <= ?2")?
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
    let mut held = conn.prepare_cached("SELECT 1 FROM events WHERE mid = ?1")?;
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

/// `send`: stores a message and its events in the sender's and the recipient's logs, or
/// returns the stored one for an honest retry of the same client id.
pub(super) fn append_message(conn: &Tx<'_>, msg: &NewMessage) -> Result<Appended, StoreError> {
    let sender = msg.from.person;
    let stored = conn
        .prepare_cached(
            "SELECT mid, ts, from_address, to_address, recipient_person, sender_seq, recipient_seq, body
             FROM messages WHERE sender_person = ?1 AND client_id = ?2",
        )?
        .query_row(params![sender, msg.client_id], |r| {
            Ok((
                Appended {
                    mid: r.get(0)?,
                    ts: r.get(1)?,
                    from: r.get(2)?,
                    to: r.get(3)?,
                    recipient: r.get(4)?,
                    sender_seq: r.get(5)?,
                    recipient_seq: r.get(6)?,
                    pv: 0, // not delivered again
                    duplicate: true,
                    files: None,
                },
                r.get::<_, String>(7)?,
            ))
        })
        .optional()?;
    if let Some((appended, body)) = stored {
        // A retry is the same message to the same person: a different body, files or
        // recipient is another message reusing the id, which must not be answered as sent.
        if body != msg.body.get()
            || attached_ids(conn, appended.mid)? != msg.files
            || !same_recipient(conn, &msg.to, &appended)?
        {
            return Err(StoreError::DuplicateId(msg.client_id.clone()));
        }
        return Ok(appended);
    }
    // Each file must be one the sender's person may read, checked in this transaction so a
    // concurrent pruning cannot take it away between the check and the message.
    let attachments = msg
        .files
        .iter()
        .map(|id| readable_file(conn, id, Some(sender)).map(|f| attachment(&f)))
        .collect::<Result<Vec<_>, _>>()?;
    let files_json = (!attachments.is_empty()).then(|| {
        serde_json::value::to_raw_value(&attachments).expect("attachments always serialize")
    });

    let recipient = find_user(conn, &UserKey::Address(msg.to.clone()))?
        .ok_or_else(|| StoreError::UnknownRecipient(msg.to.clone()))?;
    let recipient_person = recipient.person();
    let to = if recipient.primary_uid.is_some() {
        user_address(conn, recipient_person)?
    } else {
        recipient.address
    };
    // The sender's seq and profile version, both kept on the writer thread: `pv` is stored
    // with the message so a replay shows the version it was sent with.
    let head = conn
        .take_seq(sender)?
        .ok_or_else(|| StoreError::NoSuchUser(format!("with uid {sender}")))?;
    let (sender_seq, pv) = (head.seq, head.profile_version);
    let recipient_seq = if recipient_person == sender {
        sender_seq
    } else {
        next_seq(conn, recipient_person)?
    };
    // The mid comes from the writer (`Tx::take_mid`), never from SQLite's max(mid) + 1.
    let mid = conn.take_mid()?;
    conn.prepare_cached(
        "INSERT INTO messages (mid, sender_person, client_id, from_address, to_address,
                               recipient_person, sender_seq, recipient_seq, ts, body, pv, files)
         VALUES (?12, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        sender,
        msg.client_id,
        msg.from.primary_address,
        to,
        recipient_person,
        sender_seq,
        recipient_seq,
        msg.ts,
        msg.body.get(),
        pv,
        files_json.as_ref().map(|f| f.get()),
        mid,
    ])?;
    if files_json.is_some() {
        let mut link = conn
            .prepare_cached("INSERT INTO message_files (mid, pos, file_id) VALUES (?1, ?2, ?3)")?;
        for (pos, id) in msg.files.iter().enumerate() {
            link.execute(params![mid, pos, id])?;
        }
    }
    let mut event = conn.prepare_cached(
        "INSERT INTO events (person, seq, kind, mid, out, ts) VALUES (?1, ?2, 'message', ?3, ?4, ?5)",
    )?;
    event.execute(params![sender, sender_seq, mid, true, msg.ts])?;
    if recipient_person != sender {
        event.execute(params![recipient_person, recipient_seq, mid, false, msg.ts])?;
    }
    Ok(Appended {
        mid,
        ts: msg.ts,
        from: msg.from.primary_address.clone(),
        to,
        recipient: recipient_person,
        sender_seq,
        recipient_seq,
        pv,
        duplicate: false,
        files: files_json,
    })
}

/// Whether `to` names the person a stored message went to: its stored primary address, or any
/// address of that person now. (A recipient deleted since is no longer anyone's address.)
fn same_recipient(conn: &Connection, to: &str, stored: &Appended) -> Result<bool, StoreError> {
    if to == stored.to {
        return Ok(true);
    }
    Ok(find_user(conn, &UserKey::Address(to.to_string()))?
        .is_some_and(|user| user.person() == stored.recipient))
}

/// The ids of the files a stored message carries, in order.
/// Read from the attachments as stored with the message, which outlive a pruned file (its
/// `message_files` rows go with it), so an honest retry still matches.
fn attached_ids(conn: &Connection, mid: u64) -> Result<Vec<String>, StoreError> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let stored: Option<String> = conn
        .prepare_cached("SELECT files FROM messages WHERE mid = ?1")?
        .query_row([mid], |r| r.get(0))?;
    let Some(stored) = stored else {
        return Ok(Vec::new());
    };
    let ids: Vec<Id> = serde_json::from_str(&stored)
        .map_err(|err| StoreError::Corrupt(format!("stored attachments: {err}")))?;
    Ok(ids.into_iter().map(|f| f.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{NewUser, Store, TokenRequest};

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
        assert_eq!(count(&store, "events").await, 6);
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

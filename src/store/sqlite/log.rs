//! Each person's event log: its head, reading it back, and what appends to it from the
//! person's own actions (`send`, `read`, a profile change).

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;

use super::contacts;
use super::files::readable_file;
use super::receipts::{append_marker, next_seq};
use super::seqs::{HEAD_SQL, Tx};
use super::users::{find_user, user_address};
use crate::protocol::{Millis, Origin};
use crate::store::{
    Appended, EventKind, Identity, LogEvent, LogHead, MAX_PROFILE_BYTES, Marker, NO_DEVICE,
    NewMessage, PersonId, StoreError, Uid, UserKey, attachment,
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

/// A person's log is two sources since migration 0009: its `events` rows (what others did and
/// its markers, a received message pointing at its `messages` row), and the messages it sent,
/// which are their own log entries at `sender_seq` (hidden once retention passed them: the
/// row stays while the recipient holds it). `{range}` and `{sent_range}` are the seq
/// conditions on each, `?1` the person.
fn log_select(range: &str, sent_range: &str, order: &str) -> String {
    format!(
        "SELECT e.seq, e.ts, e.kind, e.out, e.mid, m.from_address, m.to_address,
                m.body, e.peer, e.status, e.call, e.duration,
                CASE WHEN e.kind IN ('profile', 'devices') THEN
                    (SELECT d.data FROM event_data d WHERE d.person = e.person AND d.seq = e.seq)
                END,
                e.version,
                coalesce(m.pv, 0), m.files, NULL, NULL
         FROM events e LEFT JOIN messages m ON m.mid = e.mid
         WHERE e.person = ?1 AND {range}
         UNION ALL
         SELECT m.sender_seq, m.ts, 'message', 1, m.mid, m.from_address, m.to_address,
                m.body, NULL, NULL, NULL, NULL, NULL, NULL, m.pv, m.files,
                m.origin_uid, o.device_id
         FROM messages m LEFT JOIN users o ON o.uid = m.origin_uid
         WHERE m.sender_person = ?1 AND {sent_range}
           AND m.sender_seq > (SELECT p.pruned_upto FROM persons p WHERE p.person = ?1)
         ORDER BY 1 {order} LIMIT ?4"
    )
}

/// Whether a log still holds the message `m` (retention removes the others): the recipient's
/// row at its seq (a message to oneself has none: it is its sender's entry), or the sender's
/// entry, not yet behind the sender's horizon. Two primary-key lookups, no index on `mid`.
pub(super) const HELD: &str = "(EXISTS (SELECT 1 FROM events e
        WHERE e.person = m.recipient_person AND e.seq = m.recipient_seq
          AND m.recipient_person != m.sender_person)
     OR EXISTS (SELECT 1 FROM persons p
        WHERE p.person = m.sender_person AND p.pruned_upto < m.sender_seq))";

/// Stores the payload of the log entry `(person, seq)` (a profile, a device list) beside the
/// log, in `event_data` (migration 0016): kept off the log's B-tree, whose rows must stay small
/// for its seeks and page cache; [`log_select`] reads it back only for the kinds that have one.
pub(super) fn store_payload(
    conn: &Connection,
    person: PersonId,
    seq: u64,
    data: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO event_data (person, seq, data) VALUES (?1, ?2, ?3)")?
        .execute(params![person, seq, data])?;
    Ok(())
}

/// Maps one row of [`log_select`]; the inner result carries data that cannot be read back.
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
                origin: r
                    .get::<_, Option<Uid>>(16)?
                    .map(|uid| -> rusqlite::Result<Origin> {
                        Ok(Origin {
                            uid,
                            device: r.get(17)?,
                        })
                    })
                    .transpose()?,
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
        "devices" => match super::devices::event_kind(r.get(12)?) {
            Ok(kind) => kind,
            Err(err) => return Ok(Err(err)),
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
    let mut stmt = conn.prepare_cached(&log_select(
        "e.seq > ?2 AND e.seq <= ?3",
        "m.sender_seq > ?2 AND m.sender_seq <= ?3",
        "",
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
    let mut stmt = conn.prepare_cached(&log_select("e.seq < ?2", "m.sender_seq < ?2", "DESC"))?;
    // ?3 (the upper bound of `events_after`) is not used here.
    let rows = stmt.query_map(
        params![person, before, None::<i64>, limit as i64],
        log_event,
    )?;
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
        "INSERT INTO events (person, seq, kind, ts, peer, version)
         VALUES (?1, ?2, 'profile', ?3, ?4, ?5)",
    )?
    .execute(params![person, seq, ts, address, version])?;
    store_payload(conn, person, seq, &text)?;
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

    let (recipient_person, to) = conn
        .heads()
        .recipients
        .resolve(conn, &msg.to)?
        .ok_or_else(|| StoreError::UnknownRecipient(msg.to.clone()))?;
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
                               recipient_person, sender_seq, recipient_seq, ts, body, pv, files,
                               origin_uid)
         VALUES (?12, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?13)",
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
        // The backend's messages come from no device: they have no origin.
        (msg.from.uid != NO_DEVICE).then_some(msg.from.uid),
    ])?;
    if files_json.is_some() {
        let mut link = conn
            .prepare_cached("INSERT INTO message_files (mid, pos, file_id) VALUES (?1, ?2, ?3)")?;
        for (pos, id) in msg.files.iter().enumerate() {
            link.execute(params![mid, pos, id])?;
        }
    }
    contacts::record(conn, sender, recipient_person)?;
    // The sender's log entry is the message row itself (at `sender_seq`); a message to
    // oneself has no other.
    if recipient_person != sender {
        conn.prepare_cached(
            "INSERT INTO events (person, seq, kind, mid, out, ts) VALUES (?1, ?2, 'message', ?3, 0, ?4)",
        )?
        .execute(params![recipient_person, recipient_seq, mid, msg.ts])?;
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

//! Events one person's action appends to other persons' logs: `delivered` and `read` receipts,
//! read markers and call records.
//!
//! The other person may no longer exist: `userdel` removes a person with its log, and a `linkto`
//! that moves a primary into another person removes the primary's own log, while messages and
//! live calls still name the old person. Such halves are skipped (nobody could ever read them),
//! so an `ack` or a call's end always commits what concerns the persons that remain.

use rusqlite::{OptionalExtension, params};

use super::seqs::Tx;
use crate::protocol::Millis;
use crate::store::{CallRecord, EventKind, Identity, LogEvent, Marker, PersonId, StoreError};

/// Takes the next seq of a person's log (the person must exist); the caller writes its event.
pub(super) fn next_seq(tx: &Tx<'_>, person: PersonId) -> Result<u64, StoreError> {
    next_seq_if_exists(tx, person)?
        .ok_or_else(|| StoreError::NoSuchUser(format!("with uid {person}")))
}

/// Takes the next seq of a person's log, or `None` if that person no longer exists. The head
/// lives on the writer thread (`seqs`): nothing is written here.
fn next_seq_if_exists(tx: &Tx<'_>, person: PersonId) -> Result<Option<u64>, StoreError> {
    Ok(tx.take_seq(person)?.map(|head| head.seq))
}

/// Appends a receipt or read marker to a person's log, or nothing (`None`) if the person no
/// longer exists.
pub(super) fn append_marker(
    conn: &Tx<'_>,
    person: PersonId,
    kind: &str,
    mid: u64,
    peer: &str,
    status: Option<&str>,
    ts: Millis,
) -> Result<Option<LogEvent>, StoreError> {
    let Some(seq) = next_seq_if_exists(conn, person)? else {
        return Ok(None);
    };
    conn.prepare_cached(
        "INSERT INTO events (person, seq, kind, mid, out, ts, peer, status)
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7)",
    )?
    .execute(params![person, seq, kind, mid, ts, peer, status])?;
    let kind = match status {
        Some(status) => EventKind::Receipt {
            mid,
            peer: peer.to_string(),
            status: status.to_string(),
        },
        None => EventKind::Read {
            upto: mid,
            peer: peer.to_string(),
        },
    };
    Ok(Some(LogEvent { seq, ts, kind }))
}

/// `ack`: records the device's position and sends `delivered` receipts for messages the
/// person had not acked on any device yet (to senders that still exist).
pub(super) fn ack(
    conn: &Tx<'_>,
    who: &Identity,
    seq: u64,
    ts: Millis,
) -> Result<Vec<Marker>, StoreError> {
    let no_such_user = || StoreError::NoSuchUser(format!("with uid {}", who.person));
    let last_seq = conn.head(who.person)?.ok_or_else(no_such_user)?.seq;
    let delivered_upto: u64 = conn
        .prepare_cached("SELECT delivered_upto FROM persons WHERE person = ?1")?
        .query_row([who.person], |r| r.get(0))
        .optional()?
        .ok_or_else(no_such_user)?;
    if seq > last_seq {
        return Err(StoreError::BadPosition(format!(
            "ack of seq {seq}, but the newest seq is {last_seq}"
        )));
    }
    conn.prepare_cached("UPDATE users SET acked_seq = max(acked_seq, ?2) WHERE uid = ?1")?
        .execute(params![who.uid, seq])?;
    if seq <= delivered_upto {
        return Ok(Vec::new());
    }
    conn.prepare_cached("UPDATE persons SET delivered_upto = ?2 WHERE person = ?1")?
        .execute(params![who.person, seq])?;
    let mut stmt = conn.prepare_cached(
        "SELECT m.mid, m.sender_person FROM events e JOIN messages m ON m.mid = e.mid
         WHERE e.person = ?1 AND e.seq > ?2 AND e.seq <= ?3 AND e.kind = 'message' AND e.out = 0
         ORDER BY e.seq",
    )?;
    let delivered = stmt
        .query_map(params![who.person, delivered_upto, seq], |r| {
            Ok((r.get::<_, u64>(0)?, r.get::<_, PersonId>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut markers = Vec::with_capacity(delivered.len());
    for (mid, sender) in delivered {
        let receipt = append_marker(
            conn,
            sender,
            "receipt",
            mid,
            &who.primary_address,
            Some("delivered"),
            ts,
        )?;
        if let Some(event) = receipt {
            markers.push(Marker {
                person: sender,
                event,
            });
        }
    }
    Ok(markers)
}

/// `append_call_record`: the call's record in the caller's log (out) and the callee's, each
/// only while that person exists.
pub(super) fn append_call_record(
    conn: &Tx<'_>,
    record: &CallRecord,
) -> Result<Vec<Marker>, StoreError> {
    let mut markers = Vec::with_capacity(2);
    let sides = [
        (&record.caller, &record.callee, true),
        (&record.callee, &record.caller, false),
    ];
    for ((person, _), (_, peer), out) in sides {
        let Some(seq) = next_seq_if_exists(conn, *person)? else {
            continue;
        };
        conn.prepare_cached(
            "INSERT INTO events (person, seq, kind, out, ts, peer, status, call, duration)
             VALUES (?1, ?2, 'call', ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            person,
            seq,
            out,
            record.ts,
            peer,
            record.status,
            record.call,
            record.duration_ms
        ])?;
        markers.push(Marker {
            person: *person,
            event: LogEvent {
                seq,
                ts: record.ts,
                kind: EventKind::Call {
                    call: record.call.clone(),
                    peer: peer.clone(),
                    out,
                    status: record.status.to_string(),
                    duration_ms: record.duration_ms,
                },
            },
        });
    }
    Ok(markers)
}

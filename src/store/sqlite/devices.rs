//! Device-list events (issue 16 item 5): the writes that link, rename, revoke or remove a
//! device of a person append a `devices_changed` event (kind `devices`) to that person's log in
//! the same transaction, with the person's device list as it is after the change; and a
//! device's own `devices` and `revoke` ops.
//!
//! The event's `online` flags come from the store's [`OnlineView`], asked on the writer thread
//! inside the transaction, so they are the live table's state when the change committed.
//! The view is the store's (set once at open) rather than each call's: the person a change
//! concerns is only known inside the transaction (`token.linkto`, a `userdel` by address).

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::active::{AnyDisabled, useradd_active};
use super::seqs::Tx;
use super::users::{find_user, tokendel as revoke_tokens, userdel as delete_user};
use crate::protocol::{DeviceChange, DeviceEntry, Millis, Uid};
use crate::store::{
    EventKind, Identity, IssuedUser, LogEvent, Marker, NewUser, PersonId, Removed, Revoked,
    StoreError, UserKey,
};

/// The uids of a person that hold a live connection now. The store asks it when it logs a
/// `devices_changed` event and when a device asks for `devices`; the server wires it to the
/// router's live table, so the store itself knows nothing of connections.
pub type OnlineView = Arc<dyn Fn(PersonId) -> Vec<Uid> + Send + Sync>;

/// The view of a store nobody connects to (tools, unit tests): nobody is online.
pub fn nobody_online() -> OnlineView {
    Arc::new(|_| Vec::new())
}

/// What a `devices` event's payload (`event_data.data`) holds.
#[derive(Serialize, Deserialize)]
struct Stored {
    change: DeviceChange,
    uid: Uid,
    devices: Vec<DeviceEntry>,
}

/// A person's devices now, primary first; `online` are the uids with a live connection.
pub(super) fn device_list(
    conn: &Connection,
    person: PersonId,
    online: &[Uid],
) -> Result<Vec<DeviceEntry>, StoreError> {
    // A disabled primary disables its whole person: each device shows the effective state.
    let mut stmt = conn.prepare_cached(
        "SELECT uid, address, device_id, appid, name,
                active AND (SELECT active FROM users WHERE uid = ?1) FROM users
         WHERE uid = ?1 OR primary_uid = ?1 ORDER BY primary_uid IS NOT NULL, uid",
    )?;
    let devices = stmt
        .query_map([person], |r| {
            let uid: Uid = r.get(0)?;
            Ok(DeviceEntry {
                uid,
                address: r.get(1)?,
                device: r.get(2)?,
                appid: r.get(3)?,
                name: r.get(4)?,
                online: online.contains(&uid),
                primary: uid == person,
                active: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(devices)
}

/// Appends a `devices_changed` event to the person's log, or nothing (`None`) if the person no
/// longer exists. A revoked device counts as offline: its connections are closed right after.
fn log_change(
    tx: &Tx<'_>,
    person: PersonId,
    change: DeviceChange,
    uid: Uid,
    online: &OnlineView,
    ts: Millis,
) -> Result<Option<Marker>, StoreError> {
    let Some(head) = tx.take_seq(person)? else {
        return Ok(None);
    };
    let mut live = online(person);
    if change == DeviceChange::Revoked {
        live.retain(|u| *u != uid);
    }
    let devices = device_list(tx, person, &live)?;
    let stored = Stored {
        change,
        uid,
        devices,
    };
    let data = serde_json::to_string(&stored).expect("a device list always serializes");
    tx.prepare_cached("INSERT INTO events (person, seq, kind, ts) VALUES (?1, ?2, 'devices', ?3)")?
        .execute(params![person, head.seq, ts])?;
    super::log::store_payload(tx, person, head.seq, &data)?;
    Ok(Some(Marker {
        person,
        event: LogEvent {
            seq: head.seq,
            ts,
            kind: EventKind::Devices {
                change,
                uid,
                devices: stored.devices,
            },
        },
    }))
}

/// The event a stored `devices` row holds (its `data` column).
pub(super) fn event_kind(data: Option<String>) -> Result<EventKind, StoreError> {
    let stored: Stored = data
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|err| StoreError::Corrupt(format!("a devices event: {err}")))?
        .ok_or_else(|| StoreError::Corrupt("a devices event without its data".into()))?;
    Ok(EventKind::Devices {
        change: stored.change,
        uid: stored.uid,
        devices: stored.devices,
    })
}

/// `useradd` (with `user.active`) and the events it causes: `renamed` when it changed the name
/// of an existing user, `linked` when a device joined a person (a new linked user of
/// `token.device`, or a user `token.linkto` moved in).
pub(super) fn useradd(
    tx: &Tx<'_>,
    req: NewUser,
    active: Option<bool>,
    any_disabled: &AnyDisabled,
    now: Millis,
    online: &OnlineView,
) -> Result<(IssuedUser, Vec<Marker>), StoreError> {
    let before: Option<(Uid, Option<String>)> = tx
        .prepare_cached("SELECT uid, name FROM users WHERE address = ?1")?
        .query_row([&req.address], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    // A user inserted by this call has a uid above every uid before it (rowids grow from the
    // largest), which tells a new linked user from a known device issued a fresh token.
    let newest: Uid = tx
        .prepare_cached("SELECT coalesce(max(uid), 0) FROM users")?
        .query_row([], |r| r.get(0))?;
    let name = req.name.clone();
    let issued = useradd_active(tx, req, active, any_disabled, now)?;
    let mut markers = Vec::new();
    let linked = issued
        .linked_to
        .filter(|_| issued.moved || issued.uid > newest);
    if let Some((uid, old)) = before
        && name.is_some()
        && name != old
        // A user moved into another person is announced there as linked, with its new name.
        && !(issued.moved && issued.uid == uid)
        && let Some(user) = find_user(tx, &UserKey::Uid(uid))?
    {
        markers.extend(log_change(
            tx,
            user.person(),
            DeviceChange::Renamed,
            uid,
            online,
            now,
        )?);
    }
    if let Some(person) = linked {
        markers.extend(log_change(
            tx,
            person,
            DeviceChange::Linked,
            issued.uid,
            online,
            now,
        )?);
    }
    Ok((issued, markers))
}

/// `tokendel`, and `revoked` when it revoked at least one token.
pub(super) fn tokendel(
    tx: &Tx<'_>,
    who: &UserKey,
    now: Millis,
    online: &OnlineView,
) -> Result<(Revoked, Vec<Marker>), StoreError> {
    let revoked = revoke_tokens(tx, who)?;
    let mut markers = Vec::new();
    if revoked.count > 0 {
        markers.extend(log_change(
            tx,
            revoked.person,
            DeviceChange::Revoked,
            revoked.uid,
            online,
            now,
        )?);
    }
    Ok((revoked, markers))
}

/// A device's `revoke`: `tokendel` of a user of the device's own person (itself included).
/// Another person's uid is answered exactly like a uid nobody has.
pub(super) fn revoke(
    tx: &Tx<'_>,
    who: &Identity,
    uid: Uid,
    now: Millis,
    online: &OnlineView,
) -> Result<(Revoked, Vec<Marker>), StoreError> {
    let own = find_user(tx, &UserKey::Uid(uid))?.is_some_and(|u| u.person() == who.person);
    if !own {
        return Err(StoreError::NoSuchUser(format!(
            "with uid {uid} among this person's devices (the `devices` op lists them)"
        )));
    }
    tokendel(tx, &UserKey::Uid(uid), now, online)
}

/// `userdel`, and `removed` in the person's log when a linked user went. A primary takes its
/// whole person and log with it: nobody is left to tell.
pub(super) fn userdel(
    tx: &Tx<'_>,
    who: &UserKey,
    now: Millis,
    online: &OnlineView,
) -> Result<(Removed, Vec<Marker>), StoreError> {
    let linked = find_user(tx, who)?.filter(|u| u.primary_uid.is_some());
    let removed = delete_user(tx, who)?;
    let mut markers = Vec::new();
    if let Some(user) = linked {
        markers.extend(log_change(
            tx,
            removed.person,
            DeviceChange::Removed,
            user.uid,
            online,
            now,
        )?);
    }
    Ok((removed, markers))
}

/// Now, in ms since the Unix epoch: the `ts` of the events of `tokendel` and `userdel`, whose
/// store calls carry no time.
pub(super) fn now() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

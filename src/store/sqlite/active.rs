//! Disabled users (mesibo's `user.active`, migration 0010): `useradd` with `active`, and the
//! check that refuses a message or a call to a disabled address. A disabled primary disables
//! its whole person; a disabled linked user, that one device. Logins are refused in
//! `users::check_token`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{Connection, OptionalExtension, params};

use super::seqs::Tx;
use super::users::{find_user, person_uids, useradd};
use crate::protocol::{Millis, Uid};
use crate::store::{IssuedUser, NewUser, StoreError, UserKey};

/// Whether any user may be disabled. While none is (the store opened with none, and no
/// `active: false` ran since), a send skips [`check_receives`]: that query cost about 1 µs of
/// the writer's ~16 µs per send (`octet-loadtest store`). It only ever turns on (until the
/// next open), and both sides run on the writer thread, in job order.
#[derive(Debug, Clone, Default)]
pub(super) struct AnyDisabled(Arc<AtomicBool>);

impl AnyDisabled {
    /// Reads it from the users at open.
    pub(super) fn load(conn: &Connection) -> Result<AnyDisabled, StoreError> {
        let any: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE NOT active)",
            [],
            |r| r.get(0),
        )?;
        Ok(AnyDisabled(Arc::new(AtomicBool::new(any))))
    }

    /// Whether a send must check its recipient.
    pub(super) fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `useradd` with `user.active`: as `useradd`, then the user at the address (created by now)
/// is disabled (`Some(false)`) or enabled again (`Some(true)`).
pub(super) fn useradd_active(
    conn: &Tx<'_>,
    req: NewUser,
    active: Option<bool>,
    any_disabled: &AnyDisabled,
    now: Millis,
) -> Result<IssuedUser, StoreError> {
    if active == Some(false) {
        // Before the write, on the writer thread: every later job checks. A rollback leaves it
        // on, which only costs the check.
        any_disabled.0.store(true, Ordering::Relaxed);
    }
    let address = req.address.clone();
    let mut issued = useradd(conn, req, now)?;
    if let Some(active) = active {
        issued.disabled = set_active(conn, &address, active)?;
    }
    Ok(issued)
}

/// Sets the user at `address` (created by now) active or disabled. Returns the users a
/// disabling concerns: a primary's whole person (a person is disabled with its primary), a
/// linked user alone (one device of the person).
fn set_active(conn: &Connection, address: &str, active: bool) -> Result<Vec<Uid>, StoreError> {
    let user = find_user(conn, &UserKey::Address(address.to_string()))?
        .ok_or_else(|| StoreError::NoSuchUser(format!("at address {address}")))?;
    conn.prepare_cached("UPDATE users SET active = ?2 WHERE uid = ?1")?
        .execute(params![user.uid, active])?;
    Ok(match (active, user.primary_uid) {
        (true, _) => Vec::new(),
        (false, None) => person_uids(conn, user.uid)?,
        (false, Some(_)) => vec![user.uid],
    })
}

/// Refuses a message to the user at `address` when it (or its person) is disabled. A missing
/// user is left to the caller, which reports it in its own words.
pub(super) fn check_receives(conn: &Connection, address: &str) -> Result<(), StoreError> {
    let active: Option<bool> = conn
        .prepare_cached(
            "SELECT u.active AND coalesce(p.active, 1)
             FROM users u LEFT JOIN users p ON p.uid = u.primary_uid WHERE u.address = ?1",
        )?
        .query_row([address], |r| r.get(0))
        .optional()?;
    match active {
        Some(false) => Err(StoreError::UserDisabled(address.to_string())),
        _ => Ok(()),
    }
}

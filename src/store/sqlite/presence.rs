//! Who may see whose presence: the backend's allow and deny lists (`presence_acl`, migration
//! 0011) and the `contacts` fact (two persons exchanged a message). Reads only, apart from
//! `set_acl`: nothing here runs on the send path.

use rusqlite::{Connection, OptionalExtension, params};

use super::contacts::are_contacts;
use crate::store::{PersonId, PresenceAcl, PresenceCheck, StoreError};

/// What the store knows about `watcher` seeing `target`: the target's list entry for the
/// watcher, and (only when asked) whether they are contacts: one primary-key lookup in
/// `contacts`.
pub(super) fn check(
    conn: &Connection,
    watcher: PersonId,
    target: PersonId,
    with_contacts: bool,
) -> Result<PresenceCheck, StoreError> {
    let rule: Option<bool> = conn
        .prepare_cached("SELECT allow FROM presence_acl WHERE person = ?1 AND other = ?2")?
        .query_row(params![target, watcher], |r| r.get(0))
        .optional()?;
    // A message either way: one lookup in `contacts` (migration 0015), which the writer keeps.
    let contacts = with_contacts && rule.is_none() && are_contacts(conn, watcher, target)?;
    Ok(PresenceCheck { rule, contacts })
}

/// The person's lists, as primary addresses in address order.
pub(super) fn acl(conn: &Connection, person: PersonId) -> Result<PresenceAcl, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.address, a.allow FROM presence_acl a JOIN users u ON u.uid = a.other
         WHERE a.person = ?1 ORDER BY u.address",
    )?;
    let mut acl = PresenceAcl::default();
    let rows = stmt.query_map([person], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?))
    })?;
    for row in rows {
        let (address, allow) = row?;
        if allow {
            acl.allow.push(address);
        } else {
            acl.deny.push(address);
        }
    }
    Ok(acl)
}

/// Replaces the lists given (`None` keeps one). A person in both is denied. Persons deleted
/// since they were resolved are skipped (the insert selects them from `users`).
pub(super) fn set_acl(
    conn: &Connection,
    person: PersonId,
    allow: Option<Vec<PersonId>>,
    deny: Option<Vec<PersonId>>,
) -> Result<PresenceAcl, StoreError> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO presence_acl (person, other, allow)
         SELECT ?1, uid, ?3 FROM users WHERE uid = ?2 AND primary_uid IS NULL
         ON CONFLICT (person, other) DO UPDATE SET allow = min(allow, excluded.allow)",
    )?;
    let mut clear =
        conn.prepare_cached("DELETE FROM presence_acl WHERE person = ?1 AND allow = ?2")?;
    // Deny is written last and `min` keeps a 0: a person in both lists ends up denied.
    for (list, allow) in [(allow, true), (deny, false)] {
        let Some(list) = list else { continue };
        clear.execute(params![person, allow])?;
        for other in list {
            insert.execute(params![person, other, allow])?;
        }
    }
    acl(conn, person)
}

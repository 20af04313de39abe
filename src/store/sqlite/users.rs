//! Users, persons, devices and tokens: `useradd` and its `token.device` / `token.linkto`
//! forms, login checks, `devices`, `tokendel` and `userdel`.

use rusqlite::{Connection, OptionalExtension, params};

use super::seqs::Tx;
use crate::auth::{PlainToken, TokenHash};
use crate::protocol::{Millis, Uid};
use crate::store::{
    AuthFailure, DeviceRecord, Identity, IssuedUser, MAX_DEVICES, NewUser, PersonDevices, PersonId,
    Removed, Revoked, StoreError, TokenRequest, TokenTerms, UserKey,
};

/// One row of `users`.
pub(super) struct UserRow {
    pub(super) uid: Uid,
    pub(super) address: String,
    pub(super) primary_uid: Option<Uid>,
    pub(super) device_id: Option<String>,
}

impl UserRow {
    /// The person the user belongs to.
    pub(super) fn person(&self) -> PersonId {
        self.primary_uid.unwrap_or(self.uid)
    }
}

/// The user a key names, if any.
pub(super) fn find_user(conn: &Connection, key: &UserKey) -> Result<Option<UserRow>, StoreError> {
    let map = |r: &rusqlite::Row<'_>| {
        Ok(UserRow {
            uid: r.get(0)?,
            address: r.get(1)?,
            primary_uid: r.get(2)?,
            device_id: r.get(3)?,
        })
    };
    let row = match key {
        UserKey::Uid(uid) => conn
            .prepare_cached(
                "SELECT uid, address, primary_uid, device_id FROM users WHERE uid = ?1",
            )?
            .query_row([uid], map)
            .optional()?,
        UserKey::Address(address) => conn
            .prepare_cached(
                "SELECT uid, address, primary_uid, device_id FROM users WHERE address = ?1",
            )?
            .query_row([address], map)
            .optional()?,
    };
    Ok(row)
}

/// The address of a user (for a person: its primary's).
pub(super) fn user_address(conn: &Connection, uid: Uid) -> Result<String, StoreError> {
    Ok(conn
        .prepare_cached("SELECT address FROM users WHERE uid = ?1")?
        .query_row([uid], |r| r.get(0))?)
}

/// Every uid of a person, primary first.
pub(super) fn person_uids(conn: &Connection, person: PersonId) -> Result<Vec<Uid>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT uid FROM users WHERE uid = ?1 OR primary_uid = ?1 ORDER BY primary_uid IS NOT NULL, uid",
    )?;
    let uids = stmt
        .query_map([person], |r| r.get(0))?
        .collect::<Result<Vec<Uid>, _>>()?;
    Ok(uids)
}

/// A person with every one of its users, primary first.
pub(super) fn person_devices(
    conn: &Connection,
    person: PersonId,
) -> Result<PersonDevices, StoreError> {
    // A disabled primary disables its whole person: each device shows the effective state.
    let mut stmt = conn.prepare_cached(
        "SELECT uid, address, device_id, appid, last_seen, acked_seq,
                active AND (SELECT active FROM users WHERE uid = ?1) FROM users
         WHERE uid = ?1 OR primary_uid = ?1 ORDER BY primary_uid IS NOT NULL, uid",
    )?;
    let devices = stmt
        .query_map([person], |r| {
            Ok(DeviceRecord {
                uid: r.get(0)?,
                address: r.get(1)?,
                device: r.get(2)?,
                appid: r.get(3)?,
                last_seen: r.get(4)?,
                acked_seq: r.get(5)?,
                active: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PersonDevices {
        person,
        primary_address: user_address(conn, person)?,
        devices,
    })
}

/// Finds the user at `address`, or creates it as a new primary (with its person row).
fn find_or_create(
    conn: &Connection,
    address: &str,
    name: Option<&str>,
    now: Millis,
) -> Result<UserRow, StoreError> {
    if let Some(user) = find_user(conn, &UserKey::Address(address.to_string()))? {
        if let Some(name) = name {
            conn.prepare_cached("UPDATE users SET name = ?2 WHERE uid = ?1")?
                .execute(params![user.uid, name])?;
        }
        return Ok(user);
    }
    conn.prepare_cached("INSERT INTO users (address, name, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![address, name, now])?;
    let uid = conn.last_insert_rowid() as Uid;
    create_person(conn, uid)?;
    Ok(UserRow {
        uid,
        address: address.to_string(),
        primary_uid: None,
        device_id: None,
    })
}

/// Creates a person's log, with a random epoch of its own (migration 0005).
fn create_person(conn: &Connection, uid: Uid) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO persons (person, epoch) VALUES (?1, lower(hex(randomblob(8))))",
    )?
    .execute([uid])?;
    Ok(())
}

/// Issues a user token for `uid` under `terms`; only its hash is stored.
fn issue_token(
    conn: &Connection,
    uid: Uid,
    terms: &TokenTerms,
    now: Millis,
) -> Result<PlainToken, StoreError> {
    let token = PlainToken::user();
    let expires_at = now.saturating_add(terms.expiry_minutes.saturating_mul(60_000));
    conn.prepare_cached(
        "INSERT INTO tokens (hash, uid, appid, expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        &token.hash().0[..],
        uid,
        terms.appid,
        expires_at,
        now
    ])?;
    // `devices` shows the appid of the user's latest token.
    conn.prepare_cached("UPDATE users SET appid = ?2 WHERE uid = ?1")?
        .execute(params![uid, terms.appid])?;
    Ok(token)
}

/// How many users (devices) a person has.
fn count_users(conn: &Connection, person: PersonId) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM users WHERE uid = ?1 OR primary_uid = ?1")?
        .query_row([person], |r| r.get::<_, i64>(0))? as usize)
}

/// `useradd`: creates or updates the user, and issues the token it asks for.
pub(super) fn useradd(conn: &Tx<'_>, req: NewUser, now: Millis) -> Result<IssuedUser, StoreError> {
    match req.token {
        TokenRequest::None | TokenRequest::Plain(_) => {
            let user = find_or_create(conn, &req.address, req.name.as_deref(), now)?;
            let token = match &req.token {
                TokenRequest::Plain(terms) => Some(issue_token(conn, user.uid, terms, now)?),
                _ => None,
            };
            Ok(IssuedUser {
                uid: user.uid,
                address: user.address,
                token,
                linked_to: user.primary_uid,
                revoked: Vec::new(),
                moved: false,
                disabled: Vec::new(),
            })
        }
        TokenRequest::Device(terms, device) => token_device(
            conn,
            &req.address,
            req.name.as_deref(),
            &terms,
            &device,
            now,
        ),
        TokenRequest::LinkTo(terms, linkto) => token_linkto(
            conn,
            &req.address,
            req.name.as_deref(),
            &terms,
            &linkto,
            now,
        ),
    }
}

/// `token.device`: a known device keeps its user and gets a fresh token (older ones revoked);
/// a new device gets the primary if it has no device yet, else a new linked user.
fn token_device(
    conn: &Connection,
    address: &str,
    name: Option<&str>,
    terms: &TokenTerms,
    device: &str,
    now: Millis,
) -> Result<IssuedUser, StoreError> {
    let named = find_or_create(conn, address, name, now)?;
    let person = named.person();
    let known: Option<(Uid, String, Option<Uid>)> = conn
        .prepare_cached(
            "SELECT uid, address, primary_uid FROM users
             WHERE coalesce(primary_uid, uid) = ?1 AND device_id = ?2",
        )?
        .query_row(params![person, device], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;

    let (uid, address, primary_uid, revoked) = match known {
        Some((uid, address, primary_uid)) => {
            let n = conn
                .prepare_cached("DELETE FROM tokens WHERE uid = ?1")?
                .execute([uid])?;
            let revoked = if n > 0 { vec![uid] } else { Vec::new() };
            (uid, address, primary_uid, revoked)
        }
        None => {
            let primary_has_device: bool = conn
                .prepare_cached("SELECT device_id IS NOT NULL FROM users WHERE uid = ?1")?
                .query_row([person], |r| r.get(0))?;
            if !primary_has_device {
                conn.prepare_cached("UPDATE users SET device_id = ?2 WHERE uid = ?1")?
                    .execute(params![person, device])?;
                (person, user_address(conn, person)?, None, Vec::new())
            } else {
                let primary_address = user_address(conn, person)?;
                if count_users(conn, person)? >= MAX_DEVICES {
                    return Err(StoreError::DeviceLimit {
                        address: primary_address,
                    });
                }
                let address = free_linked_address(conn, &primary_address)?;
                conn.prepare_cached(
                    "INSERT INTO users (address, primary_uid, device_id, created_at)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![address, person, device, now])?;
                (
                    conn.last_insert_rowid() as Uid,
                    address,
                    Some(person),
                    Vec::new(),
                )
            }
        }
    };
    let token = issue_token(conn, uid, terms, now)?;
    Ok(IssuedUser {
        uid,
        address,
        token: Some(token),
        linked_to: primary_uid,
        revoked,
        moved: false,
        disabled: Vec::new(),
    })
}

/// The lowest `<primary>-linked-<n>` (n ≥ 1) that no user has. Numbers of deleted linked users
/// are reused only once nobody holds that address any more.
fn free_linked_address(conn: &Connection, primary_address: &str) -> Result<String, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM users WHERE address = ?1")?;
    for n in 1.. {
        let candidate = format!("{primary_address}-linked-{n}");
        if !stmt.exists([&candidate])? {
            return Ok(candidate);
        }
    }
    unreachable!("some linked number is free")
}

/// `token.linkto`: the user at `address` joins the person of `linkto`, then gets a token.
fn token_linkto(
    conn: &Tx<'_>,
    address: &str,
    name: Option<&str>,
    terms: &TokenTerms,
    linkto: &str,
    now: Millis,
) -> Result<IssuedUser, StoreError> {
    let target = find_user(conn, &UserKey::Address(linkto.to_string()))?
        .ok_or_else(|| StoreError::NoSuchUser(format!("at address {linkto} (named by linkto)")))?;
    let person = target.person();
    let user = find_or_create(conn, address, name, now)?;
    if user.uid == person {
        return Err(StoreError::BadLink(format!(
            "{address} is the primary of the person {linkto} belongs to; a user cannot link to itself"
        )));
    }
    let mut moved = false;
    match user.primary_uid {
        Some(primary) if primary == person => {} // already linked here: just a fresh token
        Some(_) => {
            return Err(StoreError::BadLink(format!(
                "{address} is already linked to another person; userdel it first"
            )));
        }
        None => {
            if count_users(conn, user.uid)? > 1 {
                return Err(StoreError::BadLink(format!(
                    "{address} is a primary with linked users of its own; only a user without linked users can be linked"
                )));
            }
            if count_users(conn, person)? >= MAX_DEVICES {
                return Err(StoreError::DeviceLimit {
                    address: user_address(conn, person)?,
                });
            }
            if let Some(device) = &user.device_id {
                let clash: bool = conn
                    .prepare_cached(
                        "SELECT 1 FROM users WHERE coalesce(primary_uid, uid) = ?1 AND device_id = ?2",
                    )?
                    .exists(params![person, device])?;
                if clash {
                    return Err(StoreError::BadLink(format!(
                        "{address} is on device {device}, which {linkto}'s person already has"
                    )));
                }
            }
            // The user's own (empty or abandoned) person log goes; it now shares the person's.
            let left: Option<String> = conn
                .prepare_cached("DELETE FROM persons WHERE person = ?1 RETURNING epoch")?
                .query_row([user.uid], |r| r.get(0))
                .optional()?;
            conn.forget(user.uid);
            // Its devices hold positions in the log it left. Two persons from before migration
            // 0005 share the database's epoch; then the target's log gets a new one, so no such
            // position is ever replayed against this log.
            conn.prepare_cached(
                "UPDATE persons SET epoch = lower(hex(randomblob(8))) WHERE person = ?1 AND epoch = ?2",
            )?
            .execute(params![person, left])?;
            conn.prepare_cached("UPDATE users SET primary_uid = ?2 WHERE uid = ?1")?
                .execute(params![user.uid, person])?;
            // The address sends to its new person now (the update hook ignores updates).
            conn.heads().recipients.clear();
            moved = true;
        }
    }
    let token = issue_token(conn, user.uid, terms, now)?;
    Ok(IssuedUser {
        uid: user.uid,
        address: user.address,
        token: Some(token),
        linked_to: Some(person),
        revoked: Vec::new(),
        moved,
        disabled: Vec::new(),
    })
}

/// The holder of a token: its appid, expiry, identity, and whether the user may log in.
fn token_holder(
    conn: &Connection,
    hash: &TokenHash,
) -> Result<Option<(String, i64, Identity, bool)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT t.appid, t.expires_at, u.uid, u.address, p.uid, p.address,
                    u.active AND p.active, u.device_id
             FROM tokens t
             JOIN users u ON u.uid = t.uid
             JOIN users p ON p.uid = coalesce(u.primary_uid, u.uid)
             WHERE t.hash = ?1",
        )?
        .query_row([&hash.0[..]], |r| {
            let expires = r.get::<_, i64>(1)?;
            Ok((
                r.get::<_, String>(0)?,
                expires,
                Identity {
                    uid: r.get(2)?,
                    address: r.get(3)?,
                    person: r.get(4)?,
                    primary_address: r.get(5)?,
                    device: r.get(7)?,
                    token_expires: expires,
                },
                r.get::<_, bool>(6)?,
            ))
        })
        .optional()?)
}

/// Who holds a live token; with `appid`, only if the token was issued for it.
pub(super) fn check_token(
    conn: &Connection,
    hash: &TokenHash,
    appid: Option<&str>,
    now: Millis,
) -> Result<Identity, StoreError> {
    let (token_appid, expires_at, identity, active) =
        token_holder(conn, hash)?.ok_or(StoreError::AuthFailed(AuthFailure::Unknown))?;
    if expires_at <= now {
        return Err(StoreError::AuthFailed(AuthFailure::Expired));
    }
    if appid.is_some_and(|appid| appid != token_appid) {
        return Err(StoreError::AuthFailed(AuthFailure::WrongAppid));
    }
    // Checked last: only the holder of an otherwise valid token learns that its user is
    // disabled.
    if !active {
        return Err(StoreError::AuthFailed(AuthFailure::Disabled));
    }
    Ok(identity)
}

/// `devices`: the person of the user `who` names, with all its users.
pub(super) fn devices(conn: &Connection, who: &UserKey) -> Result<PersonDevices, StoreError> {
    let user = find_user(conn, who)?.ok_or_else(|| StoreError::NoSuchUser(who.to_string()))?;
    person_devices(conn, user.person())
}

/// The person at `address`, disabled or not.
pub(super) fn person_of(conn: &Connection, address: String) -> Result<PersonId, StoreError> {
    match find_user(conn, &UserKey::Address(address.clone()))? {
        Some(user) => Ok(user.person()),
        None => Err(StoreError::UnknownRecipient(address)),
    }
}

/// The person at `address` and its primary's address, to ring; a disabled user (or person)
/// is not rung.
pub(super) fn resolve(
    conn: &Connection,
    address: String,
) -> Result<(PersonId, String), StoreError> {
    let user = find_user(conn, &UserKey::Address(address.clone()))?
        .ok_or_else(|| StoreError::UnknownRecipient(address.clone()))?;
    super::active::check_receives(conn, &address)?;
    let person = user.person();
    let primary_address = match user.primary_uid {
        Some(primary) => user_address(conn, primary)?,
        None => user.address,
    };
    Ok((person, primary_address))
}

/// Records when each user was last seen.
pub(super) fn touch(conn: &Connection, seen: Vec<(Uid, Millis)>) -> Result<(), StoreError> {
    let mut update = conn.prepare_cached("UPDATE users SET last_seen = ?2 WHERE uid = ?1")?;
    for (uid, at) in seen {
        update.execute(params![uid, at])?;
    }
    Ok(())
}

/// `tokendel`: revokes every token of the user.
pub(super) fn tokendel(conn: &Connection, who: &UserKey) -> Result<Revoked, StoreError> {
    let user = find_user(conn, who)?.ok_or_else(|| StoreError::NoSuchUser(who.to_string()))?;
    let count = conn.execute("DELETE FROM tokens WHERE uid = ?1", [user.uid])?;
    Ok(Revoked {
        person: user.person(),
        uid: user.uid,
        count: count as u64,
    })
}

/// `userdel`: a primary goes with its whole person, a linked user alone.
pub(super) fn userdel(conn: &Tx<'_>, who: &UserKey) -> Result<Removed, StoreError> {
    let user = find_user(conn, who)?.ok_or_else(|| StoreError::NoSuchUser(who.to_string()))?;
    let person = user.person();
    let uids = if user.primary_uid.is_none() {
        person_uids(conn, person)?
    } else {
        vec![user.uid]
    };
    // Foreign keys cascade: linked users, tokens, the person row and its event log.
    conn.execute("DELETE FROM users WHERE uid = ?1", [user.uid])?;
    if user.primary_uid.is_none() {
        // Its log went with it: the writer's head for it goes too.
        conn.forget(person);
    }
    Ok(Removed { person, uids })
}

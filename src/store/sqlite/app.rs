//! The app's own rows: its secrets (as hashes), the download-URL key and the totals for `stats`.

use rusqlite::{Connection, OptionalExtension, params};

use crate::auth::TokenHash;
use crate::protocol::Millis;
use crate::store::{AppCredentials, StoreError, StoreStats};

/// Totals for the `stats` op.
pub(super) fn stats(conn: &Connection) -> Result<StoreStats, StoreError> {
    let count =
        |sql: &str| -> Result<u64, StoreError> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    let mut stmt = conn.prepare_cached(
        "SELECT appid, count(*) FROM users WHERE appid IS NOT NULL GROUP BY appid ORDER BY appid",
    )?;
    let apps = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StoreStats {
        users: count("SELECT count(*) FROM users")?,
        persons: count("SELECT count(*) FROM persons")?,
        messages: count("SELECT count(*) FROM messages")?,
        // Log entries: the events, and the messages that are their senders' entries (0009).
        events: count(
            "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM messages m
                 JOIN persons p ON p.person = m.sender_person WHERE m.sender_seq > p.pruned_upto)",
        )?,
        apps,
    })
}

/// The app token, the previous one during a rotation, and the admin token.
pub(super) fn app_credentials(conn: &Connection) -> Result<AppCredentials, StoreError> {
    let row = conn
        .query_row(
            "SELECT token_hash, prev_token_hash, prev_expires_at, admin_token_hash
             FROM app WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Option<Vec<u8>>>(1)?,
                    r.get::<_, Option<Millis>>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                ))
            },
        )
        .optional()?;
    let hash = |bytes: Vec<u8>| bytes.try_into().ok().map(TokenHash);
    Ok(match row {
        None => AppCredentials::default(),
        Some((token, prev, prev_expires, admin)) => AppCredentials {
            app: hash(token),
            previous: prev.and_then(hash).zip(prev_expires),
            admin: admin.and_then(hash),
        },
    })
}

/// Replaces the app's secrets.
pub(super) fn set_app_credentials(
    conn: &Connection,
    creds: AppCredentials,
) -> Result<(), StoreError> {
    let app = creds
        .app
        .ok_or_else(|| StoreError::Corrupt("an app token is required".into()))?;
    let (prev, prev_expires) = match creds.previous {
        Some((hash, until)) => (Some(hash.0.to_vec()), Some(until)),
        None => (None, None),
    };
    conn.execute(
        "INSERT INTO app (id, token_hash, prev_token_hash, prev_expires_at, admin_token_hash)
         VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET token_hash = excluded.token_hash,
           prev_token_hash = excluded.prev_token_hash,
           prev_expires_at = excluded.prev_expires_at,
           admin_token_hash = excluded.admin_token_hash",
        params![
            &app.0[..],
            prev,
            prev_expires,
            creds.admin.map(|h| h.0.to_vec())
        ],
    )?;
    Ok(())
}

/// The key download URLs are signed with, made on first use.
pub(super) fn url_key(conn: &Connection) -> Result<[u8; 32], StoreError> {
    let stored: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'url_key'", [], |r| {
            r.get(0)
        })
        .optional()?;
    let hex_key = match stored {
        Some(key) => key,
        None => {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key)
                .map_err(|err| StoreError::Corrupt(format!("no randomness: {err}")))?;
            let key = hex::encode(key);
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('url_key', ?1)",
                [&key],
            )?;
            key
        }
    };
    let mut key = [0u8; 32];
    hex::decode_to_slice(&hex_key, &mut key)
        .map_err(|err| StoreError::Corrupt(format!("url_key: {err}")))?;
    Ok(key)
}

/// A value from the `meta` table, if set.
pub(super) fn meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// Sets a value in the `meta` table.
pub(super) fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

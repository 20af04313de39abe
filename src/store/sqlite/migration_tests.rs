//! The migrations that reshape stored data, run against databases built at the version before
//! them: what was stored must read back the same through today's code.

use rusqlite::Connection;

use super::writer::MIGRATIONS;
use crate::protocol::Millis;
use crate::store::sqlite::SqliteStore;
use crate::store::sqlite::test_support::{identity, message_at as message};
use crate::store::{EventKind, Identity, NewMessage, Store, StoreError};

/// A database with the first `version` migrations applied, filled by `fill`.
fn database_at(dir: &std::path::Path, version: usize, fill: &str) {
    let mut conn = Connection::open(dir.join("octet.db")).unwrap();
    let tx = conn.transaction().unwrap();
    for sql in &MIGRATIONS[..version] {
        tx.execute_batch(sql).unwrap();
    }
    tx.pragma_update(None, "user_version", version).unwrap();
    tx.execute_batch(fill).unwrap();
    tx.commit().unwrap();
}

/// Migration 0009 on a database of 0008: the senders' `out` rows leave `events`, and each
/// log reads back exactly as before (seqs, kinds, mids, `out`), a message to oneself
/// included; `events_mid` and the foreign key on `events.mid` are gone, the one on the person
/// stays; the next send goes on from the log's head.
#[tokio::test]
async fn migration_0009_makes_the_message_its_senders_log_entry() {
    let dir = tempfile::tempdir().unwrap();
    database_at(
        dir.path(),
        8,
        "INSERT INTO users (uid, address, created_at) VALUES (1, 'a@x', 0), (2, 'b@x', 0);
         INSERT INTO persons (person) VALUES (1), (2);
         INSERT INTO messages (mid, sender_person, client_id, from_address, to_address,
             recipient_person, sender_seq, recipient_seq, ts, body)
         VALUES (1, 1, 'c1', 'a@x', 'b@x', 2, 1, 1, 1, '1'),
                (2, 1, 'c2', 'a@x', 'b@x', 2, 2, 2, 2, '1'),
                (3, 2, 'c3', 'b@x', 'a@x', 1, 3, 3, 3, '1'),
                (4, 1, 'c4', 'a@x', 'a@x', 1, 4, 4, 4, '1');
         INSERT INTO events (person, seq, kind, mid, out, ts) VALUES
             (1, 1, 'message', 1, 1, 1), (2, 1, 'message', 1, 0, 1),
             (1, 2, 'message', 2, 1, 2), (2, 2, 'message', 2, 0, 2),
             (2, 3, 'message', 3, 1, 3), (1, 3, 'message', 3, 0, 3),
             (1, 4, 'message', 4, 1, 4);
         INSERT INTO events (person, seq, kind, mid, out, ts, peer, status)
         VALUES (1, 5, 'receipt', 1, 0, 5, 'b@x', 'delivered');",
    );
    let store = SqliteStore::open(dir.path()).unwrap();
    let log = |person| {
        let store = &store;
        async move {
            store
                .events_after(person, 0, 100, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|e| match e.kind {
                    EventKind::Message {
                        mid, out, origin, ..
                    } => {
                        // Stored before migration 0012: no sending device is known.
                        assert!(origin.is_none());
                        (e.seq, "message", mid, out)
                    }
                    EventKind::Receipt { mid, .. } => (e.seq, "receipt", mid, false),
                    other => panic!("unexpected {other:?}"),
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        log(1).await,
        [
            (1, "message", 1, true),
            (2, "message", 2, true),
            (3, "message", 3, false),
            (4, "message", 4, true),
            (5, "receipt", 1, false),
        ]
    );
    assert_eq!(
        log(2).await,
        [
            (1, "message", 1, false),
            (2, "message", 2, false),
            (3, "message", 3, true),
        ]
    );
    // Read backwards (history) the same.
    let before: Vec<u64> = store
        .events_before(1, 5, 3)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(before, [2, 3, 4]);
    let (out_rows, mid_index, fks): (u64, u64, Vec<String>) = store
        .read(|c| {
            Ok((
                c.query_row(
                    "SELECT count(*) FROM events WHERE kind = 'message' AND out = 1",
                    [],
                    |r| r.get(0),
                )?,
                c.query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE name = 'events_mid'",
                    [],
                    |r| r.get(0),
                )?,
                c.prepare("SELECT \"table\" FROM pragma_foreign_key_list('events')")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?,
            ))
        })
        .await
        .unwrap();
    assert_eq!((out_rows, mid_index), (0, 0));
    assert_eq!(fks, ["persons"]);
    assert_eq!(store.head(1).await.unwrap().seq, 5);
    assert_eq!(store.head(2).await.unwrap().seq, 3);
    let a = identity(1, "a@x");
    let sent = store
        .append_message(message(&a, "c5", "b@x", 6))
        .await
        .unwrap();
    assert_eq!((sent.sender_seq, sent.recipient_seq), (6, 4));
    // A retry of a message sent before the migration is still answered with it.
    let again = store
        .append_message(message(&a, "c2", "b@x", 7))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.mid, 2);
}

/// Migration 0008 on a database of 0007: `messages` loses AUTOINCREMENT, keeps its rows,
/// columns, dedup constraint and the foreign keys pointing at it, and the next mid is past
/// the old `sqlite_sequence` value even though the newest messages were deleted.
#[tokio::test]
async fn migration_0008_drops_autoincrement_and_keeps_mids_unique() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut conn = Connection::open(dir.path().join("octet.db")).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..7] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 7).unwrap();
        tx.execute_batch(
            "INSERT INTO users (uid, address, created_at) VALUES (1, 'a@x', 0), (2, 'b@x', 0);
                 INSERT INTO persons (person) VALUES (1), (2);",
        )
        .unwrap();
        for n in 1..=10u64 {
            tx.execute(
                "INSERT INTO messages (sender_person, client_id, from_address, to_address,
                         recipient_person, sender_seq, recipient_seq, ts, body, pv, files)
                     VALUES (1, ?1, 'a@x', 'b@x', 2, ?1, ?1, ?1, '1', 3, NULL)",
                [n],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO events (person, seq, kind, mid, out, ts)
                     VALUES (1, ?1, 'message', ?1, 1, ?1), (2, ?1, 'message', ?1, 0, ?1)",
                [n],
            )
            .unwrap();
        }
        // The newest four messages (and their events) go: max(mid) = 6 < sqlite_sequence = 10.
        tx.execute_batch("DELETE FROM events WHERE mid > 6; DELETE FROM messages WHERE mid > 6;")
            .unwrap();
        let seq: u64 = tx
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'messages'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(seq, 10);
        tx.commit().unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let (sql, seq_rows, floor, count, fk_on): (String, u64, String, u64, bool) = store
        .read(|c| {
            Ok((
                c.query_row(
                    "SELECT sql FROM sqlite_schema WHERE name = 'messages'",
                    [],
                    |r| r.get(0),
                )?,
                c.query_row(
                    "SELECT count(*) FROM sqlite_sequence WHERE name = 'messages'",
                    [],
                    |r| r.get(0),
                )?,
                c.query_row("SELECT value FROM meta WHERE key = 'mid_floor'", [], |r| {
                    r.get(0)
                })?,
                c.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?,
                c.pragma_query_value(None, "foreign_keys", |r| r.get(0))?,
            ))
        })
        .await
        .unwrap();
    assert!(!sql.to_uppercase().contains("AUTOINCREMENT"), "{sql}");
    assert!(sql.contains("UNIQUE (sender_person, client_id)"), "{sql}");
    assert_eq!((seq_rows, floor.as_str(), count), (0, "10", 6));
    assert!(fk_on);
    // The old rows read back through the log, pv and all.
    let events = store.events_after(2, 0, 100, 100).await.unwrap();
    assert_eq!(events.len(), 6);
    assert!(matches!(
        events[5].kind,
        crate::store::EventKind::Message { mid: 6, pv: 3, .. }
    ));
    // The writer still has foreign keys on: an event needs its person.
    let refused: Result<(), StoreError> = store
        .write(|tx| {
            tx.execute(
                "INSERT INTO events (person, seq, kind, mid, out, ts)
                     VALUES (999, 99, 'message', 6, 0, 0)",
                [],
            )?;
            Ok(())
        })
        .await;
    assert!(refused.is_err());
    let a = Identity {
        uid: 1,
        address: "a@x".into(),
        person: 1,
        primary_address: "a@x".into(),
        device: None,
        token_expires: Millis::MAX,
    };
    let msg = NewMessage {
        from: a.clone(),
        client_id: "new".into(),
        to: "b@x".into(),
        body: serde_json::value::RawValue::from_string("1".into()).unwrap(),
        files: Vec::new(),
        ts: 11,
        accepted: std::time::Instant::now(),
    };
    let sent = store.append_message(msg).await.unwrap();
    assert!(
        sent.mid > 10,
        "mid {} reuses one of before the migration",
        sent.mid
    );
    assert_eq!(sent.sender_seq, 7);
    // The dedup constraint survived the rebuild: a retry answers the stored message.
    let retry = NewMessage {
        from: a,
        client_id: "1".into(),
        to: "b@x".into(),
        body: serde_json::value::RawValue::from_string("1".into()).unwrap(),
        files: Vec::new(),
        ts: 12,
        accepted: std::time::Instant::now(),
    };
    let again = store.append_message(retry).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.mid, 1);
}

/// Migration 0015 fills `contacts` from the stored messages: one pair per two persons that
/// exchanged one either way, none for a note to self or a person that no longer exists.
#[tokio::test]
async fn migration_0015_makes_contacts_of_the_persons_that_exchanged_messages() {
    let dir = tempfile::tempdir().unwrap();
    let before_0015 = MIGRATIONS
        .iter()
        .position(|m| m.contains("CREATE TABLE contacts"))
        .unwrap();
    database_at(
        dir.path(),
        before_0015,
        "INSERT INTO users (uid, address, created_at)
             VALUES (1, 'a@x', 0), (2, 'b@x', 0), (3, 'c@x', 0), (4, 'd@x', 0);
         INSERT INTO persons (person) VALUES (1), (2), (3), (4);
         INSERT INTO messages (mid, sender_person, client_id, from_address, to_address,
             recipient_person, sender_seq, recipient_seq, ts, body)
         VALUES (1, 1, 'c1', 'a@x', 'b@x', 2, 1, 1, 1, '1'),
                (2, 2, 'c2', 'b@x', 'a@x', 1, 2, 2, 2, '1'),
                (3, 3, 'c3', 'c@x', 'c@x', 3, 1, 1, 3, '1'),
                (4, 9, 'c4', 'gone@x', 'd@x', 4, 1, 1, 4, '1'),
                (5, 4, 'c5', 'd@x', 'a@x', 1, 2, 3, 5, '1');",
    );
    let store = SqliteStore::open(dir.path()).unwrap();
    let pairs: Vec<(u64, u64)> = store
        .read(|c| {
            Ok(c.prepare("SELECT a, b FROM contacts ORDER BY a, b")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?)
        })
        .await
        .unwrap();
    assert_eq!(pairs, [(1, 2), (1, 4)]);
}

/// Migration 0016 moves the payloads of `profile` and `devices` events off the log into
/// `event_data`: both read back as before, `events` has no `data` column left, and pruning the
/// log removes the payloads with their events.
#[tokio::test]
async fn migration_0016_keeps_payloads_beside_the_log_and_prunes_them_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let before_0016 = MIGRATIONS
        .iter()
        .position(|m| m.contains("CREATE TABLE event_data"))
        .unwrap();
    database_at(
        dir.path(),
        before_0016,
        r#"INSERT INTO users (uid, address, created_at) VALUES (1, 'a@x', 0), (2, 'b@x', 0);
         INSERT INTO persons (person) VALUES (1), (2);
         INSERT INTO messages (mid, sender_person, client_id, from_address, to_address,
             recipient_person, sender_seq, recipient_seq, ts, body)
         VALUES (1, 2, 'c1', 'b@x', 'a@x', 1, 1, 1, 1, '1');
         INSERT INTO events (person, seq, kind, mid, out, ts) VALUES (1, 1, 'message', 1, 0, 1);
         INSERT INTO events (person, seq, kind, ts, peer, data, version)
             VALUES (1, 2, 'profile', 2, 'a@x', '{"name":"Ann"}', 1);
         INSERT INTO events (person, seq, kind, ts, data) VALUES (1, 3, 'devices', 3,
             '{"change":"linked","uid":2,"devices":[{"uid":1,"address":"a@x","device":null,"appid":null,"name":null,"online":false,"primary":true,"active":true}]}');"#,
    );
    let store = SqliteStore::open(dir.path()).unwrap();
    let events = store.events_after(1, 0, 100, 100).await.unwrap();
    assert_eq!(events.len(), 3);
    assert!(matches!(events[0].kind, EventKind::Message { mid: 1, .. }));
    match &events[1].kind {
        EventKind::Profile {
            profile, version, ..
        } => assert_eq!((profile.get(), *version), (r#"{"name":"Ann"}"#, 1)),
        other => panic!("not the profile: {other:?}"),
    }
    match &events[2].kind {
        EventKind::Devices { uid, devices, .. } => {
            assert_eq!(
                (*uid, devices.len(), devices[0].address.as_str()),
                (2, 1, "a@x")
            )
        }
        other => panic!("not the device list: {other:?}"),
    }
    let count = |sql: &'static str| {
        let store = &store;
        async move {
            store
                .read(move |c| Ok(c.query_row(sql, [], |r| r.get::<_, u64>(0))?))
                .await
                .unwrap()
        }
    };
    assert_eq!(count("SELECT count(*) FROM event_data").await, 2);
    assert_eq!(
        count("SELECT count(*) FROM pragma_table_info('events') WHERE name = 'data'").await,
        0
    );
    // Everything is older than now: both logs go (a's three entries and b's sent message), and
    // the payloads with them.
    let now = crate::state::now_millis();
    assert_eq!(store.prune(now, now, 100).await.unwrap(), 4);
    assert_eq!(count("SELECT count(*) FROM event_data").await, 0);
}

//! Each person's log head kept in memory on the writer thread, so appending to a log writes the
//! event and nothing else (no `UPDATE persons SET last_seq = last_seq + 1` per event).
//!
//! # Why the head needs no counter on disk
//!
//! Every seq the writer hands out is written, in the same savepoint, as that person's `events`
//! row `(person, seq)` or, for a message the person sent, as the message's
//! `(sender_person, sender_seq)` (migration 0009: the message is the sender's log entry); both
//! are unique keys, so a seq can never be stored twice in one table. An event row leaves only
//! by retention, which first records `persons.pruned_upto ≥` its seq, or with the whole person
//! (`userdel`, a `linkto` that moves a primary: the `persons` row goes and its events cascade;
//! person ids are never reused, so its messages left behind belong to no log). A message row
//! outlives its sender's horizon while the recipient holds it, and never goes while the
//! sender's log holds it. So for any committed state the last seq of a log is exactly
//!
//! ```text
//! head = max(persons.last_seq, persons.pruned_upto, max(events.seq of that person),
//!            max(messages.sender_seq of that person))
//! ```
//!
//! (`persons.last_seq` is the counter octet bumped per event before this, no longer written:
//! it only matters where it is the largest of them). [`HEAD_SQL`] computes it with three
//! index seeks; the readers (`log_head`, hence login's head and a catch-up's `upto`) use
//! it as well, so they see the true head from any committed snapshot, and a restart after
//! `kill -9` starts again from what was committed: no seq is reused or skipped.
//!
//! # Why the cache never runs ahead of the database
//!
//! A job's seqs go into a per-job overlay; the job's savepoint releasing moves them into the
//! batch's overlay (a refused job's are dropped with its savepoint), and only a successful
//! `COMMIT` moves the batch's into the cache (a failed one drops them). A person deleted in a
//! job gets a tombstone that, once committed, removes its cache entry; a tombstone or a miss
//! reads the head from the database inside the transaction, which is right by the argument
//! above. A stale entry could at worst make an insert fail on the primary key, never store a
//! wrong seq; on any surprise (a savepoint that cannot be released) the whole cache is dropped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Deref;

use rusqlite::{Connection, OptionalExtension};

use super::contacts::Contacts;
use super::recipients::Recipients;
use crate::store::{PersonId, StoreError};

/// A person's head as the writer sees it, in or after the current transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Head {
    /// The last seq taken in the person's log.
    pub(super) seq: u64,
    /// The person's profile version (stored with each message it sends, as `pv`).
    pub(super) profile_version: u64,
}

/// The head of a person's log from committed (or this transaction's) rows, and its profile
/// version; no row if the person does not exist.
pub(super) const HEAD_SQL: &str = "SELECT max(p.last_seq, p.pruned_upto,
            coalesce((SELECT max(e.seq) FROM events e WHERE e.person = p.person), 0),
            coalesce((SELECT max(m.sender_seq) FROM messages m WHERE m.sender_person = p.person), 0)),
            p.profile_version, p.pruned_upto, p.epoch
     FROM persons p WHERE p.person = ?1";

/// The largest message id ever stored: in the table, recorded by retention (`mid_floor`), or
/// left in `sqlite_sequence` by the `AUTOINCREMENT` of before migration 0008.
pub(super) const MID_SQL: &str = "SELECT max(
        coalesce((SELECT max(mid) FROM messages), 0),
        coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'mid_floor'), 0),
        coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0))";

/// The most heads kept; past it the cache starts again empty (heads are read back on use).
const MAX_CACHED: usize = 1 << 20;

/// The writer's heads: committed, and the overlays of the open transaction and job.
/// `None` in an overlay is a tombstone: the person was deleted (read it again from the rows).
#[derive(Default)]
pub(super) struct Heads {
    committed: HashMap<PersonId, Head>,
    batch: HashMap<PersonId, Option<Head>>,
    job: HashMap<PersonId, Option<Head>>,
    /// The next message id to hand out (`None`: not read from the rows yet). See [`Tx::take_mid`].
    next_mid: Option<u64>,
    /// The contact pairs, kept by the same rule (`contacts`).
    pub(super) contacts: Contacts,
    /// Where addresses send to (`recipients`): dropped on any rollback.
    pub(super) recipients: Recipients,
}

impl Heads {
    /// What the open job sees for `person`: `Some(Some)` known, `Some(None)` to be read.
    fn known(&self, person: PersonId) -> Option<Head> {
        for overlay in [&self.job, &self.batch] {
            if let Some(entry) = overlay.get(&person) {
                return *entry;
            }
        }
        self.committed.get(&person).copied()
    }

    /// A job's savepoint was released: its heads join the batch's.
    pub(super) fn job_released(&mut self) {
        self.contacts.job_released();
        self.batch.extend(self.job.drain());
    }

    /// A job's savepoint was rolled back (or its outcome is unknown): its heads are forgotten.
    pub(super) fn job_rolled_back(&mut self) {
        self.contacts.job_rolled_back();
        self.recipients.clear();
        self.job.clear();
    }

    /// The batch's transaction committed: its heads become the cache.
    pub(super) fn committed(&mut self) {
        debug_assert!(self.job.is_empty());
        self.contacts.committed();
        if self.committed.len() + self.batch.len() > MAX_CACHED {
            self.committed.clear();
        }
        for (person, head) in self.batch.drain() {
            match head {
                Some(head) => self.committed.insert(person, head),
                None => self.committed.remove(&person),
            };
        }
    }

    /// The batch's transaction was rolled back: nothing it took happened.
    pub(super) fn rolled_back(&mut self) {
        self.contacts.rolled_back();
        self.recipients.clear();
        self.job.clear();
        self.batch.clear();
    }

    /// Forgets everything (the database is the truth; heads are read again on use).
    pub(super) fn reset(&mut self) {
        self.rolled_back();
        self.committed.clear();
        self.contacts = Contacts::default();
    }
}

/// The writer's connection inside a transaction, with its heads. Dereferences to the
/// connection, so every store function that only runs SQL takes it as a `&Connection`.
pub(super) struct Tx<'a> {
    conn: &'a Connection,
    heads: &'a RefCell<Heads>,
}

impl Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl<'a> Tx<'a> {
    pub(super) fn new(conn: &'a Connection, heads: &'a RefCell<Heads>) -> Tx<'a> {
        Tx { conn, heads }
    }

    pub(super) fn heads(&self) -> std::cell::RefMut<'_, Heads> {
        self.heads.borrow_mut()
    }

    /// The person's head, or `None` if the person does not exist.
    pub(super) fn head(&self, person: PersonId) -> Result<Option<Head>, StoreError> {
        if let Some(head) = self.heads.borrow().known(person) {
            return Ok(Some(head));
        }
        let head = self
            .conn
            .prepare_cached(HEAD_SQL)?
            .query_row([person], |r| {
                Ok(Head {
                    seq: r.get(0)?,
                    profile_version: r.get(1)?,
                })
            })
            .optional()?;
        if let Some(head) = head {
            // Into the job's overlay: kept only if this job and its transaction commit.
            self.heads.borrow_mut().job.insert(person, Some(head));
        }
        Ok(head)
    }

    /// Takes the next seq of a person's log; `None` if the person does not exist. The caller
    /// writes the event with this seq in the same job.
    pub(super) fn take_seq(&self, person: PersonId) -> Result<Option<Head>, StoreError> {
        let Some(mut head) = self.head(person)? else {
            return Ok(None);
        };
        head.seq += 1;
        self.heads.borrow_mut().job.insert(person, Some(head));
        Ok(Some(head))
    }

    /// Records a person's new profile version (written to `persons` by the caller).
    pub(super) fn set_profile_version(
        &self,
        person: PersonId,
        version: u64,
    ) -> Result<(), StoreError> {
        if let Some(mut head) = self.head(person)? {
            head.profile_version = version;
            self.heads.borrow_mut().job.insert(person, Some(head));
        }
        Ok(())
    }

    /// Takes the next message id. `messages.mid` is a plain `INTEGER PRIMARY KEY` (migration
    /// 0008 took `AUTOINCREMENT` off: it wrote a `sqlite_sequence` row per send), so SQLite's
    /// own choice, max(mid) + 1, would hand out a pruned message's id again once retention has
    /// emptied the table. The writer assigns ids itself instead, from a counter that only goes
    /// up and starts past every id ever stored:
    ///
    /// - a mid leaves `messages` only by retention (`prune_messages`), which raises
    ///   `meta.mid_floor` to at least that mid in the same transaction; so in any committed
    ///   state, every mid ever committed is ≤ max(max(messages.mid), mid_floor) — and migration
    ///   0008 starts the floor at the old `sqlite_sequence` value ([`MID_SQL`] reads that
    ///   too, should a row still be there);
    /// - the counter is read once, inside the writer's transaction (the writer is the only
    ///   connection that inserts messages), as that maximum + 1, and from then on only
    ///   increments, also for jobs that are refused or whose commit fails: such a mid is
    ///   skipped, never reused (mids are only unique ids; gaps are allowed). After a restart the
    ///   counter is read again from committed rows, which is right by the first point.
    pub(super) fn take_mid(&self) -> Result<u64, StoreError> {
        let next = match self.heads.borrow().next_mid {
            Some(next) => next,
            None => {
                self.conn
                    .prepare_cached(MID_SQL)?
                    .query_row([], |r| r.get::<_, u64>(0))?
                    + 1
            }
        };
        self.heads.borrow_mut().next_mid = Some(next + 1);
        Ok(next)
    }

    /// The person's rows are being deleted (or moved): read its head again on next use.
    pub(super) fn forget(&self, person: PersonId) {
        self.heads.borrow_mut().job.insert(person, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Millis;
    use crate::store::Store;
    use crate::store::sqlite::SqliteStore;
    use crate::store::sqlite::test_support::{message, user};

    /// Jobs that take a seq and are then refused (by the job, or by SQLite) queued among
    /// sends: the sends' seqs have no gap, and a reopened store (its heads read from the rows,
    /// retention included) goes on from there.
    #[tokio::test]
    async fn refused_jobs_take_no_seq_and_a_reopened_store_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let a = user(&store, "a@x").await;
        let b = user(&store, "b@x").await;
        let person = a.person;
        assert_eq!(
            store
                .append_message(message(&a, "0", "b@x"))
                .await
                .unwrap()
                .sender_seq,
            1
        );

        let refused = || {
            store.write(move |tx| -> Result<(), StoreError> {
                tx.take_seq(person)?;
                Err(StoreError::BadPosition("refused after taking a seq".into()))
            })
        };
        // Takes a seq, then an event collides with an existing one (b's first received
        // message): SQLite refuses it.
        let recipient = b.person;
        let collides = || {
            store.write(move |tx| {
                let seq = tx.take_seq(person)?.unwrap().seq;
                tx.execute(
                    "INSERT INTO events (person, seq, kind, ts) VALUES (?1, 1, 'read', 0)",
                    [recipient],
                )?;
                Ok(seq)
            })
        };
        let mut jobs = Vec::new();
        let (store_ref, a_ref) = (&store, &a);
        for n in 1..=10 {
            jobs.push(Box::pin(async move {
                store_ref
                    .append_message(message(a_ref, &n.to_string(), "b@x"))
                    .await
                    .map(|sent| sent.sender_seq)
            })
                as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>);
            jobs.push(Box::pin(async { refused().await.map(|()| 0) }));
            jobs.push(Box::pin(collides()));
        }
        let results = futures::future::join_all(jobs).await;
        let mut seqs: Vec<u64> = results.into_iter().filter_map(Result::ok).collect();
        seqs.sort();
        assert_eq!(seqs, (2..=11).collect::<Vec<_>>());
        assert_eq!(store.head(person).await.unwrap().seq, 11);
        assert_eq!(store.head(b.person).await.unwrap().seq, 11);
        drop(store);

        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.head(person).await.unwrap().seq, 11);
        let sent = store
            .append_message(message(&a, "11", "b@x"))
            .await
            .unwrap();
        assert_eq!((sent.sender_seq, sent.recipient_seq), (12, 12));
        // Retention takes every event: the head is where it was, and so is the next seq.
        assert_eq!(store.prune(Millis::MAX, 0, 1000).await.unwrap(), 24);
        assert_eq!(store.head(person).await.unwrap().seq, 12);
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.head(person).await.unwrap().seq, 12);
        let sent = store
            .append_message(message(&a, "12", "b@x"))
            .await
            .unwrap();
        assert_eq!((sent.sender_seq, sent.recipient_seq), (13, 13));
    }

    /// Retention empties `messages`, the store is reopened: the next mid is past every mid
    /// handed out before. (SQLite's own choice for a plain `INTEGER PRIMARY KEY`, max(mid) + 1,
    /// would be 1 here: the same mid again. `mid_floor` is what remembers.)
    #[tokio::test]
    async fn mids_are_never_reused_after_retention_empties_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let a = user(&store, "a@x").await;
        let _b = user(&store, "b@x").await;
        let mut last = 0;
        for n in 0..5 {
            let mid = store
                .append_message(message(&a, &n.to_string(), "b@x"))
                .await
                .unwrap()
                .mid;
            assert!(mid > last);
            last = mid;
        }
        // A job that takes a mid and is refused: the mid is skipped, not reused.
        let refused: Result<(), StoreError> = store
            .write(|tx| {
                tx.take_mid()?;
                Err(StoreError::BadPosition("refused after taking a mid".into()))
            })
            .await;
        assert!(refused.is_err());
        assert_eq!(
            store.prune(Millis::MAX, Millis::MAX, 1000).await.unwrap(),
            10
        );
        let (left, naive): (u64, u64) = store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT count(*), coalesce(max(mid), 0) + 1 FROM messages",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(
            (left, naive),
            (0, 1),
            "the table is empty: max(mid) + 1 would reuse"
        );
        let sent = store.append_message(message(&a, "5", "b@x")).await.unwrap();
        assert!(sent.mid > last, "{} after {last}", sent.mid);
        last = sent.mid;
        assert_eq!(
            store.prune(Millis::MAX, Millis::MAX, 1000).await.unwrap(),
            2
        );
        drop(store);

        let store = SqliteStore::open(dir.path()).unwrap();
        let sent = store.append_message(message(&a, "6", "b@x")).await.unwrap();
        assert!(sent.mid > last, "{} after {last}", sent.mid);
        // And the message is readable in both logs under that mid.
        let events = store.events_after(a.person, 0, 100, 10).await.unwrap();
        assert!(matches!(
            events.last().unwrap().kind,
            crate::store::EventKind::Message { mid, .. } if mid == sent.mid
        ));
    }

    fn head(seq: u64) -> Option<Head> {
        Some(Head {
            seq,
            profile_version: 0,
        })
    }

    #[test]
    fn only_released_and_committed_heads_reach_the_cache() {
        let mut heads = Heads::default();
        heads.job.insert(1, head(5));
        heads.job_released();
        heads.job.insert(1, head(6));
        heads.job.insert(2, head(1));
        heads.job_rolled_back();
        assert_eq!(heads.known(1), head(5));
        assert_eq!(heads.known(2), None);
        heads.committed();
        assert_eq!(heads.committed.get(&1).copied(), head(5));

        heads.job.insert(1, head(7));
        heads.job_released();
        heads.rolled_back();
        assert_eq!(heads.known(1), head(5));

        heads.job.insert(1, None);
        heads.job_released();
        assert_eq!(heads.known(1), None);
        heads.committed();
        assert!(heads.committed.is_empty());
    }
}

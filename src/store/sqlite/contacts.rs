//! Who has exchanged a message with whom (`contacts`, migration 0015), for `--presence
//! contacts`. The writer records a pair with the first message between two persons; the pairs
//! it knows are stored are kept in memory so a send between known contacts runs no statement.
//!
//! The memory follows the same rule as the heads (`seqs`): a pair joins the job's list when
//! its row is written, the batch's when the job's savepoint is released, and the known set only
//! after `COMMIT`; a rolled-back job or transaction drops its pairs. So a pair in the known set
//! is always a committed row, and a send never skips a pair that is not stored.

use std::collections::HashSet;

use rusqlite::{Connection, params};

use super::seqs::Tx;
use crate::store::{PersonId, StoreError};

/// The most pairs kept in memory; past it the set starts again empty (a known pair only saves
/// an `INSERT OR IGNORE`).
const MAX_KNOWN: usize = 1 << 20;

/// The writer's pairs: known stored, and those of the open transaction and job.
#[derive(Default)]
pub(super) struct Contacts {
    known: HashSet<(PersonId, PersonId)>,
    batch: Vec<(PersonId, PersonId)>,
    job: Vec<(PersonId, PersonId)>,
}

impl Contacts {
    pub(super) fn job_released(&mut self) {
        self.batch.append(&mut self.job);
    }

    pub(super) fn job_rolled_back(&mut self) {
        self.job.clear();
    }

    pub(super) fn committed(&mut self) {
        if self.known.len() + self.batch.len() > MAX_KNOWN {
            self.known.clear();
        }
        self.known.extend(self.batch.drain(..));
    }

    pub(super) fn rolled_back(&mut self) {
        self.job.clear();
        self.batch.clear();
    }

    fn knows(&self, pair: (PersonId, PersonId)) -> bool {
        self.known.contains(&pair) || self.batch.contains(&pair) || self.job.contains(&pair)
    }
}

fn pair(x: PersonId, y: PersonId) -> (PersonId, PersonId) {
    (x.min(y), x.max(y))
}

/// Records that `x` and `y` exchanged a message (in the sending job's savepoint).
pub(super) fn record(tx: &Tx<'_>, x: PersonId, y: PersonId) -> Result<(), StoreError> {
    if x == y {
        return Ok(());
    }
    let pair = pair(x, y);
    if tx.heads().contacts.knows(pair) {
        return Ok(());
    }
    tx.prepare_cached("INSERT OR IGNORE INTO contacts (a, b) VALUES (?1, ?2)")?
        .execute(params![pair.0, pair.1])?;
    tx.heads().contacts.job.push(pair);
    Ok(())
}

/// Whether `x` and `y` ever exchanged a message (one primary-key lookup).
pub(super) fn are_contacts(
    conn: &Connection,
    x: PersonId,
    y: PersonId,
) -> Result<bool, StoreError> {
    let (a, b) = pair(x, y);
    Ok(conn
        .prepare_cached("SELECT 1 FROM contacts WHERE a = ?1 AND b = ?2")?
        .exists(params![a, b])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::sqlite::SqliteStore;
    use crate::store::sqlite::test_support::{message, user};

    async fn pairs(store: &SqliteStore) -> Vec<(PersonId, PersonId)> {
        store
            .read(|c| {
                Ok(c.prepare("SELECT a, b FROM contacts ORDER BY a, b")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .unwrap()
    }

    /// A pair is stored with the first message either way, once; a note to self is none; a
    /// job refused after it wrote the pair leaves no pair, and the writer's memory does not
    /// think it stored, so the next send stores it.
    #[tokio::test]
    async fn the_first_message_between_two_persons_makes_them_contacts() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let a = user(&store, "a@x").await;
        let b = user(&store, "b@x").await;
        let c = user(&store, "c@x").await;
        store.append_message(message(&a, "1", "b@x")).await.unwrap();
        store.append_message(message(&b, "2", "a@x")).await.unwrap();
        store.append_message(message(&a, "3", "a@x")).await.unwrap();
        assert_eq!(pairs(&store).await, [(a.person, b.person)]);
        let (pc, pa) = (c.person, a.person);
        let refused: Result<(), StoreError> = store
            .write(move |tx| {
                record(tx, pc, pa)?;
                Err(StoreError::BadPosition(
                    "refused after writing the pair".into(),
                ))
            })
            .await;
        assert!(refused.is_err());
        assert_eq!(pairs(&store).await, [(a.person, b.person)]);
        store.append_message(message(&c, "5", "a@x")).await.unwrap();
        assert_eq!(
            pairs(&store).await,
            [(a.person, b.person), (a.person, c.person)]
        );
        let (ab, bc) = store
            .read(move |conn| {
                Ok((
                    are_contacts(conn, b.person, a.person)?,
                    are_contacts(conn, b.person, c.person)?,
                ))
            })
            .await
            .unwrap();
        assert!(ab && !bc);
    }
}

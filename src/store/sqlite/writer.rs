//! The writer thread and the connection's setup: group commit, checkpoints, savepoints and
//! migrations.
//!
//! Group commit: the writer takes every job waiting in its queue (up to [`MAX_BATCH`]), runs
//! each inside its own SAVEPOINT (so one refusal rolls back only itself), commits once, and only
//! then hands every job's outcome to the commit sink. A `sent` therefore never precedes
//! durability.

use std::cell::RefCell;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::mpsc;

use super::recipients::Recipients;
use super::seqs::{Heads, Tx};
use crate::store::StoreError;
use crate::store::commit::{CommitSink, Outcome};

/// The most jobs one transaction takes (the default group-commit size).
pub const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer; senders wait (back-pressure) when it is full.
pub(super) const QUEUE: usize = 4096;
/// Read connections.
pub(super) const READERS: usize = 4;
/// WAL pages between the writer's own checkpoints (16 MiB at the 1 KiB pages of new databases,
/// 64 MiB at the 4 KiB pages of older ones).
pub(super) const WAL_PAGES: i64 = 16_384;

/// The schema, in order; `user_version` counts those applied.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_sync.sql"),
    include_str!("../migrations/0003_admin.sql"),
    include_str!("../migrations/0004_files.sql"),
    include_str!("../migrations/0005_person_epoch.sql"),
    include_str!("../migrations/0006_upload_quota.sql"),
    include_str!("../migrations/0007_lean_log.sql"),
    include_str!("../migrations/0008_mid_no_autoincrement.sql"),
    include_str!("../migrations/0009_one_row_per_send.sql"),
    include_str!("../migrations/0010_user_active.sql"),
    include_str!("../migrations/0011_presence_acl.sql"),
    include_str!("../migrations/0012_message_origin.sql"),
    include_str!("../migrations/0013_webhook_outbox.sql"),
    include_str!("../migrations/0015_contacts.sql"),
    include_str!("../migrations/0016_event_data.sql"),
    include_str!("../migrations/0017_webhook_presence.sql"),
];

/// A job that ran, waiting for its transaction's commit to learn its outcome.
pub(super) type Pending = Box<dyn FnOnce(Result<(), StoreError>) -> Outcome + Send>;
/// Told the number of jobs and the time of every store transaction (for metrics).
pub type BatchObserver = Box<dyn Fn(usize, std::time::Duration) + Send>;
/// A write: run inside the batch's transaction (`Some`), or refused unrun (`None`) when that
/// transaction is already gone.
pub(super) type Job = Box<dyn FnOnce(Option<&Tx<'_>>) -> Pending + Send>;

/// SQLite's page size for new databases. Every commit appends each page it changed to the WAL
/// whole: a send changed about six pages (the message, its dedup index, two log rows, the
/// `events_mid` index, the persons' seq counters; four since migration 0009), so 4 KiB pages wrote ~24 KiB per commit and
/// `pwrite` was a third of the writer's CPU. With 1 KiB pages the store commits 35–40% more
/// sends per second (`octet-loadtest store`, loadtest/RESULTS.md); rows here are small, and a
/// 64 KiB body simply spans more overflow pages.
pub(super) const PAGE_SIZE: u32 = 1024;

/// How often the writer asks for a checkpoint while it commits.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The writer thread: takes the waiting jobs (up to `max_batch`), runs each in its own savepoint
/// of one `BEGIN IMMEDIATE … COMMIT`, then hands every outcome to the sink. Ends once every
/// [`super::SqliteStore`] handle is dropped.
pub(super) fn run_writer(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    observer: Option<BatchObserver>,
    sink: Arc<dyn CommitSink>,
    checkpoint: std::sync::mpsc::SyncSender<()>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let mut checkpoint_asked = std::time::Instant::now();
    // Each person's log head (`seqs`): updated only by jobs that commit.
    let heads = RefCell::new(Heads::default());
    heads.borrow_mut().recipients = Recipients::watching(&conn);
    let tx = Tx::new(&conn, &heads);
    // blocking_recv returns None once every SqliteStore handle is dropped: the thread ends.
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let jobs = batch.len();
        if let Err(err) = exec(&conn, "BEGIN IMMEDIATE") {
            // Dropping the jobs drops their reply channels: each caller sees StoreError::Closed.
            tracing::error!(error = %err, "store could not begin a transaction");
            batch.clear();
            continue;
        }
        // If SQLite rolls the whole transaction back on its own (disk full, I/O error), a later
        // SAVEPOINT would open and commit a transaction of its own: refuse the rest instead.
        let pending: Vec<Pending> = batch
            .drain(..)
            .map(|job| job((!conn.is_autocommit()).then_some(&tx)))
            .collect();
        let commit = exec(&conn, "COMMIT").map_err(|err| {
            tracing::error!(error = %err, "store commit failed");
            let _ = exec(&conn, "ROLLBACK");
            err
        });
        match commit {
            Ok(()) => heads.borrow_mut().committed(),
            Err(_) => heads.borrow_mut().rolled_back(),
        }
        if let Some(observe) = &observer {
            observe(jobs, started.elapsed());
        }
        if checkpoint_asked.elapsed() >= CHECKPOINT_EVERY {
            // Full means one is already pending.
            let _ = checkpoint.try_send(());
            checkpoint_asked = std::time::Instant::now();
        }
        // Delivery and the callers' wake-ups happen on the sink's side: this thread only
        // commits.
        let outcomes = pending
            .into_iter()
            .map(|pending| {
                pending(match &commit {
                    Ok(()) => Ok(()),
                    Err(err) => Err(StoreError::Commit(err.to_string())),
                })
            })
            .collect();
        sink.publish(outcomes);
    }
}

/// Runs PASSIVE checkpoints when the writer asks: they copy committed WAL frames into the
/// database file beside the writer, never blocking it. Ends with the writer thread.
pub(super) fn run_checkpointer(conn: Connection, wanted: std::sync::mpsc::Receiver<()>) {
    while wanted.recv().is_ok() {
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %err, "checkpoint failed; retrying on the next request");
        }
    }
}

/// Runs `f` inside `SAVEPOINT job`: an `Err` rolls back what `f` wrote and nothing else, the
/// seqs it took included (they reach the batch's heads only when the savepoint is released).
pub(super) fn in_savepoint<T>(
    tx: &Tx<'_>,
    f: impl FnOnce(&Tx<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    exec(tx, "SAVEPOINT job")?;
    let result = f(tx);
    let ended = match &result {
        Ok(_) => exec(tx, "RELEASE job"),
        Err(_) => exec(tx, "ROLLBACK TO job").and_then(|()| exec(tx, "RELEASE job")),
    };
    let mut heads = tx.heads();
    match (&result, ended) {
        (Ok(_), Ok(())) => heads.job_released(),
        (Err(_), Ok(())) => heads.job_rolled_back(),
        (_, Err(err)) => {
            // What is left of this job's writes is unknown: the heads are read again from the
            // rows, which are right whatever commits.
            heads.reset();
            return Err(err.into());
        }
    }
    result
}

/// Runs one transaction-control statement from the connection's statement cache: these run
/// several times per send, and `execute_batch` parsed them anew each time (callgrind: SQLite's
/// parser was 6% of the broker's instructions on the fan-out workload).
pub(super) fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The settings every connection (writer, readers, checkpointer) runs with.
pub(super) fn configure(conn: &Connection) -> Result<(), StoreError> {
    // NORMAL in WAL mode survives a process crash (kill -9); only power loss can lose the last
    // transactions. `--sync full` switches the writer to FULL.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

/// Applies the migrations past the database's `user_version`, each in its own transaction.
///
/// They run with foreign keys off, as SQLite's procedure for rebuilding a table asks (0008
/// rebuilds `messages`, which `events` and `message_files` reference: dropping the old table
/// with foreign keys on would delete or refuse through them). The pragma is a no-op inside a
/// transaction, so it is switched around the loop; each migration commits only if
/// `foreign_key_check` finds nothing, and foreign keys are on again afterwards whatever happens.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version >= MIGRATIONS.len() {
        return Ok(());
    }
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let applied = apply_migrations(conn, version);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    applied
}

fn apply_migrations(conn: &mut Connection, version: usize) -> Result<(), StoreError> {
    for (idx, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        let violation: Option<String> = tx
            .prepare("PRAGMA foreign_key_check")?
            .query_map([], |r| {
                Ok(format!(
                    "{} row {:?} -> {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, String>(2)?
                ))
            })?
            .next()
            .transpose()?;
        if let Some(violation) = violation {
            return Err(StoreError::Corrupt(format!(
                "migration {} leaves a foreign key unmet: {violation}",
                idx + 1
            )));
        }
        tx.pragma_update(None, "user_version", idx + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::sqlite::test_support::user;
    use crate::store::{NewMessage, NewUser, Store, TokenRequest};

    fn page_size(dir: &Path) -> u32 {
        Connection::open(dir.join("octet.db"))
            .unwrap()
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap()
    }

    /// Two users and one message between them, read back through the store.
    async fn send_one(store: &SqliteStore) {
        let ids = [user(store, "a@page").await, user(store, "b@page").await];
        let msg = NewMessage {
            from: ids[0].clone(),
            client_id: "c1".into(),
            to: "b@page".into(),
            body: serde_json::value::RawValue::from_string("{\"t\":\"hi\"}".into()).unwrap(),
            files: Vec::new(),
            ts: 1,
            accepted: std::time::Instant::now(),
        };
        let sent = store.append_message(msg).await.unwrap();
        let events = store.events_after(ids[1].person, 0, 100, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].seq, sent.recipient_seq);
    }

    #[tokio::test]
    async fn new_databases_get_small_pages_and_old_ones_keep_theirs() {
        let fresh = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(fresh.path()).unwrap();
        send_one(&store).await;
        assert_eq!(page_size(fresh.path()), PAGE_SIZE);

        // A database made by an earlier octet, with SQLite's default 4 KiB pages.
        let old = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(old.path().join("octet.db")).unwrap();
            conn.pragma_update(None, "page_size", 4096).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            conn.execute_batch("CREATE TABLE t (x); DROP TABLE t;")
                .unwrap();
        }
        let store = SqliteStore::open(old.path()).unwrap();
        send_one(&store).await;
        assert_eq!(page_size(old.path()), 4096);
    }

    /// Migration 0005: persons from before it keep the database's epoch (their devices still
    /// catch up after the upgrade); persons created after it get their own.
    #[tokio::test]
    async fn migrated_persons_keep_the_database_epoch_and_new_ones_get_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let db_epoch: String = {
            let mut conn = Connection::open(dir.path().join("octet.db")).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..4] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 4).unwrap();
            tx.execute(
                "INSERT INTO users (uid, address, created_at) VALUES (1, 'old@x', 0)",
                [],
            )
            .unwrap();
            tx.execute("INSERT INTO persons (person) VALUES (1)", [])
                .unwrap();
            let epoch = tx
                .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
                    r.get(0)
                })
                .unwrap();
            tx.commit().unwrap();
            epoch
        };
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.head(1).await.unwrap().epoch, db_epoch);
        let user = NewUser {
            address: "new@x".into(),
            name: None,
            token: TokenRequest::None,
        };
        let uid = store.useradd(user, 0).await.unwrap().uid;
        let fresh = store.head(uid).await.unwrap().epoch;
        assert_eq!(fresh.len(), 16);
        assert_ne!(fresh, db_epoch);
    }
}

//! The embedded store: SQLite in WAL mode, one writer thread with group commit, and a few read
//! connections used through `spawn_blocking`.
//!
//! This file holds the [`SqliteStore`] handle: opening, the read and write paths, and the
//! [`Store`] methods, each a thin wrapper over one function of the modules below.
//!
//! - `writer`: the writer thread (group commit), checkpoints, savepoints, schema migrations;
//! - `users`: users, persons, devices and tokens;
//! - `log`: each person's event log (messages, profile, read markers);
//! - `retention`: pruning each log's expired prefix and the messages no log holds;
//! - `receipts`: events one person's action appends to other persons' logs;
//! - `files`: blobs, uploads and their pruning;
//! - `app`: the app's secrets, the URL key and totals.

mod active;
mod app;
mod contacts;
mod devices;
mod files;
mod log;
mod methods;
#[cfg(test)]
mod migration_tests;
mod outbox;
mod presence;
mod receipts;
mod recipients;
mod retention;
mod seqs;
#[cfg(test)]
mod test_support;
mod users;
mod writer;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use async_trait::async_trait;
use rusqlite::Connection;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use self::seqs::Tx;
use self::writer::{
    Job, PAGE_SIZE, QUEUE, READERS, WAL_PAGES, configure, in_savepoint, migrate, run_checkpointer,
    run_writer,
};
use super::commit::{
    Answer, AnswerOnly, CommitSink, Committed, CommittedMessage, Committing, Outcome,
};
use super::{
    AppCredentials, Appended, BlobDir, BlobMeta, CallRecord, FileRecord, Identity, IssuedUser,
    LogEvent, LogHead, Marker, NewFile, NewMessage, NewOutboxEvent, NewUser, OutboxEvent,
    OutboxOptions, OutboxStatus, PersonDevices, PersonId, Removed, Revoked, Store, StoreError,
    StoreStats, UserKey,
};
use super::{PresenceAcl, PresenceCheck};
use crate::auth::TokenHash;
use crate::protocol::{DeviceEntry, Millis, Uid};

pub use self::devices::{OnlineView, nobody_online};
pub use self::writer::{BatchObserver, MAX_BATCH};

/// How a store is opened.
pub struct StoreOptions {
    /// The most jobs per transaction (1 turns group commit off; the load generator's `store`
    /// benchmark compares the two).
    pub max_batch: usize,
    /// Every commit waits for an fsync (survives power loss).
    pub full_sync: bool,
    /// Told the size and duration of every transaction.
    pub observer: Option<BatchObserver>,
    /// Gets every transaction's outcomes: what was committed, and the callers' answers.
    pub sink: Arc<dyn CommitSink>,
    /// Webhooks are configured: messages and reads also queue webhook events, in the same
    /// transaction. `None` writes no outbox row at all.
    pub outbox: Option<OutboxOptions>,
    /// Who is online, for the device lists of `devices_changed` and `devices`.
    pub online: OnlineView,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            max_batch: MAX_BATCH,
            full_sync: false,
            observer: None,
            sink: Arc::new(AnswerOnly),
            outbox: None,
            online: nobody_online(),
        }
    }
}

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    blobs: BlobDir,
    /// Blobs whose rows a pruning removed and whose bytes go once that commit is done; an
    /// upload of the same bytes in between takes its blob back out (both run on the writer
    /// thread, so the two never race).
    doomed: Arc<Mutex<HashSet<String>>>,
    /// Where the next retention step starts: persons after this id (0: from the first).
    prune_after: Mutex<PersonId>,
    /// Whether a send must check that its recipient is not disabled.
    any_disabled: active::AnyDisabled,
    /// Webhooks configured: sends and reads queue events (`outbox.rs`).
    outbox: Option<OutboxOptions>,
    /// Who is online (`StoreOptions::online`).
    online: OnlineView,
}

impl SqliteStore {
    /// Opens (creating if needed) `octet.db` in `dir` with the default options (answers only,
    /// nobody told of commits), runs migrations and starts the writer.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(dir, StoreOptions::default())
    }

    /// Opens with `options`.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<SqliteStore, StoreError> {
        let StoreOptions {
            max_batch,
            full_sync,
            observer,
            sink,
            outbox,
            online,
        } = options;
        let max_batch = max_batch.max(1);
        let path = dir.join("octet.db");
        let mut writer = Connection::open(&path)?;
        // Only takes effect while the file is new (a database keeps the page size it was
        // created with; in WAL mode only a VACUUM after leaving WAL changes it).
        writer.pragma_update(None, "page_size", PAGE_SIZE)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        configure(&writer)?;
        if full_sync {
            writer.pragma_update(None, "synchronous", "FULL")?;
        }
        migrate(&mut writer)?;
        let any_disabled = active::AnyDisabled::load(&writer)?;
        let blobs = BlobDir::new(dir).synced(full_sync);
        files::remove_orphans(&writer, &blobs)?;
        let readers = (0..READERS)
            .map(|_| {
                let conn = Connection::open(&path)?;
                configure(&conn)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // A checkpoint (copying the WAL back into the database file, then an fsync) inside a
        // writer's COMMIT took 5-10 ms and stalled every send queued behind it, about 18 times a
        // second at 3,000 sends/s with SQLite's default of one per 1,000 WAL pages. Here a
        // helper thread copies committed frames every 100 ms (PASSIVE: beside the writer,
        // never blocking it), and the writer checkpoints itself only every WAL_PAGES pages,
        // when little is left to copy; that keeps the WAL bounded and restarting it.
        writer.pragma_update(None, "wal_autocheckpoint", WAL_PAGES)?;
        let checkpointer = Connection::open(&path)?;
        configure(&checkpointer)?;
        let (checkpoint, wanted) = std::sync::mpsc::sync_channel(1);
        thread::Builder::new()
            .name("octet-store-checkpoint".into())
            .spawn(move || run_checkpointer(checkpointer, wanted))
            .map_err(|_| StoreError::Closed)?;
        let (jobs, rx) = mpsc::channel(QUEUE);
        thread::Builder::new()
            .name("octet-store-writer".into())
            .spawn(move || run_writer(writer, rx, max_batch, observer, sink, checkpoint))
            .map_err(|_| StoreError::Closed)?;
        Ok(SqliteStore {
            jobs,
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
            blobs,
            doomed: Arc::default(),
            prune_after: Mutex::new(0),
            any_disabled,
            outbox,
            online,
        })
    }

    /// Runs `f` in the writer's next transaction, in its own savepoint; answers after commit.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_committing(move |conn| f(conn).map(|value| (value, None)))
            .await
    }

    /// Like [`SqliteStore::write`]; what `f` reports as committed goes to the commit sink with
    /// the answer, in commit order.
    async fn write_committing<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Committing<T> + Send + 'static,
    {
        self.write_then(f, |_| {}).await
    }

    /// Like [`SqliteStore::write_committing`], and runs the store's own `hook` on the writer
    /// thread right after a successful commit (for bookkeeping that must be ordered with the
    /// writer's other jobs, like deleting a pruned blob's bytes).
    async fn write_then<T, F, H>(&self, f: F, hook: H) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Committing<T> + Send + 'static,
        H: FnOnce(&T) + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => in_savepoint(conn, f),
                None => Err(StoreError::Commit(
                    "the batch's transaction was rolled back".into(),
                )),
            };
            Box::new(move |commit: Result<(), StoreError>| {
                let (result, committed) = match commit.and(result) {
                    Ok((value, committed)) => {
                        hook(&value);
                        (Ok(value), committed)
                    }
                    Err(err) => (Err(err), None),
                };
                Outcome {
                    committed,
                    answer: Answer::new(move || {
                        let _ = tx.send(result);
                    }),
                }
            })
        });
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a short read `f` on this thread if a read connection is free right now (one
    /// indexed lookup costs less than handing it to the blocking pool and back); `None` if
    /// every reader is busy.
    fn try_read_here<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        let conn = (0..n).find_map(|i| self.readers[(start + i) % n].try_lock().ok())?;
        Some((|| {
            let tx = conn.unchecked_transaction()?;
            let result = f(&tx);
            tx.finish()?;
            result
        })())
    }

    /// Runs `f` on a read connection off the async workers.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        let idx = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let conn = readers[idx].lock().unwrap_or_else(|p| p.into_inner());
            // One read transaction: every statement of `f` sees the same snapshot.
            let tx = conn.unchecked_transaction()?;
            let result = f(&tx);
            tx.finish()?;
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// What a write that logged `devices_changed` events hands the commit sink (nothing when it
/// logged none).
fn devices_committed(markers: Vec<Marker>) -> Option<Committed> {
    (!markers.is_empty()).then_some(Committed::Devices(markers))
}

/// Every SQLite failure the store's functions meet (`?` on a rusqlite call) is the backend's
/// own: [`StoreError::Database`], with the rusqlite error as its source.
impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> StoreError {
        StoreError::Database(Box::new(err))
    }
}

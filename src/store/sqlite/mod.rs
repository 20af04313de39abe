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
#[cfg(test)]
mod migration_tests;
mod outbox;
mod presence;
mod receipts;
mod recipients;
mod retention;
mod seqs;
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

#[async_trait]
impl Store for SqliteStore {
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read(app::stats).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // The writer takes jobs in order, so this one commits after every earlier one.
        self.write(|_| Ok(())).await
    }

    async fn app_credentials(&self) -> Result<AppCredentials, StoreError> {
        self.read(app::app_credentials).await
    }

    async fn set_app_credentials(&self, creds: AppCredentials) -> Result<(), StoreError> {
        self.write(move |conn| app::set_app_credentials(conn, creds))
            .await
    }

    async fn useradd(&self, req: NewUser, now: Millis) -> Result<IssuedUser, StoreError> {
        self.useradd_active(req, None, now).await
    }

    async fn useradd_active(
        &self,
        req: NewUser,
        active: Option<bool>,
        now: Millis,
    ) -> Result<IssuedUser, StoreError> {
        let any_disabled = self.any_disabled.clone();
        let online = self.online.clone();
        self.write_committing(move |conn| {
            let (issued, markers) =
                devices::useradd(conn, req, active, &any_disabled, now, &online)?;
            Ok((issued, devices_committed(markers)))
        })
        .await
    }

    async fn devices(&self, who: UserKey) -> Result<PersonDevices, StoreError> {
        self.read(move |conn| users::devices(conn, &who)).await
    }

    async fn authenticate(
        &self,
        hash: TokenHash,
        appid: &str,
        now: Millis,
    ) -> Result<Identity, StoreError> {
        // Every login checks its token twice: one indexed lookup each, cheaper than the two
        // thread hand-offs of a blocking-pool read, so it runs right here when a reader
        // connection is free (never waiting for one), and on the pool otherwise.
        if let Some(found) =
            self.try_read_here(|conn| users::check_token(conn, &hash, Some(appid), now))
        {
            return found;
        }

        let appid = appid.to_string();
        self.read(move |conn| users::check_token(conn, &hash, Some(&appid), now))
            .await
    }

    async fn identify(&self, hash: TokenHash, now: Millis) -> Result<Identity, StoreError> {
        if let Some(found) = self.try_read_here(|conn| users::check_token(conn, &hash, None, now)) {
            return found;
        }
        self.read(move |conn| users::check_token(conn, &hash, None, now))
            .await
    }

    async fn resolve(&self, address: &str) -> Result<(PersonId, String), StoreError> {
        let address = address.to_string();
        self.read(move |conn| users::resolve(conn, address)).await
    }

    async fn touch(&self, seen: Vec<(Uid, Millis)>) -> Result<(), StoreError> {
        self.write(move |conn| users::touch(conn, seen)).await
    }

    async fn append_message(&self, msg: NewMessage) -> Result<Appended, StoreError> {
        let any_disabled = self.any_disabled.clone();
        let outbox = self.outbox.clone();
        let wake = outbox.as_ref().and_then(|o| o.wake.clone());
        let (appended, _) = self
            .write_then(
                move |conn| {
                    let appended = log::append_message(conn, &msg)?;
                    // Checked after the append, in its savepoint (a refusal rolls it back): a
                    // retry of a message stored before the recipient was disabled is still
                    // answered as sent.
                    if !appended.duplicate && any_disabled.get() {
                        active::check_receives(conn, &msg.to)?;
                    }
                    // The push event commits with the message, or neither does.
                    let queued = match &outbox {
                        Some(opts) => outbox::on_message(conn, opts, msg.from.person, &appended)?,
                        None => false,
                    };
                    let committed = (!appended.duplicate).then(|| {
                        Committed::Message(CommittedMessage {
                            appended: appended.clone(),
                            sender: msg.from.person,
                            sender_uid: msg.from.uid,
                            sender_device: msg.from.device,
                            body: msg.body,
                            accepted: msg.accepted,
                        })
                    });
                    Ok(((appended, queued), committed))
                },
                move |&(_, queued): &(Appended, bool)| {
                    if let (true, Some(wake)) = (queued, &wake) {
                        wake();
                    }
                },
            )
            .await?;
        Ok(appended)
    }

    async fn head(&self, person: PersonId) -> Result<LogHead, StoreError> {
        // Read at every login: one indexed lookup, like the token check, so it too runs here
        // when a reader connection is free.
        if let Some(found) = self.try_read_here(|conn| log::log_head(conn, person)) {
            return found;
        }
        self.read(move |conn| log::log_head(conn, person)).await
    }

    async fn events_after(
        &self,
        person: PersonId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        self.read(move |conn| log::events_after(conn, person, after, upto, limit))
            .await
    }

    async fn events_before(
        &self,
        person: PersonId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        self.read(move |conn| log::events_before(conn, person, before, limit))
            .await
    }

    async fn ack(&self, who: Identity, seq: u64, ts: Millis) -> Result<(), StoreError> {
        self.write_committing(move |conn| {
            let receipts = receipts::ack(conn, &who, seq, ts)?;
            Ok(((), Some(Committed::Receipts(receipts))))
        })
        .await
    }

    async fn mark_read(
        &self,
        who: Identity,
        peer: String,
        upto: u64,
        ts: Millis,
    ) -> Result<(), StoreError> {
        let outbox = self.outbox.clone();
        self.write_then(
            move |conn| {
                let markers = log::mark_read(conn, &who, &peer, upto, ts)?;
                let queued = match outbox {
                    Some(_) => outbox::on_read(conn, &who, &markers)?,
                    None => false,
                };
                Ok((queued, Some(Committed::Read(markers))))
            },
            {
                let wake = self.outbox.as_ref().and_then(|o| o.wake.clone());
                move |queued: &bool| {
                    if let (true, Some(wake)) = (*queued, &wake) {
                        wake();
                    }
                }
            },
        )
        .await
        .map(|_| ())
    }

    async fn append_call_record(&self, record: CallRecord) -> Result<(), StoreError> {
        let outbox = self.outbox.is_some();
        let wake = self.outbox.as_ref().and_then(|o| o.wake.clone());
        self.write_then(
            move |conn| {
                let markers = receipts::append_call_record(conn, &record)?;
                // The `call_ended` event commits with the record, or neither does.
                let queued = outbox && outbox::on_call_record(conn, &record, &markers)?;
                Ok((queued, Some(Committed::CallRecord(markers))))
            },
            move |queued: &bool| {
                if let (true, Some(wake)) = (*queued, &wake) {
                    wake();
                }
            },
        )
        .await
        .map(|_| ())
    }

    async fn set_profile(
        &self,
        person: PersonId,
        patch: serde_json::Map<String, serde_json::Value>,
        ts: Millis,
    ) -> Result<Vec<Marker>, StoreError> {
        self.write_committing(move |conn| {
            let markers = log::set_profile(conn, person, patch, ts)?;
            Ok((markers.clone(), Some(Committed::Profile(markers))))
        })
        .await
    }

    async fn profile(&self, address: &str) -> Result<(String, Box<RawValue>, u64), StoreError> {
        let address = address.to_string();
        self.read(move |conn| log::profile(conn, address)).await
    }

    async fn prune(
        &self,
        before_ts: Millis,
        ids_before_ts: Millis,
        max_events: usize,
    ) -> Result<usize, StoreError> {
        // Short transactions of a few hundred persons each (sends queue behind each one), until
        // `max_events` went or every person was looked at once since the first step.
        let started = *self.prune_after.lock().unwrap_or_else(|p| p.into_inner());
        let mut after = started;
        let mut restarted = started == 0;
        let mut removed = 0;
        loop {
            let want = max_events - removed;
            let step = self
                .write(move |tx| retention::prune_step(tx, after, before_ts, ids_before_ts, want))
                .await?;
            removed += step.removed;
            after = step.next;
            if step.wrapped {
                after = 0;
            }
            *self.prune_after.lock().unwrap_or_else(|p| p.into_inner()) = after;
            if removed >= max_events {
                return Ok(removed);
            }
            if step.wrapped {
                // A pass that began mid-way goes round once more to see the persons before
                // where it began (some twice: harmless).
                if restarted {
                    return Ok(removed);
                }
                restarted = true;
            }
        }
    }

    async fn own_blob(
        &self,
        sha256: &str,
        uploader: PersonId,
    ) -> Result<Option<BlobMeta>, StoreError> {
        let sha256 = sha256.to_string();
        self.read(move |conn| files::own_blob(conn, &sha256, uploader))
            .await
    }

    async fn uploaded_since(&self, uploader: PersonId, since: Millis) -> Result<u64, StoreError> {
        self.read(move |conn| files::uploaded_since(conn, uploader, since))
            .await
    }

    async fn add_file(&self, file: NewFile) -> Result<FileRecord, StoreError> {
        let blobs = self.blobs.clone();
        let doomed = self.doomed.clone();
        self.write(move |conn| files::add_file(conn, &blobs, &doomed, file))
            .await
    }

    async fn file(&self, id: &str, reader: Option<PersonId>) -> Result<FileRecord, StoreError> {
        let id = id.to_string();
        self.read(move |conn| files::readable_file(conn, &id, reader))
            .await
    }

    async fn prune_files(
        &self,
        unsent_before: Millis,
        max_files: usize,
    ) -> Result<usize, StoreError> {
        let doomed = self.doomed.clone();
        let blobs = self.blobs.clone();
        let (files, _) = self
            .write_then(
                {
                    let doomed = doomed.clone();
                    move |conn| {
                        files::prune_files(conn, &doomed, unsent_before, max_files)
                            .map(|pruned| (pruned, None))
                    }
                },
                move |(_, gone): &(usize, Vec<String>)| {
                    let mut doomed = doomed.lock().unwrap_or_else(|p| p.into_inner());
                    for sha256 in gone {
                        if doomed.remove(sha256) {
                            blobs.remove(sha256);
                        }
                    }
                },
            )
            .await?;
        Ok(files)
    }

    async fn url_key(&self) -> Result<[u8; 32], StoreError> {
        self.write(|tx| app::url_key(tx)).await
    }

    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.read(move |conn| app::meta(conn, &key)).await
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |conn| app::set_meta(conn, &key, &value))
            .await
    }

    async fn tokendel(&self, who: UserKey) -> Result<Revoked, StoreError> {
        let online = self.online.clone();
        self.write_committing(move |conn| {
            let (revoked, markers) = devices::tokendel(conn, &who, devices::now(), &online)?;
            Ok((revoked, devices_committed(markers)))
        })
        .await
    }

    async fn userdel(&self, who: UserKey) -> Result<Removed, StoreError> {
        let online = self.online.clone();
        self.write_committing(move |conn| {
            let (removed, markers) = devices::userdel(conn, &who, devices::now(), &online)?;
            Ok((removed, devices_committed(markers)))
        })
        .await
    }

    async fn device_list(&self, person: PersonId) -> Result<Vec<DeviceEntry>, StoreError> {
        let online = self.online.clone();
        self.read(move |conn| devices::device_list(conn, person, &online(person)))
            .await
    }

    async fn revoke_device(
        &self,
        who: Identity,
        uid: Uid,
        now: Millis,
    ) -> Result<Revoked, StoreError> {
        let online = self.online.clone();
        self.write_committing(move |conn| {
            let (revoked, markers) = devices::revoke(conn, &who, uid, now, &online)?;
            Ok((revoked, devices_committed(markers)))
        })
        .await
    }

    async fn presence_check(
        &self,
        watcher: PersonId,
        target: PersonId,
        with_contacts: bool,
    ) -> Result<PresenceCheck, StoreError> {
        self.read(move |conn| presence::check(conn, watcher, target, with_contacts))
            .await
    }

    async fn presence_acl(&self, person: PersonId) -> Result<PresenceAcl, StoreError> {
        self.read(move |conn| presence::acl(conn, person)).await
    }

    async fn set_presence_acl(
        &self,
        person: PersonId,
        allow: Option<Vec<PersonId>>,
        deny: Option<Vec<PersonId>>,
    ) -> Result<PresenceAcl, StoreError> {
        self.write(move |conn| presence::set_acl(conn, person, allow, deny))
            .await
    }

    async fn outbox_peek(
        &self,
        limit: usize,
        with_body: bool,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        self.read(move |conn| outbox::peek(conn, limit, with_body))
            .await
    }

    async fn outbox_delete(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.write(move |conn| outbox::delete(conn, &ids)).await
    }

    async fn outbox_failed(
        &self,
        ids: Vec<i64>,
        next_at: Millis,
        error: String,
        window_start: Millis,
    ) -> Result<usize, StoreError> {
        self.write(move |conn| outbox::failed(conn, &ids, next_at, &error, window_start))
            .await
    }

    async fn outbox_bound(&self, max_pending: u64) -> Result<usize, StoreError> {
        self.write(move |conn| outbox::bound(conn, max_pending))
            .await
    }

    async fn outbox_status(&self, limit: usize) -> Result<OutboxStatus, StoreError> {
        self.read(move |conn| outbox::status(conn, limit)).await
    }

    async fn outbox_write(&self, event: NewOutboxEvent) -> Result<Option<i64>, StoreError> {
        if self.outbox.is_none() {
            return Ok(None);
        }
        let wake = self.outbox.as_ref().and_then(|o| o.wake.clone());
        self.write_then(
            move |conn| Ok((outbox::write(conn, &event)?, None)),
            move |row: &Option<i64>| {
                if let (Some(_), Some(wake)) = (row, &wake) {
                    wake();
                }
            },
        )
        .await
    }

    async fn outbox_retry(&self, ids: Option<Vec<i64>>, now: Millis) -> Result<usize, StoreError> {
        self.write(move |conn| outbox::retry(conn, ids.as_deref(), now))
            .await
    }
}

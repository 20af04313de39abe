//! The embedded store: SQLite in WAL mode, one writer thread with group commit, and a few read
//! connections used through `spawn_blocking`.
//!
//! Group commit: the writer takes every job waiting in its queue (up to [`MAX_BATCH`]), runs
//! each inside its own SAVEPOINT (so one refusal rolls back only itself), commits once, and only
//! then answers every job. A `sent` therefore never precedes durability.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::files::{
    add_file, own_blob, prune_files, readable_file, remove_orphans, uploaded_since,
};
use super::{
    AppCredentials, Appended, AuthFailure, BlobMeta, CallRecord, DeviceRecord, EventKind,
    FileRecord, Identity, IssuedUser, LogEvent, LogHead, MAX_DEVICES, MAX_PROFILE_BYTES, Marker,
    NewFile, NewMessage, NewUser, OnCommit, PersonDevices, PersonId, Removed, Revoked, Store,
    StoreError, StoreStats, TokenRequest, TokenTerms, UserKey,
};
use crate::auth::{PlainToken, TokenHash};
use crate::files::BlobDir;
use crate::protocol::{Millis, Uid};

use super::receipts::{ack, append_call_record, append_marker, next_seq};

/// The most jobs one transaction takes (the default group-commit size).
pub const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer; senders wait (back-pressure) when it is full.
const QUEUE: usize = 4096;
/// Read connections.
const READERS: usize = 4;
/// WAL pages between the writer's own checkpoints (16 MiB at the 1 KiB pages of new databases,
/// 64 MiB at the 4 KiB pages of older ones).
const WAL_PAGES: i64 = 16_384;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_sync.sql"),
    include_str!("migrations/0003_admin.sql"),
    include_str!("migrations/0004_files.sql"),
    include_str!("migrations/0005_person_epoch.sql"),
    include_str!("migrations/0006_upload_quota.sql"),
];

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Told the number of jobs and the time of every store transaction (for metrics).
pub type BatchObserver = Box<dyn Fn(usize, std::time::Duration) + Send>;
/// A write: run inside the batch's transaction (`Some`), or refused unrun (`None`) when that
/// transaction is already gone.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

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
}

impl SqliteStore {
    /// Opens (creating if needed) `octet.db` in `dir`, runs migrations and starts the writer.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(dir, MAX_BATCH, false, None)
    }

    /// Opens with at most `max_batch` jobs per transaction (1 turns group commit off; the
    /// load generator's `store` benchmark compares the two), telling `observer` the size and
    /// duration of every transaction.
    /// With `full_sync`, every commit waits for an fsync (survives power loss).
    pub fn open_with(
        dir: &Path,
        max_batch: usize,
        full_sync: bool,
        observer: Option<BatchObserver>,
    ) -> Result<SqliteStore, StoreError> {
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
        let blobs = BlobDir::new(dir).synced(full_sync);
        remove_orphans(&writer, &blobs)?;
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
            .spawn(move || run_writer(writer, rx, max_batch, observer, checkpoint))
            .map_err(|_| StoreError::Closed)?;
        Ok(SqliteStore {
            jobs,
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
            blobs,
            doomed: Arc::default(),
        })
    }

    /// Runs `f` in the writer's next transaction, in its own savepoint; answers after commit.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_then(f, |_| {}).await
    }

    /// Like [`SqliteStore::write`], and runs `hook` on the writer thread after a successful
    /// commit, in commit order.
    async fn write_then<T, F, H>(&self, f: F, hook: H) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
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
                let result = commit.and(result);
                if let Ok(value) = &result {
                    hook(value);
                }
                let _ = tx.send(result);
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

#[async_trait]
impl Store for SqliteStore {
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read(|conn| {
            let count = |sql: &str| -> Result<u64, StoreError> {
                Ok(conn.query_row(sql, [], |r| r.get(0))?)
            };
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
                events: count("SELECT count(*) FROM events")?,
                apps,
            })
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // The writer takes jobs in order, so this one commits after every earlier one.
        self.write(|_| Ok(())).await
    }

    async fn app_credentials(&self) -> Result<AppCredentials, StoreError> {
        self.read(|conn| {
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
        })
        .await
    }

    async fn set_app_credentials(&self, creds: AppCredentials) -> Result<(), StoreError> {
        self.write(move |conn| {
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
        })
        .await
    }

    async fn useradd(&self, req: NewUser, now: Millis) -> Result<IssuedUser, StoreError> {
        self.write(move |conn| useradd(conn, req, now)).await
    }

    async fn devices(&self, who: UserKey) -> Result<PersonDevices, StoreError> {
        self.read(move |conn| {
            let user =
                find_user(conn, &who)?.ok_or_else(|| StoreError::NoSuchUser(who.to_string()))?;
            person_devices(conn, user.person())
        })
        .await
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
        if let Some(found) = self.try_read_here(|conn| check_token(conn, &hash, Some(appid), now)) {
            return found;
        }

        let appid = appid.to_string();
        self.read(move |conn| check_token(conn, &hash, Some(&appid), now))
            .await
    }

    async fn identify(&self, hash: TokenHash, now: Millis) -> Result<Identity, StoreError> {
        if let Some(found) = self.try_read_here(|conn| check_token(conn, &hash, None, now)) {
            return found;
        }
        self.read(move |conn| check_token(conn, &hash, None, now))
            .await
    }

    async fn resolve(&self, address: &str) -> Result<(PersonId, String), StoreError> {
        let address = address.to_string();
        self.read(move |conn| {
            let user = find_user(conn, &UserKey::Address(address.clone()))?
                .ok_or(StoreError::UnknownRecipient(address))?;
            let person = user.person();
            let primary_address = match user.primary_uid {
                Some(primary) => user_address(conn, primary)?,
                None => user.address,
            };
            Ok((person, primary_address))
        })
        .await
    }

    async fn touch(&self, seen: Vec<(Uid, Millis)>) -> Result<(), StoreError> {
        self.write(move |conn| {
            let mut update =
                conn.prepare_cached("UPDATE users SET last_seen = ?2 WHERE uid = ?1")?;
            for (uid, at) in seen {
                update.execute(params![uid, at])?;
            }
            Ok(())
        })
        .await
    }

    async fn append_message(
        &self,
        msg: NewMessage,
        on_commit: OnCommit,
    ) -> Result<Appended, StoreError> {
        self.write_then(move |conn| append_message(conn, msg), on_commit)
            .await
    }

    async fn head(&self, person: PersonId) -> Result<LogHead, StoreError> {
        // Read at every login: one indexed lookup, like the token check, so it too runs here
        // when a reader connection is free.
        if let Some(found) = self.try_read_here(|conn| log_head(conn, person)) {
            return found;
        }
        self.read(move |conn| log_head(conn, person)).await
    }

    async fn events_after(
        &self,
        person: PersonId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "{EVENT_SELECT} WHERE e.person = ?1 AND e.seq > ?2 AND e.seq <= ?3
                 ORDER BY e.seq LIMIT ?4"
            ))?;
            let rows = stmt.query_map(params![person, after, upto, limit as i64], log_event)?;
            rows.collect::<Result<Vec<_>, _>>()?.into_iter().collect()
        })
        .await
    }

    async fn events_before(
        &self,
        person: PersonId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "{EVENT_SELECT} WHERE e.person = ?1 AND e.seq < ?2 ORDER BY e.seq DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![person, before, limit as i64], log_event)?;
            let mut events = rows
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            events.reverse();
            Ok(events)
        })
        .await
    }

    async fn ack(
        &self,
        who: Identity,
        seq: u64,
        ts: Millis,
        on_commit: OnCommit<Vec<Marker>>,
    ) -> Result<Vec<Marker>, StoreError> {
        self.write_then(move |conn| ack(conn, &who, seq, ts), on_commit)
            .await
    }

    async fn mark_read(
        &self,
        who: Identity,
        peer: String,
        upto: u64,
        ts: Millis,
        on_commit: OnCommit<Vec<Marker>>,
    ) -> Result<Vec<Marker>, StoreError> {
        self.write_then(
            move |conn| mark_read(conn, &who, &peer, upto, ts),
            on_commit,
        )
        .await
    }

    async fn append_call_record(
        &self,
        record: CallRecord,
        on_commit: OnCommit<Vec<Marker>>,
    ) -> Result<Vec<Marker>, StoreError> {
        self.write_then(move |conn| append_call_record(conn, &record), on_commit)
            .await
    }

    async fn set_profile(
        &self,
        person: PersonId,
        patch: serde_json::Map<String, serde_json::Value>,
        ts: Millis,
        on_commit: OnCommit<Vec<Marker>>,
    ) -> Result<Vec<Marker>, StoreError> {
        self.write_then(move |conn| set_profile(conn, person, patch, ts), on_commit)
            .await
    }

    async fn profile(&self, address: &str) -> Result<(String, Box<RawValue>, u64), StoreError> {
        let address = address.to_string();
        self.read(move |conn| {
            let user = find_user(conn, &UserKey::Address(address.clone()))?
                .ok_or(StoreError::UnknownRecipient(address))?;
            let person = user.person();
            let (text, version): (String, u64) = conn
                .prepare_cached("SELECT profile, profile_version FROM persons WHERE person = ?1")?
                .query_row([person], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let profile =
                RawValue::from_string(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok((user_address(conn, person)?, profile, version))
        })
        .await
    }

    async fn prune(
        &self,
        before_ts: Millis,
        ids_before_ts: Millis,
        max_events: usize,
    ) -> Result<usize, StoreError> {
        self.write(move |conn| prune(conn, before_ts, ids_before_ts, max_events))
            .await
    }

    async fn own_blob(
        &self,
        sha256: &str,
        uploader: PersonId,
    ) -> Result<Option<BlobMeta>, StoreError> {
        let sha256 = sha256.to_string();
        self.read(move |conn| own_blob(conn, &sha256, uploader))
            .await
    }

    async fn uploaded_since(&self, uploader: PersonId, since: Millis) -> Result<u64, StoreError> {
        self.read(move |conn| uploaded_since(conn, uploader, since))
            .await
    }

    async fn add_file(&self, file: NewFile) -> Result<FileRecord, StoreError> {
        let blobs = self.blobs.clone();
        let doomed = self.doomed.clone();
        self.write(move |conn| add_file(conn, &blobs, &doomed, file))
            .await
    }

    async fn file(&self, id: &str, reader: Option<PersonId>) -> Result<FileRecord, StoreError> {
        let id = id.to_string();
        self.read(move |conn| readable_file(conn, &id, reader))
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
                    move |conn| prune_files(conn, &doomed, unsent_before, max_files)
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
        self.write(|conn| {
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
        })
        .await
    }

    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [&key], |r| {
                    r.get(0)
                })
                .optional()?)
        })
        .await
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [&key, &value],
            )?;
            Ok(())
        })
        .await
    }

    async fn tokendel(&self, who: UserKey) -> Result<Revoked, StoreError> {
        self.write(move |conn| {
            let user =
                find_user(conn, &who)?.ok_or_else(|| StoreError::NoSuchUser(who.to_string()))?;
            let count = conn.execute("DELETE FROM tokens WHERE uid = ?1", [user.uid])?;
            Ok(Revoked {
                person: user.person(),
                uid: user.uid,
                count: count as u64,
            })
        })
        .await
    }

    async fn userdel(&self, who: UserKey) -> Result<Removed, StoreError> {
        self.write(move |conn| {
            let user =
                find_user(conn, &who)?.ok_or_else(|| StoreError::NoSuchUser(who.to_string()))?;
            let person = user.person();
            let uids = if user.primary_uid.is_none() {
                person_uids(conn, person)?
            } else {
                vec![user.uid]
            };
            // Foreign keys cascade: linked users, tokens, the person row and its event log.
            conn.execute("DELETE FROM users WHERE uid = ?1", [user.uid])?;
            Ok(Removed { person, uids })
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// The writer thread
// ---------------------------------------------------------------------------------------------

fn run_writer(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    observer: Option<BatchObserver>,
    checkpoint: std::sync::mpsc::SyncSender<()>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let mut checkpoint_asked = std::time::Instant::now();
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
        let replies: Vec<Reply> = batch
            .drain(..)
            .map(|job| job((!conn.is_autocommit()).then_some(&conn)))
            .collect();
        let commit = exec(&conn, "COMMIT").map_err(|err| {
            tracing::error!(error = %err, "store commit failed");
            let _ = exec(&conn, "ROLLBACK");
            err
        });
        if let Some(observe) = &observer {
            observe(jobs, started.elapsed());
        }
        if checkpoint_asked.elapsed() >= CHECKPOINT_EVERY {
            // Full means one is already pending.
            let _ = checkpoint.try_send(());
            checkpoint_asked = std::time::Instant::now();
        }
        for reply in replies {
            reply(match &commit {
                Ok(()) => Ok(()),
                Err(err) => Err(StoreError::Commit(err.to_string())),
            });
        }
    }
}

/// Where a person's log stands.
fn log_head(conn: &Connection, person: PersonId) -> Result<LogHead, StoreError> {
    let head = conn
        .prepare_cached("SELECT last_seq, pruned_upto, epoch FROM persons WHERE person = ?1")?
        .query_row([person], |r| {
            Ok(LogHead {
                seq: r.get(0)?,
                pruned_upto: r.get(1)?,
                epoch: r.get(2)?,
            })
        })
        .optional()?;
    head.ok_or_else(|| StoreError::NoSuchUser(format!("with uid {person}")))
}

/// Who holds a live token; with `appid`, only if the token was issued for it.
fn check_token(
    conn: &Connection,
    hash: &TokenHash,
    appid: Option<&str>,
    now: Millis,
) -> Result<Identity, StoreError> {
    let (token_appid, expires_at, identity) =
        token_holder(conn, hash)?.ok_or(StoreError::AuthFailed(AuthFailure::Unknown))?;
    if expires_at <= now {
        return Err(StoreError::AuthFailed(AuthFailure::Expired));
    }
    if appid.is_some_and(|appid| appid != token_appid) {
        return Err(StoreError::AuthFailed(AuthFailure::WrongAppid));
    }
    Ok(identity)
}

/// SQLite's page size for new databases. Every commit appends each page it changed to the WAL
/// whole: a send changes about six pages (the message, its dedup index, two log rows, the
/// `events_mid` index, the persons' seq counters), so 4 KiB pages wrote ~24 KiB per commit and
/// `pwrite` was a third of the writer's CPU. With 1 KiB pages the store commits 35–40% more
/// sends per second (`octet-loadtest store`, loadtest/RESULTS.md); rows here are small, and a
/// 64 KiB body simply spans more overflow pages.
const PAGE_SIZE: u32 = 1024;

/// How often the writer asks for a checkpoint while it commits.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs PASSIVE checkpoints when the writer asks: they copy committed WAL frames into the
/// database file beside the writer, never blocking it. Ends with the writer thread.
fn run_checkpointer(conn: Connection, wanted: std::sync::mpsc::Receiver<()>) {
    while wanted.recv().is_ok() {
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %err, "checkpoint failed; retrying on the next request");
        }
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    exec(conn, "SAVEPOINT job")?;
    match f(conn) {
        Ok(value) => {
            exec(conn, "RELEASE job")?;
            Ok(value)
        }
        Err(err) => {
            exec(conn, "ROLLBACK TO job")?;
            exec(conn, "RELEASE job")?;
            Err(err)
        }
    }
}

/// Runs one transaction-control statement from the connection's statement cache: these run
/// several times per send, and `execute_batch` parsed them anew each time (callgrind: SQLite's
/// parser was 6% of the broker's instructions on the fan-out workload).
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    // NORMAL in WAL mode survives a process crash (kill -9); only power loss can lose the last
    // transactions. `--sync full` switches the writer to FULL.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (idx, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", idx + 1)?;
        tx.commit()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Operations (each runs inside one savepoint of the writer's transaction, or on a reader)
// ---------------------------------------------------------------------------------------------

struct UserRow {
    uid: Uid,
    address: String,
    primary_uid: Option<Uid>,
    device_id: Option<String>,
}

impl UserRow {
    fn person(&self) -> PersonId {
        self.primary_uid.unwrap_or(self.uid)
    }
}

fn find_user(conn: &Connection, key: &UserKey) -> Result<Option<UserRow>, StoreError> {
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

fn user_address(conn: &Connection, uid: Uid) -> Result<String, StoreError> {
    Ok(conn
        .prepare_cached("SELECT address FROM users WHERE uid = ?1")?
        .query_row([uid], |r| r.get(0))?)
}

fn person_uids(conn: &Connection, person: PersonId) -> Result<Vec<Uid>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT uid FROM users WHERE uid = ?1 OR primary_uid = ?1 ORDER BY primary_uid IS NOT NULL, uid",
    )?;
    let uids = stmt
        .query_map([person], |r| r.get(0))?
        .collect::<Result<Vec<Uid>, _>>()?;
    Ok(uids)
}

fn person_devices(conn: &Connection, person: PersonId) -> Result<PersonDevices, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT uid, address, device_id, appid, last_seen, acked_seq FROM users
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

fn count_users(conn: &Connection, person: PersonId) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM users WHERE uid = ?1 OR primary_uid = ?1")?
        .query_row([person], |r| r.get::<_, i64>(0))? as usize)
}

fn useradd(conn: &Connection, req: NewUser, now: Millis) -> Result<IssuedUser, StoreError> {
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
    conn: &Connection,
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
            // Its devices hold positions in the log it left. Two persons from before migration
            // 0005 share the database's epoch; then the target's log gets a new one, so no such
            // position is ever replayed against this log.
            conn.prepare_cached(
                "UPDATE persons SET epoch = lower(hex(randomblob(8))) WHERE person = ?1 AND epoch = ?2",
            )?
            .execute(params![person, left])?;
            conn.prepare_cached("UPDATE users SET primary_uid = ?2 WHERE uid = ?1")?
                .execute(params![user.uid, person])?;
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
    })
}

const EVENT_SELECT: &str = "SELECT e.seq, e.ts, e.kind, e.out, e.mid, m.from_address, m.to_address,
            m.body, e.peer, e.status, e.call, e.duration, e.data, e.version, coalesce(m.pv, 0),
            m.files
     FROM events e LEFT JOIN messages m ON m.mid = e.mid";

/// Maps one row of [`EVENT_SELECT`]; the inner result carries data that cannot be read back.
fn log_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<LogEvent, StoreError>> {
    let kind: String = r.get(2)?;
    let corrupt = |what: String| Ok(Err(StoreError::Corrupt(what)));
    let kind = match kind.as_str() {
        "message" => {
            let body: Option<String> = r.get(7)?;
            let body = match body.map(RawValue::from_string) {
                Some(Ok(body)) => body,
                Some(Err(err)) => return corrupt(format!("stored body: {err}")),
                None => return corrupt("a message event without its message".into()),
            };
            let files = match r.get::<_, Option<String>>(15)?.map(RawValue::from_string) {
                Some(Ok(files)) => Some(files),
                Some(Err(err)) => return corrupt(format!("stored attachments: {err}")),
                None => None,
            };
            EventKind::Message {
                out: r.get(3)?,
                mid: r.get(4)?,
                from: r.get(5)?,
                to: r.get(6)?,
                body,
                pv: r.get(14)?,
                files,
            }
        }
        "call" => EventKind::Call {
            call: r.get(10)?,
            peer: r.get(8)?,
            out: r.get(3)?,
            status: r.get(9)?,
            duration_ms: r.get(11)?,
        },
        "profile" => {
            let data: Option<String> = r.get(12)?;
            let profile = match data.map(RawValue::from_string) {
                Some(Ok(profile)) => profile,
                _ => return corrupt("a profile event without a readable profile".into()),
            };
            EventKind::Profile {
                address: r.get(8)?,
                profile,
                version: r.get(13)?,
            }
        }
        "receipt" => EventKind::Receipt {
            mid: r.get(4)?,
            peer: r.get(8)?,
            status: r.get(9)?,
        },
        "read" => EventKind::Read {
            upto: r.get(4)?,
            peer: r.get(8)?,
        },
        other => return corrupt(format!("unknown event kind {other}")),
    };
    Ok(Ok(LogEvent {
        seq: r.get(0)?,
        ts: r.get(1)?,
        kind,
    }))
}

/// `set_profile`: merges the patch (null removes a key), bumps the version, logs the change.
fn set_profile(
    conn: &Connection,
    person: PersonId,
    patch: serde_json::Map<String, serde_json::Value>,
    ts: Millis,
) -> Result<Vec<Marker>, StoreError> {
    let (text, version): (String, u64) = conn
        .prepare_cached("SELECT profile, profile_version FROM persons WHERE person = ?1")?
        .query_row([person], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| StoreError::NoSuchUser(format!("with uid {person}")))?;
    let mut profile: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("profile: {e}")))?;
    for (key, value) in patch {
        if value.is_null() {
            profile.remove(&key);
        } else {
            profile.insert(key, value);
        }
    }
    let text = serde_json::Value::Object(profile).to_string();
    if text.len() > MAX_PROFILE_BYTES {
        return Err(StoreError::ProfileTooLarge(text.len()));
    }
    let version = version + 1;
    conn.prepare_cached("UPDATE persons SET profile = ?2, profile_version = ?3 WHERE person = ?1")?
        .execute(params![person, text, version])?;
    let address = user_address(conn, person)?;
    let seq = next_seq(conn, person)?;
    conn.prepare_cached(
        "INSERT INTO events (person, seq, kind, ts, peer, data, version)
         VALUES (?1, ?2, 'profile', ?3, ?4, ?5, ?6)",
    )?
    .execute(params![person, seq, ts, address, text, version])?;
    let profile = RawValue::from_string(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(vec![Marker {
        person,
        event: LogEvent {
            seq,
            ts,
            kind: EventKind::Profile {
                address,
                profile,
                version,
            },
        },
    }])
}

/// `read`: a read marker in the reader's log and a `read` receipt in the peer's.
fn mark_read(
    conn: &Connection,
    who: &Identity,
    peer: &str,
    upto: u64,
    ts: Millis,
) -> Result<Vec<Marker>, StoreError> {
    let peer_user = find_user(conn, &UserKey::Address(peer.to_string()))?
        .ok_or_else(|| StoreError::UnknownRecipient(peer.to_string()))?;
    let peer_person = peer_user.person();
    let peer_address = user_address(conn, peer_person)?;
    let theirs: bool = conn
        .prepare_cached(
            "SELECT 1 FROM messages WHERE mid = ?1 AND sender_person = ?2 AND recipient_person = ?3",
        )?
        .exists(params![upto, peer_person, who.person])?;
    if !theirs || peer_person == who.person {
        return Err(StoreError::BadPosition(format!(
            "mid {upto} is not a message from {peer} to you"
        )));
    }
    // A read marker only moves forward: reading older messages again changes nothing.
    let current: Option<u64> = conn
        .prepare_cached("SELECT upto FROM read_marks WHERE person = ?1 AND peer_person = ?2")?
        .query_row(params![who.person, peer_person], |r| r.get(0))
        .optional()?;
    if current.is_some_and(|c| upto <= c) {
        return Ok(Vec::new());
    }
    conn.prepare_cached(
        "INSERT INTO read_marks (person, peer_person, upto) VALUES (?1, ?2, ?3)
         ON CONFLICT (person, peer_person) DO UPDATE SET upto = excluded.upto",
    )?
    .execute(params![who.person, peer_person, upto])?;
    // Both persons exist: the reader is logged in and the peer was just found in this
    // transaction, so neither marker is skipped.
    let own = append_marker(conn, who.person, "read", upto, &peer_address, None, ts)?;
    let receipt = append_marker(
        conn,
        peer_person,
        "receipt",
        upto,
        &who.primary_address,
        Some("read"),
        ts,
    )?;
    let markers = [(who.person, own), (peer_person, receipt)];
    Ok(markers
        .into_iter()
        .filter_map(|(person, event)| event.map(|event| Marker { person, event }))
        .collect())
}

/// Deletes the oldest expired events (at most `max_events`), records each person's horizon,
/// and removes messages no log references any more.
fn prune(
    conn: &Connection,
    before_ts: Millis,
    ids_before_ts: Millis,
    max_events: usize,
) -> Result<usize, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT person, max(seq), count(*) FROM
           (SELECT person, seq FROM events WHERE ts < ?1 ORDER BY ts LIMIT ?2)
         GROUP BY person",
    )?;
    let horizons = stmt
        .query_map(params![before_ts, max_events as i64], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, usize>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut removed = 0;
    for (person, upto, count) in horizons {
        // Everything up to the horizon goes, so a person's retained log has no holes.
        conn.prepare_cached("DELETE FROM events WHERE person = ?1 AND seq <= ?2")?
            .execute(params![person, upto])?;
        conn.prepare_cached(
            "UPDATE persons SET pruned_upto = max(pruned_upto, ?2) WHERE person = ?1",
        )?
        .execute(params![person, upto])?;
        removed += count;
    }
    if removed > 0 {
        // A message (and with it its client id, for idempotent retries) goes only once no log
        // holds it and it is older than `ids_before_ts` (the caller keeps ids at least 24 h).
        conn.prepare_cached(
            "DELETE FROM messages WHERE ts < ?1
             AND NOT EXISTS (SELECT 1 FROM events e WHERE e.mid = messages.mid)",
        )?
        .execute([ids_before_ts])?;
    }
    Ok(removed)
}

fn append_message(conn: &Connection, msg: NewMessage) -> Result<Appended, StoreError> {
    let sender = msg.from.person;
    let stored = conn
        .prepare_cached(
            "SELECT mid, ts, from_address, to_address, recipient_person, sender_seq, recipient_seq, body
             FROM messages WHERE sender_person = ?1 AND client_id = ?2",
        )?
        .query_row(params![sender, msg.client_id], |r| {
            Ok((
                Appended {
                    mid: r.get(0)?,
                    ts: r.get(1)?,
                    from: r.get(2)?,
                    to: r.get(3)?,
                    recipient: r.get(4)?,
                    sender_seq: r.get(5)?,
                    recipient_seq: r.get(6)?,
                    pv: 0, // not delivered again
                    duplicate: true,
                    files: None,
                },
                r.get::<_, String>(7)?,
            ))
        })
        .optional()?;
    if let Some((appended, body)) = stored {
        // A retry is the same message to the same person: a different body, files or
        // recipient is another message reusing the id, which must not be answered as sent.
        if body != msg.body.get()
            || attached_ids(conn, appended.mid)? != msg.files
            || !same_recipient(conn, &msg.to, &appended)?
        {
            return Err(StoreError::DuplicateId(msg.client_id));
        }
        return Ok(appended);
    }
    // Each file must be one the sender's person may read, checked in this transaction so a
    // concurrent pruning cannot take it away between the check and the message.
    let attachments = msg
        .files
        .iter()
        .map(|id| readable_file(conn, id, Some(sender)).map(|f| crate::files::attachment(&f)))
        .collect::<Result<Vec<_>, _>>()?;
    let files_json = (!attachments.is_empty()).then(|| {
        serde_json::value::to_raw_value(&attachments).expect("attachments always serialize")
    });

    let recipient = find_user(conn, &UserKey::Address(msg.to.clone()))?
        .ok_or_else(|| StoreError::UnknownRecipient(msg.to.clone()))?;
    let recipient_person = recipient.person();
    let to = if recipient.primary_uid.is_some() {
        user_address(conn, recipient_person)?
    } else {
        recipient.address
    };
    // The sender's seq and profile version in one statement: `pv` is stored with the message
    // so a replay shows the version it was sent with.
    let (sender_seq, pv): (u64, u64) = conn
        .prepare_cached(
            "UPDATE persons SET last_seq = last_seq + 1 WHERE person = ?1
             RETURNING last_seq, profile_version",
        )?
        .query_row([sender], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let recipient_seq = if recipient_person == sender {
        sender_seq
    } else {
        next_seq(conn, recipient_person)?
    };
    conn.prepare_cached(
        "INSERT INTO messages (sender_person, client_id, from_address, to_address, recipient_person,
                               sender_seq, recipient_seq, ts, body, pv, files)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        sender,
        msg.client_id,
        msg.from.primary_address,
        to,
        recipient_person,
        sender_seq,
        recipient_seq,
        msg.ts,
        msg.body.get(),
        pv,
        files_json.as_ref().map(|f| f.get()),
    ])?;
    let mid = conn.last_insert_rowid() as u64;
    if files_json.is_some() {
        let mut link = conn
            .prepare_cached("INSERT INTO message_files (mid, pos, file_id) VALUES (?1, ?2, ?3)")?;
        for (pos, id) in msg.files.iter().enumerate() {
            link.execute(params![mid, pos, id])?;
        }
    }
    let mut event = conn.prepare_cached(
        "INSERT INTO events (person, seq, kind, mid, out, ts) VALUES (?1, ?2, 'message', ?3, ?4, ?5)",
    )?;
    event.execute(params![sender, sender_seq, mid, true, msg.ts])?;
    if recipient_person != sender {
        event.execute(params![recipient_person, recipient_seq, mid, false, msg.ts])?;
    }
    Ok(Appended {
        mid,
        ts: msg.ts,
        from: msg.from.primary_address,
        to,
        recipient: recipient_person,
        sender_seq,
        recipient_seq,
        pv,
        duplicate: false,
        files: files_json,
    })
}

/// Whether `to` names the person a stored message went to: its stored primary address, or any
/// address of that person now. (A recipient deleted since is no longer anyone's address.)
fn same_recipient(conn: &Connection, to: &str, stored: &Appended) -> Result<bool, StoreError> {
    if to == stored.to {
        return Ok(true);
    }
    Ok(find_user(conn, &UserKey::Address(to.to_string()))?
        .is_some_and(|user| user.person() == stored.recipient))
}

/// The ids of the files a stored message carries, in order.
/// Read from the attachments as stored with the message, which outlive a pruned file (its
/// `message_files` rows go with it), so an honest retry still matches.
fn attached_ids(conn: &Connection, mid: u64) -> Result<Vec<String>, StoreError> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let stored: Option<String> = conn
        .prepare_cached("SELECT files FROM messages WHERE mid = ?1")?
        .query_row([mid], |r| r.get(0))?;
    let Some(stored) = stored else {
        return Ok(Vec::new());
    };
    let ids: Vec<Id> = serde_json::from_str(&stored)
        .map_err(|err| StoreError::Corrupt(format!("stored attachments: {err}")))?;
    Ok(ids.into_iter().map(|f| f.id).collect())
}

/// The holder of a token: its appid, expiry and identity.
fn token_holder(
    conn: &Connection,
    hash: &TokenHash,
) -> Result<Option<(String, i64, Identity)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT t.appid, t.expires_at, u.uid, u.address, p.uid, p.address
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
                    token_expires: expires,
                },
            ))
        })
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewMessage, NewUser, TokenRequest};

    fn page_size(dir: &Path) -> u32 {
        Connection::open(dir.join("octet.db"))
            .unwrap()
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap()
    }

    /// Two users and one message between them, read back through the store.
    async fn send_one(store: &SqliteStore) {
        let mut ids = Vec::new();
        for address in ["a@page", "b@page"] {
            let user = NewUser {
                address: address.into(),
                name: None,
                token: TokenRequest::None,
            };
            let uid = store.useradd(user, 0).await.unwrap().uid;
            ids.push(Identity {
                uid,
                address: address.into(),
                person: uid,
                primary_address: address.into(),
                token_expires: Millis::MAX,
            });
        }
        let msg = NewMessage {
            from: ids[0].clone(),
            client_id: "c1".into(),
            to: "b@page".into(),
            body: serde_json::value::RawValue::from_string("{\"t\":\"hi\"}".into()).unwrap(),
            files: Vec::new(),
            ts: 1,
        };
        let sent = store.append_message(msg, Box::new(|_| {})).await.unwrap();
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

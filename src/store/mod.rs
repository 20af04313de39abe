//! Durable state: the app, users, persons, devices, tokens, messages and each person's event log.
//!
//! [`Store`] is the seam where PostgreSQL arrives for cluster mode; [`sqlite::SqliteStore`] is
//! the embedded default. Every method is one transaction: a refusal writes nothing. The store
//! knows nothing of axum, WebSockets or the router.

pub mod blobs;
mod commit;
pub mod sqlite;
mod types;
mod webhook;

use async_trait::async_trait;
use serde_json::value::RawValue;

use crate::auth::TokenHash;
use crate::protocol::{ErrorCode, Millis, Uid};

pub use blobs::{BlobDir, attachment};
pub use commit::{Answer, AnswerOnly, CommitSink, Committed, CommittedMessage, Outcome};
pub use sqlite::{OnlineView, SqliteStore, StoreOptions, nobody_online};
pub use types::*;
pub use webhook::{
    DeadEvent, NewOutboxEvent, OutboxDevice, OutboxEvent, OutboxOptions, OutboxStatus,
};

/// Errors a caller branches on. `Display` always carries the cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named user does not exist.
    #[error("no user {0}")]
    NoSuchUser(String),
    /// The person already has [`MAX_DEVICES`] users.
    #[error("{address} already has {MAX_DEVICES} devices (the primary and 7 linked users)")]
    DeviceLimit {
        /// The primary's address.
        address: String,
    },
    /// The requested link is not allowed; the message says why.
    #[error("{0}")]
    BadLink(String),
    /// The message recipient names no user.
    #[error("no user has the address {0}")]
    UnknownRecipient(String),
    /// A client id was reused with another body.
    #[error("client id {0} was already used for a different message")]
    DuplicateId(String),
    /// The token is unknown, expired or revoked, or bound to another appid.
    #[error("authentication failed: {0}")]
    AuthFailed(AuthFailure),
    /// The database failed; the backend's own error is the source (for SQLite a
    /// `rusqlite::Error`, converted in `sqlite/mod.rs`).
    #[error("database: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A profile change would make the profile too large.
    #[error("the profile would be {0} bytes; the limit is {MAX_PROFILE_BYTES}")]
    ProfileTooLarge(usize),
    /// An `ack` or `read` names a position that does not exist for this person.
    #[error("{0}")]
    BadPosition(String),
    /// Stored data could not be read back.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The group commit failed; every job in the batch was rolled back.
    #[error("database commit: {0}")]
    Commit(String),
    /// The store's writer thread is gone (shutting down).
    #[error("the store is closed")]
    Closed,
    /// The file id names no file the person may use.
    #[error("no file {0} that this user may use; upload it with POST /files first")]
    NoSuchFile(String),
    /// The user (or its person) was disabled by the app's backend.
    #[error(
        "{0} is disabled by the app's backend; it is refused until the backend enables it again (useradd with `user.active: true`)"
    )]
    UserDisabled(String),
    /// The upload would take its person over the upload quota.
    #[error(
        "this upload would take the person over its upload quota of {quota} bytes a day ({used} bytes uploaded in the last 24 hours); upload it later, or ask the operator to raise --upload-quota-mib"
    )]
    QuotaExceeded {
        /// The quota in bytes.
        quota: u64,
        /// Bytes already uploaded in the window.
        used: u64,
    },
    /// Moving an upload into place failed.
    #[error("file storage: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// How a client is told about this refusal: the stable code and a message that says what
    /// to do. `None` for a failure of the store itself, which clients see as `internal`. The one
    /// table both the backend API and the gateway use.
    pub fn refusal(&self) -> Option<(ErrorCode, String)> {
        let code = match self {
            StoreError::NoSuchUser(_) => ErrorCode::NoSuchUser,
            StoreError::DeviceLimit { .. } => ErrorCode::DeviceLimit,
            StoreError::BadLink(_) => ErrorCode::BadLink,
            StoreError::UnknownRecipient(_) => ErrorCode::UnknownRecipient,
            StoreError::DuplicateId(_) => ErrorCode::DuplicateId,
            StoreError::BadPosition(_) | StoreError::ProfileTooLarge(_) => ErrorCode::BadValue,
            StoreError::UserDisabled(_) | StoreError::AuthFailed(AuthFailure::Disabled) => {
                ErrorCode::UserDisabled
            }
            StoreError::AuthFailed(_) => ErrorCode::AuthFailed,
            StoreError::NoSuchFile(_) => ErrorCode::NoSuchFile,
            StoreError::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            StoreError::Io(_)
            | StoreError::Database(_)
            | StoreError::Commit(_)
            | StoreError::Corrupt(_)
            | StoreError::Closed => return None,
        };
        let message = match self {
            StoreError::DeviceLimit { .. } => {
                format!("{self}; remove one with userdel before adding another device")
            }
            StoreError::DuplicateId(_) => format!("{self}; use a new id"),
            _ => self.to_string(),
        };
        Some((code, message))
    }
}

/// Why a login token was refused (for logs and the client's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No such token (never issued, revoked, or its user deleted).
    Unknown,
    /// The token's expiry has passed.
    Expired,
    /// The token was issued for another appid.
    WrongAppid,
    /// The token is valid, but its user (or its person) is disabled (`user.active: false`).
    Disabled,
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthFailure::Unknown => "unknown or revoked token",
            AuthFailure::Expired => "expired token",
            AuthFailure::WrongAppid => "token issued for another appid",
            AuthFailure::Disabled => "user disabled",
        })
    }
}
/// Durable state. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Totals for the `stats` op.
    async fn stats(&self) -> Result<StoreStats, StoreError>;
    /// Waits until every write queued before this call has committed.
    async fn flush(&self) -> Result<(), StoreError>;
    /// The app token, the previous one during a rotation, and the admin token (hashes).
    async fn app_credentials(&self) -> Result<AppCredentials, StoreError>;
    /// Replaces them.
    async fn set_app_credentials(&self, creds: AppCredentials) -> Result<(), StoreError>;

    /// Creates or updates a user and issues a token as asked (`useradd`).
    async fn useradd(&self, req: NewUser, now: Millis) -> Result<IssuedUser, StoreError>;
    /// [`Store::useradd`] with mesibo's `user.active`, in the same transaction: `Some(false)`
    /// disables the user at `req.address` (a primary: its whole person, whose uids come back in
    /// [`IssuedUser::disabled`]), `Some(true)` enables it again.
    async fn useradd_active(
        &self,
        req: NewUser,
        active: Option<bool>,
        now: Millis,
    ) -> Result<IssuedUser, StoreError>;
    /// A person and all of its users, found from any of its users.
    async fn devices(&self, who: UserKey) -> Result<PersonDevices, StoreError>;
    /// Who holds this token, if it is live and bound to `appid`.
    async fn authenticate(
        &self,
        hash: TokenHash,
        appid: &str,
        now: Millis,
    ) -> Result<Identity, StoreError>;
    /// Who holds this token, if it is live, whatever its appid (HTTP file requests carry only
    /// the token).
    async fn identify(&self, hash: TokenHash, now: Millis) -> Result<Identity, StoreError>;
    /// The person an address belongs to, and that person's primary address, to reach it
    /// (`ring`, `typing`): [`StoreError::UserDisabled`] when the address, or its person, is
    /// disabled.
    async fn resolve(&self, address: &str) -> Result<(PersonId, String), StoreError>;
    /// The person an address belongs to, disabled or not (presence subscriptions and lists
    /// name persons without reaching them); [`StoreError::UnknownRecipient`] when no user has it.
    async fn person_of(&self, address: &str) -> Result<PersonId, StoreError>;
    /// Records when devices were last seen (login, disconnect), all in one transaction.
    async fn touch(&self, seen: Vec<(Uid, Millis)>) -> Result<(), StoreError>;
    /// Stores a message in the logs of both persons, or finds the stored one for a retry.
    /// A new message is published to the commit sink ([`Committed::Message`]) before this
    /// returns.
    async fn append_message(&self, msg: NewMessage) -> Result<Appended, StoreError>;
    /// Where a person's log stands.
    async fn head(&self, person: PersonId) -> Result<LogHead, StoreError>;
    /// Events with `after < seq ≤ upto`, oldest first, at most `limit`.
    async fn events_after(
        &self,
        person: PersonId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<LogEvent>, StoreError>;
    /// The newest `limit` retained events with `seq < before`, oldest first.
    async fn events_before(
        &self,
        person: PersonId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<LogEvent>, StoreError>;
    /// Records how far a device holds its person's log; sends `delivered` receipts to the
    /// senders of newly acked messages ([`Committed::Receipts`]).
    async fn ack(&self, who: Identity, seq: u64, ts: Millis) -> Result<(), StoreError>;
    /// Marks the conversation with `peer` read up to message `upto`: a read marker in the
    /// reader's log and a `read` receipt in the peer's.
    async fn mark_read(
        &self,
        who: Identity,
        peer: String,
        upto: u64,
        ts: Millis,
    ) -> Result<(), StoreError>;
    /// Records a call that ended in both persons' logs.
    async fn append_call_record(&self, record: CallRecord) -> Result<(), StoreError>;
    /// Applies `patch` to the person's profile (a key set to null is removed) and logs the
    /// change. Returns the profile change event in the person's log.
    async fn set_profile(
        &self,
        person: PersonId,
        patch: serde_json::Map<String, serde_json::Value>,
        ts: Millis,
    ) -> Result<Vec<Marker>, StoreError>;
    /// The profile of the person an address belongs to: primary address, profile, version.
    async fn profile(&self, address: &str) -> Result<(String, Box<RawValue>, u64), StoreError>;
    /// Removes up to `max_events` events older than `before_ts`, and messages no log holds any
    /// more that are older than `ids_before_ts` (their client ids go with them). Returns how
    /// many events went; call again while it returns `max_events`.
    async fn prune(
        &self,
        before_ts: Millis,
        ids_before_ts: Millis,
        max_events: usize,
    ) -> Result<usize, StoreError>;
    /// The facts of stored bytes, if `uploader` has a stored upload of them. Dedupe is per
    /// person: another person's copy is not reported, so an upload cannot learn whether someone
    /// else stored the same bytes (SECURITY.md).
    async fn own_blob(
        &self,
        sha256: &str,
        uploader: PersonId,
    ) -> Result<Option<BlobMeta>, StoreError>;
    /// Bytes `uploader` uploaded at or after `since` (each stored upload counts its full size).
    async fn uploaded_since(&self, uploader: PersonId, since: Millis) -> Result<u64, StoreError>;
    /// Records an upload, unless it would take the uploader over `file.quota`
    /// ([`StoreError::QuotaExceeded`], nothing stored); moves its staged bytes into the blob
    /// dir unless the same bytes are
    /// already stored (then the staged copy is removed). Returns the stored facts.
    async fn add_file(&self, file: NewFile) -> Result<FileRecord, StoreError>;
    /// A file, if `reader` may read it: the uploader's person, or a person that sent or
    /// received a message carrying it. `None` skips the check (a signed URL was verified).
    async fn file(&self, id: &str, reader: Option<PersonId>) -> Result<FileRecord, StoreError>;
    /// Removes up to `max_files` files no retained event references (never-sent uploads once
    /// older than `unsent_before`), then blobs no file uses, and their bytes. Returns how many
    /// files went; call again while it returns `max_files`.
    async fn prune_files(
        &self,
        unsent_before: Millis,
        max_files: usize,
    ) -> Result<usize, StoreError>;
    /// The key signed download URLs are made with; created on first use.
    async fn url_key(&self) -> Result<[u8; 32], StoreError>;
    /// A value from the `meta` table (facts about this database), if set.
    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a value in the `meta` table.
    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Revokes every token of a user (`tokendel`).
    async fn tokendel(&self, who: UserKey) -> Result<Revoked, StoreError>;
    /// Removes a user; a primary takes its whole person with it (`userdel`).
    async fn userdel(&self, who: UserKey) -> Result<Removed, StoreError>;
    /// A person's devices now, primary first, with who is online (a device's `devices`).
    async fn device_list(
        &self,
        person: PersonId,
    ) -> Result<Vec<crate::protocol::DeviceEntry>, StoreError>;
    /// A device's `revoke`: revokes every token of the user `uid` of the device's own person
    /// (itself included) and logs `devices_changed`; [`StoreError::NoSuchUser`] for a uid of
    /// no user of that person, changing nothing.
    async fn revoke_device(
        &self,
        who: Identity,
        uid: Uid,
        now: Millis,
    ) -> Result<Revoked, StoreError>;

    /// Whether `watcher` may see `target`'s presence, as far as the store knows: the target's
    /// list entry for the watcher, and (if `with_contacts` and no entry) whether the two
    /// persons exchanged a message. A read.
    async fn presence_check(
        &self,
        watcher: PersonId,
        target: PersonId,
        with_contacts: bool,
    ) -> Result<PresenceCheck, StoreError>;
    /// A person's presence lists.
    async fn presence_acl(&self, person: PersonId) -> Result<PresenceAcl, StoreError>;
    /// Replaces the lists given (`None` keeps one); a person in both is denied. Returns the
    /// lists as stored.
    async fn set_presence_acl(
        &self,
        person: PersonId,
        allow: Option<Vec<PersonId>>,
        deny: Option<Vec<PersonId>>,
    ) -> Result<PresenceAcl, StoreError>;
    /// The oldest `limit` webhook events not dead-lettered, in delivery order (with message
    /// bodies when `with_body`).
    async fn outbox_peek(
        &self,
        limit: usize,
        with_body: bool,
    ) -> Result<Vec<OutboxEvent>, StoreError>;
    /// Removes delivered (or skipped) webhook events.
    async fn outbox_delete(&self, ids: Vec<i64>) -> Result<(), StoreError>;
    /// Records a failed delivery: next attempt at `next_at`; events whose retry window began
    /// before `window_start` are dead-lettered. Returns how many were.
    async fn outbox_failed(
        &self,
        ids: Vec<i64>,
        next_at: Millis,
        error: String,
        window_start: Millis,
    ) -> Result<usize, StoreError>;
    /// Dead-letters the oldest events beyond `max_pending`. Returns how many.
    async fn outbox_bound(&self, max_pending: u64) -> Result<usize, StoreError>;
    /// Events pending, and the newest `limit` dead ones (`webhooks` op).
    async fn outbox_status(&self, limit: usize) -> Result<OutboxStatus, StoreError>;
    /// Requeues dead events (the given ids, or all) with a fresh retry window (`webhookretry`).
    async fn outbox_retry(&self, ids: Option<Vec<i64>>, now: Millis) -> Result<usize, StoreError>;
    /// Writes a webhook event that is not part of another write (a ring, a presence change),
    /// at its person's current head. Returns its row; `None` without webhooks or once the
    /// person is gone.
    async fn outbox_write(&self, event: NewOutboxEvent) -> Result<Option<i64>, StoreError>;
    /// At startup, with `presence` webhooks on: writes an `offline` event (reason `restart`)
    /// for every person the receiver was last told is online. Returns how many.
    async fn outbox_presence_restart(&self, now: Millis) -> Result<usize, StoreError>;
}

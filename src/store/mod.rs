//! Durable state: the app, users, persons, devices, tokens, messages and each person's event log.
//!
//! [`Store`] is the seam where PostgreSQL arrives for cluster mode; [`sqlite::SqliteStore`] is
//! the embedded default. Every method is one transaction: a refusal writes nothing. The store
//! knows nothing of axum, WebSockets or the router.

mod files;
mod receipts;
pub mod sqlite;

use async_trait::async_trait;
use serde_json::value::RawValue;

use crate::auth::{PlainToken, TokenHash};
use crate::protocol::{ErrorCode, Millis, Uid};

pub use sqlite::SqliteStore;

/// The most devices (users) one person may have: the primary and seven linked users.
pub const MAX_DEVICES: usize = 8;

/// A person's id: the uid of its primary user.
pub type PersonId = Uid;

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
    /// The database failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
    #[error("sqlite commit: {0}")]
    Commit(String),
    /// The store's writer thread is gone (shutting down).
    #[error("the store is closed")]
    Closed,
    /// The file id names no file the person may use.
    #[error("no file {0} that this user may use; upload it with POST /files first")]
    NoSuchFile(String),
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
            StoreError::AuthFailed(_) => ErrorCode::AuthFailed,
            StoreError::NoSuchFile(_) => ErrorCode::NoSuchFile,
            StoreError::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            StoreError::Io(_)
            | StoreError::Sqlite(_)
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
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthFailure::Unknown => "unknown or revoked token",
            AuthFailure::Expired => "expired token",
            AuthFailure::WrongAppid => "token issued for another appid",
        })
    }
}

/// Totals kept in the store.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Users.
    pub users: u64,
    /// Persons.
    pub persons: u64,
    /// Messages.
    pub messages: u64,
    /// Events.
    pub events: u64,
    /// Users per appid.
    pub apps: Vec<(String, u64)>,
}

/// The operator's secrets, as hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppCredentials {
    /// The app token (the backend API's secret).
    pub app: Option<TokenHash>,
    /// The app token before the last rotation, valid until the given time.
    pub previous: Option<(TokenHash, Millis)>,
    /// The admin token (dashboard, `stats`).
    pub admin: Option<TokenHash>,
}

impl AppCredentials {
    /// Whether `given` is the app token, or the previous one within its grace period.
    pub fn app_matches(&self, given: &TokenHash, now: Millis) -> bool {
        // Both comparisons always run, in constant time, so timing says nothing.
        let current = self.app.is_some_and(|h| h.matches(given));
        let previous = self
            .previous
            .is_some_and(|(h, until)| h.matches(given) & (now < until));
        current | previous
    }

    /// Whether `given` is the admin token.
    pub fn admin_matches(&self, given: &TokenHash) -> bool {
        self.admin.is_some_and(|h| h.matches(given))
    }
}

/// How `useradd` should issue a token.
#[derive(Debug, Clone)]
pub enum TokenRequest {
    /// Create or update the user only.
    None,
    /// A token for the user itself.
    Plain(TokenTerms),
    /// A token for the device `device` of the person at the address (`token.device`).
    Device(TokenTerms, String),
    /// Link the user to the person of this address, then issue its token (`token.linkto`).
    LinkTo(TokenTerms, String),
}

/// What every issued token carries.
#[derive(Debug, Clone)]
pub struct TokenTerms {
    /// The app id the token is bound to.
    pub appid: String,
    /// Validity in minutes.
    pub expiry_minutes: i64,
}

/// A validated `useradd`.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The address at `user.address`.
    pub address: String,
    /// The display name, if given.
    pub name: Option<String>,
    /// The token to issue.
    pub token: TokenRequest,
}

/// What `useradd` did.
#[derive(Debug)]
pub struct IssuedUser {
    /// The user the token belongs to (a linked user for a new device).
    pub uid: Uid,
    /// That user's address.
    pub address: String,
    /// The token, when one was requested.
    pub token: Option<PlainToken>,
    /// The primary's uid when the user is a linked user.
    pub linked_to: Option<PersonId>,
    /// Users whose older tokens this call revoked (their live connections must close).
    pub revoked: Vec<Uid>,
    /// True when an existing primary was linked into another person: its live connection,
    /// registered under its old person, must close and log in again.
    pub moved: bool,
}

/// Names one user.
#[derive(Debug, Clone)]
pub enum UserKey {
    /// By uid.
    Uid(Uid),
    /// By address.
    Address(String),
}

impl std::fmt::Display for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserKey::Uid(uid) => write!(f, "with uid {uid}"),
            UserKey::Address(address) => write!(f, "at address {address}"),
        }
    }
}

/// Users removed by `userdel`.
#[derive(Debug)]
pub struct Removed {
    /// The person they belonged to.
    pub person: PersonId,
    /// Every uid removed.
    pub uids: Vec<Uid>,
}

/// Tokens revoked by `tokendel`.
#[derive(Debug)]
pub struct Revoked {
    /// The person of the user.
    pub person: PersonId,
    /// The user.
    pub uid: Uid,
    /// How many tokens were revoked.
    pub count: u64,
}

/// One user of a person, as `devices` lists it.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    /// The device's user.
    pub uid: Uid,
    /// The user's address.
    pub address: String,
    /// The installation id, if the user was issued a device token.
    pub device: Option<String>,
    /// The app id of the device.
    pub appid: Option<String>,
    /// Last login or disconnect.
    pub last_seen: Option<Millis>,
    /// The last seq the device acked.
    pub acked_seq: u64,
}

/// A person and its users, primary first.
#[derive(Debug, Clone)]
pub struct PersonDevices {
    /// The person.
    pub person: PersonId,
    /// The primary's address.
    pub primary_address: String,
    /// Every user of the person.
    pub devices: Vec<DeviceRecord>,
}

/// Who a login token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The connection's user.
    pub uid: Uid,
    /// That user's address.
    pub address: String,
    /// The person.
    pub person: PersonId,
    /// The primary's address: what others see.
    pub primary_address: String,
    /// When the token this identity was resolved from expires (ms since the Unix epoch): a
    /// connection logged in with it is closed then.
    pub token_expires: Millis,
}

/// A validated `send`.
#[derive(Debug)]
pub struct NewMessage {
    /// The sending device's identity.
    pub from: Identity,
    /// The client's id for the message.
    pub client_id: String,
    /// Any address of the recipient person.
    pub to: String,
    /// The body, raw.
    pub body: Box<RawValue>,
    /// Ids of the files to attach; each must be readable by the sender's person.
    pub files: Vec<String>,
    /// When the broker accepted it.
    pub ts: Millis,
}

/// Where a stored message landed.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The message id.
    pub mid: u64,
    /// Accept time (the first one, for a retried send).
    pub ts: Millis,
    /// The sender person's primary address.
    pub from: String,
    /// The recipient person's primary address.
    pub to: String,
    /// The recipient person.
    pub recipient: PersonId,
    /// The event's seq in the sender's log.
    pub sender_seq: u64,
    /// The event's seq in the recipient's log (equal to `sender_seq` for a note to self).
    pub recipient_seq: u64,
    /// The sender person's profile version, so recipients can tell their copy is stale.
    pub pv: u64,
    /// True when this was a retry of a stored message: nothing new to deliver.
    pub duplicate: bool,
    /// The attachments as delivered (a JSON array), if any.
    pub files: Option<Box<RawValue>>,
}

/// Called on the store's writer thread right after the message's transaction commits, in commit
/// order: live delivery from here reaches every device in `seq` order. It must not block.
pub type OnCommit<T = Appended> = Box<dyn FnOnce(&T) + Send>;

/// An event appended to some person's log by an `ack` or a `read`, to deliver live.
#[derive(Debug)]
pub struct Marker {
    /// Whose log.
    pub person: PersonId,
    /// The event.
    pub event: LogEvent,
}

/// A call that ended, as the store records it.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The call id.
    pub call: String,
    /// The caller's person and primary address.
    pub caller: (PersonId, String),
    /// The callee's person and primary address.
    pub callee: (PersonId, String),
    /// `answered`, `missed`, `rejected` or `cancelled`.
    pub status: &'static str,
    /// How long it was connected.
    pub duration_ms: i64,
    /// When it ended.
    pub ts: Millis,
}

/// The largest profile, serialized.
pub const MAX_PROFILE_BYTES: usize = 8 * 1024;

/// Where a person's log stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHead {
    /// The last seq issued (0 for an empty log).
    pub seq: u64,
    /// Every event with seq ≤ this was removed by retention.
    pub pruned_upto: u64,
    /// Names this log: random when the person's log is created, so a `since` from any other
    /// log (another person's, a deleted one's, another database's) is never replayed here.
    pub epoch: String,
}

/// One event of a person's log.
#[derive(Debug)]
pub struct LogEvent {
    /// The event's place in the person's log.
    pub seq: u64,
    /// When it happened.
    pub ts: Millis,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of logged events.
#[derive(Debug)]
pub enum EventKind {
    /// A message in or out.
    Message {
        /// The message id.
        mid: u64,
        /// The sender person's primary address.
        from: String,
        /// The recipient person's primary address.
        to: String,
        /// True in the sender person's log.
        out: bool,
        /// The body, raw.
        body: Box<RawValue>,
        /// The sender person's profile version (0 if never set).
        pv: u64,
        /// The attachments (a JSON array), if any.
        files: Option<Box<RawValue>>,
    },
    /// A message of this person reached (`delivered`) or was read by (`read`) the peer.
    Receipt {
        /// The message (for `read`: every message up to this one).
        mid: u64,
        /// The peer person's primary address.
        peer: String,
        /// `delivered` or `read`.
        status: String,
    },
    /// A call between this person and `peer` ended.
    Call {
        /// The call id.
        call: String,
        /// The other person's primary address.
        peer: String,
        /// True when this person called.
        out: bool,
        /// `answered`, `missed`, `rejected` or `cancelled`.
        status: String,
        /// How long it was connected, in milliseconds.
        duration_ms: i64,
    },
    /// This person's profile changed; the whole profile after the change.
    Profile {
        /// The person's primary address.
        address: String,
        /// The profile, a JSON object.
        profile: Box<RawValue>,
        /// Its version, bumped on every change.
        version: u64,
    },
    /// This person read the conversation with `peer` up to `upto` on one of its devices.
    Read {
        /// The last message read.
        upto: u64,
        /// The peer person's primary address.
        peer: String,
    },
}

/// What the broker knows of stored bytes (shared by every upload of the same bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// SHA-256 of the bytes, hex: the blob's name.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Sniffed content type.
    pub content_type: String,
    /// Images: displayed width and height.
    pub dimensions: Option<(u32, u32)>,
    /// Images: the preview made at upload.
    pub thumb: Option<ThumbMeta>,
    /// Images: a BlurHash.
    pub blurhash: Option<String>,
}

/// An image preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbMeta {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Content type.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
}

/// Files an upload wrote to the temporary dir, to move into place if the blob is new.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The bytes.
    pub data: std::path::PathBuf,
    /// The preview, if one was made.
    pub thumb: Option<std::path::PathBuf>,
}

/// One finished upload.
#[derive(Debug, Clone)]
pub struct NewFile {
    /// The new file id.
    pub id: String,
    /// The name it was uploaded with.
    pub name: String,
    /// The uploader's person.
    pub uploader: PersonId,
    /// Upload time.
    pub ts: Millis,
    /// The bytes' facts.
    pub blob: BlobMeta,
    /// The bytes on disk, still in the temporary dir.
    pub staged: Staged,
    /// The uploader's quota, checked in the same transaction that records the upload, so
    /// uploads running at once cannot together pass it.
    pub quota: UploadQuota,
}

/// Bytes a person may upload in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadQuota {
    /// The most bytes.
    pub bytes: u64,
    /// Uploads at or after this time count.
    pub since: Millis,
}

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// The file id.
    pub id: String,
    /// The name it was uploaded with.
    pub name: String,
    /// The bytes' facts.
    pub blob: BlobMeta,
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
    /// The person an address belongs to, and that person's primary address.
    async fn resolve(&self, address: &str) -> Result<(PersonId, String), StoreError>;
    /// Records when devices were last seen (login, disconnect), all in one transaction.
    async fn touch(&self, seen: Vec<(Uid, Millis)>) -> Result<(), StoreError>;
    /// Stores a message in the logs of both persons, or finds the stored one for a retry.
    /// `on_commit` runs after the commit, in commit order, before this returns.
    async fn append_message(
        &self,
        msg: NewMessage,
        on_commit: OnCommit,
    ) -> Result<Appended, StoreError>;
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
    /// senders of newly acked messages. `on_commit` gets the receipts appended to their logs.
    async fn ack(
        &self,
        who: Identity,
        seq: u64,
        ts: Millis,
        on_commit: OnCommit<Vec<Marker>>,
    ) -> Result<Vec<Marker>, StoreError>;
    /// Marks the conversation with `peer` read up to message `upto`: a read marker in the
    /// reader's log and a `read` receipt in the peer's.
    async fn mark_read(
        &self,
        who: Identity,
        peer: String,
        upto: u64,
        ts: Millis,
        on_commit: OnCommit<Vec<Marker>>,
    ) -> Result<Vec<Marker>, StoreError>;
    /// Records a call that ended in both persons' logs.
    async fn append_call_record(
        &self,
        record: CallRecord,
        on_commit: OnCommit<Vec<Marker>>,
    ) -> Result<Vec<Marker>, StoreError>;
    /// Applies `patch` to the person's profile (a key set to null is removed) and logs the
    /// change. Returns the profile change event in the person's log.
    async fn set_profile(
        &self,
        person: PersonId,
        patch: serde_json::Map<String, serde_json::Value>,
        ts: Millis,
        on_commit: OnCommit<Vec<Marker>>,
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
}

//! The store's domain types: what its methods take and return, independent of any backend.

use serde_json::value::RawValue;

use crate::auth::{PlainToken, TokenHash};
use crate::protocol::{Millis, Uid};

/// The most devices (users) one person may have: the primary and seven linked users.
pub const MAX_DEVICES: usize = 8;

/// A person's id: the uid of its primary user.
pub type PersonId = Uid;

/// The sending uid of a message no device sent (the backend's `message` op). uids start at 1,
/// so the fan-out skips no device: every device of the sender's person gets the `out` copy.
pub const NO_DEVICE: Uid = 0;

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
    /// Users this call disabled (`active: false`): their live connections must close.
    pub disabled: Vec<Uid>,
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
    /// Whether the device may log in: neither it nor its person's primary is disabled.
    pub active: bool,
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
    /// The user's device id, if it has one (the `origin` of what it sends).
    pub device: Option<String>,
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
    /// When the gateway read it (for the send-to-deliver latency; not stored).
    pub accepted: std::time::Instant,
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

/// An event appended to some person's log by an `ack` or a `read`, to deliver live.
#[derive(Debug, Clone)]
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
    /// Set (to when it started ringing) for a call whose ring produced a `call` webhook event:
    /// its `call_ended` event is written with the record.
    pub pushed_at: Option<Millis>,
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
#[derive(Debug, Clone)]
pub struct LogEvent {
    /// The event's place in the person's log.
    pub seq: u64,
    /// When it happened.
    pub ts: Millis,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of logged events.
#[derive(Debug, Clone)]
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
        /// The sending device, in the sender person's log only.
        origin: Option<crate::protocol::Origin>,
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
    /// A device of this person was linked, renamed, revoked or removed.
    Devices {
        /// What happened.
        change: crate::protocol::DeviceChange,
        /// The device concerned.
        uid: Uid,
        /// Every device of the person after the change, as it was then.
        devices: Vec<crate::protocol::DeviceEntry>,
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

/// A person's presence lists (`presence` backend op), as primary addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceAcl {
    /// Persons that may subscribe whatever the policy (unless presence is off).
    pub allow: Vec<String>,
    /// Persons that may never subscribe.
    pub deny: Vec<String>,
}

/// What the store knows about one person seeing another's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceCheck {
    /// The watched person's list entry for the watcher: allowed, denied, or neither.
    pub rule: Option<bool>,
    /// They exchanged a message (only looked up when asked for and no rule applies).
    pub contacts: bool,
}

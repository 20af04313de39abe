//! The backend API's requests and responses (`POST /backend`) and the upload answer
//! (`POST /files`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::*;

// ---------------------------------------------------------------------------------------------
// Backend API: POST /backend
// ---------------------------------------------------------------------------------------------

/// The backend ops, in the order `unknown_op` lists them.
pub const BACKEND_OPS: &[&str] = &[
    "useradd",
    "userdel",
    "tokendel",
    "devices",
    "profileset",
    "stats",
    "apptokenrotate",
    "message",
    "presence",
    "webhooks",
    "webhookretry",
];

/// `apptokenrotate`: a new app token; the current one stays valid for `grace` minutes.
#[derive(Debug, Deserialize)]
pub struct RotateRequest {
    /// Minutes the old token keeps working (default 60, at most 10080, one week).
    #[serde(default)]
    pub grace: Option<i64>,
}

/// The body of an `apptokenrotate` answer.
#[derive(Debug, Serialize)]
pub struct RotateBody {
    /// The new app token, shown only here.
    pub token: String,
    /// Until when (ms since the epoch) the previous token is still accepted.
    pub previous_valid_until: Millis,
}

/// The body of a `stats` answer.
#[derive(Debug, Serialize)]
pub struct StatsBody {
    /// Users (primary and linked).
    pub users: u64,
    /// Persons.
    pub persons: u64,
    /// Messages stored.
    pub messages: u64,
    /// Events in all logs.
    pub events: u64,
    /// Live connections on this broker.
    pub connections: u64,
    /// Persons with a live device on this broker.
    pub persons_online: u64,
    /// Users per appid (of their latest token).
    pub apps: Vec<AppStats>,
}

/// One appid's numbers.
#[derive(Debug, Serialize)]
pub struct AppStats {
    /// The appid.
    pub appid: String,
    /// Users whose latest token is for it.
    pub users: u64,
}

/// `profileset`: changes a person's profile from the backend.
#[derive(Debug, Deserialize)]
pub struct ProfileSetRequest {
    /// The patch, as in the device's `profile` frame.
    pub profile: serde_json::Map<String, Value>,
}

/// The body of a `profileset` answer.
#[derive(Debug, Serialize)]
pub struct ProfileBody {
    /// The person's primary address.
    pub address: String,
    /// The whole profile after the change.
    pub profile: Box<RawValue>,
    /// The new version.
    pub version: u64,
}

/// `presence`: reads, or replaces, who may subscribe to a person's presence. A list given
/// replaces the stored one (`[]` empties it); a list left out is kept.
#[derive(Debug, Deserialize)]
pub struct PresenceAclRequest {
    /// Addresses of persons that may subscribe whatever the broker's `--presence` policy
    /// (unless it is `off`).
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Addresses of persons that may never subscribe; wins over `allow` and the policy.
    #[serde(default)]
    pub deny: Option<Vec<String>>,
}

/// The most addresses each of a `presence` op's lists may hold.
pub const PRESENCE_ACL_MAX: usize = 1000;

/// The body of a `presence` answer: the lists as stored now.
#[derive(Debug, Serialize)]
pub struct PresenceAclBody {
    /// The person's primary address.
    pub address: String,
    /// Primary addresses of the persons allowed.
    pub allow: Vec<String>,
    /// Primary addresses of the persons denied.
    pub deny: Vec<String>,
}

/// The fields every backend request shares.
#[derive(Debug, Deserialize)]
pub struct BackendEnvelope {
    /// The op.
    pub op: String,
    /// The app token.
    #[serde(default)]
    pub token: Option<String>,
}

/// `useradd`: creates a user and optionally issues a token.
#[derive(Debug, Deserialize)]
pub struct UserAddRequest {
    /// The user to create or update.
    pub user: UserAddSpec,
}

/// The `user` object of `useradd`.
#[derive(Debug, Deserialize)]
pub struct UserAddSpec {
    /// The user's address (e.g. an email or phone number).
    pub address: String,
    /// A display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Token request; without it only the user is created.
    #[serde(default)]
    pub token: Option<TokenSpec>,
    /// mesibo's `active`: false disables the user (a primary: its whole person), true enables
    /// it again; absent leaves it as it is.
    #[serde(default)]
    pub active: Option<bool>,
}

/// The `user.token` object of `useradd`.
#[derive(Debug, Deserialize)]
pub struct TokenSpec {
    /// The app id the token is bound to.
    pub appid: String,
    /// Validity in minutes (default 525600, one year).
    #[serde(default)]
    pub expiry: Option<i64>,
    /// The installation id of the device this token is for.
    #[serde(default)]
    pub device: Option<String>,
    /// Address of the user (or any user of the person) to link this user to; wins over `device`.
    #[serde(default)]
    pub linkto: Option<String>,
}

/// Names a user by `uid` (top level, as mesibo takes it) or by `user.uid` / `user.address`.
#[derive(Debug, Deserialize)]
pub struct UserSelector {
    /// The user's uid.
    #[serde(default, deserialize_with = "bounded_opt")]
    pub uid: Option<Uid>,
    /// Or the user object.
    #[serde(default)]
    pub user: Option<UserSelectorInner>,
}

/// The `user` object of a selector.
#[derive(Debug, Deserialize)]
pub struct UserSelectorInner {
    /// The user's uid.
    #[serde(default, deserialize_with = "bounded_opt")]
    pub uid: Option<Uid>,
    /// The user's address.
    #[serde(default)]
    pub address: Option<String>,
}

/// The envelope of every backend response: `op`, `result`, the echoed `id`, and the op's body.
#[derive(Debug, Serialize)]
pub struct BackendResponse<T: Serialize> {
    /// The op of the request (empty when the request had none).
    pub op: String,
    /// True when the op succeeded.
    pub result: bool,
    /// The request's `id`, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// The op's own fields.
    #[serde(flatten)]
    pub body: T,
}

/// The body of a refusal.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// The stable error code.
    pub error: ErrorCode,
    /// What is wrong and what to do.
    pub message: String,
}

/// The body of a `useradd` answer.
#[derive(Debug, Serialize)]
pub struct UserAddBody {
    /// The user and its token.
    pub user: UserAddOut,
    /// `"true"` (a string, as mesibo sends it) when the user is a linked user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linked: Option<&'static str>,
    /// The primary's uid when the user is a linked user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linkto: Option<Uid>,
}

/// The `user` of a `useradd` answer.
#[derive(Debug, Serialize)]
pub struct UserAddOut {
    /// The user's uid.
    pub uid: Uid,
    /// The user's address (`<primary>-linked-<n>` for an automatically linked device).
    pub address: String,
    /// The user token, shown only here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The body of a `userdel` answer.
#[derive(Debug, Serialize)]
pub struct UserDelBody {
    /// Every uid removed (a primary takes its linked users with it).
    pub removed: Vec<Uid>,
}

/// The body of a `tokendel` answer.
#[derive(Debug, Serialize)]
pub struct TokenDelBody {
    /// The user whose tokens were revoked.
    pub uid: Uid,
    /// How many tokens were revoked.
    pub revoked: u64,
}

/// The body of a `devices` answer.
#[derive(Debug, Serialize)]
pub struct DevicesBody {
    /// The person's primary user.
    pub primary: UserRef,
    /// Every user of the person, primary first.
    pub devices: Vec<DeviceOut>,
}

/// One device of a person.
#[derive(Debug, Serialize)]
pub struct DeviceOut {
    /// The device's user.
    pub uid: Uid,
    /// That user's address.
    pub address: String,
    /// The installation id, when the user was issued a token for one.
    pub device: Option<String>,
    /// The app id of the device's latest token.
    pub appid: Option<String>,
    /// When the device last logged in or disconnected (ms since the epoch).
    pub last_seen: Option<Millis>,
    /// Whether the device holds a live connection on this broker.
    pub online: bool,
    /// True for the primary user.
    pub primary: bool,
    /// The last seq this device acked (0 if it never acked).
    pub acked: u64,
    /// False when the device's user, or its person's primary, is disabled.
    pub active: bool,
}

/// `message`: a message the backend sends as one of its users, in mesibo's shape.
#[derive(Debug, Deserialize)]
pub struct MessageRequest {
    /// The message.
    pub message: MessageSpec,
}

/// The `message` object of a `message` request.
#[derive(Debug, Deserialize)]
pub struct MessageSpec {
    /// Any address of the sending user (a linked user sends as its primary).
    pub from: String,
    /// One address, or several separated by commas: one message per recipient.
    pub to: String,
    /// The body: any I-JSON value, relayed as sent (mesibo sends a string).
    pub message: Box<RawValue>,
    /// Seconds, as mesibo takes it: checked, not applied (retention decides how long messages
    /// are kept).
    #[serde(default)]
    pub expiry: Option<Value>,
    /// The backend's id for the message (a string or a non-negative integer): a retry with the
    /// same id from the same user is not delivered twice.
    #[serde(default)]
    pub id: Option<Value>,
}

/// The body of a `message` answer.
#[derive(Debug, Serialize)]
pub struct MessageBody {
    /// The message id of the first recipient's message.
    pub mid: u64,
    /// One message id per recipient, in the order of `to`.
    pub mids: Vec<u64>,
}

// ---------------------------------------------------------------------------------------------
// Files: POST /files
// ---------------------------------------------------------------------------------------------

/// The body of a `POST /files` answer (inside a [`BackendResponse`] with op `upload`).
#[derive(Debug, Serialize, Deserialize)]
pub struct UploadBody {
    /// The stored file, as messages will carry it.
    pub file: Attachment,
}

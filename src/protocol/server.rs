//! WebSocket frames from broker to client: [`ServerFrame`] and its structs.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::*;

// ---------------------------------------------------------------------------------------------
// WebSocket frames: broker → client
// ---------------------------------------------------------------------------------------------

/// A frame the broker sends.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Login succeeded.
    Welcome(Welcome),
    /// A `send` was stored.
    Sent(Sent),
    /// A message for this device's person.
    Message(Message),
    /// A call event.
    Call(CallEvent),
    /// The catch-up after login is complete; live events follow.
    Synced(Synced),
    /// A page of older events.
    History(History),
    /// A message of this person was delivered to or read by the peer.
    Receipt(Receipt),
    /// This person read a conversation on one of its devices.
    Read(ReadMarker),
    /// A call of this person ended (logged).
    CallRecord(CallRecordFrame),
    /// A profile: a change of this person's (logged, with `seq`) or the answer to `get`.
    Profile(ProfileFrame),
    /// A signed download URL (the answer to `file_url`).
    FileUrl(FileUrl),
    /// Something this device sent was refused.
    Error(ErrorFrame),
    /// A device of a person started or stopped typing (transient: never logged).
    Typing(TypingEvent),
    /// A subscribed person's online status (transient: never logged).
    Presence(PresenceEvent),
    /// A device of this person was linked, renamed, revoked or removed (logged).
    DevicesChanged(DevicesChanged),
    /// The answer to `devices`: this person's devices now.
    Devices(DevicesList),
    /// The answer to `revoke`.
    Revoke(RevokeAnswer),
}

impl ServerFrame {
    /// The frame's place in the person's log, for the frames that are logged events (a
    /// client dedupes and resumes by it); `None` for the others.
    pub fn log_seq(&self) -> Option<u64> {
        match self {
            ServerFrame::Message(m) => Some(m.seq),
            ServerFrame::Receipt(r) => Some(r.seq),
            ServerFrame::Read(r) => Some(r.seq),
            ServerFrame::CallRecord(c) => Some(c.seq),
            ServerFrame::Profile(p) => p.seq,
            ServerFrame::DevicesChanged(d) => Some(d.seq),
            // Listed, not `_`: a new frame must be sorted here, logged or not.
            ServerFrame::Welcome(_)
            | ServerFrame::Sent(_)
            | ServerFrame::Call(_)
            | ServerFrame::Synced(_)
            | ServerFrame::History(_)
            | ServerFrame::FileUrl(_)
            | ServerFrame::Error(_)
            | ServerFrame::Typing(_)
            | ServerFrame::Presence(_)
            | ServerFrame::Devices(_)
            | ServerFrame::Revoke(_) => None,
        }
    }

    /// The ops the broker sends.
    pub const OPS: &'static [&'static str] = &[
        "welcome",
        "sent",
        "message",
        "call",
        "synced",
        "history",
        "receipt",
        "read",
        "call_record",
        "profile",
        "file_url",
        "error",
        "typing",
        "presence",
        "devices_changed",
        "devices",
        "revoke",
    ];

    /// Decodes a frame from the broker (used by [`crate::client`]).
    pub fn decode(text: &str) -> Result<ServerFrame, DecodeError> {
        decode_tagged(text, Self::OPS, |op, text| {
            Some(match op {
                "welcome" => decode_fields(text).map(ServerFrame::Welcome),
                "sent" => decode_fields(text).map(ServerFrame::Sent),
                "message" => decode_fields(text).map(ServerFrame::Message),
                "call" => decode_fields(text).map(ServerFrame::Call),
                "synced" => decode_fields(text).map(ServerFrame::Synced),
                "history" => decode_fields(text).map(ServerFrame::History),
                "receipt" => decode_fields(text).map(ServerFrame::Receipt),
                "read" => decode_fields(text).map(ServerFrame::Read),
                "call_record" => decode_fields(text).map(ServerFrame::CallRecord),
                "profile" => decode_fields(text).map(ServerFrame::Profile),
                "error" => decode_fields(text).map(ServerFrame::Error),
                "file_url" => decode_fields(text).map(ServerFrame::FileUrl),
                "typing" => decode_fields(text).map(ServerFrame::Typing),
                "presence" => decode_fields(text).map(ServerFrame::Presence),
                "devices_changed" => decode_fields(text).map(ServerFrame::DevicesChanged),
                "devices" => decode_fields(text).map(ServerFrame::Devices),
                "revoke" => decode_fields(text).map(ServerFrame::Revoke),
                _ => return None,
            })
        })
    }

    /// Serializes the frame once; the text is then shared by every target.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

/// A user as others see it: uid and address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    /// The user's uid.
    pub uid: Uid,
    /// The user's address.
    pub address: String,
}

/// `welcome`: the answer to a good `login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Welcome {
    /// This device's own uid (a linked user's uid on a linked device).
    pub uid: Uid,
    /// This device's own address.
    pub address: String,
    /// The person's primary user: the identity others see.
    pub primary: UserRef,
    /// The person's newest `seq` when the connection went live.
    pub seq: u64,
    /// The epoch of this person's log (random per log); a `since` from another epoch (another
    /// person's log, a deleted one's, another database's) cannot be caught up.
    pub epoch: String,
    /// True when every event after `since` follows (then `synced`); false when part of it is no
    /// longer retained or `since` is from another epoch: page `history` instead.
    pub recovered: bool,
}

/// `receipt`: the peer's devices got (`delivered`) or read (`read`) a message of this person.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    /// The event's place in this person's log.
    pub seq: u64,
    /// The message (for `read`: every message up to this one).
    pub mid: u64,
    /// `delivered` or `read`.
    pub status: String,
    /// The peer person's primary address.
    pub peer: String,
    /// When it happened.
    pub ts: Millis,
}

/// `read`: this person read the conversation with `peer` up to `upto` (clears unread badges on
/// its other devices).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadMarker {
    /// The event's place in this person's log.
    pub seq: u64,
    /// The peer person's primary address.
    pub peer: String,
    /// The newest message read.
    pub upto: u64,
    /// When it happened.
    pub ts: Millis,
}

/// `call_record`: a call of this person ended; it is in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecordFrame {
    /// The event's place in this person's log.
    pub seq: u64,
    /// The call id.
    pub call: String,
    /// The other person's primary address.
    pub peer: String,
    /// True when this person called.
    #[serde(default, skip_serializing_if = "is_false")]
    pub out: bool,
    /// `answered`, `missed`, `rejected` or `cancelled`.
    pub status: String,
    /// How long the call was connected, in milliseconds (0 unless answered).
    pub duration_ms: i64,
    /// When it ended.
    pub ts: Millis,
}

/// `profile`: a person's profile.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProfileFrame {
    /// On a `get` answer: the `id` the request carried, if any. Never on a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// For a change of this person's profile: its place in the log. Absent on a `get` answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The person's primary address.
    pub address: String,
    /// The whole profile, a JSON object.
    pub profile: Box<RawValue>,
    /// The profile's version; a message's `pv` above a cached version means "get it again".
    pub version: u64,
    /// When it changed (changes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Millis>,
}

/// `synced`: every event up to `seq` was sent; what follows is live.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Synced {
    /// The last replayed seq (the welcome's `seq`).
    pub seq: u64,
    /// How many events the catch-up sent.
    pub replayed: u64,
}

/// `history`: a page of older events, oldest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct History {
    /// The `id` the request carried, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The events, each exactly as it was delivered live (e.g. a `message` frame).
    pub events: Vec<Box<RawValue>>,
    /// True when older retained events exist: ask again with `before` = the first event's seq.
    pub more: bool,
}

/// `sent`: the broker stored the message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    /// The client id from `send`.
    pub id: String,
    /// The broker's message id.
    pub mid: u64,
    /// The message's place in the sender person's event log.
    pub seq: u64,
    /// When the broker accepted the message.
    pub ts: Millis,
}

/// `message`: delivered to every live device of the recipient and the sender's other devices.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    /// The broker's message id, the same on every device.
    pub mid: u64,
    /// The message's place in this device's person's event log.
    pub seq: u64,
    /// The sender person's primary address.
    pub from: String,
    /// The recipient person's primary address.
    pub to: String,
    /// When the broker accepted the message.
    pub ts: Millis,
    /// True on the sender person's own devices: this is their outgoing message.
    #[serde(default, skip_serializing_if = "is_false")]
    pub out: bool,
    /// The body exactly as sent.
    pub body: Box<RawValue>,
    /// The sender person's profile version (absent while never set): a client whose cached
    /// profile of `from` is older asks for it with `profile get`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pv: u64,
    /// The attached files, as a JSON array of [`Attachment`]s (kept raw: it is stored once and
    /// sent as stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Box<RawValue>>,
    /// On the sender person's own copies only (`out`): the device that sent it, so the others
    /// can show "sent from your laptop". The peer's copy never has it: a person's linked
    /// users are never shown to other people. Absent for messages stored before octet kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// The device a message was sent from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The sending user's uid (the primary's or a linked user's).
    pub uid: Uid,
    /// That user's device id, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// A file as messages carry it and `POST /files` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file id.
    pub id: String,
    /// The name it was uploaded with.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// The content type, sniffed from the bytes.
    #[serde(rename = "type")]
    pub content_type: String,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Images: width in pixels (as displayed, after the EXIF orientation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Images: height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Where to download it (`Authorization: Bearer <user token>`, or signed via `file_url`).
    pub url: String,
    /// Images: the preview made at upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumb: Option<Thumb>,
    /// Images: a BlurHash of the picture, to paint before anything is downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blurhash: Option<String>,
}

/// An image's preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thumb {
    /// Where to download it.
    pub url: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Its content type.
    #[serde(rename = "type")]
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
}

/// `file_url`: signed URLs that work without a token until `expires`.
#[derive(Debug, Serialize, Deserialize)]
pub struct FileUrl {
    /// The file id.
    pub id: String,
    /// The file.
    pub url: String,
    /// The thumbnail, for images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumb_url: Option<String>,
    /// When both stop working (milliseconds since the epoch).
    pub expires: Millis,
}

/// What a device learns about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEventKind {
    /// The call rings (or, with `out`, is ringing from another of this person's devices).
    Ring,
    /// The callee answered (sent to the caller device).
    Answer,
    /// The callee rejected (sent to the caller device).
    Reject,
    /// The call ended.
    Hangup,
    /// SDP or ICE from the other device in the call.
    Signal,
    /// Another device answered: stop ringing here.
    AnsweredElsewhere,
    /// Another device rejected: stop ringing here.
    RejectedElsewhere,
    /// Nobody answered in time.
    Missed,
}

/// `call`: a call event.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallEvent {
    /// The call id.
    pub call: String,
    /// What happened.
    pub action: CallEventKind,
    /// The caller person's primary address.
    pub from: String,
    /// The callee person's primary address.
    pub to: String,
    /// True on the caller person's devices.
    #[serde(default, skip_serializing_if = "is_false")]
    pub out: bool,
    /// Opaque payload from the device that acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

/// `typing`: a device of `from` is typing to `to` (or stopped). Never logged or replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingEvent {
    /// The typing person's primary address.
    pub from: String,
    /// The other person's primary address.
    pub to: String,
    /// `start` or `stop` (the broker sends `stop` itself 6 s after the last `start`, or when
    /// the typing device disconnects).
    pub state: TypingState,
    /// True on the typing person's other devices.
    #[serde(default, skip_serializing_if = "is_false")]
    pub out: bool,
}

/// Whether a person has a device online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// At least one device is connected (or the last one left less than the grace ago).
    Online,
    /// No device has been connected for the grace period.
    Offline,
}

/// `presence`: a subscribed person's status, right after subscribing and on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    /// The person's primary address.
    pub address: String,
    /// `online` or `offline`.
    pub status: PresenceStatus,
    /// When the person's last device left (offline only; absent if it never connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Millis>,
}

/// `error`: a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// The stable error code.
    pub code: ErrorCode,
    /// What is wrong and what to do.
    pub message: String,
    /// The client id of the frame that was refused, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The call id, when the refused frame was a call action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
}

pub(super) fn is_false(b: &bool) -> bool {
    !*b
}

pub(super) fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_body_stays_raw() {
        let text =
            r#"{"op":"message","mid":1,"seq":2,"from":"a","to":"b","ts":3,"body":{"x": [1, 2]}}"#;
        let ServerFrame::Message(m) = ServerFrame::decode(text).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(m.body.get(), r#"{"x": [1, 2]}"#);
        assert!(
            ServerFrame::Message(m)
                .to_text()
                .contains(r#""body":{"x": [1, 2]}"#)
        );
    }
}

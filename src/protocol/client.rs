//! WebSocket frames from client to broker: [`ClientFrame`], its per-op request structs and
//! their decoding.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::*;

// ---------------------------------------------------------------------------------------------
// WebSocket frames: client → broker
// ---------------------------------------------------------------------------------------------

/// A frame a device sends.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientFrame {
    /// The first frame of every connection.
    Login(Login),
    /// A message to another person (or to one's own other devices).
    Send(Send),
    /// A call action.
    Call(CallRequest),
    /// A page of older events.
    History(HistoryRequest),
    /// The device holds every event up to `seq`.
    Ack(Ack),
    /// The person read the conversation with `peer` up to message `upto`.
    Read(ReadRequest),
    /// Change this person's profile, or get someone's.
    Profile(ProfileRequest),
    /// A short-lived signed download URL for a file this person may read.
    FileUrl(FileUrlRequest),
    /// This device started or stopped typing to a person (transient: never logged).
    Typing(TypingRequest),
    /// Subscribe to (or unsubscribe from) persons' online status.
    Presence(PresenceRequest),
    /// The list of this person's devices.
    Devices(DevicesRequest),
    /// Revoke the tokens of a device of this person (with `--device-self-revoke`).
    Revoke(RevokeRequest),
}

impl ClientFrame {
    /// The ops a device may send.
    pub const OPS: &'static [&'static str] = &[
        "login", "send", "call", "history", "ack", "read", "profile", "file_url", "typing",
        "presence", "devices", "revoke",
    ];

    /// Decodes a frame from a device.
    pub fn decode(text: &str) -> Result<ClientFrame, DecodeError> {
        decode_tagged(text, Self::OPS, |op, text| {
            Some(match op {
                "login" => decode_fields(text).map(ClientFrame::Login),
                "send" => decode_fields(text).and_then(|send: Send| {
                    check_stored_json("body", send.body.as_deref())?;
                    Ok(ClientFrame::Send(send))
                }),
                "call" => decode_fields(text).and_then(|call: CallRequest| {
                    check_stored_json("data", call.data.as_deref())?;
                    Ok(ClientFrame::Call(call))
                }),
                "history" => decode_fields(text).map(ClientFrame::History),
                "ack" => decode_fields(text).map(ClientFrame::Ack),
                "read" => decode_fields(text).map(ClientFrame::Read),
                "profile" => decode_fields(text).map(ClientFrame::Profile),
                "file_url" => decode_fields(text).map(ClientFrame::FileUrl),
                "typing" => decode_fields(text).map(ClientFrame::Typing),
                "presence" => decode_fields(text).map(ClientFrame::Presence),
                "devices" => decode_fields(text).map(ClientFrame::Devices),
                "revoke" => decode_fields(text).map(ClientFrame::Revoke),
                _ => return None,
            })
        })
    }

    /// The frame's op.
    pub fn op(&self) -> &'static str {
        match self {
            ClientFrame::Login(_) => "login",
            ClientFrame::Send(_) => "send",
            ClientFrame::Call(_) => "call",
            ClientFrame::History(_) => "history",
            ClientFrame::Ack(_) => "ack",
            ClientFrame::Read(_) => "read",
            ClientFrame::Profile(_) => "profile",
            ClientFrame::FileUrl(_) => "file_url",
            ClientFrame::Typing(_) => "typing",
            ClientFrame::Presence(_) => "presence",
            ClientFrame::Devices(_) => "devices",
            ClientFrame::Revoke(_) => "revoke",
        }
    }

    /// The client id (`id`) and call id (`call`) a frame carries, for its error frame.
    pub fn ids_of(text: &str) -> (Option<String>, Option<String>) {
        #[derive(Deserialize)]
        struct Ids {
            id: Option<Value>,
            call: Option<Value>,
        }
        let string = |v: Option<Value>| match v {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let text = strip_bom(text);
        match serde_json::from_str::<Ids>(text) {
            Ok(ids) if text.trim_start().starts_with('{') => (string(ids.id), string(ids.call)),
            _ => (None, None),
        }
    }
}

/// The largest seq, mid or uid a frame or request may name: the store keeps them as SQLite's
/// signed 64-bit integers, so a larger number could only fail there (as `internal`).
pub const MAX_NUMBER_ID: u64 = i64::MAX as u64;

/// Words in the error of [`bounded`], which [`field_error`] reports as `bad_value`.
/// The longest client id a `send`, a request (`history`, `profile`, `devices`, `revoke`), a
/// call, or a backend `message` may carry, in characters: the same for a device and the backend,
/// so a retry is idempotent the same way from both.
pub const MAX_CLIENT_ID: usize = 128;

pub(super) const BEYOND_MAX_ID: &str = "is beyond the largest seq, mid or uid";

/// A seq, mid or uid: a non-negative integer up to [`MAX_NUMBER_ID`].
pub(super) fn bounded<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    if n > MAX_NUMBER_ID {
        return Err(serde::de::Error::custom(format_args!(
            "{n} {BEYOND_MAX_ID} ({MAX_NUMBER_ID})"
        )));
    }
    Ok(n)
}

/// An optional [`bounded`] number.
pub(super) fn bounded_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Bounded(#[serde(deserialize_with = "bounded")] u64);
    Ok(Option::<Bounded>::deserialize(d)?.map(|b| b.0))
}

/// Refuses raw JSON the broker would store or relay as it is (`body`, call `data`) unless it is
/// I-JSON (RFC 7493), so no frame a strict client cannot read is ever replayed to it.
pub fn check_stored_json(field: &str, raw: Option<&RawValue>) -> Result<(), DecodeError> {
    let Some(raw) = raw else { return Ok(()) };
    ijson::check(raw.get()).map_err(|detail| {
        DecodeError::new(
            ErrorCode::BadValue,
            format!("`{field}` is not I-JSON (RFC 7493): {detail}; nothing was stored"),
        )
    })
}

/// `login`: authenticates the connection.
#[derive(Clone, Serialize, Deserialize)]
pub struct Login {
    /// The user token the app backend got from `useradd`.
    pub token: String,
    /// The app id the token was issued for.
    pub appid: String,
    /// The last `seq` this device holds (0 if none yet): the broker replays every later event,
    /// then goes live. Absent for a new device, which starts live from `welcome.seq` and pages
    /// `history` for the past.
    #[serde(
        default,
        deserialize_with = "bounded_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<u64>,
    /// The `epoch` of the welcome that `since` came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// The default and largest page of `history`.
pub const HISTORY_DEFAULT: u32 = 50;
/// The largest page of `history`.
pub const HISTORY_MAX: u32 = 500;
/// The largest frame the broker sends, in bytes: a `history` page is cut to fit (with
/// `more:true`), and clients whose WebSocket libraries cap messages at 1 MiB can read them all.
pub const MAX_OUT_FRAME: usize = 1 << 20;

/// `ack`: this device holds its person's log up to `seq`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ack {
    /// The highest seq held, without gaps.
    #[serde(deserialize_with = "bounded")]
    pub seq: u64,
}

/// `read`: the conversation with `peer` is read up to message `upto`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReadRequest {
    /// Any address of the other person.
    pub peer: String,
    /// The newest message from `peer` that was read.
    #[serde(deserialize_with = "bounded")]
    pub upto: u64,
}

/// `profile`: exactly one of `set` (a patch of this person's profile) or `get` (an address).
#[derive(Debug, Serialize, Deserialize)]
pub struct ProfileRequest {
    /// Keys to change: `name`, `status`, `avatar` (strings) and `fields` (an object of the
    /// app's own); null removes a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<serde_json::Map<String, Value>>,
    /// Any address of the person whose profile to get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get: Option<String>,
    /// The client's tag for this request (1 to 128 characters), echoed on the `get` answer and
    /// on any `error` that refuses the frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The profile keys a patch may set, with their longest string value (`fields`: an object).
pub const PROFILE_KEYS: &[(&str, usize)] = &[("name", 255), ("status", 1024), ("avatar", 1024)];

/// Checks a profile patch: known keys only, strings of bounded length, `fields` an object.
/// `path` names the patch in error messages (`.set` in a frame, `.profile` in `profileset`).
pub fn check_profile_patch(
    path: &str,
    patch: &serde_json::Map<String, Value>,
) -> Result<(), DecodeError> {
    if patch.is_empty() {
        return Err(DecodeError::new(
            ErrorCode::BadValue,
            "the profile patch is empty; set at least one of name, status, avatar, fields",
        ));
    }
    for (key, value) in patch {
        if value.is_null() {
            continue;
        }
        if key == "fields" {
            if !value.is_object() {
                return Err(DecodeError::new(
                    ErrorCode::WrongType,
                    format!(
                        "{path}.fields: expected an object, found {}",
                        json_kind(value)
                    ),
                ));
            }
            continue;
        }
        let Some((_, max)) = PROFILE_KEYS.iter().find(|(k, _)| k == key) else {
            return Err(DecodeError::new(
                ErrorCode::BadValue,
                format!("unknown profile key `{key}`; use name, status, avatar or fields"),
            ));
        };
        match value {
            Value::String(s) if s.chars().count() <= *max => {}
            Value::String(_) => {
                return Err(DecodeError::new(
                    ErrorCode::BadValue,
                    format!("`{key}` is longer than {max} characters"),
                ));
            }
            other => {
                return Err(DecodeError::new(
                    ErrorCode::WrongType,
                    format!(
                        "{path}.{key}: expected a string or null, found {}",
                        json_kind(other)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `history`: a page of events older than `before`.
#[derive(Debug, Serialize, Deserialize)]
pub struct HistoryRequest {
    /// Events with `seq < before`; absent means from the newest.
    #[serde(
        default,
        deserialize_with = "bounded_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub before: Option<u64>,
    /// How many (default 50, at most 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The client's tag for this request (1 to 128 characters), echoed on the `history` answer
    /// and on any `error` that refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("Login")
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

/// `send`: a message to the person at `to`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Send {
    /// The client's own id for this message; a retry with the same id is not delivered twice.
    pub id: String,
    /// Any address of the recipient person.
    pub to: String,
    /// Any JSON; opaque to the broker (a caption when `files` is given). Required unless
    /// `files` is given; an explicit `null` is a body.
    #[serde(
        default,
        deserialize_with = "present_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub body: Option<Box<RawValue>>,
    /// Ids of files (from `POST /files`) to attach, at most [`MAX_ATTACHMENTS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// A field that is present is `Some`, even when it is `null` (absent is `None`, by `default`).
fn present_raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// The most files one message may carry.
pub const MAX_ATTACHMENTS: usize = 16;

/// `file_url`: asks for a signed URL of a file (and its thumbnail), for an `<img src>`.
#[derive(Debug, Serialize, Deserialize)]
pub struct FileUrlRequest {
    /// The file id.
    pub id: String,
}

/// What a device does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallAction {
    /// Start ringing every device of the callee.
    Ring,
    /// Accept the call on this device.
    Answer,
    /// Decline the call.
    Reject,
    /// End the call (or cancel it while ringing).
    Hangup,
    /// SDP or ICE payload for the other device in the call.
    Signal,
}

/// `call`: one action on the call `call`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallRequest {
    /// The call id, chosen by the caller.
    pub call: String,
    /// What to do.
    pub action: CallAction,
    /// The callee's address; required for `ring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Opaque payload (an SDP offer or answer, an ICE candidate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

/// Whether a device is typing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TypingState {
    /// Typing (again): shown until `stop`, or for 6 s without a refresh.
    Start,
    /// No longer typing.
    Stop,
}

impl<'de> Deserialize<'de> for TypingState {
    // By hand: serde_json reports a unit enum met with a non-string (`"state":true`) as
    // malformed JSON; through a string it is a type error naming the field.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TypingState, D::Error> {
        match String::deserialize(d)?.as_str() {
            "start" => Ok(TypingState::Start),
            "stop" => Ok(TypingState::Stop),
            other => Err(serde::de::Error::unknown_variant(other, &["start", "stop"])),
        }
    }
}

/// `typing`: this device is typing to the person at `to` (or stopped).
#[derive(Debug, Serialize, Deserialize)]
pub struct TypingRequest {
    /// Any address of the other person.
    pub to: String,
    /// `start` (also a refresh) or `stop`.
    pub state: TypingState,
}

/// The most addresses one `presence` frame may list (in `subscribe` and `unsubscribe` each).
pub const PRESENCE_LIST_MAX: usize = 256;

/// `presence`: start (`subscribe`) or stop (`unsubscribe`) getting persons' online status.
#[derive(Debug, Serialize, Deserialize)]
pub struct PresenceRequest {
    /// Addresses (any address of each person) to get `presence` frames about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<String>,
    /// Addresses to stop getting them about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsubscribe: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_comma_says_line_and_column() {
        let err = ClientFrame::decode("{\n\"op\":\"send\"\n\"to\":1}").unwrap_err();
        assert_eq!(err.code, ErrorCode::BadJson);
        assert!(err.message.contains("line 3, column 1"), "{}", err.message);
        assert!(err.message.contains("comma"), "{}", err.message);
    }

    #[test]
    fn field_errors_name_the_field() {
        let err = ClientFrame::decode(r#"{"op":"send","id":"a","body":1}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::MissingField);
        assert_eq!(err.message, "missing field `to`");
        let err = ClientFrame::decode(r#"{"op":"send","id":"a","to":5,"body":1}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::WrongType);
        assert!(
            err.message.starts_with(".to: invalid type"),
            "{}",
            err.message
        );
        let err = ClientFrame::decode(r#"{"op":"nope"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownOp);
        let err = ClientFrame::decode(r#"[1]"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        let err = ClientFrame::decode(r#"{"op":3}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::WrongType);
    }
}

/// `devices`: asks for the list of this person's devices (answered with `devices`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DevicesRequest {
    /// The client's tag for this request (1 to 128 characters), echoed on the `devices` answer
    /// and on any `error` that refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `revoke`: revokes every token of the device (user) `uid` of this person, which may be this
/// device itself (a logout); its connections close with 4004. Only with `--device-self-revoke`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokeRequest {
    /// The uid of the device to revoke, as `devices` lists it.
    #[serde(deserialize_with = "bounded")]
    pub uid: u64,
    /// The client's tag for this request (1 to 128 characters), echoed on the `revoke` answer
    /// and on any `error` that refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

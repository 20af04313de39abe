//! Every type that crosses the wire: WebSocket frames in both directions, the backend API's
//! requests and responses, the error-code table and the WebSocket close codes.
//!
//! This is the only module whose types derive `Serialize`/`Deserialize` for the wire, and it
//! depends on nothing else inside octet. `proto/` documents the same types for humans.
//!
//! Frames are tagged by `op`. Message bodies stay raw JSON text end to end (`Box<RawValue>`),
//! and because serde cannot buffer a `RawValue` inside an internally tagged enum, decoding reads
//! the `op` first and then that op's own struct ([`decode_tagged`]).

mod ijson;

use std::borrow::Cow;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// A user id, as mesibo numbers them.
pub type Uid = u64;
/// Milliseconds since the Unix epoch.
pub type Millis = i64;

// ---------------------------------------------------------------------------------------------
// Error codes and close codes
// ---------------------------------------------------------------------------------------------

/// Declares [`ErrorCode`], its wire names and [`ErrorCode::ALL`] from one list, so a new code
/// cannot be left out of `ALL` (and with it out of the `proto/` completeness tests).
macro_rules! every_error_code {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// The complete list of error codes a client can see, on HTTP (`error`) and WebSocket
        /// (`code`). `proto/errors.md` documents each one; never rename a variant.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorCode {
            /// Every code, in the order `proto/errors.md` lists them.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The stable wire name, e.g. `device_limit`.
            pub fn as_str(self) -> &'static str {
                // Mirrors serde's snake_case names; a unit test keeps the two equal.
                match self {
                    $(ErrorCode::$variant => $name,)+
                }
            }
        }
    };
}

every_error_code! {
    /// The body or frame is not valid JSON.
    BadJson => "bad_json",
    /// The body or frame is JSON but not an object.
    BadRequest => "bad_request",
    /// `op` names no operation this endpoint knows.
    UnknownOp => "unknown_op",
    /// A required field is absent.
    MissingField => "missing_field",
    /// A field has the wrong JSON type.
    WrongType => "wrong_type",
    /// A field has the right type but a value out of range (empty, too long, bad characters).
    BadValue => "bad_value",
    /// The app token is missing or wrong.
    BadAppToken => "bad_app_token",
    /// The admin token is missing or wrong.
    BadAdminToken => "bad_admin_token",
    /// The named user does not exist.
    NoSuchUser => "no_such_user",
    /// The person already has eight devices.
    DeviceLimit => "device_limit",
    /// The requested link is not allowed (a primary with linked users of its own, another person's user).
    BadLink => "bad_link",
    /// `expiry` is outside 1..=5256000 minutes.
    BadExpiry => "bad_expiry",
    /// The login token is unknown, expired, revoked, or for another appid.
    AuthFailed => "auth_failed",
    /// The first frame was not `login`, or `login` came twice.
    LoginRequired => "login_required",
    /// The recipient address names no user.
    UnknownRecipient => "unknown_recipient",
    /// A `send` reused a client id with a different body, other files or another recipient.
    DuplicateId => "duplicate_id",
    /// The frame exceeds the size limit.
    FrameTooLarge => "frame_too_large",
    /// Binary frames are not part of the protocol.
    BinaryFrame => "binary_frame",
    /// A text frame was not valid UTF-8.
    BadUtf8 => "bad_utf8",
    /// No `login` arrived within the login deadline.
    LoginTimeout => "login_timeout",
    /// The call id names no live call of this connection's person.
    NoSuchCall => "no_such_call",
    /// A call with this id is already live.
    CallExists => "call_exists",
    /// The action does not fit the call's state or this device's part in it.
    CallState => "call_state",
    /// The connection is already a party to the most live calls one connection may have.
    TooManyCalls => "too_many_calls",
    /// HTTP: the method is not POST.
    MethodNotAllowed => "method_not_allowed",
    /// HTTP: the body is larger than the limit.
    BodyTooLarge => "body_too_large",
    /// HTTP: the Content-Type is not JSON.
    UnsupportedMediaType => "unsupported_media_type",
    /// HTTP: no such path.
    NotFound => "not_found",
    /// JSON nested deeper than the limit.
    TooDeep => "too_deep",
    /// The connection sends faster than its rate limit; the frame was dropped.
    RateLimited => "rate_limited",
    /// Too many failed logins from this address: a failed login is answered late with this.
    TooManyLogins => "too_many_logins",
    /// The page's origin is not in the broker's allow-list.
    OriginNotAllowed => "origin_not_allowed",
    /// The broker is at its connection limit.
    ServerFull => "server_full",
    /// This client address holds as many connections (HTTP, or WebSockets not yet logged in)
    /// as one address may.
    TooManyConnections => "too_many_connections",
    /// A request body did not arrive within `body_timeout`; the connection is closed.
    RequestTimeout => "request_timeout",
    /// `/metrics` needs the metrics token as `Authorization: Bearer`, or a loopback client.
    BadMetricsToken => "bad_metrics_token",
    /// A file id names no file this person may use (never uploaded, not shared with this
    /// person, or removed by retention).
    NoSuchFile => "no_such_file",
    /// HTTP: an upload is larger than the file size limit.
    FileTooLarge => "file_too_large",
    /// HTTP: an upload looks like an image (by its bytes) but cannot be decoded.
    BadImage => "bad_image",
    /// HTTP: an image's dimensions are over the limit (a decompression bomb, or simply huge).
    ImageTooLarge => "image_too_large",
    /// HTTP: the `Range` asks for bytes the file does not have.
    RangeNotSatisfiable => "range_not_satisfiable",
    /// HTTP: an upload would take the person over its upload quota (bytes in the last 24 h).
    QuotaExceeded => "quota_exceeded",
    /// The server failed; the request may be retried.
    Internal => "internal",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes the broker sends. `proto/close-codes.md` documents each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    /// The connection ended normally.
    Normal = 1000,
    /// The broker is shutting down; reconnect (elsewhere).
    GoingAway = 1001,
    /// The peer broke the WebSocket protocol.
    ProtocolError = 1002,
    /// A binary frame arrived; the protocol is JSON text only.
    UnsupportedData = 1003,
    /// A text frame was not valid UTF-8.
    InvalidPayload = 1007,
    /// A frame exceeded the size limit.
    MessageTooBig = 1009,
    /// Login failed; get a fresh token before reconnecting.
    AuthFailed = 4001,
    /// No login within the login deadline.
    LoginTimeout = 4002,
    /// A newer login for the same uid replaced this connection; do not reconnect automatically.
    Replaced = 4003,
    /// The token was revoked or the user deleted; get a fresh token before reconnecting.
    Revoked = 4004,
    /// No frame (not even a pong) within the idle timeout: the peer counts as dead.
    IdleTimeout = 4005,
    /// The connection did not read fast enough; reconnect and resync.
    SlowConsumer = 4008,
    /// The broker is at its connection limit; try again later (after a backoff).
    TryAgainLater = 1013,
}

impl CloseCode {
    /// The numeric code sent in the close frame.
    pub fn code(self) -> u16 {
        self as u16
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// A frame or body that could not be decoded, with the code and a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    /// The stable error code.
    pub code: ErrorCode,
    /// What is wrong and where.
    pub message: String,
}

impl DecodeError {
    /// Builds an error from a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        DecodeError {
            code,
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
struct OpOnly<'a> {
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
}

/// Reads the `op` of a JSON object, with line and column for malformed JSON.
pub fn read_op(text: &str) -> Result<Cow<'_, str>, DecodeError> {
    let peek: OpOnly<'_> = match serde_json::from_str(text) {
        Ok(peek) => peek,
        Err(err) if err.is_syntax() || err.is_eof() => return Err(malformed(&err)),
        Err(err) if err.to_string().starts_with("duplicate field") => {
            return Err(duplicate_field("op"));
        }
        Err(_) => {
            // Either not an object, or `op` is not a string: tell which.
            let value: Value = serde_json::from_str(text).map_err(|err| malformed(&err))?;
            return Err(match value {
                Value::Object(map) => DecodeError::new(
                    ErrorCode::WrongType,
                    format!(".op: expected a string, found {}", json_kind(&map["op"])),
                ),
                other => DecodeError::new(
                    ErrorCode::BadRequest,
                    format!("expected a JSON object, found {}", json_kind(&other)),
                ),
            });
        }
    };
    // serde fills a struct from an array by position; a frame must be an object.
    if !text.trim_start().starts_with('{') {
        return Err(DecodeError::new(
            ErrorCode::BadRequest,
            "expected a JSON object, found an array",
        ));
    }
    peek.op
        .ok_or_else(|| DecodeError::new(ErrorCode::MissingField, "missing field `op`"))
}

/// A frame that names a field twice: which one counts is not obvious, so neither does.
fn duplicate_field(field: &str) -> DecodeError {
    DecodeError::new(
        ErrorCode::BadJson,
        format!("duplicate field `{field}`: name each field of a frame once"),
    )
}

/// The text without a leading UTF-8 byte order mark, which some (Windows) tools write before
/// JSON; it is not JSON whitespace, so serde_json would refuse the text at line 1, column 1.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{FEFF}').unwrap_or(text)
}

/// Refuses JSON nested deeper than `max` levels, by a scan that allocates nothing (so a
/// hostile frame cannot make the parser recurse or allocate first).
pub fn check_depth(text: &[u8], max: usize) -> Result<(), DecodeError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(DecodeError::new(
                        ErrorCode::TooDeep,
                        format!("JSON is nested deeper than {max} levels"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Decodes one op's own struct, naming the field path of a missing or mistyped field.
pub fn decode_fields<T: DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return malformed(&inner);
        }
        field_error(&path, &inner.to_string())
    })
}

/// Decodes one op's struct from an already parsed JSON value (the backend API's path).
pub fn decode_value<T: DeserializeOwned>(value: &Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value)
        .map_err(|err| field_error(&err.path().to_string(), &err.into_inner().to_string()))
}

fn field_error(path: &str, detail: &str) -> DecodeError {
    // serde_json's messages end in " at line L column C"; the path already says where.
    let detail = detail.split(" at line ").next().unwrap_or(detail);
    if let Some(field) = detail.strip_prefix("duplicate field ") {
        return duplicate_field(field.trim_matches('`'));
    }
    if let Some(rest) = detail.strip_prefix("missing field ") {
        let field = rest.trim_matches('`');
        let full = if path == "." || path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return DecodeError::new(
            ErrorCode::MissingField,
            format!("missing field `{}`", full.trim_start_matches('.')),
        );
    }
    let path = if path.is_empty() || path == "." {
        String::new()
    } else {
        format!(".{}", path.trim_start_matches('.'))
    };
    if detail.contains(BEYOND_MAX_ID) {
        return DecodeError::new(ErrorCode::BadValue, format!("{path}: {detail}"));
    }
    DecodeError::new(
        ErrorCode::WrongType,
        format!("{path}: {}", plain_types(detail)),
    )
}

/// Replaces Rust type names in serde's messages with JSON words.
fn plain_types(detail: &str) -> String {
    let detail = match detail.find("expected struct ") {
        Some(at) => format!("{}expected an object", &detail[..at]),
        None => detail.to_string(),
    };
    detail
        .replace("expected i64", "expected an integer")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected u32", "expected a non-negative integer")
}

/// A malformed-JSON error that says the line and column, and what usually causes it.
pub fn malformed(err: &serde_json::Error) -> DecodeError {
    let detail = err.to_string();
    let detail = detail.split(" at line ").next().unwrap_or(&detail);
    let hint = if detail.contains("expected `,` or `}`") || detail.contains("expected `,` or `]`") {
        " (a comma is probably missing before this point)"
    } else if detail.contains("trailing comma") {
        " (remove the comma before the closing bracket)"
    } else {
        ""
    };
    DecodeError::new(
        ErrorCode::BadJson,
        format!(
            "malformed JSON at line {}, column {}: {detail}{hint}",
            err.line(),
            err.column()
        ),
    )
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes an internally tagged frame: `op` first, then that op's struct.
fn decode_tagged<T>(
    text: &str,
    known: &[&str],
    by_op: impl FnOnce(&str, &str) -> Option<Result<T, DecodeError>>,
) -> Result<T, DecodeError> {
    let text = strip_bom(text);
    let op = read_op(text)?;
    by_op(&op, text).unwrap_or_else(|| {
        Err(DecodeError::new(
            ErrorCode::UnknownOp,
            format!("unknown op `{op}`; known ops: {}", known.join(", ")),
        ))
    })
}

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
}

impl ClientFrame {
    /// The ops a device may send.
    pub const OPS: &'static [&'static str] = &[
        "login", "send", "call", "history", "ack", "read", "profile", "file_url",
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
const BEYOND_MAX_ID: &str = "is beyond the largest seq, mid or uid";

/// A seq, mid or uid: a non-negative integer up to [`MAX_NUMBER_ID`].
fn bounded<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    if n > MAX_NUMBER_ID {
        return Err(serde::de::Error::custom(format_args!(
            "{n} {BEYOND_MAX_ID} ({MAX_NUMBER_ID})"
        )));
    }
    Ok(n)
}

/// An optional [`bounded`] number.
fn bounded_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Bounded(#[serde(deserialize_with = "bounded")] u64);
    Ok(Option::<Bounded>::deserialize(d)?.map(|b| b.0))
}

/// Refuses raw JSON the broker would store or relay as it is (`body`, call `data`) unless it is
/// I-JSON (RFC 7493), so no frame a strict client cannot read is ever replayed to it.
fn check_stored_json(field: &str, raw: Option<&RawValue>) -> Result<(), DecodeError> {
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
}

impl ServerFrame {
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

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_names_itself_as_serde_does() {
        for &code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            let back: ErrorCode = serde_json::from_value(code.as_str().into()).unwrap();
            assert_eq!(back, code);
        }
        let names: std::collections::BTreeSet<&str> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "a wire name used twice");
    }

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

#[cfg(test)]
mod fuzz_tests;

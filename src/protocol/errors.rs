//! The error-code table ([`ErrorCode`]), the WebSocket close codes ([`CloseCode`]) and the
//! decoding error ([`DecodeError`]).

use std::fmt;

use serde::{Deserialize, Serialize};

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
    /// The user (or its person) is disabled by the app's backend: its logins are refused, and
    /// messages to it or from it are refused.
    UserDisabled => "user_disabled",
    /// A `presence` subscription to a person this person may not see (the broker's
    /// `--presence` policy, or that person's deny list from the backend).
    PresenceDenied => "presence_denied",
    /// A connection (or a watched person) already has the most presence subscriptions allowed.
    TooManySubscriptions => "too_many_subscriptions",
    /// The op needs a feature the broker was started without (e.g. `webhooks` without
    /// `--webhook-url`); the message names the setting.
    NotConfigured => "not_configured",
    /// The op is turned off on this broker (the message names the flag that turns it on).
    Forbidden => "forbidden",
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
    /// The app's backend disabled the user (or its person); do not reconnect until it is enabled.
    UserDisabled = 4010,
}

impl CloseCode {
    /// The numeric code sent in the close frame.
    pub fn code(self) -> u16 {
        self as u16
    }
}

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
}

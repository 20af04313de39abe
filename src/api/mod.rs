//! `POST /backend`: the app backend's API, request and response shapes after mesibo's.
//!
//! Order of checks: transport (method, size, content type) → JSON → `op` → app token → the op's
//! fields → the store. Every refusal is `result:false` with a stable `error` code and a
//! `message`, HTTP 200 (as mesibo answers); 4xx only for transport errors. A refused op writes
//! nothing: each op is one store transaction.

mod admin;
mod devices;
mod message;
mod presence;
mod profiles;
mod tokens;
mod users;
mod webhooks;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::metrics::Metrics;
use crate::protocol::{
    BACKEND_OPS, BackendResponse, DecodeError, ErrorBody, ErrorCode, UserSelector, check_depth,
    malformed,
};
use crate::state::ServerState;
use crate::store::{StoreError, UserKey};

/// A refused backend request.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// What to fix.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(err: DecodeError) -> ApiError {
        ApiError::new(err.code, err.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err.refusal() {
            Some((code, message)) => ApiError::new(code, message),
            None => {
                tracing::error!(error = %err, "backend op failed in the store");
                ApiError::new(ErrorCode::Internal, "internal error; retry the request")
            }
        }
    }
}

/// The answer to one backend request: the op's body or a refusal.
type OpResult = Result<Response, ApiError>;

/// `POST /backend`.
pub async fn backend(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refusal) = check_content_type(&state.metrics, &headers) {
        return refusal;
    }
    let limit = state.config.max_body_bytes;
    // The whole body within body_timeout: a body trickled byte by byte would otherwise hold the
    // connection (and a descriptor) forever, before the token is even checked.
    let deadline = state.config.body_timeout;
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Err(_) => {
            let mut refusal = transport_error(
                &state.metrics,
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {} ms; send it whole, at once",
                    deadline.as_millis()
                ),
            );
            // hyper closes the connection after this answer instead of reading on.
            refusal.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return refusal;
        }
        Ok(Err(_)) => {
            return transport_error(
                &state.metrics,
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BodyTooLarge,
                format!("the request body is larger than {limit} bytes"),
            );
        }
    };
    // A UTF-8 byte order mark (Windows tools write one) is not JSON; it is skipped.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        let err = ApiError::new(
            ErrorCode::BadJson,
            "malformed JSON at line 1, column 0: the body is empty; send a JSON object with `op` and `token`",
        );
        return refusal(&state.metrics, "", None, err);
    }
    if let Err(err) = check_depth(bytes, state.config.max_json_depth) {
        return refusal(&state.metrics, "", None, err.into());
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(err) => return refusal(&state.metrics, "", None, malformed(&err).into()),
    };
    let Value::Object(map) = &value else {
        let err = ApiError::new(ErrorCode::BadRequest, "the body must be a JSON object");
        return refusal(&state.metrics, "", None, err);
    };
    let id = map.get("id").cloned();
    let op = match map.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(_) => {
            let err = ApiError::new(ErrorCode::WrongType, ".op: expected a string");
            return refusal(&state.metrics, "", id, err);
        }
        None => {
            let err = ApiError::new(
                ErrorCode::MissingField,
                format!("missing field `op`; known ops: {}", BACKEND_OPS.join(", ")),
            );
            return refusal(&state.metrics, "", id, err);
        }
    };
    // The body parsed as JSON, so it is UTF-8; `message` reads its body raw from it.
    let raw = std::str::from_utf8(bytes).unwrap_or_default();
    let result = dispatch(&state, &op, id.clone(), &value, raw).await;
    tracing::debug!(op = %op, ok = result.is_ok(), "backend op");
    let outcome = match &result {
        Ok(_) => "ok",
        Err(err) => err.code.as_str(),
    };
    // Unknown ops are counted under one label, so a client cannot grow the label set.
    let op_label = if BACKEND_OPS.contains(&op.as_str()) {
        op.as_str()
    } else {
        "unknown"
    };
    state
        .metrics
        .backend_calls
        .with_label_values(&[op_label, outcome])
        .inc();
    match result {
        Ok(response) => response,
        Err(err) => refusal(&state.metrics, &op, id, err),
    }
}

async fn dispatch(
    state: &ServerState,
    op: &str,
    id: Option<Value>,
    value: &Value,
    raw: &str,
) -> OpResult {
    if !BACKEND_OPS.contains(&op) {
        return Err(ApiError::new(
            ErrorCode::UnknownOp,
            format!("unknown op `{op}`; known ops: {}", BACKEND_OPS.join(", ")),
        ));
    }
    // `stats` is the operator's, behind the admin token; every other op is the app's.
    if op == "stats" {
        check_admin_token(state, value)?;
    } else {
        check_app_token(state, value)?;
    }
    let reply = Reply { op, id };
    match op {
        "useradd" => users::useradd(state, reply, value).await,
        "userdel" => users::userdel(state, reply, value).await,
        "tokendel" => tokens::tokendel(state, reply, value).await,
        "devices" => devices::devices(state, reply, value).await,
        "profileset" => profiles::profileset(state, reply, value).await,
        "stats" => admin::stats(state, reply).await,
        "apptokenrotate" => admin::apptokenrotate(state, reply, value).await,
        "message" => message::message(state, reply, value, raw).await,
        "presence" => presence::presence(state, reply, value).await,
        "webhooks" => webhooks::webhooks(state, reply, value).await,
        "webhookretry" => webhooks::webhookretry(state, reply, value).await,
        _ => unreachable!("BACKEND_OPS lists every op dispatched here"),
    }
}

/// Builds the success response of one request.
struct Reply<'a> {
    op: &'a str,
    id: Option<Value>,
}

impl Reply<'_> {
    fn ok<T: Serialize>(self, body: T) -> OpResult {
        Ok(axum::Json(BackendResponse {
            op: self.op.to_string(),
            result: true,
            id: self.id,
            body,
        })
        .into_response())
    }
}

/// The same check and the same answer whether or not any user exists, in constant time.
fn check_app_token(state: &ServerState, value: &Value) -> Result<(), ApiError> {
    let given = value.get("token").and_then(Value::as_str).unwrap_or("");
    if !state.app_token_ok(given) {
        return Err(ApiError::new(
            ErrorCode::BadAppToken,
            "the app token in `token` is missing or wrong; use the token octet printed at first start or set with --app-token",
        ));
    }
    Ok(())
}

/// The admin token in `token`, compared in constant time.
fn check_admin_token(state: &ServerState, value: &Value) -> Result<(), ApiError> {
    let given = value.get("token").and_then(Value::as_str).unwrap_or("");
    if !state.admin_token_ok(given) {
        return Err(ApiError::new(
            ErrorCode::BadAdminToken,
            "`stats` needs the admin token in `token` (printed at first start, or set with --admin-token)",
        ));
    }
    Ok(())
}

/// Turns a `uid` (top level or in `user`) or `user.address` into a [`UserKey`].
fn user_key(value: &Value) -> Result<UserKey, ApiError> {
    require_objects(value, &["user"])?;
    let sel: UserSelector = crate::protocol::decode_value(value)?;
    let inner = sel.user.as_ref();
    if let Some(uid) = sel.uid.or(inner.and_then(|u| u.uid)) {
        return Ok(UserKey::Uid(uid));
    }
    match inner.and_then(|u| u.address.clone()) {
        // Only the length is checked when naming a user: an address stored before invisible
        // characters were refused must stay reachable, so that it can be deleted.
        Some(address) => {
            check_address_length("user.address", &address)?;
            Ok(UserKey::Address(address))
        }
        None => Err(ApiError::new(
            ErrorCode::MissingField,
            "missing field `uid` (or `user.address`): name the user",
        )),
    }
}

/// serde fills a struct from an array by position, so the object-typed fields at these paths
/// (dot-separated) are checked to be objects, when present, before decoding.
fn require_objects(value: &Value, paths: &[&str]) -> Result<(), ApiError> {
    for path in paths {
        let found = path.split('.').try_fold(value, |v, key| v.get(key));
        if let Some(found) = found
            && !found.is_object()
            && !found.is_null()
        {
            let kind = match found {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                _ => "a boolean",
            };
            return Err(ApiError::new(
                ErrorCode::WrongType,
                format!(".{path}: invalid type: {kind}, expected an object"),
            ));
        }
    }
    Ok(())
}

/// Longest address a user can be created with.
pub const MAX_ADDRESS: usize = 255;
/// Longest address accepted where it names a linked user octet created: the primary's address
/// (up to [`MAX_ADDRESS`]) plus `-linked-<n>`.
pub const MAX_LINKED_ADDRESS: usize = MAX_ADDRESS + "-linked-".len() + 8;

/// An address: 1 to 255 characters (more for a `<primary>-linked-<n>` address octet made), no
/// spaces or control characters.
fn check_address(field: &str, address: &str) -> Result<(), ApiError> {
    check_address_length(field, address)?;
    // Zero-width and bidi-override characters make a lookalike of another address (a sender
    // that shows as someone else), so an address never holds them.
    if let Some(c) = address
        .chars()
        .find(|&c| crate::files::is_invisible_format(c))
    {
        return Err(ApiError::new(
            ErrorCode::BadValue,
            format!(
                "`{field}` contains the invisible character U+{:04X} (zero-width or bidi control); addresses must not",
                c as u32
            ),
        ));
    }
    Ok(())
}

/// An address's length (more for a `<primary>-linked-<n>` address) and that it holds no spaces
/// or control characters: what naming an existing user needs.
fn check_address_length(field: &str, address: &str) -> Result<(), ApiError> {
    let max = if is_linked_form(address) {
        MAX_LINKED_ADDRESS
    } else {
        MAX_ADDRESS
    };
    check_text(field, address, max)
}

/// Whether the address has the `-linked-<n>` suffix octet gives linked users.
fn is_linked_form(address: &str) -> bool {
    address.rsplit_once("-linked-").is_some_and(|(primary, n)| {
        !primary.is_empty()
            && !n.is_empty()
            && n.len() <= 8
            && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// A short identifier or name: not empty, at most `max` characters, no spaces or control
/// characters.
fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::new(
            ErrorCode::BadValue,
            format!("`{field}` is empty"),
        ));
    }
    if value.chars().count() > max {
        return Err(ApiError::new(
            ErrorCode::BadValue,
            format!("`{field}` is longer than {max} characters"),
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::new(
            ErrorCode::BadValue,
            format!("`{field}` contains spaces or control characters"),
        ));
    }
    Ok(())
}

fn check_content_type(metrics: &Metrics, headers: &HeaderMap) -> Option<Response> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // curl -d sends form-urlencoded and a browser's no-cors fetch sends text/plain; the body is
    // still JSON, as mesibo's examples show, so both are read as JSON.
    let json_like = essence == "application/json"
        || essence.ends_with("+json")
        || essence == "text/plain"
        || essence == "application/x-www-form-urlencoded";
    (!json_like).then(|| {
        transport_error(
            metrics,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("Content-Type `{essence}` is not JSON; send application/json"),
        )
    })
}

/// A `result:false` answer; every one is counted in `octet_errors_total` by its code.
pub(crate) fn refusal(metrics: &Metrics, op: &str, id: Option<Value>, err: ApiError) -> Response {
    metrics.errors.with_label_values(&[err.code.as_str()]).inc();
    axum::Json(BackendResponse {
        op: op.to_string(),
        result: false,
        id,
        body: ErrorBody {
            error: err.code,
            message: err.message,
        },
    })
    .into_response()
}

/// A JSON refusal with an HTTP status, for transport-level errors (also the gateway's).
pub(crate) fn transport_error(
    metrics: &Metrics,
    status: StatusCode,
    code: ErrorCode,
    message: String,
) -> Response {
    (
        status,
        refusal(metrics, "", None, ApiError::new(code, message)),
    )
        .into_response()
}

/// A handler for the methods a path does not take: 405 with `Allow: allow` and `message`.
pub fn method_not_allowed(
    allow: &'static str,
    message: &'static str,
) -> impl Fn(State<Arc<ServerState>>) -> std::future::Ready<Response> + Clone {
    move |State(state): State<Arc<ServerState>>| {
        let mut response = transport_error(
            &state.metrics,
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            message.into(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        std::future::ready(response)
    }
}

/// Any unknown path.
pub async fn not_found(State(state): State<Arc<ServerState>>) -> Response {
    transport_error(
        &state.metrics,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such path; the backend API is POST /backend and devices connect to GET /ws".into(),
    )
}

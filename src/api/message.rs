//! `message`: the backend sends a message as one of its users (mesibo's shape). It takes the
//! same path as a device's `send` (`Store::append_message`: the log, the fan-out to both persons'
//! devices, receipts), so a backend message is indistinguishable from a device's to everyone
//! who receives it, and a retry with the same id is idempotent exactly as a device's retry.

use serde_json::Value;
use serde_json::value::RawValue;

use super::{ApiError, OpResult, Reply, check_address_length, require_objects};
use crate::protocol::{
    ErrorCode, MAX_CLIENT_ID, MessageBody, MessageRequest, check_stored_json, decode_fields,
    json_kind,
};
use crate::state::{ServerState, now_millis};
use crate::store::{Identity, NO_DEVICE, NewMessage, PersonDevices, PersonId, StoreError, UserKey};

/// The most recipients one `message` request may list in `to`.
pub const MAX_RECIPIENTS: usize = 100;
/// The longest `expiry` accepted, in seconds (ten years).
pub const MAX_EXPIRY_SECONDS: u64 = 315_360_000;

/// # message
/// Stores and delivers `message.message` from the user at `message.from` to each address in
/// `message.to` (comma-separated), one message per recipient, in order. Every device of both
/// persons gets it live (the sender person's devices marked `out`), and it is in both logs.
/// Errors: missing_field, wrong_type, bad_value, no_such_user (`from`), unknown_recipient
/// (`to`), user_disabled (`from` or a recipient is disabled), duplicate_id (`id` reused for
/// another message).
pub(super) async fn message(
    state: &ServerState,
    reply: Reply<'_>,
    value: &Value,
    raw: &str,
) -> OpResult {
    require_objects(value, &["message"])?;
    // From the request's text, not the parsed value: the body is relayed byte for byte and
    // checked as I-JSON (duplicate keys, huge numbers), which a parsed value has lost.
    let spec = decode_fields::<MessageRequest>(raw)?.message;
    check_address_length("message.from", &spec.from)?;
    let to = recipients(&spec.to)?;
    check_body(state, &spec.message)?;
    check_expiry(spec.expiry.as_ref())?;
    let id = message_id(spec.id.as_ref())?;

    let sender = state
        .store
        .devices(UserKey::Address(spec.from.clone()))
        .await
        .map_err(|err| match err {
            StoreError::NoSuchUser(_) => ApiError::new(
                ErrorCode::NoSuchUser,
                format!(
                    "`message.from`: no user has the address {}; create it with useradd first",
                    spec.from
                ),
            ),
            other => other.into(),
        })?;
    check_active("message.from", &sender, &spec.from)?;
    // Every recipient is checked before the first message is stored, so a bad address
    // refuses the whole request and stores nothing.
    let mut persons: Vec<(PersonId, &str)> = Vec::with_capacity(to.len());
    for address in &to {
        let person = recipient(state, address).await?;
        check_active("message.to", &person, address)?;
        if let Some((_, first)) = persons.iter().find(|(p, _)| *p == person.person) {
            return Err(ApiError::new(
                ErrorCode::BadValue,
                format!(
                    "`message.to` names the person {} twice ({first} and {address}); list each person once",
                    person.primary_address
                ),
            ));
        }
        persons.push((person.person, address));
    }

    let from = Identity {
        // No device sent it: every device of the sender's person gets the `out` copy.
        uid: NO_DEVICE,
        address: spec.from.clone(),
        person: sender.person,
        primary_address: sender.primary_address.clone(),
        device: None,
        token_expires: i64::MAX,
    };
    let ts = now_millis();
    let mut mids = Vec::with_capacity(to.len());
    for (k, address) in to.iter().enumerate() {
        let msg = NewMessage {
            from: from.clone(),
            client_id: client_id(&id, k),
            to: address.clone(),
            body: spec.message.clone(),
            files: Vec::new(),
            ts,
            accepted: std::time::Instant::now(),
        };
        match state.store.append_message(msg).await {
            Ok(appended) => mids.push(appended.mid),
            Err(err) => return Err(append_refusal(err, &id, &spec.from, address, k)),
        }
    }
    reply.ok(MessageBody { mid: mids[0], mids })
}

/// The addresses of `to`: comma-separated, spaces around each ignored, each listed once.
fn recipients(to: &str) -> Result<Vec<String>, ApiError> {
    let list: Vec<String> = to.split(',').map(|a| a.trim().to_string()).collect();
    if list.len() > MAX_RECIPIENTS {
        return Err(ApiError::new(
            ErrorCode::BadValue,
            format!(
                "`message.to` lists {} addresses; at most {MAX_RECIPIENTS} per request",
                list.len()
            ),
        ));
    }
    for (i, address) in list.iter().enumerate() {
        if address.is_empty() {
            return Err(ApiError::new(
                ErrorCode::BadValue,
                format!(
                    "`message.to` has an empty address at position {}; separate addresses with single commas",
                    i + 1
                ),
            ));
        }
        check_address_length("message.to", address)?;
        if list[..i].contains(address) {
            return Err(ApiError::new(
                ErrorCode::BadValue,
                format!("`message.to` lists {address} twice; list each recipient once"),
            ));
        }
    }
    Ok(list)
}

/// The person at a recipient address, or a refusal that names `message.to`.
async fn recipient(state: &ServerState, address: &str) -> Result<PersonDevices, ApiError> {
    state
        .store
        .devices(UserKey::Address(address.to_string()))
        .await
        .map_err(|err| match err {
            StoreError::NoSuchUser(_) => ApiError::new(
                ErrorCode::UnknownRecipient,
                format!("`message.to`: no user has the address {address}; nothing was sent"),
            ),
            other => other.into(),
        })
}

/// Refuses a disabled user (or a user of a disabled person) named at `field`.
fn check_active(field: &str, person: &PersonDevices, address: &str) -> Result<(), ApiError> {
    let active = person
        .devices
        .iter()
        .find(|d| d.address == address)
        .is_none_or(|d| d.active);
    if active {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::UserDisabled,
        format!(
            "`{field}`: {address} is disabled; enable it with useradd and `user.active: true` first; nothing was sent"
        ),
    ))
}

/// The limits a device's `send` body has: I-JSON, and no larger than a device's frame.
fn check_body(state: &ServerState, body: &RawValue) -> Result<(), ApiError> {
    check_stored_json("message.message", Some(body))?;
    let max = state.config.max_frame_bytes;
    if body.get().len() > max {
        return Err(ApiError::new(
            ErrorCode::BadValue,
            format!(
                "`message.message` is {} bytes; a message body is at most {max} bytes, as a device's",
                body.get().len()
            ),
        ));
    }
    Ok(())
}

/// mesibo's `expiry` (seconds): a positive integer up to ten years, when given.
fn check_expiry(expiry: Option<&Value>) -> Result<(), ApiError> {
    match expiry {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(s) if (1..=MAX_EXPIRY_SECONDS).contains(&s) => Ok(()),
            _ => Err(ApiError::new(
                ErrorCode::BadValue,
                format!("`message.expiry` is {n}; use 1 to {MAX_EXPIRY_SECONDS} seconds"),
            )),
        },
        Some(other) => Err(ApiError::new(
            ErrorCode::WrongType,
            format!(
                ".message.expiry: invalid type: {}, expected a positive integer (seconds)",
                json_kind(other)
            ),
        )),
    }
}

/// The backend's id for the message, as text; a fresh random one when none is given (then a
/// repeated request is a new message).
fn message_id(id: Option<&Value>) -> Result<String, ApiError> {
    let text = match id {
        None | Some(Value::Null) => {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes)
                .map_err(|_| ApiError::new(ErrorCode::Internal, "no randomness; retry"))?;
            return Ok(format!("auto-{}", hex::encode(bytes)));
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        Some(Value::Number(n)) => {
            return Err(ApiError::new(
                ErrorCode::BadValue,
                format!(
                    "`message.id` is {n}; use a non-negative integer or a string of 1 to {MAX_CLIENT_ID} characters"
                ),
            ));
        }
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::WrongType,
                format!(
                    ".message.id: invalid type: {}, expected a string or a non-negative integer",
                    json_kind(other)
                ),
            ));
        }
    };
    if text.is_empty() || text.chars().count() > MAX_CLIENT_ID {
        return Err(ApiError::new(
            ErrorCode::BadValue,
            format!("`message.id` must be 1 to {MAX_CLIENT_ID} characters"),
        ));
    }
    Ok(text)
}

/// The client id the store keys the message for recipient `k` by, with the sender person.
/// The `backend:` prefix keeps the backend's ids apart from the sender's devices' client ids
/// (a device counting 1, 2, 3 and a backend numbering its messages would otherwise collide),
/// and `k` gives each recipient of one request its own message.
fn client_id(id: &str, k: usize) -> String {
    format!("backend:{}:{id}", k + 1)
}

/// What the backend is told when storing the message for recipient `k` failed. The messages
/// to earlier recipients are stored; a retry with the same id completes the request.
fn append_refusal(err: StoreError, id: &str, from: &str, to: &str, k: usize) -> ApiError {
    let mut refusal = match err {
        StoreError::DuplicateId(_) => ApiError::new(
            ErrorCode::DuplicateId,
            format!(
                "`message.id` {id} was already used by {from} for a different message (another body or recipient); use a new id"
            ),
        ),
        other => ApiError::from(other),
    };
    if k > 0 {
        refusal.message = format!(
            "{} (while sending to {to}; the recipients before it got the message, and a retry with the same id sends only what is missing)",
            refusal.message
        );
    }
    refusal
}

//! What octet POSTs to the app's backend (`--webhook-url`): mesibo's v2 webhook shape, each
//! event extended with its `seq`, `mid`, the sender and the person's devices. proto/webhooks.md
//! documents it with a receiver that checks the signature.

use serde::{Deserialize, Serialize};

use super::{Millis, Origin, Uid};

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "X-Octet-Signature";

/// How much of a message body an event carries (with `--webhook-include-body`).
pub const WEBHOOK_BODY_BYTES: usize = 256;

/// One webhook request: up to 100 events, oldest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct WebhookRequest {
    /// Always `octet`.
    pub server: String,
    /// Unique per request (its first event's id and the attempt number).
    pub id: String,
    /// The payload version: 2.
    pub v: u32,
    /// The app: always 1 (octet serves one app).
    pub aid: u32,
    /// When the request was sent (ms since the epoch).
    pub ts: Millis,
    /// The events, per person in `seq` order.
    pub events: Vec<WebhookEvent>,
}

/// One event.
#[derive(Debug, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// `message`, `read`, `call`, `call_ended` or `presence`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Stable per event (`msg-<mid>`, `read-<uid>-<seq>`, `call-…`, `call_ended-…`,
    /// `presence-…`): a receiver that sees an id twice
    /// (a resend after a crash) handles it once.
    pub id: String,
    /// When it happened (ms since the epoch).
    pub ts: Millis,
    /// The person it concerns (a message's recipient, the reader), by its primary user.
    pub user: WebhookUser,
    /// The event's seq in that person's log.
    pub seq: u64,
    /// The message (for `read`: the conversation is read up to this message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mid: Option<u64>,
    /// `message`: the sender's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `read`: the address of the person whose messages were read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// `read`: the device that read (the notification stays relevant on the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The person's devices now.
    pub devices: Vec<WebhookDevice>,
    /// `message` with `--webhook-include-body`: the first 256 bytes of the body's JSON text
    /// (cut on a character boundary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Set when `body` was cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_truncated: Option<bool>,
    /// `call`, `call_ended`: the call id (the caller's choice, as in the `call` frames).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// `call_ended`: `answered` (on one of the person's devices), `rejected`, `missed` (no
    /// answer within the ring timeout) or `cancelled` (the caller hung up or went away).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `presence`: `online` or `offline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `presence` `offline`: when the person's last device left (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Millis>,
}

/// A person, by its primary user.
#[derive(Debug, Serialize, Deserialize)]
pub struct WebhookUser {
    /// The primary's uid (the person's id).
    pub uid: Uid,
    /// The primary's address.
    pub address: String,
}

/// One device of the person.
#[derive(Debug, Serialize, Deserialize)]
pub struct WebhookDevice {
    /// The device's user.
    pub uid: Uid,
    /// Its installation id.
    pub device: Option<String>,
    /// Whether it holds a live connection now.
    pub online: bool,
    /// The last seq it acked.
    pub acked: u64,
}

/// The first [`WEBHOOK_BODY_BYTES`] bytes of `body`, cut on a character boundary, and whether
/// it was cut.
pub fn webhook_body(body: &str) -> (String, bool) {
    if body.len() <= WEBHOOK_BODY_BYTES {
        return (body.to_string(), false);
    }
    let mut end = WEBHOOK_BODY_BYTES;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    (body[..end].to_string(), true)
}

/// `webhooks`: the outbox's state (backend op).
#[derive(Debug, Deserialize)]
pub struct WebhooksRequest {
    /// Most dead events listed (1 to 100, default 100), newest first.
    #[serde(default)]
    pub limit: Option<u64>,
}

/// The body of a `webhooks` answer.
#[derive(Debug, Serialize)]
pub struct WebhooksBody {
    /// Events waiting to be delivered.
    pub pending: u64,
    /// Dead-lettered events, newest first.
    pub dead: Vec<DeadWebhook>,
    /// The oldest waiting event whose last attempt failed, with why; absent when none has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrying: Option<RetryingWebhook>,
}

/// A waiting event whose last attempt failed: a dead entry's fields, and when it is tried next.
#[derive(Debug, Serialize)]
pub struct RetryingWebhook {
    /// The event, its attempts and last error.
    #[serde(flatten)]
    pub event: DeadWebhook,
    /// When the next attempt may run (ms since the epoch).
    pub next_attempt: Millis,
}

/// One dead-lettered event.
#[derive(Debug, Serialize)]
pub struct DeadWebhook {
    /// What `webhookretry` takes.
    pub id: i64,
    /// The event's id in its payload (`msg-<mid>`, `read-<uid>-<seq>`, `call-…`, `call_ended-…`, `presence-…`).
    pub event: String,
    /// `message`, `read`, `call`, `call_ended` or `presence`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The person it concerns (`address` is null once the person was deleted).
    pub user: DeadWebhookUser,
    /// Its seq in that person's log.
    pub seq: u64,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last one failed (`HTTP 500 …`, `timeout`, `connect: …`, `outbox full`).
    pub last_error: Option<String>,
    /// When its retry window started (ms since the epoch).
    pub created: Millis,
}

/// The person a dead event concerns.
#[derive(Debug, Serialize)]
pub struct DeadWebhookUser {
    /// The primary's uid.
    pub uid: Uid,
    /// The primary's address, if the person still exists.
    pub address: Option<String>,
}

/// `webhookretry`: requeues dead events (backend op).
#[derive(Debug, Deserialize)]
pub struct WebhookRetryRequest {
    /// The dead events' ids (from `webhooks`); absent: every dead event.
    #[serde(default)]
    pub ids: Option<Vec<u64>>,
}

/// The body of a `webhookretry` answer.
#[derive(Debug, Serialize)]
pub struct WebhookRetryBody {
    /// How many dead events were requeued (ids that name no dead event are not counted).
    pub requeued: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_cut_on_a_char_boundary() {
        let short = r#"{"text":"hi"}"#;
        assert_eq!(webhook_body(short), (short.to_string(), false));
        // 255 ASCII bytes then a 3-byte character: cutting at 256 would split it.
        let long = format!("{}€€", "a".repeat(255));
        let (cut, truncated) = webhook_body(&long);
        assert!(truncated);
        assert_eq!(cut, "a".repeat(255));
    }
}

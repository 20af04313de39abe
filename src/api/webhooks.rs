//! `webhooks` and `webhookretry`: the webhook outbox, seen and repaired from the app's backend.

use serde_json::Value;

use super::{ApiError, OpResult, Reply};
use crate::protocol::{
    DeadWebhook, DeadWebhookUser, ErrorCode, RetryingWebhook, WebhookRetryBody,
    WebhookRetryRequest, WebhooksBody, WebhooksRequest, decode_value,
};
use crate::state::{ServerState, now_millis};
use crate::store::DeadEvent;

/// Dead events one `webhooks` answer lists at most.
const LIST_MAX: u64 = 100;
/// Ids one `webhookretry` may name.
const RETRY_IDS_MAX: usize = 1000;

/// Both ops need webhooks configured.
fn configured(state: &ServerState) -> Result<(), ApiError> {
    match state.webhooks {
        Some(_) => Ok(()),
        None => Err(ApiError::new(
            ErrorCode::NotConfigured,
            "webhooks are off on this broker; start it with --webhook-url and --webhook-secret",
        )),
    }
}

/// # webhooks
/// How many events wait for the receiver (`pending`), the oldest waiting one whose last attempt
/// failed (`retrying`, with its error, while the receiver fails), and the newest dead-lettered
/// ones (`limit`, 1 to 100, default 100) with their last error. Errors: not_configured, wrong_type,
/// bad_value.
pub(super) async fn webhooks(state: &ServerState, reply: Reply<'_>, value: &Value) -> OpResult {
    configured(state)?;
    let req: WebhooksRequest = decode_value(value)?;
    let limit = req.limit.unwrap_or(LIST_MAX);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::BadValue,
            format!("`limit` is {limit}; use 1 to {LIST_MAX}"),
        ));
    }
    let status = state.store.outbox_status(limit as usize).await?;
    reply.ok(WebhooksBody {
        pending: status.pending,
        dead: status.dead.into_iter().map(listed).collect(),
        retrying: status.retrying.map(|(event, next_at)| RetryingWebhook {
            event: listed(event),
            next_attempt: next_at,
        }),
    })
}

/// An outbox row as the `webhooks` op shows it.
fn listed(d: DeadEvent) -> DeadWebhook {
    DeadWebhook {
        id: d.id,
        event: d.event_id,
        kind: d.kind,
        user: DeadWebhookUser {
            uid: d.person,
            address: d.address,
        },
        seq: d.seq,
        attempts: d.attempts,
        last_error: d.last_error,
        created: d.created_at,
    }
}

/// # webhookretry
/// Requeues the dead events named in `ids` (or, without `ids`, every dead event) with a fresh
/// retry window and attempts from 0; they go out in their original order. Errors:
/// not_configured, wrong_type, bad_value (an empty `ids`, more than 1000).
pub(super) async fn webhookretry(state: &ServerState, reply: Reply<'_>, value: &Value) -> OpResult {
    configured(state)?;
    let req: WebhookRetryRequest = decode_value(value)?;
    let ids = match req.ids {
        Some(ids) if ids.is_empty() || ids.len() > RETRY_IDS_MAX => {
            return Err(ApiError::new(
                ErrorCode::BadValue,
                format!(
                    "`ids` has {} entries; name 1 to {RETRY_IDS_MAX} ids from the `webhooks` op, or leave `ids` out to requeue every dead event",
                    ids.len()
                ),
            ));
        }
        Some(ids) => Some(
            ids.into_iter()
                .map(|id| i64::try_from(id).unwrap_or(i64::MAX))
                .collect(),
        ),
        None => None,
    };
    let requeued = state.store.outbox_retry(ids, now_millis()).await?;
    if let Some(webhooks) = &state.webhooks {
        webhooks.poke();
    }
    reply.ok(WebhookRetryBody {
        requeued: requeued as u64,
    })
}

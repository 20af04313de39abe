//! The operator's ops: `stats` (admin token) and `apptokenrotate` (app token).

use serde_json::Value;

use super::{ApiError, OpResult, Reply};
use crate::auth::{PlainToken, TokenHash};
use crate::protocol::{AppStats, ErrorCode, RotateBody, RotateRequest, StatsBody, decode_value};
use crate::state::{ServerState, now_millis};

/// Default and longest grace period of the old app token, in minutes.
const GRACE_DEFAULT: i64 = 60;
const GRACE_MAX: i64 = 7 * 24 * 60;

/// # stats
/// Totals from the store and this broker's live numbers, per appid too. Needs the admin token
/// in `token`. Errors: bad_admin_token.
pub(super) async fn stats(state: &ServerState, reply: Reply<'_>) -> OpResult {
    let totals = state.store.stats().await?;
    reply.ok(StatsBody {
        users: totals.users,
        persons: totals.persons,
        messages: totals.messages,
        events: totals.events,
        connections: state.router.connection_count() as u64,
        persons_online: state.router.person_count() as u64,
        apps: totals
            .apps
            .into_iter()
            .map(|(appid, users)| AppStats { appid, users })
            .collect(),
    })
}

/// # apptokenrotate
/// Issues a new app token. The current one keeps working for `grace` minutes (default 60), so
/// backends can switch without downtime. Only the current token may rotate (not the previous
/// one in its grace period). Rotations are serialized: of concurrent rotations with the same
/// token one wins, and the others find their token already the previous one (bad_app_token).
/// Errors: bad_app_token, bad_value (grace out of 0..=10080), wrong_type.
pub(super) async fn apptokenrotate(
    state: &ServerState,
    reply: Reply<'_>,
    value: &Value,
) -> OpResult {
    let req: RotateRequest = decode_value(value)?;
    let grace = req.grace.unwrap_or(GRACE_DEFAULT);
    if !(0..=GRACE_MAX).contains(&grace) {
        return Err(ApiError::new(
            ErrorCode::BadValue,
            format!("`grace` is {grace}; use 0 to {GRACE_MAX} minutes"),
        ));
    }
    let given = TokenHash::of(value.get("token").and_then(Value::as_str).unwrap_or(""));
    // Held across the store write: a second rotation must see the first one's result, or both
    // would answer result:true and the first new token would never work.
    let _rotating = state.rotation.lock().await;
    let current = *state.credentials.read().unwrap_or_else(|p| p.into_inner());
    if !current.app.is_some_and(|h| h.matches(&given)) {
        return Err(ApiError::new(
            ErrorCode::BadAppToken,
            "only the current app token can rotate it, not the previous one (another rotation may just have replaced it)",
        ));
    }
    let token = PlainToken::app();
    let until = now_millis() + grace * 60_000;
    let mut next = current;
    next.previous = current.app.map(|h| (h, until));
    next.app = Some(token.hash());
    // Stored first: a crash right after still knows the new token.
    state.store.set_app_credentials(next).await?;
    *state.credentials.write().unwrap_or_else(|p| p.into_inner()) = next;
    tracing::info!(grace_minutes = grace, "app token rotated");
    reply.ok(RotateBody {
        token: token.reveal(),
        previous_valid_until: until,
    })
}

//! `useradd` (with `token.device` and `token.linkto`) and `userdel`.

use serde_json::Value;

use super::{ApiError, OpResult, Reply, check_address, check_text, require_objects, user_key};
use crate::protocol::{
    CloseCode, ErrorCode, UserAddBody, UserAddOut, UserAddRequest, UserDelBody, decode_value,
};
use crate::state::{ServerState, now_millis};
use crate::store::{NewUser, TokenRequest, TokenTerms};

/// Token validity when `expiry` is absent: one year, as mesibo's examples use.
pub const DEFAULT_EXPIRY_MINUTES: i64 = 525_600;
/// The longest validity: ten years.
pub const MAX_EXPIRY_MINUTES: i64 = 5_256_000;

/// # useradd
/// Creates the user at `user.address` if missing (updating `user.name` if given) and, with
/// `user.token`, issues a token bound to `token.appid` for `token.expiry` minutes:
/// for the user itself, for the device `token.device` (a known device keeps its user, a new one
/// gets the primary or a new linked user), or for the user linked to `token.linkto`'s person.
/// `user.active: false` disables the user at `user.address` (a primary: its whole person; a
/// linked user: that device only): its live connections close with 4010, its logins and
/// messages to it are refused; `true` enables it again.
/// Errors: missing_field, wrong_type, bad_value, bad_expiry, no_such_user, device_limit, bad_link.
pub(super) async fn useradd(state: &ServerState, reply: Reply<'_>, value: &Value) -> OpResult {
    require_objects(value, &["user", "user.token"])?;
    let req: UserAddRequest = decode_value(value)?;
    let user = req.user;
    check_address("user.address", &user.address)?;
    if let Some(name) = &user.name
        && name.chars().count() > 255
    {
        return Err(ApiError::new(
            ErrorCode::BadValue,
            "`user.name` is longer than 255 characters",
        ));
    }
    let token = match user.token {
        None => TokenRequest::None,
        Some(spec) => {
            check_text("user.token.appid", &spec.appid, 128)?;
            let expiry_minutes = spec.expiry.unwrap_or(DEFAULT_EXPIRY_MINUTES);
            if !(1..=MAX_EXPIRY_MINUTES).contains(&expiry_minutes) {
                return Err(ApiError::new(
                    ErrorCode::BadExpiry,
                    format!(
                        "`user.token.expiry` is {expiry_minutes}; use 1 to {MAX_EXPIRY_MINUTES} minutes (525600 is one year)"
                    ),
                ));
            }
            let terms = TokenTerms {
                appid: spec.appid,
                expiry_minutes,
            };
            // linkto wins over device, as mesibo documents.
            match (spec.linkto, spec.device) {
                (Some(linkto), _) => {
                    check_address("user.token.linkto", &linkto)?;
                    TokenRequest::LinkTo(terms, linkto)
                }
                (None, Some(device)) => {
                    check_text("user.token.device", &device, 128)?;
                    TokenRequest::Device(terms, device)
                }
                (None, None) => TokenRequest::Plain(terms),
            }
        }
    };
    let new_user = NewUser {
        address: user.address,
        name: user.name,
        token,
    };
    let issued = state
        .store
        .useradd_active(new_user, user.active, now_millis())
        .await?;
    let person = issued.linked_to.unwrap_or(issued.uid);
    for uid in &issued.revoked {
        state.router.kick(
            person,
            *uid,
            CloseCode::Revoked,
            "token replaced: this device was issued a new token",
        );
    }
    for uid in &issued.disabled {
        state.router.kick(
            person,
            *uid,
            CloseCode::UserDisabled,
            "user disabled by the app's backend",
        );
    }
    if issued.moved {
        // Its live connection is registered under its old person (its own uid).
        state.router.kick(
            issued.uid,
            issued.uid,
            CloseCode::Revoked,
            "linked to another person: log in again",
        );
    }
    reply.ok(UserAddBody {
        user: UserAddOut {
            uid: issued.uid,
            address: issued.address,
            token: issued.token.map(|t| t.reveal()),
        },
        linked: issued.linked_to.map(|_| "true"),
        linkto: issued.linked_to,
    })
}

/// # userdel
/// Removes the user named by `uid` (or `user.uid` / `user.address`). A linked user frees its
/// device slot; a primary removes its whole person. Live connections of removed users close
/// with close code 4004. Errors: missing_field, wrong_type, bad_value, no_such_user.
pub(super) async fn userdel(state: &ServerState, reply: Reply<'_>, value: &Value) -> OpResult {
    let who = user_key(value)?;
    let removed = state.store.userdel(who).await?;
    for uid in &removed.uids {
        state
            .router
            .kick(removed.person, *uid, CloseCode::Revoked, "user deleted");
    }
    reply.ok(UserDelBody {
        removed: removed.uids,
    })
}

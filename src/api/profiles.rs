//! `profileset`: a person's profile, set from the app backend.

use serde_json::Value;

use super::{ApiError, OpResult, Reply, require_objects, user_key};
use crate::protocol::{ProfileBody, ProfileSetRequest, check_profile_patch, decode_value};
use crate::state::{ServerState, now_millis};
use crate::store::EventKind;

/// # profileset
/// Applies `profile` (keys `name`, `status`, `avatar`, `fields`; null removes one) to the
/// person of the user named by `uid` (or `user.uid` / `user.address`). The change is logged
/// and reaches every live device of the person. Errors: missing_field, wrong_type, bad_value,
/// no_such_user.
pub(super) async fn profileset(state: &ServerState, reply: Reply<'_>, value: &Value) -> OpResult {
    require_objects(value, &["profile"])?;
    let who = user_key(value)?;
    let req: ProfileSetRequest = decode_value(value)?;
    check_profile_patch(".profile", &req.profile)?;
    let person = state.store.devices(who).await?.person;
    let markers = state
        .store
        .set_profile(person, req.profile, now_millis())
        .await?;
    let Some(EventKind::Profile {
        address,
        profile,
        version,
    }) = markers.into_iter().next().map(|m| m.event.kind)
    else {
        return Err(ApiError::new(
            crate::protocol::ErrorCode::Internal,
            "internal error; retry the request",
        ));
    };
    reply.ok(ProfileBody {
        address,
        profile,
        version,
    })
}

//! `tokendel`: revoking a user's tokens.

use serde_json::Value;

use super::{OpResult, Reply, user_key};
use crate::protocol::{CloseCode, TokenDelBody};
use crate::state::ServerState;

/// # tokendel
/// Revokes every token of the user named by `uid` (or `user.uid` / `user.address`). Its live
/// connection closes at once with close code 4004. Errors: missing_field, wrong_type,
/// bad_value, no_such_user.
pub(super) async fn tokendel(state: &ServerState, reply: Reply<'_>, value: &Value) -> OpResult {
    let who = user_key(value)?;
    let revoked = state.store.tokendel(who).await?;
    state.router.kick(
        revoked.person,
        revoked.uid,
        CloseCode::Revoked,
        "token revoked: get a new token from your backend",
    );
    reply.ok(TokenDelBody {
        uid: revoked.uid,
        revoked: revoked.count,
    })
}

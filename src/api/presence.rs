//! `presence`: who may subscribe to a person's presence, set from the app backend.

use serde_json::Value;

use super::{ApiError, OpResult, Reply, user_key};
use crate::protocol::{
    ErrorCode, PRESENCE_ACL_MAX, PresenceAclBody, PresenceAclRequest, decode_value,
};
use crate::state::ServerState;
use crate::store::{PersonId, StoreError};

/// # presence
/// Reads, or replaces, the `allow` and `deny` lists of the person named by `uid` (or
/// `user.uid` / `user.address`): persons that may subscribe to its presence whatever the
/// broker's `--presence` policy (unless it is `off`), and persons that never may (deny wins).
/// A list given replaces the stored one (`[]` empties it); one left out is kept; with neither,
/// the op only reads. Connections of newly denied persons lose their subscription at once.
/// Errors: missing_field, wrong_type, bad_value, no_such_user (naming the list entry).
pub(super) async fn presence(state: &ServerState, reply: Reply<'_>, value: &Value) -> OpResult {
    let who = user_key(value)?;
    let req: PresenceAclRequest = decode_value(value)?;
    for (field, list) in [("allow", &req.allow), ("deny", &req.deny)] {
        if list.as_ref().is_some_and(|l| l.len() > PRESENCE_ACL_MAX) {
            return Err(ApiError::new(
                ErrorCode::BadValue,
                format!("`{field}` lists more than {PRESENCE_ACL_MAX} addresses"),
            ));
        }
    }
    let target = state.store.devices(who).await?;
    let allow = resolve_all(state, "allow", req.allow).await?;
    let deny = resolve_all(state, "deny", req.deny).await?;
    let acl = if allow.is_none() && deny.is_none() {
        state.store.presence_acl(target.person).await?
    } else {
        let denied = deny.clone();
        let acl = state
            .store
            .set_presence_acl(target.person, allow, deny)
            .await?;
        if let Some(denied) = denied {
            state.presence.revoke(target.person, &denied);
        }
        acl
    };
    reply.ok(PresenceAclBody {
        address: target.primary_address,
        allow: acl.allow,
        deny: acl.deny,
    })
}

/// The persons of a list's addresses; an unknown one is refused, naming its place.
async fn resolve_all(
    state: &ServerState,
    field: &str,
    list: Option<Vec<String>>,
) -> Result<Option<Vec<PersonId>>, ApiError> {
    let Some(list) = list else { return Ok(None) };
    let mut persons = Vec::with_capacity(list.len());
    for (idx, address) in list.iter().enumerate() {
        match state.store.person_of(address).await {
            Ok(person) => persons.push(person),
            Err(StoreError::UnknownRecipient(_)) => {
                return Err(ApiError::new(
                    ErrorCode::NoSuchUser,
                    format!("{field}[{idx}]: no user has the address {address}"),
                ));
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(Some(persons))
}

//! `devices`: a person's devices, from any of its addresses.

use serde_json::Value;

use super::{OpResult, Reply, user_key};
use crate::protocol::{DeviceOut, DevicesBody, UserRef};
use crate::state::ServerState;

/// # devices
/// Lists the person of the user named by `uid` (or `user.uid` / `user.address`, any of the
/// person's addresses): every user with its device id, appid, last seen, and whether it is
/// online now, and whether it is active (not disabled, itself or through its primary). Errors: missing_field, wrong_type, bad_value, no_such_user.
pub(super) async fn devices(state: &ServerState, reply: Reply<'_>, value: &Value) -> OpResult {
    let who = user_key(value)?;
    let person = state.store.devices(who).await?;
    let online = state.router.online(person.person);
    let devices = person
        .devices
        .into_iter()
        .map(|d| DeviceOut {
            online: online.contains(&d.uid),
            primary: d.uid == person.person,
            uid: d.uid,
            address: d.address,
            device: d.device,
            appid: d.appid,
            last_seen: state.last_seen.merged(d.uid, d.last_seen),
            acked: d.acked_seq,
            active: d.active,
        })
        .collect();
    reply.ok(DevicesBody {
        primary: UserRef {
            uid: person.person,
            address: person.primary_address,
        },
        devices,
    })
}

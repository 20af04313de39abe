//! The device-list frames a person's devices get: `devices_changed` (logged), and the answers
//! to `devices` and `revoke`.

use serde::{Deserialize, Serialize};

use super::*;

/// What happened to a device of a person, in `devices_changed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChange {
    /// A new device (linked user) joined the person (`useradd` with `token.device` or
    /// `token.linkto`).
    Linked,
    /// `useradd` changed the name of a user of the person.
    Renamed,
    /// Every token of a device was revoked (`tokendel`, or a device's `revoke`).
    Revoked,
    /// A linked user was deleted (`userdel`).
    Removed,
}

/// One device of a person, as `devices` and `devices_changed` list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// The device's user.
    pub uid: Uid,
    /// That user's address.
    pub address: String,
    /// The installation id, when the user was issued a token for one.
    pub device: Option<String>,
    /// The app id of the device's latest token.
    pub appid: Option<String>,
    /// The user's display name (`useradd`'s `user.name`).
    pub name: Option<String>,
    /// Whether the device held a live connection (in `devices_changed`: when the change
    /// committed; a revoked device counts as offline, since its connection is being closed).
    pub online: bool,
    /// True for the person's primary user.
    pub primary: bool,
    /// False when the device's user, or its person's primary, is disabled.
    pub active: bool,
}

/// `devices_changed`: a device of this person was linked, renamed, revoked or removed. Logged:
/// replayed on catch-up and shown in `history`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevicesChanged {
    /// The event's place in this person's log.
    pub seq: u64,
    /// When it happened.
    pub ts: Millis,
    /// What happened.
    pub change: DeviceChange,
    /// The device concerned (a removed one is no longer in `devices`).
    pub uid: Uid,
    /// Every device of the person after the change, primary first.
    pub devices: Vec<DeviceEntry>,
}

/// `devices`: this person's devices now, primary first (the answer to `devices`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevicesList {
    /// The `id` the request carried, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Every device of the person.
    pub devices: Vec<DeviceEntry>,
}

/// `revoke`: the tokens of device `uid` were revoked (the answer to `revoke`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeAnswer {
    /// The `id` the request carried, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The device revoked.
    pub uid: Uid,
    /// How many tokens were revoked (0: it had none left).
    pub revoked: u64,
}

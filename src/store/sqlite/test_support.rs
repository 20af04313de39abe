//! Helpers for the store's unit tests: a primary user as the identity a device would log in
//! with, and a message from it.

use crate::protocol::Millis;
use crate::store::sqlite::SqliteStore;
use crate::store::{Identity, NewMessage, NewUser, Store, TokenRequest};

/// The identity of the primary user `uid` at `address` (no device id, a token that never
/// expires).
pub(super) fn identity(uid: u64, address: &str) -> Identity {
    Identity {
        uid,
        address: address.into(),
        person: uid,
        primary_address: address.into(),
        device: None,
        token_expires: Millis::MAX,
    }
}

/// Creates a primary user at `address` and returns its identity.
pub(super) async fn user(store: &SqliteStore, address: &str) -> Identity {
    let req = NewUser {
        address: address.into(),
        name: None,
        token: TokenRequest::None,
    };
    let uid = store.useradd(req, 0).await.unwrap().uid;
    identity(uid, address)
}

/// A message from `from` to `to` with the client id `id`, body `1`, accepted at `ts`.
pub(super) fn message_at(from: &Identity, id: &str, to: &str, ts: Millis) -> NewMessage {
    NewMessage {
        from: from.clone(),
        client_id: id.into(),
        to: to.into(),
        body: serde_json::value::RawValue::from_string("1".into()).unwrap(),
        files: Vec::new(),
        ts,
        accepted: std::time::Instant::now(),
    }
}

/// [`message_at`] at ts 1.
pub(super) fn message(from: &Identity, id: &str, to: &str) -> NewMessage {
    message_at(from, id, to, 1)
}

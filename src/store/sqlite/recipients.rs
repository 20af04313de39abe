//! The writer's memory of where an address sends to: the person and the address others see
//! (the primary's). Every `send` names its recipient by address; without this each one reads
//! `users` through its address index, and again for a linked user's primary.
//!
//! Why it is never stale: SQLite calls the writer connection's update hook for every row
//! inserted into or deleted from `users` (a rowid table; cascaded deletes included), and that
//! marks the whole memory stale, to be dropped at the next lookup; the one update that moves an
//! address (a link, `primary_uid`) clears it directly. Only the writer writes `users`. A rolled-back
//! job or transaction drops the memory too, since what it read may have been its own writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::Connection;

use super::users::{find_user, user_address};
use crate::store::{PersonId, StoreError, UserKey};

/// The most addresses kept; past it the memory starts again empty.
const MAX_KEPT: usize = 1 << 18;

/// Addresses the writer has resolved since `users` last changed.
#[derive(Default)]
pub(super) struct Recipients {
    known: HashMap<String, (PersonId, String)>,
    stale: Arc<AtomicBool>,
}

impl Recipients {
    /// A memory that `conn`'s writes to `users` mark stale (replaces the connection's update
    /// hook).
    pub(super) fn watching(conn: &Connection) -> Recipients {
        let stale = Arc::new(AtomicBool::new(false));
        let flag = stale.clone();
        // Inserts and deletes only: an `UPDATE users` is an `ack` (`acked_seq`), a login's
        // `last_seen` or a rename on the hot path, and none of those moves an address. The one
        // update that does (linking a user to another person, `primary_uid`) calls
        // [`Recipients::clear`] itself.
        conn.update_hook(Some(move |action, _: &str, table: &str, _| {
            if table == "users" && action != rusqlite::hooks::Action::SQLITE_UPDATE {
                flag.store(true, Ordering::Relaxed);
            }
        }));
        Recipients {
            known: HashMap::new(),
            stale,
        }
    }

    /// Forgets everything (after a rollback, or a user linked to another person).
    pub(super) fn clear(&mut self) {
        self.known.clear();
    }

    /// The person `address` belongs to and the address others see for it; `None` if no user
    /// has that address.
    pub(super) fn resolve(
        &mut self,
        conn: &Connection,
        address: &str,
    ) -> Result<Option<(PersonId, String)>, StoreError> {
        if self.stale.swap(false, Ordering::Relaxed) {
            self.known.clear();
        }
        if let Some(found) = self.known.get(address) {
            return Ok(Some(found.clone()));
        }
        let Some(user) = find_user(conn, &UserKey::Address(address.to_string()))? else {
            return Ok(None);
        };
        let person = user.person();
        let shown = if user.primary_uid.is_some() {
            user_address(conn, person)?
        } else {
            user.address
        };
        // A write to `users` while resolving (none today) would leave the flag set: keep
        // nothing then.
        if !self.stale.load(Ordering::Relaxed) {
            if self.known.len() >= MAX_KEPT {
                self.known.clear();
            }
            self.known
                .insert(address.to_string(), (person, shown.clone()));
        }
        Ok(Some((person, shown)))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::sqlite::SqliteStore;
    use crate::store::sqlite::test_support::{identity, message};
    use crate::store::{NewUser, Store, StoreError, TokenRequest, TokenTerms, UserKey};

    async fn add(store: &SqliteStore, address: &str, token: TokenRequest) -> u64 {
        let req = NewUser {
            address: address.into(),
            name: None,
            token,
        };
        store.useradd(req, 0).await.unwrap().uid
    }

    /// An address the writer resolved before is resolved again after `users` changed: a
    /// deleted and re-created user is the new person, a user linked since sends to its new
    /// person's primary, a user gone is unknown.
    #[tokio::test]
    async fn a_remembered_address_follows_every_change_to_users() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let a = add(&store, "a@x", TokenRequest::None).await;
        let from = identity(a, "a@x");
        let first = add(&store, "b@x", TokenRequest::None).await;
        let sent = store
            .append_message(message(&from, "1", "b@x"))
            .await
            .unwrap();
        assert_eq!(sent.recipient, first);

        store.userdel(UserKey::Uid(first)).await.unwrap();
        let gone = store.append_message(message(&from, "2", "b@x")).await;
        assert!(
            matches!(gone, Err(StoreError::UnknownRecipient(_))),
            "{gone:?}"
        );

        let second = add(&store, "b@x", TokenRequest::None).await;
        assert_ne!(second, first);
        let sent = store
            .append_message(message(&from, "3", "b@x"))
            .await
            .unwrap();
        assert_eq!((sent.recipient, sent.to.as_str()), (second, "b@x"));

        // c@x, remembered as its own person, then linked to b@x's person.
        let c = add(&store, "c@x", TokenRequest::None).await;
        let sent = store
            .append_message(message(&from, "4", "c@x"))
            .await
            .unwrap();
        assert_eq!(sent.recipient, c);
        let terms = TokenTerms {
            appid: "app".into(),
            expiry_minutes: 60,
        };
        add(&store, "c@x", TokenRequest::LinkTo(terms, "b@x".into())).await;
        let sent = store
            .append_message(message(&from, "5", "c@x"))
            .await
            .unwrap();
        assert_eq!((sent.recipient, sent.to.as_str()), (second, "b@x"));
    }
}

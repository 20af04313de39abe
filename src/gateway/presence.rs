//! The `presence` op: subscribing to persons' online status (`crate::presence` keeps it),
//! after checking who may see whom.

use super::replies::store_refusal;
use super::session::Online;
use crate::config::PresencePolicy;
use crate::presence::{
    ADDRESS_BURST, ADDRESS_RATE, MAX_SUBSCRIPTIONS_PER_CONN, MAX_WATCHERS_PER_TARGET,
    SubscribeError, Watcher,
};
use crate::protocol::{DecodeError, ErrorCode, PRESENCE_LIST_MAX, PresenceRequest};
use crate::store::{PersonId, StoreError, UserKey};

impl Online<'_> {
    /// `presence`: `unsubscribe` first, then `subscribe`, address by address. Each refused
    /// address gets its own `error` naming it; each subscribed one a `presence` frame with the
    /// current status.
    pub(super) async fn presence(&mut self, req: PresenceRequest) {
        let empty = req.subscribe.is_empty() && req.unsubscribe.is_empty();
        if empty
            || req.subscribe.len() > PRESENCE_LIST_MAX
            || req.unsubscribe.len() > PRESENCE_LIST_MAX
        {
            let err = DecodeError::new(
                ErrorCode::BadValue,
                format!(
                    "presence takes `subscribe` and/or `unsubscribe`, each a list of at most {PRESENCE_LIST_MAX} addresses, and at least one address in all"
                ),
            );
            return self.error(err, None, None).await;
        }
        for address in req.unsubscribe {
            if let Err(err) = self.address_budget(&address) {
                self.error(err, None, None).await;
                continue;
            }
            match self.state.store.person_of(&address).await {
                Ok(target) => {
                    self.state.presence.unsubscribe(self.conn_id, target);
                }
                Err(err) => self.presence_refused(err, &address).await,
            }
        }
        for address in req.subscribe {
            let subscribed = match self.address_budget(&address) {
                Ok(()) => self.subscribe(&address).await,
                Err(err) => Err(err),
            };
            if let Err(err) = subscribed {
                self.error(err, None, None).await;
            }
        }
    }

    /// Takes one of the person's address tokens (checked before any store read).
    fn address_budget(&self, address: &str) -> Result<(), DecodeError> {
        if self.state.presence_rates.take(self.identity.person) {
            return Ok(());
        }
        Err(DecodeError::new(
            ErrorCode::RateLimited,
            format!(
                "more than {ADDRESS_RATE} addresses per second in presence frames from this person's devices (bursts of {ADDRESS_BURST}); {address} was skipped: subscribe to it again later"
            ),
        ))
    }

    async fn subscribe(&self, address: &str) -> Result<(), DecodeError> {
        let state = &self.state;
        let devices = match state.store.devices(UserKey::Address(address.into())).await {
            Ok(devices) => devices,
            Err(StoreError::NoSuchUser(_)) => return Err(unknown(address)),
            Err(err) => {
                return Err(store_refusal(
                    err,
                    "presence",
                    "internal error; subscribe again",
                ));
            }
        };
        self.may_watch(devices.person, address).await?;
        // The newest of the devices' stored and not yet written last-seen times: a disconnect
        // is the last thing a device's time records.
        let last_seen = devices
            .devices
            .iter()
            .filter_map(|d| state.last_seen.merged(d.uid, d.last_seen))
            .max();
        let watcher = Watcher {
            person: self.identity.person,
            conn_id: self.conn_id,
        };
        state
            .presence
            .subscribe(watcher, devices.person, &devices.primary_address, last_seen)
            .map_err(|err| {
                let message = match err {
                    SubscribeError::ConnFull => format!(
                        "this connection already subscribes to {MAX_SUBSCRIPTIONS_PER_CONN} persons; unsubscribe from one before subscribing to {address}"
                    ),
                    SubscribeError::TargetFull => format!(
                        "{address} already has {MAX_WATCHERS_PER_TARGET} subscribed connections; try again later"
                    ),
                };
                DecodeError::new(ErrorCode::TooManySubscriptions, message)
            })
    }

    /// Whether this person may see `target`'s presence: always its own; otherwise the
    /// target's deny list, then its allow list, then the broker's policy.
    async fn may_watch(&self, target: PersonId, address: &str) -> Result<(), DecodeError> {
        let me = self.identity.person;
        if target == me {
            return Ok(());
        }
        let policy = self.state.config.presence;
        let denied = |why: &str| {
            DecodeError::new(
                ErrorCode::PresenceDenied,
                format!("you may not see the presence of {address}: {why}"),
            )
        };
        if policy == PresencePolicy::Off {
            return Err(denied("presence is off on this broker"));
        }
        let check = self
            .state
            .store
            .presence_check(me, target, policy == PresencePolicy::Contacts)
            .await
            .map_err(|err| store_refusal(err, "presence", "internal error; subscribe again"))?;
        // The same words for a deny list and a missing contact, so a refusal does not tell
        // whether this person was blocked.
        match (check.rule, policy) {
            (Some(true), _) | (None, PresencePolicy::Open) => Ok(()),
            (None, _) if check.contacts => Ok(()),
            (_, PresencePolicy::Open) => Err(denied("its app does not share it with you")),
            _ => Err(denied(
                "it is shared with persons it exchanged a message with, and with those its app allows",
            )),
        }
    }

    async fn presence_refused(&self, err: StoreError, address: &str) {
        let err = match err {
            StoreError::UnknownRecipient(_) | StoreError::NoSuchUser(_) => unknown(address),
            err => store_refusal(err, "presence", "internal error; send it again"),
        };
        self.error(err, None, None).await;
    }
}

fn unknown(address: &str) -> DecodeError {
    DecodeError::new(
        ErrorCode::UnknownRecipient,
        format!("no user has the address {address}"),
    )
}

//! The `typing` op: transient typing indicators (`router::typing` keeps the state).

use tracing::Instrument;

use super::replies::store_refusal;
use super::session::Online;
use crate::protocol::{DecodeError, ErrorCode, TypingRequest, TypingState};
use crate::router::Party;
use crate::router::typing::{TYPING_BURST, TYPING_RATE, TYPING_TIMEOUT};

impl Online<'_> {
    /// `typing`: shows this device typing to a person (or stops), with the auto-stop timer.
    pub(super) async fn typing(&mut self, req: TypingRequest) {
        let person = self.identity.person;
        // Checked before the address is resolved: a flood costs no store read.
        if !self.state.typing_rates.take(person) {
            let err = DecodeError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {TYPING_RATE} typing frames per second from this person's devices (bursts of {TYPING_BURST}); this one was dropped: send `start` again every few seconds at most, the broker shows it for {} s",
                    TYPING_TIMEOUT.as_secs()
                ),
            );
            return self.error(err, None, None).await;
        }
        let (peer, peer_address) = match self.state.store.resolve(&req.to).await {
            Ok(found) => found,
            Err(err) => {
                let err = store_refusal(err, "typing", "internal error; send it again");
                return self.error(err, None, None).await;
            }
        };
        let party = Party {
            person,
            uid: self.identity.uid,
            conn_id: self.conn_id,
        };
        let router = &self.state.router;
        match req.state {
            TypingState::Stop => {
                router.typing_stop(party, peer);
            }
            TypingState::Start => {
                let from = &self.identity.primary_address;
                let serial = router.typing_start(party, peer, from, &peer_address);
                let state = self.state.clone();
                let timer = tokio::spawn(
                    async move {
                        tokio::time::sleep(TYPING_TIMEOUT).await;
                        state.router.typing_timeout(party, peer, serial);
                    }
                    .instrument(tracing::Span::current()),
                );
                router.typing_arm_timer(self.conn_id, peer, serial, timer.abort_handle());
            }
        }
    }
}

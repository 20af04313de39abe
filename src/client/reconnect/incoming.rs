//! What the session's loop does with each frame the broker sends: logged events deduplicated
//! and handed to the app in order, answers matched to pending sends and requests.

use super::*;

impl Loop {
    /// Handles one frame of a live connection; `retry_at` is set when a `rate_limited` refusal
    /// asks for the unanswered sends again later. Err: the loop ends.
    pub(super) async fn on_frame(
        &mut self,
        frame: ServerFrame,
        retry_at: &mut Option<tokio::time::Instant>,
    ) -> Result<(), Ended> {
        let dropped = || Ended::Stop {
            code: None,
            reason: "the app dropped the session".into(),
        };
        match frame {
            ServerFrame::Sent(sent) if self.claimed.remove(&sent.id) => {
                // Answered already by its replayed `out` copy.
                self.answered(&sent.id);
            }
            ServerFrame::Sent(sent) => {
                self.answered(&sent.id);
                match self.waiting.remove(&sent.id) {
                    Some(answer) => {
                        let _ = answer.send(Ok(sent));
                    }
                    None => self
                        .events
                        .send(SessionEvent::Live(ServerFrame::Sent(sent)))
                        .await
                        .map_err(|_| dropped())?,
                }
            }
            ServerFrame::Error(error) if error.id.is_some() && self.is_pending(&error) => {
                let id = error.id.clone().unwrap_or_default();
                if is_final_refusal(error.code) {
                    self.answered(&id);
                    if let Some(answer) = self.waiting.remove(&id) {
                        let _ = answer.send(Err(SendError::Refused(error)));
                    }
                } else if error.code == ErrorCode::RateLimited {
                    // Slow down: everything unanswered goes again after a pause.
                    retry_at.get_or_insert(tokio::time::Instant::now() + RATE_LIMITED_RETRY);
                }
            }
            frame => match frame.log_seq() {
                Some(_) => self.hand(frame).await.map_err(|_| dropped())?,
                None => self
                    .events
                    .send(SessionEvent::Live(frame))
                    .await
                    .map_err(|_| dropped())?,
            },
        }
        Ok(())
    }

    /// Hands a logged event to the app unless it has it: by `seq` (a replay), or by `mid` (the
    /// same message under another seq). This device's own `out` copy of a pending send answers
    /// that send. Err: the app dropped the session.
    pub(super) async fn hand(&mut self, frame: ServerFrame) -> Result<(), ()> {
        let Some(seq) = frame.log_seq() else {
            return Ok(());
        };
        if seq <= self.delivered {
            return Ok(()); // a replay of what the app has
        }
        self.delivered = seq;
        if let ServerFrame::Message(message) = &frame {
            if !self.seen.insert(message.mid) {
                return Ok(());
            }
            if message.out && message.origin.as_ref().is_some_and(|o| o.uid == self.uid) {
                self.claim(
                    message.mid,
                    message.seq,
                    message.ts,
                    message.body.get(),
                    &message.to,
                );
            }
        }
        self.events
            .send(SessionEvent::Event(frame))
            .await
            .map_err(|_| ())
    }

    /// A catch-up can replay this device's own message before the resend's `sent` comes: the
    /// pending send with the same body is that message, answered now. Only when it is the one
    /// such send (or the one of them sent to `to`, the copy's recipient): answering another
    /// with this message's mid would drop that send unsent. Otherwise the resend's `sent`
    /// answers each.
    pub(super) fn claim(
        &mut self,
        mid: u64,
        seq: u64,
        ts: crate::protocol::Millis,
        body: &str,
        to: &str,
    ) {
        let Some(id) = claimable(self.pending.values(), body, to) else {
            return;
        };
        self.answered(&id);
        if let Some(answer) = self.waiting.remove(&id) {
            let _ = answer.send(Ok(Sent {
                id: id.clone(),
                mid,
                seq,
                ts,
            }));
        }
        self.claimed.insert(id);
    }

    /// Whether `error` refuses one of the unanswered sends (by its id).
    pub(super) fn is_pending(&self, error: &ErrorFrame) -> bool {
        let id = error.id.as_deref().unwrap_or_default();
        self.pending.values().any(|p| p.id == id)
    }

    /// Forgets a send once it is answered, here and in the app's store.
    pub(super) fn answered(&mut self, id: &str) {
        self.pending.retain(|_, p| p.id != id);
        self.options.store.remove_pending(id);
    }
}

/// The id of the one pending send a replayed own message with `body`, sent to `to`, can be:
/// the only one with that body, or else the only one of those sent to `to`.
fn claimable<'a>(
    pending: impl Iterator<Item = &'a PendingSend>,
    body: &str,
    to: &str,
) -> Option<String> {
    let same: Vec<&PendingSend> = pending.filter(|p| p.body.get() == body).collect();
    let only = match same.as_slice() {
        [one] => Some(*one),
        _ => match same
            .iter()
            .filter(|p| p.to == to)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [one] => Some(**one),
            _ => None,
        },
    };
    only.map(|p| p.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(id: &str, to: &str) -> PendingSend {
        PendingSend {
            id: id.into(),
            to: to.into(),
            body: serde_json::value::RawValue::from_string("\"hi\"".into()).unwrap(),
        }
    }

    #[test]
    fn a_replay_claims_only_an_unambiguous_pending_send() {
        let one = [pending("a", "bob@x")];
        assert_eq!(claimable(one.iter(), "\"hi\"", "bob@x"), Some("a".into()));
        // Not the oldest of two: the one to the copy's recipient.
        let two = [pending("a", "bob@x"), pending("b", "carol@x")];
        assert_eq!(claimable(two.iter(), "\"hi\"", "carol@x"), Some("b".into()));
        // Still ambiguous: nothing is claimed, each waits for its own `sent`.
        let same = [pending("a", "bob@x"), pending("b", "bob@x")];
        assert_eq!(claimable(same.iter(), "\"hi\"", "bob@x"), None);
        assert_eq!(claimable(one.iter(), "\"bye\"", "bob@x"), None);
    }
}

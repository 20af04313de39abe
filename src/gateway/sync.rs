//! Reading a person's log to a device: the catch-up after login and `history` pages.
//!
//! Both read the store in pages sized by bytes, not only by count: an event can be ~64 KiB, so
//! 500 of them were 32 MiB in the session's memory and, for `history`, in one frame. Here a
//! store read aims at [`READ_BYTES`], a `history` frame never exceeds [`MAX_OUT_FRAME`], and the
//! catch-up's frames wait in the connection's own byte-bounded queue.

use serde_json::value::RawValue;

use super::replies::store_refusal;
use super::session::Online;
use crate::fanout::event_frame;
use crate::protocol::{
    CloseCode, DecodeError, ErrorCode, HISTORY_DEFAULT, HISTORY_MAX, History, HistoryRequest,
    MAX_OUT_FRAME, ServerFrame, Synced, UserRef, Welcome,
};
use crate::router::Outbound;
use crate::store::{LogEvent, StoreError};

/// Bytes of events one store read aims at.
const READ_BYTES: usize = 1 << 20;
/// Events in the first store read of a page, before their size is known.
const FIRST_READ: usize = 32;
/// Most events one store read returns.
const MAX_READ: usize = 500;
/// Room for `{"op":"history","events":[],"more":false}` around the events.
const HISTORY_ENVELOPE: usize = 64;

/// How many events the next store read should ask for, from the average size of those read so
/// far: about [`READ_BYTES`] worth, at least one, at most [`MAX_READ`].
fn next_read(events: usize, bytes: usize) -> usize {
    if events == 0 {
        return FIRST_READ;
    }
    let average = (bytes / events).max(1);
    (READ_BYTES / average).clamp(1, MAX_READ)
}

/// The approximate memory one event holds (its body dominates).
fn event_weight(event: &LogEvent) -> usize {
    match &event.kind {
        crate::store::EventKind::Message { body, .. } => body.get().len() + 128,
        _ => 256,
    }
}

/// Whether a page read after `after` (while the log is known to go on) continues it without a
/// hole: the retained log has none, so a page that is empty, does not start at `after + 1` or
/// skips inside lost events to retention between two reads. Returns the first missing seq.
fn gap(after: u64, seqs: impl IntoIterator<Item = u64>) -> Option<u64> {
    let mut seqs = seqs.into_iter().peekable();
    if seqs.peek().is_none() {
        return Some(after + 1);
    }
    for (expected, seq) in (after + 1..).zip(seqs) {
        if seq != expected {
            return Some(expected);
        }
    }
    None
}

impl Online<'_> {
    /// Sends `welcome`, replays the events after `since`, sends `synced`, then lets live events
    /// flow. Returns false if the connection is closing.
    pub(super) async fn catch_up(&mut self, since: Option<u64>, epoch: Option<String>) -> bool {
        let identity = self.identity.clone();
        let head = match self.state.store.head(identity.person).await {
            Ok(head) => head,
            Err(err) => {
                self.close_internal(&err, "reading the log head failed")
                    .await;
                return false;
            }
        };
        // A new device (no `since`) starts live from here and pages history. A device with a
        // position (0 included: it holds nothing yet) gets everything after it, unless part of
        // that is pruned or the position is from another epoch: then it is told so, never
        // half-filled.
        let new_device = since.is_none();
        let since = since.unwrap_or(0);
        let same_epoch = epoch.as_deref().is_none_or(|e| e == head.epoch);
        let beyond = since > head.seq && same_epoch;
        let replay = !new_device && same_epoch && !beyond && since >= head.pruned_upto;
        let recovered = new_device || replay;
        let welcome = ServerFrame::Welcome(Welcome {
            uid: identity.uid,
            address: identity.address.clone(),
            primary: UserRef {
                uid: identity.person,
                address: identity.primary_address.clone(),
            },
            seq: head.seq,
            epoch: head.epoch.clone(),
            recovered,
        });
        if !self.push(welcome.to_text().into()).await {
            return false;
        }
        if beyond {
            let err = DecodeError::new(
                ErrorCode::BadValue,
                format!(
                    "`since` is {since}, beyond this person's newest seq {}; resync with history",
                    head.seq
                ),
            );
            self.error(err, None, None).await;
        }
        let mut replayed = 0u64;
        if replay {
            let mut after = since;
            let mut read_bytes = 0usize;
            while after < head.seq {
                let want = next_read(replayed as usize, read_bytes);
                let page = match self
                    .state
                    .store
                    .events_after(identity.person, after, head.seq, want)
                    .await
                {
                    Ok(page) => page,
                    Err(err) => {
                        self.close_internal(&err, "catch-up read failed").await;
                        return false;
                    }
                };
                // `welcome` promised everything after `since`: if retention pruned part of it
                // between two reads, end here without `synced`. The device's position is then
                // older than the retained log, so its next login gets `recovered:false`.
                if let Some(missing) = gap(after, page.iter().map(|e| e.seq)) {
                    tracing::info!(missing, "events pruned during the catch-up");
                    let reason = format!(
                        "event {missing} was pruned during the catch-up; reconnect to resync"
                    );
                    let _ = self
                        .queue
                        .send(Outbound::Close(CloseCode::SlowConsumer, reason))
                        .await;
                    return false;
                }
                for event in &page {
                    read_bytes += event_weight(event);
                    // Waits on this connection's own queue only (other devices are not
                    // stalled), and at most the idle timeout: a device that stopped reading
                    // is closed as a slow consumer.
                    if !self.push(event_frame(event).into()).await {
                        return false;
                    }
                }
                replayed += page.len() as u64;
                after = page.last().map(|e| e.seq).unwrap_or(head.seq);
            }
        }
        let synced = ServerFrame::Synced(Synced {
            seq: head.seq,
            replayed,
        });
        if !self.push(synced.to_text().into()).await {
            return false;
        }
        self.queue
            .send(Outbound::Live { after: head.seq })
            .await
            .is_ok()
    }

    /// `history`: a page of the person's retained events older than `before`, newest last, at
    /// most `limit` events and at most [`MAX_OUT_FRAME`] bytes (`more:true` when older remain).
    /// The request's `id`, if any, is echoed on the page and on a refusal.
    pub(super) async fn history(&mut self, req: HistoryRequest) {
        let person = self.identity.person;
        let id = req.id;
        if let Some(Err(err)) = id.as_deref().map(super::ops::check_id) {
            return self.error(err, id, None).await;
        }
        let limit = req.limit.unwrap_or(HISTORY_DEFAULT);
        if limit == 0 || limit > HISTORY_MAX {
            let err = DecodeError::new(
                ErrorCode::BadValue,
                format!("`limit` is {limit}; use 1 to {HISTORY_MAX}"),
            );
            return self.error(err, id, None).await;
        }
        let result = async {
            let head = self.state.store.head(person).await?;
            let before = req.before.unwrap_or(head.seq + 1);
            if before > head.seq + 1 {
                return Ok(Err(DecodeError::new(
                    ErrorCode::BadValue,
                    format!("`before` is {before}, beyond the newest seq {}", head.seq),
                )));
            }
            Ok::<_, StoreError>(Ok(self
                .history_page(person, before, limit as usize, id.clone())
                .await?))
        }
        .await;
        match result {
            Ok(Ok(page)) => {
                self.push(ServerFrame::History(page).to_text().into()).await;
            }
            Ok(Err(err)) => self.error(err, id, None).await,
            Err(err) => {
                let err = store_refusal(err, "history", "internal error; ask again");
                self.error(err, id, None).await
            }
        }
    }

    /// Walks back from `before` in reads of about [`READ_BYTES`] until the page has `limit`
    /// events or the next one would make the frame larger than [`MAX_OUT_FRAME`] (with `id`,
    /// which the page echoes, in it).
    async fn history_page(
        &self,
        person: crate::store::PersonId,
        before: u64,
        limit: usize,
        id: Option<String>,
    ) -> Result<History, StoreError> {
        // `"id":…,` as it will be written: the id's escaped JSON text plus 6 for `"id":` and `,`.
        let id_bytes = id
            .as_ref()
            .map_or(0, |id| serde_json::to_string(id).map_or(0, |s| s.len()) + 6);
        let budget = MAX_OUT_FRAME - HISTORY_ENVELOPE - id_bytes;
        // Newest first while walking back; reversed at the end.
        let mut frames: Vec<String> = Vec::new();
        let mut bytes = 0usize;
        let mut read_bytes = 0usize;
        let mut cursor = before;
        let mut more = false;
        'pages: loop {
            // One more than still fits the count, to learn whether older events remain.
            let want = next_read(frames.len(), read_bytes).min(limit - frames.len() + 1);
            let events = self.state.store.events_before(person, cursor, want).await?;
            let exhausted = events.len() < want;
            for event in events.iter().rev() {
                read_bytes += event_weight(event);
                let frame = event_frame(event);
                // A comma between events. One event always goes in, so a page always moves
                // the client on (frames are ≤ 960 KiB + envelope, see `config`).
                let fits = bytes + frame.len() < budget || frames.is_empty();
                if frames.len() == limit || !fits {
                    more = true;
                    break 'pages;
                }
                bytes += frame.len() + 1;
                cursor = event.seq;
                frames.push(frame);
            }
            if exhausted {
                break;
            }
        }
        let events = frames
            .into_iter()
            .rev()
            .map(|frame| RawValue::from_string(frame).expect("frames are valid JSON"))
            .collect();
        Ok(History { id, events, more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_must_continue_the_log() {
        assert_eq!(gap(4, [5, 6, 7]), None);
        // Everything still to come was pruned.
        assert_eq!(gap(4, []), Some(5));
        // Pruned between two reads: the next page starts later than promised.
        assert_eq!(gap(4, [9, 10]), Some(5));
        // A hole inside a page.
        assert_eq!(gap(4, [5, 7]), Some(6));
    }

    #[test]
    fn reads_aim_at_a_mebibyte() {
        assert_eq!(next_read(0, 0), FIRST_READ);
        // 64 KiB events: 16 a read.
        assert_eq!(next_read(10, 10 * 65_536), 16);
        // Small receipts: capped.
        assert_eq!(next_read(100, 100 * 200), MAX_READ);
        // A single event larger than the aim: still one at a time.
        assert_eq!(next_read(1, 4 << 20), 1);
    }
}

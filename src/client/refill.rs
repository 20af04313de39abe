//! The refill after `welcome.recovered: false`: [`super::Session`] pages `history` back from the
//! new head to where the app was, with requests tagged by `id` so that their answers are never
//! mistaken for anything else the connection carries meanwhile, and says whether it got there.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use super::{ClientError, Connection, Incoming};
use crate::protocol::{ClientFrame, ErrorCode, HistoryRequest, ServerFrame};

/// Events asked for per `history` page (the broker's largest page).
const PAGE: u32 = 500;
/// A page refused with `rate_limited` is asked again after this.
const RATE_LIMITED_RETRY: Duration = Duration::from_secs(1);

/// What a finished refill found.
pub(super) struct Refill {
    /// The retained events after the floor, oldest first.
    pub events: Vec<ServerFrame>,
    /// True when the events reach down to the floor: nothing between it and the head is
    /// missing. False when the log no longer holds the oldest of them (retention), the refill
    /// limit was reached, or the broker refused a page.
    pub complete: bool,
}

/// How a refill ended without finishing.
pub(super) enum Cut {
    /// The connection closed (with this close, if the broker sent one).
    Closed(Option<(u16, String)>),
    /// A read or write failed.
    Broken,
}

/// Pages `history` back from `head` (inclusive) until the events reach `floor + 1`, the log's
/// oldest retained event, or `limit` events. Frames that are not the answers go to `held`, in
/// the order they came, for the caller to handle after the refill.
pub(super) async fn page_back(
    conn: &mut Connection,
    head: u64,
    floor: u64,
    limit: usize,
    held: &mut Vec<ServerFrame>,
) -> Result<Refill, Cut> {
    let mut events: VecDeque<ServerFrame> = VecDeque::new();
    let mut before = head + 1;
    let mut asked = 0u64;
    loop {
        if before <= floor + 1 {
            return Ok(Refill {
                events: events.into(),
                complete: true,
            });
        }
        if events.len() >= limit {
            return Ok(Refill {
                events: events.into(),
                complete: false,
            });
        }
        asked += 1;
        let id = format!("refill-{asked}");
        let want = (limit - events.len()).min(PAGE as usize) as u32;
        let ask = ClientFrame::History(HistoryRequest {
            before: Some(before),
            limit: Some(want),
            id: Some(id.clone()),
        });
        conn.send(&ask).await.map_err(|_| Cut::Broken)?;
        let page = loop {
            match conn.recv().await {
                Ok(Incoming::Frame(_, ServerFrame::History(page)))
                    if page.id.as_deref() == Some(id.as_str()) =>
                {
                    break Some(page);
                }
                Ok(Incoming::Frame(_, ServerFrame::Error(err)))
                    if err.id.as_deref() == Some(id.as_str()) =>
                {
                    if err.code != ErrorCode::RateLimited {
                        break None;
                    }
                    tokio::time::sleep(RATE_LIMITED_RETRY).await;
                    conn.send(&ask).await.map_err(|_| Cut::Broken)?;
                }
                Ok(Incoming::Frame(_, frame)) => held.push(frame),
                Ok(Incoming::Closed(close)) => return Err(Cut::Closed(close)),
                Err(ClientError::Closed(close)) => return Err(Cut::Closed(close)),
                Err(_) => return Err(Cut::Broken),
            }
        };
        // A refused page: what was found so far, honestly incomplete.
        let Some(page) = page else {
            return Ok(Refill {
                events: events.into(),
                complete: false,
            });
        };
        let mut decoded = Vec::with_capacity(page.events.len());
        for raw in &page.events {
            if let Ok(frame) = ServerFrame::decode(raw.get()) {
                decoded.push(frame);
            }
        }
        let first = decoded.iter().find_map(ServerFrame::log_seq);
        for frame in decoded.into_iter().rev() {
            if frame.log_seq().is_some_and(|seq| seq > floor) {
                events.push_front(frame);
            }
        }
        match first {
            Some(first) if page.more => before = first,
            // The oldest retained event: complete only if it is the one right after the floor.
            Some(first) => {
                return Ok(Refill {
                    events: events.into(),
                    complete: first <= floor + 1,
                });
            }
            None => {
                // Nothing retained below `before`, which is above the floor: that range is gone.
                return Ok(Refill {
                    events: events.into(),
                    complete: false,
                });
            }
        }
    }
}

/// The `mid`s of the messages handed to the app, most recent at most [`SEEN`]: a message that
/// comes again under another `seq` (a refill into a log the app saw part of) is dropped.
#[derive(Default)]
pub(super) struct SeenMids {
    order: VecDeque<u64>,
    set: HashSet<u64>,
}

/// How many mids [`SeenMids`] keeps.
const SEEN: usize = 10_000;

impl SeenMids {
    /// Records `mid`; false if it was seen already.
    pub fn insert(&mut self, mid: u64) -> bool {
        if !self.set.insert(mid) {
            return false;
        }
        self.order.push_back(mid);
        if self.order.len() > SEEN
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

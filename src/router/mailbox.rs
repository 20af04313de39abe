//! One connection's outbound mailbox: the session's own queue, the live queue the router fills,
//! and the kick, behind one small lock.
//!
//! It replaces two bounded `mpsc` channels and a `watch` (≈ 4.5 KiB per connection, allocated
//! up front) with two `VecDeque`s that hold memory only while frames wait: an idle connection
//! costs one small allocation. The writer takes everything queued in one lock and writes it
//! as one batch; the router's hand-off is a push and a wake.
//!
//! Bounds: each queue holds at most `frames` items and `bytes` bytes of frames, counted from
//! the moment a frame is queued until the writer has handed it to the socket (so a batch the
//! writer is stuck writing still counts). A connection therefore holds at most about
//! `2 × bytes` of frames whatever its peer does. The session waits for room in its own queue,
//! but at most `stall` (the idle timeout): a peer that lets it stay full that long is kicked as
//! a slow consumer. A full live queue is refused (the router kicks the slow consumer).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use super::{KickReason, Outbound};
use crate::metrics::Metrics;
use crate::protocol::CloseCode;

/// A connection's mailbox, shared by its session, its writer and the router.
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<Inner>,
    /// The writer task, when it waits for work.
    writer: AtomicWaker,
    /// Sessions waiting for room in their queue, and anyone waiting for a kick.
    notify: Notify,
    bounds: Bounds,
}

/// How much one connection's queues may hold.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Items per queue.
    pub frames: usize,
    /// Bytes of frames per queue, until the writer has written them. One item is always
    /// accepted into an empty queue, whatever its size.
    pub bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    own: VecDeque<Outbound>,
    live: VecDeque<Outbound>,
    /// Bytes of the session's own frames queued or being written.
    own_bytes: usize,
    /// Bytes of live frames queued or being written.
    live_bytes: usize,
    kick: Option<KickReason>,
    /// The session is gone: the writer writes what is queued, then closes normally.
    session_done: bool,
    /// The writer is gone: nothing queued will be written.
    writer_done: bool,
    /// The socket, for a direct write when nothing waits (`try_direct`); `None` without one
    /// and once the writer is done.
    socket: Option<Arc<OwnedWriteHalf>>,
    /// The writer is parked in `next` with nothing in hand: everything queued before was
    /// written, so a frame may go straight to the socket without passing another.
    writer_idle: bool,
    /// Live frames flow (the catch-up is done): the last replayed seq.
    live_after: Option<u64>,
    /// Frames wait for a batch's flush (`offer_deferred`).
    deferred: bool,
}

/// Why a live frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The live queue is full: a slow consumer.
    Full,
    /// The connection is closing.
    Closed,
}

/// Why one of the session's own items was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotQueued {
    /// The connection is closing (kicked, or the writer is gone).
    Closed,
    /// The queue stayed full for the whole `stall` wait: the peer is not reading. This wait
    /// kicked the connection as a slow consumer.
    Stalled,
}

/// A batch the writer took; hand it back with [`Mailbox::written`] once it is written.
#[derive(Debug, Default)]
pub struct Taken {
    own_bytes: usize,
    live_bytes: usize,
}

/// The writer's next piece of work.
#[derive(Debug)]
pub enum Work {
    /// Items to write, the session's own first, and what they weigh.
    Items(VecDeque<Outbound>, Taken),
    /// The session ended and everything it queued was taken: close normally.
    SessionDone,
    /// Kicked: close with this reason now, whatever is queued.
    Kicked(KickReason),
}

impl Mailbox {
    /// An empty mailbox whose queues hold at most `bounds` each.
    pub fn new(bounds: Bounds) -> Arc<Mailbox> {
        Mailbox::with_socket(bounds, None)
    }

    /// A mailbox that may write a frame straight to `socket` when nothing waits before it
    /// (the writer, which shares the socket, is idle and both queues are empty): the frame
    /// leaves without waking the writer task. Only what the socket does not take at once is
    /// queued.
    pub fn with_socket(bounds: Bounds, socket: Option<Arc<OwnedWriteHalf>>) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            inner: Mutex::new(Inner {
                socket,
                ..Inner::default()
            }),
            writer: AtomicWaker::new(),
            notify: Notify::new(),
            bounds: Bounds {
                frames: bounds.frames.max(1),
                bytes: bounds.bytes.max(1),
            },
        })
    }

    /// Whether a queue holding `len` items and `bytes` bytes (queued or being written) has
    /// room for an item of `size` bytes. Nothing waiting admits any one item.
    fn room(&self, len: usize, bytes: usize, size: usize) -> bool {
        len < self.bounds.frames && (bytes == 0 || bytes + size <= self.bounds.bytes)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a live frame over without waiting (the router's hand-off): written straight to
    /// the socket when nothing waits before it, else queued for the writer.
    pub fn offer(&self, item: Outbound, metrics: &Metrics) -> Result<(), Refused> {
        {
            let mut inner = self.lock();
            if inner.writer_done || inner.kick.is_some() {
                return Err(Refused::Closed);
            }
            // Nothing may be passed: no own item, no live one (a held one, or the rest of a
            // frame a direct write began).
            let item =
                if inner.live_after.is_some() && inner.own.is_empty() && inner.live.is_empty() {
                    match try_direct(&mut inner, item, metrics) {
                        None => return Ok(()),
                        Some(rest) => rest,
                    }
                } else {
                    item
                };
            let size = item.size();
            if !self.room(inner.live.len(), inner.live_bytes, size) {
                return Err(Refused::Full);
            }
            inner.live_bytes += size;
            inner.live.push_back(item);
        }
        self.writer.wake();
        Ok(())
    }

    /// Queues a live frame for the next [`Mailbox::flush_deferred`] without writing or waking
    /// the writer. Returns whether this is the first frame deferred since the last flush (the
    /// caller then owes this mailbox a flush).
    pub fn offer_deferred(&self, item: Outbound) -> Result<bool, Refused> {
        let mut inner = self.lock();
        if inner.writer_done || inner.kick.is_some() {
            return Err(Refused::Closed);
        }
        let size = item.size();
        if !self.room(inner.live.len(), inner.live_bytes, size) {
            return Err(Refused::Full);
        }
        inner.live_bytes += size;
        inner.live.push_back(item);
        Ok(!std::mem::replace(&mut inner.deferred, true))
    }

    /// Writes the deferred frames: when nothing else waits and the writer is idle, all live
    /// frames with one non-blocking write (what the socket does not take stays queued for the
    /// writer); else the writer is woken to write them.
    pub fn flush_deferred(&self, metrics: &Metrics) {
        let mut inner = self.lock();
        inner.deferred = false;
        let direct = inner.writer_idle
            && inner.own.is_empty()
            && inner.live_after.is_some()
            && inner.socket.is_some()
            && !inner.writer_done
            && inner.kick.is_none();
        if direct {
            let after = inner.live_after.unwrap_or(0);
            let mut bytes = Vec::new();
            let mut counted = Vec::new();
            for item in &inner.live {
                match item {
                    Outbound::Event(seq, _) if *seq <= after => {}
                    Outbound::Event(_, frame) | Outbound::Frame(frame) => {
                        bytes.extend_from_slice(frame.bytes());
                        counted.push(frame.clone());
                    }
                    Outbound::Rest(rest) => bytes.extend_from_slice(rest),
                    // Only frames are offered into the live queue.
                    _ => {
                        drop(inner);
                        self.writer.wake();
                        return;
                    }
                }
            }
            let socket = inner.socket.as_ref().expect("checked above");
            // Would block (or failed): the writer takes the queue as it is.
            if let Ok(n) = socket.try_write(&bytes) {
                for frame in &counted {
                    metrics.count_out(std::str::from_utf8(frame.payload()).unwrap_or(""));
                }
                inner.live.clear();
                if n == bytes.len() {
                    inner.live_bytes = 0;
                    return;
                }
                let rest = bytes::Bytes::from(bytes).slice(n..);
                inner.live_bytes = rest.len();
                inner.live.push_back(Outbound::Rest(rest));
            }
        }
        drop(inner);
        self.writer.wake();
    }

    /// The writer passed the end of the catch-up (`Outbound::Live`): live frames may go
    /// straight to the socket from now on.
    pub fn open_live(&self, after: u64) {
        self.lock().live_after = Some(after);
    }

    /// Queues a control frame tungstenite wrote while reading (a pong, the answer to a close)
    /// without waiting. A peer whose queue is full while it keeps sending pings is not reading:
    /// it is kicked as a slow consumer.
    pub fn push_control(&self, frame: crate::wire::Frame) -> Result<(), Refused> {
        let item = Outbound::Frame(frame);
        let size = item.size();
        let full = {
            let mut inner = self.lock();
            if inner.writer_done || inner.kick.is_some() {
                return Err(Refused::Closed);
            }
            if self.room(inner.own.len(), inner.own_bytes, size) {
                inner.own_bytes += size;
                inner.own.push_back(item);
                false
            } else {
                true
            }
        };
        if full {
            self.kick(
                CloseCode::SlowConsumer,
                "nothing read while control frames waited; reconnect and resync",
            );
            return Err(Refused::Full);
        }
        self.writer.wake();
        Ok(())
    }

    /// Queues one of the session's own items, waiting at most `stall` for room. If no room
    /// comes in time the peer has stopped reading: the connection is kicked as a slow
    /// consumer (4008). The item is dropped when it is not queued.
    pub async fn send_own(
        &self,
        item: Outbound,
        stall: Duration,
        metrics: &Metrics,
    ) -> Result<(), NotQueued> {
        let item = {
            let mut inner = self.lock();
            if inner.writer_done || inner.kick.is_some() {
                return Err(NotQueued::Closed);
            }
            // Live frames held for the catch-up may wait; the session's own go before them.
            let live_waits = inner.live.is_empty() || inner.live_after.is_none();
            if inner.own.is_empty() && live_waits {
                match try_direct(&mut inner, item, metrics) {
                    None => return Ok(()),
                    Some(rest) => rest,
                }
            } else {
                item
            }
        };
        let size = item.size();
        let mut item = Some(item);
        let deadline = tokio::time::Instant::now() + stall;
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.writer_done || inner.kick.is_some() {
                    return Err(NotQueued::Closed);
                }
                if self.room(inner.own.len(), inner.own_bytes, size) {
                    inner.own_bytes += size;
                    inner
                        .own
                        .push_back(item.take().expect("item is queued once"));
                    drop(inner);
                    self.writer.wake();
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let waited = if stall.subsec_millis() == 0 {
                    format!("{} s", stall.as_secs())
                } else {
                    format!("{} ms", stall.as_millis())
                };
                let reason =
                    format!("nothing read for {waited} while frames waited; reconnect and resync");
                return if self.kick(CloseCode::SlowConsumer, reason) {
                    Err(NotQueued::Stalled)
                } else {
                    Err(NotQueued::Closed)
                };
            }
        }
    }

    /// The writer handed a batch to the socket: its bytes no longer count.
    pub fn written(&self, taken: Taken) {
        if taken.own_bytes == 0 && taken.live_bytes == 0 {
            return;
        }
        {
            let mut inner = self.lock();
            inner.own_bytes = inner.own_bytes.saturating_sub(taken.own_bytes);
            inner.live_bytes = inner.live_bytes.saturating_sub(taken.live_bytes);
        }
        self.notify.notify_waiters();
    }

    /// The session is gone: the writer drains what it queued and closes.
    pub fn session_done(&self) {
        self.lock().session_done = true;
        self.writer.wake();
    }

    /// Closes the connection from outside. The first reason wins; returns whether this one did.
    pub fn kick(&self, code: CloseCode, reason: impl Into<String>) -> bool {
        {
            let mut inner = self.lock();
            if inner.kick.is_some() {
                return false;
            }
            inner.kick = Some(KickReason {
                code,
                reason: reason.into(),
            });
        }
        self.notify.notify_waiters();
        self.writer.wake();
        true
    }

    /// Whether the connection was kicked.
    pub fn is_kicked(&self) -> bool {
        self.lock().kick.is_some()
    }

    /// Resolves once the connection is kicked.
    pub async fn kicked(&self) -> KickReason {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.lock().kick.clone() {
                return reason;
            }
            notified.await;
        }
    }

    /// Waits for the writer's next work. Live items are taken only when `live_open`.
    pub async fn next(&self, live_open: bool) -> Work {
        poll_fn(|cx| self.poll_next(cx, live_open)).await
    }

    fn poll_next(&self, cx: &mut Context<'_>, live_open: bool) -> Poll<Work> {
        // Registered before looking, so a push after the look wakes us.
        self.writer.register(cx.waker());
        let mut inner = self.lock();
        inner.writer_idle = false;
        if let Some(reason) = &inner.kick {
            return Poll::Ready(Work::Kicked(reason.clone()));
        }
        let own_was_full = inner.own.len() >= self.bounds.frames;
        let take_live = live_open && !inner.live.is_empty();
        if inner.own.is_empty() && !take_live {
            return if inner.session_done {
                Poll::Ready(Work::SessionDone)
            } else {
                inner.writer_idle = true;
                Poll::Pending
            };
        }
        // The queues are handed over whole: no copy, and an idle connection keeps no buffer.
        // Their bytes stay counted until the writer says they are written.
        let mut taken = Taken::default();
        let mut items = std::mem::take(&mut inner.own);
        taken.own_bytes = items.iter().map(Outbound::size).sum();
        if take_live {
            taken.live_bytes = inner.live.iter().map(Outbound::size).sum();
            if items.is_empty() {
                items = std::mem::take(&mut inner.live);
            } else {
                items.append(&mut inner.live);
                inner.live = VecDeque::new();
            }
        }
        drop(inner);
        if own_was_full {
            self.notify.notify_waiters();
        }
        Poll::Ready(Work::Items(items, taken))
    }

    /// The writer ended: nothing more will be written, and waiting senders give up.
    pub fn writer_done(&self) {
        let (own, live) = {
            let mut inner = self.lock();
            inner.writer_done = true;
            inner.writer_idle = false;
            inner.socket = None;
            inner.own_bytes = 0;
            inner.live_bytes = 0;
            (
                std::mem::take(&mut inner.own),
                std::mem::take(&mut inner.live),
            )
        };
        drop((own, live));
        self.notify.notify_waiters();
    }
}

/// Writes a frame straight to the socket when nothing is in the way: the writer is idle (all
/// it took is written) and the caller checked that no queued item must go first. One
/// non-blocking write, under the mailbox lock so no other write can start meanwhile. `None`:
/// written whole (or a replayed event, dropped). `Some`: what still has to be queued, the item
/// itself or, after a short write, the rest of its bytes.
fn try_direct(inner: &mut Inner, item: Outbound, metrics: &Metrics) -> Option<Outbound> {
    if !inner.writer_idle {
        return Some(item);
    }
    let Some(socket) = &inner.socket else {
        return Some(item);
    };
    let frame = match &item {
        Outbound::Frame(frame) => frame,
        Outbound::Event(seq, frame) => match inner.live_after {
            Some(after) if *seq <= after => return None,
            _ => frame,
        },
        _ => return Some(item),
    };
    match socket.try_write(frame.bytes()) {
        Ok(n) if n == frame.len() => {
            metrics.count_out(std::str::from_utf8(frame.payload()).unwrap_or(""));
            None
        }
        Ok(n) => {
            metrics.count_out(std::str::from_utf8(frame.payload()).unwrap_or(""));
            Some(Outbound::Rest(frame.bytes().slice(n..)))
        }
        // Would block, or the socket failed: the writer meets the same state and handles it.
        Err(_) => Some(item),
    }
}

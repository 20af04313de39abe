//! One connection's outbound mailbox: the session's own queue, the live queue the router fills,
//! and the kick, behind one small lock.
//!
//! It replaces two bounded `mpsc` channels and a `watch` (≈ 4.5 KiB per connection, allocated
//! up front) with two `VecDeque`s that hold memory only while frames wait: an idle connection
//! costs one small allocation. The writer takes everything queued in one lock and writes it
//! as one batch; the router's hand-off is a push and a wake.
//!
//! Bounds are as before: each queue holds at most `capacity` items. The session waits for room
//! in its own queue; a full live queue is refused (the router kicks the slow consumer).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::sync::Notify;

use super::{KickReason, Outbound};
use crate::protocol::CloseCode;

/// A connection's mailbox, shared by its session, its writer and the router.
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<Inner>,
    /// The writer task, when it waits for work.
    writer: AtomicWaker,
    /// Sessions waiting for room in their queue, and anyone waiting for a kick.
    notify: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    own: VecDeque<Outbound>,
    live: VecDeque<Outbound>,
    kick: Option<KickReason>,
    /// The session is gone: the writer writes what is queued, then closes normally.
    session_done: bool,
    /// The writer is gone: nothing queued will be written.
    writer_done: bool,
}

/// Why a live frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The live queue is full: a slow consumer.
    Full,
    /// The connection is closing.
    Closed,
}

/// The writer's next piece of work.
#[derive(Debug)]
pub enum Work {
    /// Items to write, the session's own first.
    Items(VecDeque<Outbound>),
    /// The session ended and everything it queued was taken: close normally.
    SessionDone,
    /// Kicked: close with this reason now, whatever is queued.
    Kicked(KickReason),
}

impl Mailbox {
    /// An empty mailbox whose queues hold at most `capacity` items each.
    pub fn new(capacity: usize) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            inner: Mutex::new(Inner::default()),
            writer: AtomicWaker::new(),
            notify: Notify::new(),
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a live frame without waiting (the router's hand-off).
    pub fn offer(&self, item: Outbound) -> Result<(), Refused> {
        {
            let mut inner = self.lock();
            if inner.writer_done || inner.kick.is_some() {
                return Err(Refused::Closed);
            }
            if inner.live.len() >= self.capacity {
                return Err(Refused::Full);
            }
            inner.live.push_back(item);
        }
        self.writer.wake();
        Ok(())
    }

    /// Queues one of the session's own items, waiting for room. Returns false when the
    /// writer is gone (the item is dropped).
    pub async fn send_own(&self, item: Outbound) -> bool {
        let mut item = Some(item);
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.writer_done {
                    return false;
                }
                if inner.own.len() < self.capacity {
                    inner
                        .own
                        .push_back(item.take().expect("item is queued once"));
                    drop(inner);
                    self.writer.wake();
                    return true;
                }
            }
            notified.await;
        }
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
        if let Some(reason) = &inner.kick {
            return Poll::Ready(Work::Kicked(reason.clone()));
        }
        let own_was_full = inner.own.len() >= self.capacity;
        let take_live = live_open && !inner.live.is_empty();
        if inner.own.is_empty() && !take_live {
            return if inner.session_done {
                Poll::Ready(Work::SessionDone)
            } else {
                Poll::Pending
            };
        }
        // The queues are handed over whole: no copy, and an idle connection keeps no buffer.
        let mut items = std::mem::take(&mut inner.own);
        if take_live {
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
        Poll::Ready(Work::Items(items))
    }

    /// The writer ended: nothing more will be written, and waiting senders give up.
    pub fn writer_done(&self) {
        let (own, live) = {
            let mut inner = self.lock();
            inner.writer_done = true;
            (
                std::mem::take(&mut inner.own),
                std::mem::take(&mut inner.live),
            )
        };
        drop((own, live));
        self.notify.notify_waiters();
    }
}

/// The session's end of its own queue; dropping it tells the writer the session is gone.
#[derive(Debug)]
pub struct OwnQueue(Arc<Mailbox>);

/// The writer is gone.
#[derive(Debug)]
pub struct Closed;

impl OwnQueue {
    /// The session's handle to `mailbox`.
    pub fn new(mailbox: Arc<Mailbox>) -> OwnQueue {
        OwnQueue(mailbox)
    }

    /// Queues an item for the writer, waiting for room; waiting slows only this connection.
    pub async fn send(&self, item: Outbound) -> Result<(), Closed> {
        if self.0.send_own(item).await {
            Ok(())
        } else {
            Err(Closed)
        }
    }

    /// The shared mailbox.
    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.0
    }
}

impl Drop for OwnQueue {
    fn drop(&mut self) {
        self.0.session_done();
    }
}

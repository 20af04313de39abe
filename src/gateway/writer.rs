//! The only code that writes to a device's socket.
//!
//! It drains two bounded queues: the session's own (replies, the catch-up, closes) and the live
//! queue the router fills. Until the session says the catch-up is done ([`Outbound::Live`]) the
//! live queue is held, so a replay is never interleaved with live events; after it, live events
//! whose `seq` the catch-up already sent are dropped. Frames are fed in batches and flushed once.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::sync::watch;

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::protocol::CloseCode;
use crate::router::mailbox::Work;
use crate::router::{Frame, Mailbox, Outbound};

/// How long the close frame and the socket shutdown may take.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What to do with one queued item.
enum Step {
    Write(Frame),
    Ping,
    Skip,
    Close(CloseCode, String),
}

/// How the writer ends.
pub struct Ending {
    /// How long a slow consumer's close frame may wait behind what its socket still holds
    /// (the idle timeout: as long as any silent connection is kept).
    pub slow_close_wait: std::time::Duration,
    /// Server shutdown: stop waiting for a slow consumer.
    pub shutdown: watch::Receiver<bool>,
}

/// Runs until the session ends, a close is queued, or the connection is kicked.
pub async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    mailbox: Arc<Mailbox>,
    metrics: Arc<Metrics>,
    mut ending: Ending,
) {
    let close = write_loop(&mut sink, &mailbox, &metrics).await;
    // Nothing more is written: senders waiting for room give up, queued frames are dropped.
    mailbox.writer_done();
    if let Some((code, reason)) = close {
        // A slow consumer's socket is full: its close frame goes out behind what is already
        // buffered, once the device reads again, so it learns to resync (4008) rather than
        // seeing a bare reset. Bounded by the idle timeout and by shutdown.
        let slow = code == CloseCode::SlowConsumer;
        let frame = CloseFrame {
            code: code.code(),
            reason: reason.into(),
        };
        let wait = if slow {
            ending.slow_close_wait
        } else {
            CLOSE_WAIT
        };
        let send = tokio::time::timeout(wait, sink.send(Message::Close(Some(frame))));
        if slow {
            tokio::select! {
                _ = send => {}
                _ = ending.shutdown.wait_for(|down| *down) => {}
            }
        } else {
            let _ = send.await;
        }
    }
    // A peer that stopped reading must not hold the task (and its socket) forever.
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
}

/// Writes batches until the connection is to close; returns the close frame to send, if any.
async fn write_loop(
    sink: &mut SplitSink<WebSocket, Message>,
    mailbox: &Mailbox,
    metrics: &Metrics,
) -> Option<(CloseCode, String)> {
    // None while the catch-up runs: the live queue waits.
    let mut live_after: Option<u64> = None;
    loop {
        // Everything queued is taken at once (the session's own items first) and written as
        // one batch with one flush: one write to the socket for all of it.
        let (items, taken) = match mailbox.next(live_after.is_some()).await {
            Work::Kicked(reason) => return Some((reason.code, reason.reason)),
            Work::SessionDone => return Some((CloseCode::Normal, String::new())),
            Work::Items(items, taken) => (items, taken),
        };
        let mut then_close = None;
        let mut fed = 0usize;
        let write = async {
            for item in items {
                let message = match step(item, &mut live_after) {
                    Step::Write(frame) => {
                        metrics.count_out(&frame);
                        Message::Text(frame)
                    }
                    Step::Ping => Message::Ping(Default::default()),
                    Step::Skip => continue,
                    Step::Close(code, reason) => {
                        then_close = Some((code, reason));
                        break;
                    }
                };
                sink.feed(message).await?;
                fed += 1;
            }
            if fed > 0 {
                sink.flush().await?;
            }
            Ok::<(), axum::Error>(())
        };
        // A kick must win even while a write is stuck on a peer that stopped reading. The
        // frames already fed stay buffered whole; the close frame goes out after them. Most
        // writes finish at once, so the kick is raced only when one would wait.
        let written = {
            let mut write = std::pin::pin!(write);
            match futures::poll!(write.as_mut()) {
                std::task::Poll::Ready(written) => written,
                std::task::Poll::Pending => tokio::select! {
                    biased;
                    reason = mailbox.kicked() => {
                        tracing::debug!(code = reason.code.code(), "kicked during a stuck write");
                        return Some((reason.code, reason.reason));
                    }
                    written = write => written,
                },
            }
        };
        if written.is_err() {
            return None; // the peer is gone
        }
        // Handed to the socket: room for the session's next frames.
        mailbox.written(taken);
        if then_close.is_some() {
            return then_close;
        }
    }
}

fn step(item: Outbound, live_after: &mut Option<u64>) -> Step {
    match item {
        Outbound::Frame(frame) => Step::Write(frame),
        Outbound::Event(seq, frame) => match live_after {
            Some(after) if seq <= *after => Step::Skip,
            _ => Step::Write(frame),
        },
        Outbound::Live { after } => {
            *live_after = Some(after);
            Step::Skip
        }
        Outbound::Close(code, reason) => Step::Close(code, reason),
        Outbound::Ping => Step::Ping,
    }
}

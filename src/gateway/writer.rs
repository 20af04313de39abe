//! The only code that writes to a device's socket.
//!
//! It drains two bounded queues: the session's own (replies, the catch-up, closes) and the live
//! queue the router fills. Until the session says the catch-up is done ([`Outbound::Live`]) the
//! live queue is held, so a replay is never interleaved with live events; after it, live events
//! whose `seq` the catch-up already sent are dropped. Frames are fed in batches and flushed once.

use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::protocol::CloseCode;
use crate::router::mailbox::Work;
use crate::router::{Frame, Mailbox, Outbound};
use crate::wire;

/// How long the close frame and the socket shutdown may take.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What to do with one queued item.
enum Step {
    Write(Frame),
    /// The rest of a frame a direct write began.
    Rest(bytes::Bytes),
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
    socket: Arc<OwnedWriteHalf>,
    mailbox: Arc<Mailbox>,
    metrics: Arc<Metrics>,
    mut ending: Ending,
) {
    let mut closed = false;
    let close = write_loop(&socket, &mailbox, &metrics, &mut ending, &mut closed).await;
    // Nothing more is written: senders waiting for room give up, queued frames are dropped.
    mailbox.writer_done();
    // `closed`: a close frame already went out (tungstenite's answer to the device's close).
    if let Some((code, reason)) = close.filter(|_| !closed) {
        // A slow consumer's socket is full: its close frame goes out behind what is already
        // buffered, once the device reads again, so it learns to resync (4008) rather than
        // seeing a bare reset. Bounded by the idle timeout and by shutdown.
        let slow = code == CloseCode::SlowConsumer;
        let frame = wire::Frame::close(code.code(), &reason);
        let wait = if slow {
            ending.slow_close_wait
        } else {
            CLOSE_WAIT
        };
        let send = tokio::time::timeout(wait, write_all(&socket, frame.bytes()));
        if slow {
            tokio::select! {
                _ = send => {}
                _ = ending.shutdown.wait_for(|down| *down) => {}
            }
        } else {
            let _ = send.await;
        }
    }
    // The mailbox let its share of the socket go in `writer_done`: dropping this last one
    // shuts the write side down (a FIN after the close frame).
    drop(socket);
}

/// Writes all of `buf`, waiting for room in the socket as needed. The socket is shared with
/// the mailbox's direct writes, which happen only while this task is idle.
async fn write_all(socket: &OwnedWriteHalf, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        socket.writable().await?;
        match socket.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Writes batches until the connection is to close; returns the close frame to send, if any.
/// Sets `closed` once a close frame was written.
async fn write_loop(
    socket: &OwnedWriteHalf,
    mailbox: &Mailbox,
    metrics: &Metrics,
    ending: &mut Ending,
    closed: &mut bool,
) -> Option<(CloseCode, String)> {
    // None while the catch-up runs: the live queue waits.
    let mut live_after: Option<u64> = None;
    // The batch's frames, gathered into one buffer for one write when there are several.
    let mut batch: Vec<u8> = Vec::new();
    loop {
        // Everything queued is taken at once (the session's own items first) and written as
        // one batch: one write to the socket for all of it.
        let (items, taken) = match mailbox.next(live_after.is_some()).await {
            Work::Kicked(reason) => return Some((reason.code, reason.reason)),
            Work::SessionDone => return Some((CloseCode::Normal, String::new())),
            Work::Items(items, taken) => (items, taken),
        };
        let mut then_close = None;
        let mut frames: Vec<Frame> = Vec::with_capacity(items.len());
        for item in items {
            match step(item, &mut live_after, mailbox) {
                Step::Rest(rest) => frames.push(wire::Frame::raw(rest)),
                Step::Write(frame) => {
                    if frame.is_raw() {
                        // tungstenite's pong or close answer: after a close nothing more goes.
                        if wire::holds_close(frame.bytes()) {
                            *closed = true;
                            frames.push(frame);
                            break;
                        }
                    } else {
                        metrics.count_out(std::str::from_utf8(frame.payload()).unwrap_or(""));
                    }
                    frames.push(frame);
                }
                Step::Ping => frames.push(wire::Frame::ping()),
                Step::Skip => {}
                Step::Close(code, reason) => {
                    then_close = Some((code, reason));
                    break;
                }
            }
        }
        let write = async {
            match frames.as_slice() {
                [] => Ok(()),
                [one] => write_all(socket, one.bytes()).await,
                many => {
                    batch.clear();
                    for frame in many {
                        batch.extend_from_slice(frame.bytes());
                    }
                    write_all(socket, &batch).await
                }
            }
        };
        // A kick must win even while a write is stuck on a peer that stopped reading. The
        // batch already begun is finished first (a frame cut in half would make the close
        // frame after it garbage), within the slow consumer's close wait; the close follows.
        let mut write = std::pin::pin!(write);
        let written = match futures::poll!(write.as_mut()) {
            std::task::Poll::Ready(written) => written,
            std::task::Poll::Pending => {
                let kicked = tokio::select! {
                    biased;
                    reason = mailbox.kicked() => reason,
                    written = write.as_mut() => {
                        if written.is_err() {
                            return None;
                        }
                        mailbox.written(taken);
                        if *closed {
                            return None;
                        }
                        if then_close.is_some() {
                            return then_close;
                        }
                        continue;
                    }
                };
                tracing::debug!(code = kicked.code.code(), "kicked during a stuck write");
                let finished = tokio::select! {
                    finished = tokio::time::timeout(ending.slow_close_wait, write.as_mut()) => {
                        matches!(finished, Ok(Ok(())))
                    }
                    _ = ending.shutdown.wait_for(|down| *down) => false,
                };
                if !finished {
                    *closed = true;
                }
                return Some((kicked.code, kicked.reason));
            }
        };
        if written.is_err() {
            return None; // the peer is gone
        }
        // Handed to the socket: room for the session's next frames.
        mailbox.written(taken);
        if *closed {
            return None;
        }
        if then_close.is_some() {
            return then_close;
        }
    }
}

fn step(item: Outbound, live_after: &mut Option<u64>, mailbox: &Mailbox) -> Step {
    match item {
        Outbound::Rest(rest) => Step::Rest(rest),
        Outbound::Frame(frame) => Step::Write(frame),
        Outbound::Event(seq, frame) => match live_after {
            Some(after) if seq <= *after => Step::Skip,
            _ => Step::Write(frame),
        },
        Outbound::Live { after } => {
            *live_after = Some(after);
            mailbox.open_live(after);
            Step::Skip
        }
        Outbound::Close(code, reason) => Step::Close(code, reason),
        Outbound::Ping => Step::Ping,
    }
}

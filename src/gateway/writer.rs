//! The only code that writes to a device's socket.
//!
//! It drains two bounded queues: the session's own (replies, the catch-up, closes) and the live
//! queue the router fills. Until the session says the catch-up is done ([`Outbound::Live`]) the
//! live queue is held, so a replay is never interleaved with live events; after it, live events
//! whose `seq` the catch-up already sent are dropped. Frames are fed in batches and flushed once.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::sync::{mpsc, watch};

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::protocol::CloseCode;
use crate::router::{Frame, KickReason, Outbound};

/// Frames written before one flush.
const BATCH: usize = 64;
/// How long the close frame and the socket shutdown may take.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The two queues a connection's writer drains.
pub struct Queues {
    /// The session's own frames, in order.
    pub own: mpsc::Receiver<Outbound>,
    /// Live frames from the router.
    pub live: mpsc::Receiver<Outbound>,
}

/// What to do with one queued item.
enum Step {
    Write(Frame),
    Ping,
    Skip,
    Close(CloseCode, String),
}

/// Runs until the session ends, a close is queued, or the connection is kicked.
pub async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    mut queues: Queues,
    mut kick: watch::Receiver<Option<KickReason>>,
    metrics: Arc<Metrics>,
) {
    // None while the catch-up runs: the live queue waits.
    let mut live_after: Option<u64> = None;
    let close = 'outer: loop {
        // A kick must win even while a write is stuck on a peer that stopped reading, so both
        // the wait for work and the write itself race against it.
        let item = tokio::select! {
            biased;
            reason = kicked(&mut kick) => break Some(reason),
            item = queues.own.recv() => match item {
                Some(item) => item,
                None => break Some((CloseCode::Normal, String::new())),
            },
            Some(item) = queues.live.recv(), if live_after.is_some() => item,
        };
        let mut batch = Vec::with_capacity(BATCH);
        let mut then_close = None;
        let mut next = Some(item);
        while let Some(item) = next.take() {
            match step(item, &mut live_after) {
                Step::Write(frame) => {
                    metrics.count_out(&frame);
                    batch.push(Message::Text(frame));
                }
                Step::Ping => batch.push(Message::Ping(Default::default())),
                Step::Skip => {}
                Step::Close(code, reason) => {
                    then_close = Some((code, reason));
                    break;
                }
            }
            if batch.len() < BATCH {
                next = queues
                    .own
                    .try_recv()
                    .ok()
                    .or_else(|| live_after.and_then(|_| queues.live.try_recv().ok()));
            }
        }
        if !batch.is_empty() {
            let write = async {
                for message in batch {
                    sink.feed(message).await?;
                }
                sink.flush().await
            };
            let written = tokio::select! {
                biased;
                reason = kicked(&mut kick) => {
                    // The socket is stuck; a close frame could not get through either.
                    tracing::debug!(code = reason.0.code(), "dropping a stuck connection");
                    break 'outer None;
                }
                written = write => written,
            };
            if written.is_err() {
                break None; // the peer is gone
            }
        }
        if let Some(close) = then_close {
            break Some(close);
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code: code.code(),
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(Some(frame)))).await;
    }
    // A peer that stopped reading must not hold the task (and its socket) forever.
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
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

async fn kicked(kick: &mut watch::Receiver<Option<KickReason>>) -> (CloseCode, String) {
    let reason = kick
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|reason| reason.clone());
    match reason {
        Some(reason) => (reason.code, reason.reason),
        // The handle is gone without a kick: never resolve, the queue decides.
        None => std::future::pending().await,
    }
}

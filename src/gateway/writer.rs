//! The only code that writes to a device's socket: drains the connection's bounded queue in
//! batches (feed many, flush once) and writes the close frame.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::sync::{mpsc, watch};

use crate::protocol::CloseCode;
use crate::router::{KickReason, Outbound};

/// Frames written before one flush.
const BATCH: usize = 64;
/// How long the close frame and the socket shutdown may take.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs until the queue closes, a close is queued, or the connection is kicked.
pub async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Outbound>,
    mut kick: watch::Receiver<Option<KickReason>>,
) {
    let close = loop {
        // A kick must win even while a write is stuck on a peer that stopped reading, so both
        // the wait for work and the write itself race against it.
        let item = tokio::select! {
            biased;
            reason = kicked(&mut kick) => break Some(reason),
            item = queue.recv() => item,
        };
        let first = match item {
            None => break Some((CloseCode::Normal, String::new())),
            Some(Outbound::Close(code, reason)) => break Some((code, reason)),
            Some(Outbound::Frame(frame)) => frame,
        };
        let write = async {
            sink.feed(Message::Text(first)).await?;
            let mut then_close = None;
            for _ in 1..BATCH {
                match queue.try_recv() {
                    Ok(Outbound::Frame(frame)) => sink.feed(Message::Text(frame)).await?,
                    Ok(Outbound::Close(code, reason)) => {
                        then_close = Some((code, reason));
                        break;
                    }
                    Err(_) => break,
                }
            }
            sink.flush().await?;
            Ok::<_, axum::Error>(then_close)
        };
        let written = tokio::select! {
            biased;
            reason = kicked(&mut kick) => {
                // The socket is stuck; a close frame could not get through either.
                tracing::debug!(code = reason.0.code(), "dropping a stuck connection");
                break None;
            }
            written = write => written,
        };
        match written {
            Ok(None) => {}
            Ok(Some(close)) => break Some(close),
            Err(_) => break None, // the peer is gone
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

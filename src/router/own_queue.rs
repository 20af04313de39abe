//! The session's handle to its own queue in the [`Mailbox`]: waits for room at most the idle
//! timeout, and kicks a peer that lets it stay full longer.

use std::sync::Arc;
use std::time::Duration;

use super::{Mailbox, NotQueued, Outbound};
use crate::metrics::Metrics;

/// The session's end of its own queue; dropping it tells the writer the session is gone.
pub struct OwnQueue {
    mailbox: Arc<Mailbox>,
    /// The longest wait for room (the idle timeout) before the peer counts as gone.
    stall: Duration,
    /// Counts the slow consumers a stalled wait closes.
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for OwnQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnQueue")
            .field("mailbox", &self.mailbox)
            .field("stall", &self.stall)
            .finish_non_exhaustive()
    }
}

impl OwnQueue {
    /// The session's handle to `mailbox`; a wait for room longer than `stall` kicks.
    pub fn new(mailbox: Arc<Mailbox>, stall: Duration, metrics: Arc<Metrics>) -> OwnQueue {
        OwnQueue {
            mailbox,
            stall,
            metrics,
        }
    }

    /// Queues an item for the writer, waiting for room (at most `stall`); waiting slows only
    /// this connection.
    pub async fn send(&self, item: Outbound) -> Result<(), NotQueued> {
        let sent = self.mailbox.send_own(item, self.stall, &self.metrics).await;
        if sent == Err(NotQueued::Stalled) {
            self.metrics.slow_consumer_closes.inc();
            // Inside the connection's span, which names the uid.
            tracing::warn!("kicked: slow consumer (nothing read while its own queue was full)");
        }
        sent
    }

    /// The shared mailbox.
    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }
}

impl Drop for OwnQueue {
    fn drop(&mut self) {
        self.mailbox.session_done();
    }
}

//! The broker's background chores: writing last-seen times once a second and pruning expired
//! events and unreferenced files in small transactions.

use std::future::Future;
use std::sync::Arc;

use crate::state::ServerState;

/// How often pending last-seen times are written.
const LAST_SEEN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes the pending last-seen times once a second, in one transaction (a login storm's
/// logins each recorded theirs in memory instead of waiting for a commit of their own).
pub(super) async fn last_seen_forever(state: Arc<ServerState>) {
    let mut tick = tokio::time::interval(LAST_SEEN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(err) = state.last_seen.flush(&*state.store).await {
            tracing::warn!(error = %err, "could not record last seen");
        }
    }
}

/// Events removed per pruning transaction: small enough that sends queued behind it wait
/// only milliseconds.
const PRUNE_CHUNK: usize = 1000;

/// Every `prune_every`: removes expired events in small transactions, then the files no
/// retained event references any more (and uploads never sent, after `upload_grace`).
pub(super) async fn prune_forever(state: Arc<ServerState>) {
    let mut tick = tokio::time::interval(state.config.prune_every);
    loop {
        tick.tick().await;
        if let Some(retention) = state.config.retention {
            let now = crate::state::now_millis();
            let cutoff = now - retention.as_millis() as i64;
            // Client ids (idempotent retries) are remembered at least a day, however short
            // the retention.
            let ids_cutoff = cutoff.min(now - 86_400_000);
            let events = in_chunks("events", || {
                state.store.prune(cutoff, ids_cutoff, PRUNE_CHUNK)
            })
            .await;
            if events > 0 {
                tracing::info!(events, "pruned expired events");
            }
        }
        let unsent_before =
            crate::state::now_millis() - state.config.upload_grace.as_millis() as i64;
        let files = in_chunks("files", || {
            state.store.prune_files(unsent_before, PRUNE_CHUNK)
        })
        .await;
        if files > 0 {
            tracing::info!(files, "pruned files no event references");
        }
    }
}

/// Runs one pruning step (at most [`PRUNE_CHUNK`] rows, one transaction) until a step removes
/// less, letting queued sends in between; returns the rows removed.
async fn in_chunks<F, Fut>(what: &str, mut step: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, crate::store::StoreError>>,
{
    let mut total = 0;
    loop {
        match step().await {
            Ok(n) => {
                total += n;
                if n < PRUNE_CHUNK {
                    return total;
                }
                tokio::task::yield_now().await;
            }
            Err(err) => {
                tracing::error!(error = %err, what, "pruning failed; retrying next round");
                return total;
            }
        }
    }
}

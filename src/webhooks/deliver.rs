//! The delivery loop: the outbox's ready events → one signed POST → delete, or back off.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use smallvec::SmallVec;

use super::{Webhooks, sign};
use crate::protocol::{
    Millis, Origin, Uid, WEBHOOK_SIGNATURE_HEADER, WebhookDevice, WebhookEvent, WebhookRequest,
    WebhookUser, webhook_body,
};
use crate::state::{ServerState, now_millis};
use crate::store::{OutboxEvent, PersonId, StoreError};

/// Looks at the outbox at least this often (a commit that wrote events wakes it sooner).
const TICK: Duration = Duration::from_millis(250);
/// Events per request at most.
const BATCH: usize = 100;
/// How often the outbox's size is checked against `--webhook-max-pending`.
const BOUND_EVERY: Duration = Duration::from_secs(2);
/// After a pass that was not a full request, the next one waits at least this long, so events
/// that become ready one at a time (under load a grace period ends every millisecond) leave
/// together: a request per ~50 ms instead of one per event. Measured before it: at 1,000
/// pushes a second the loop sent hundreds of tiny requests a second and used 0.8 of the
/// broker's core.
const GATHER: Duration = Duration::from_millis(50);
/// The longest wait between two attempts.
const MAX_BACKOFF_MS: Millis = 10 * 60 * 1000;

/// Runs until aborted (at shutdown). Store failures are logged and retried on the next tick.
pub(super) async fn run(hooks: Arc<Webhooks>, state: Arc<ServerState>) {
    let mut bound_at = Instant::now();
    loop {
        if Instant::now() >= bound_at {
            bound_at = Instant::now() + BOUND_EVERY;
            if let Err(err) = bound(&hooks, &state).await {
                tracing::warn!(error = %err, "webhook outbox: bounding failed");
            }
        }
        match step(&hooks, &state).await {
            // A full request: more may be ready now.
            Ok(handled) if handled >= BATCH => continue,
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "webhook outbox: store failed"),
        }
        tokio::select! {
            () = hooks.wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
        tokio::time::sleep(GATHER).await;
    }
}

/// Dead-letters the oldest events past `--webhook-max-pending` and updates the pending gauge.
/// Counted on a reader first: the writer, which every send waits for, counts only when the
/// outbox is over its bound.
async fn bound(hooks: &Webhooks, state: &ServerState) -> Result<(), StoreError> {
    let max = hooks.config.max_pending;
    let status = state.store.outbox_status(0).await?;
    let mut pending = status.pending;
    if pending > max || status.dead_total > max {
        let dead = state.store.outbox_bound(max).await?;
        if dead > 0 {
            tracing::warn!(
                events = dead,
                "webhook outbox full: the oldest events were dead-lettered"
            );
            count(state, "dead", dead);
            pending = pending.saturating_sub(dead as u64);
        }
    }
    state.metrics.webhook_pending.set(pending as i64);
    Ok(())
}

fn count(state: &ServerState, outcome: &str, n: usize) {
    state
        .metrics
        .webhook_events
        .with_label_values(&[outcome])
        .inc_by(n as u64);
}

/// One pass over the oldest [`BATCH`] events: drops those a device acked, sends the ready ones
/// in one request. `Ok(n)`: the events it took out of the way (sent, skipped or dead-lettered);
/// 0 when nothing is ready or the receiver failed.
async fn step(hooks: &Webhooks, state: &ServerState) -> Result<usize, StoreError> {
    let config = &hooks.config;
    let rows = state.store.outbox_peek(BATCH, config.include_body).await?;
    let now = now_millis();
    let mut online: HashMap<PersonId, SmallVec<[Uid; 8]>> = HashMap::new();
    let mut send = Vec::new();
    let mut skip = Vec::new();
    // Persons with a message still in its grace period: their later events wait behind it, so
    // each person's events leave in seq order; other persons' events go on.
    let mut waiting: HashSet<PersonId> = HashSet::new();
    for row in &rows {
        if row.next_at > now {
            // The receiver failed and this event backs off: everything after it waits too
            // (one request at a time to a receiver that is down, and no event overtakes it).
            break;
        }
        if row.address.is_none() {
            skip.push(row.id); // the person was deleted: nobody to push to
            continue;
        }
        if row.kind == "message" && row.devices.iter().any(|d| d.acked >= row.seq) {
            skip.push(row.id); // a device has it: no push needed
            continue;
        }
        if waiting.contains(&row.person) {
            continue;
        }
        if row.kind == "message" {
            let live = online
                .entry(row.person)
                .or_insert_with(|| state.router.online(row.person));
            if now < row.due_at && !live.is_empty() {
                waiting.insert(row.person); // a live device may still ack it
                continue;
            }
        }
        online
            .entry(row.person)
            .or_insert_with(|| state.router.online(row.person));
        send.push(row);
    }
    if send.is_empty() {
        if skip.is_empty() {
            return Ok(0);
        }
        let n = skip.len();
        state.store.outbox_delete(skip).await?;
        count(state, "skipped", n);
        return Ok(n);
    }
    let body = payload(&send, &online, now);
    let t = now / 1000;
    let signature = sign::signature(config.secret.expose().as_bytes(), t, &body);
    let started = Instant::now();
    let sent = hooks
        .http
        .post(&config.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(WEBHOOK_SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await;
    let answered = match sent {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let text: String = text.trim().chars().take(200).collect();
            Err(match text.is_empty() {
                true => format!("HTTP {}", status.as_u16()),
                false => format!("HTTP {}: {text}", status.as_u16()),
            })
        }
        // TLS first: a refused certificate fails the connect, and "connect: invalid peer
        // certificate: UnknownIssuer" does not tell an operator what to do.
        Err(err) => Err(match super::tls::describe(&err, &hooks.host) {
            Some(said) => said,
            None if err.is_timeout() => "timeout".to_string(),
            None if err.is_connect() => format!("connect: {}", source_text(&err)),
            None => format!("request: {}", source_text(&err)),
        }),
    };
    state
        .metrics
        .webhook_request_seconds
        .observe(started.elapsed().as_secs_f64());
    let ids: Vec<i64> = send.iter().map(|row| row.id).collect();
    match answered {
        Ok(()) => {
            let (sent, skipped) = (ids.len(), skip.len());
            state.store.outbox_delete([ids, skip].concat()).await?;
            count(state, "delivered", sent);
            count(state, "skipped", skipped);
            Ok(sent + skipped)
        }
        Err(error) => {
            if !skip.is_empty() {
                let n = skip.len();
                state.store.outbox_delete(skip).await?;
                count(state, "skipped", n);
            }
            // The head's attempts set the pace: everything behind it waits for it anyway.
            let attempts = send[0].attempts;
            let delay = jitter(backoff_cap(attempts)).max(TICK.as_millis() as Millis);
            let window_start = now - config.retry_window.as_millis() as Millis;
            tracing::warn!(
                events = ids.len(),
                attempts = attempts + 1,
                retry_in_ms = delay,
                error = %error,
                "webhook delivery failed"
            );
            let dead = state
                .store
                .outbox_failed(ids, now + delay, error, window_start)
                .await?;
            if dead > 0 {
                count(state, "dead", dead);
                tracing::warn!(
                    events = dead,
                    "webhook events dead-lettered: retry window over"
                );
            }
            // Dead events no longer hold the others back: look again at once if a request's
            // worth went.
            Ok(dead)
        }
    }
}

/// The innermost cause (reqwest's own text names only the URL).
fn source_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The longest wait before the next attempt after `attempts` failed ones: 1 s, 2 s, 4 s, …,
/// at most [`MAX_BACKOFF_MS`].
fn backoff_cap(attempts: u32) -> Millis {
    (1000 << attempts.min(20)).min(MAX_BACKOFF_MS)
}

/// Full jitter: uniform in `[0, cap]`.
fn jitter(cap: Millis) -> Millis {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    (u64::from_le_bytes(bytes) % (cap as u64 + 1)) as Millis
}

/// The fields written with an event (`outbox.rs`).
#[derive(Deserialize, Default)]
struct Extras {
    ts: Option<Millis>,
    from: Option<String>,
    peer: Option<String>,
    origin: Option<Origin>,
    call: Option<String>,
    reason: Option<String>,
    status: Option<String>,
    last_seen: Option<Millis>,
}

/// The request body for `rows`.
fn payload(
    rows: &[&OutboxEvent],
    online: &HashMap<PersonId, SmallVec<[Uid; 8]>>,
    now: Millis,
) -> Vec<u8> {
    let events = rows
        .iter()
        .map(|row| {
            let extras: Extras = row
                .data
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default();
            let live = online.get(&row.person);
            let (body, body_truncated) = match &row.body {
                Some(body) => {
                    let (cut, truncated) = webhook_body(body);
                    (Some(cut), Some(truncated))
                }
                None => (None, None),
            };
            WebhookEvent {
                kind: row.kind.clone(),
                id: row.event_id.clone(),
                ts: extras.ts.unwrap_or(row.created_at),
                user: WebhookUser {
                    uid: row.person,
                    address: row.address.clone().unwrap_or_default(),
                },
                seq: row.seq,
                mid: row.mid,
                from: extras.from,
                peer: extras.peer,
                origin: extras.origin,
                devices: row
                    .devices
                    .iter()
                    .map(|d| WebhookDevice {
                        uid: d.uid,
                        device: d.device.clone(),
                        online: live.is_some_and(|l| l.contains(&d.uid)),
                        acked: d.acked,
                    })
                    .collect(),
                body,
                body_truncated,
                call: extras.call,
                reason: extras.reason,
                status: extras.status,
                last_seen: extras.last_seen,
            }
        })
        .collect();
    let request = WebhookRequest {
        server: "octet".into(),
        id: format!("{}.{}", rows[0].event_id, rows[0].attempts),
        v: 2,
        aid: 1,
        ts: now,
        events,
    };
    serde_json::to_vec(&request).expect("webhook payloads always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes_with_full_jitter() {
        assert_eq!(backoff_cap(0), 1000);
        assert_eq!(backoff_cap(3), 8000);
        assert_eq!(backoff_cap(9), 512_000);
        assert_eq!(backoff_cap(10), MAX_BACKOFF_MS);
        assert_eq!(backoff_cap(u32::MAX), MAX_BACKOFF_MS);
        for _ in 0..1000 {
            assert!((0..=2000).contains(&jitter(2000)));
        }
        assert_eq!(jitter(0), 0);
    }
}

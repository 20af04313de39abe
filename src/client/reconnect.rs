//! The task behind a [`Session`]: one connection at a time, from login to its close, then a
//! backoff with full jitter and the next; the unanswered sends again after every login; the
//! logged events deduplicated by `seq` and `mid` on their way to the app; the refill from
//! `history` after `recovered: false`; the acknowledgements.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::refill::{self, Cut, SeenMids};
use super::session::{SendError, SessionEvent, SessionOptions, is_final};
use super::store::{Cursor, PendingSend};
use super::{ClientError, Connection, Incoming};
use crate::protocol::{Ack, ClientFrame, ErrorCode, ErrorFrame, Login, Send, Sent, ServerFrame};

#[cfg(doc)]
use super::Session;

mod incoming;

/// How often the taken position is acknowledged at most.
const ACK_EVERY: Duration = Duration::from_millis(200);
/// A send refused with `rate_limited` is tried again after this.
const RATE_LIMITED_RETRY: Duration = Duration::from_secs(1);

/// What the app asks of the task.
pub(super) enum Command {
    Send {
        pending: PendingSend,
        answer: oneshot::Sender<Result<Sent, SendError>>,
    },
    Close,
}

/// Codes that refuse a send for good; any other error is retried (`rate_limited` after a
/// pause, `internal` at the next connection).
fn is_final_refusal(code: ErrorCode) -> bool {
    !matches!(code, ErrorCode::RateLimited | ErrorCode::Internal)
}

/// The session's task state.
struct Loop {
    options: SessionOptions,
    events: mpsc::Sender<SessionEvent>,
    taken: Arc<AtomicU64>,
    /// The highest seq handed to the app (events at or below it are dropped as replays).
    delivered: u64,
    /// The epoch of the log `delivered` counts in.
    epoch: Option<String>,
    /// Sends not answered yet, in the order made, and who waits for each.
    pending: BTreeMap<u64, PendingSend>,
    order: u64,
    waiting: HashMap<String, oneshot::Sender<Result<Sent, SendError>>>,
    acked: u64,
    /// The mids of the messages handed to the app.
    seen: SeenMids,
    /// Client ids of sends answered by their replayed `out` copy: their `sent` is not news.
    claimed: HashSet<String>,
    /// This device's uid (its own `out` copies carry it as `origin.uid`).
    uid: u64,
    /// A `Resync` was told and its refill has not been handed over yet.
    refilling: bool,
}

enum Ended {
    /// Reconnect (after a backoff unless the connection had got as far as `welcome`).
    Reconnect {
        code: Option<u16>,
        reached_welcome: bool,
    },
    /// Stop for good.
    Stop { code: Option<u16>, reason: String },
}

pub(super) async fn run(
    options: SessionOptions,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<SessionEvent>,
    taken: Arc<AtomicU64>,
) {
    let cursor = options.store.cursor();
    let mut state = Loop {
        delivered: cursor.as_ref().map_or(0, |c| c.seq),
        epoch: cursor.map(|c| c.epoch),
        pending: BTreeMap::new(),
        order: 0,
        waiting: HashMap::new(),
        acked: 0,
        seen: SeenMids::default(),
        claimed: HashSet::new(),
        uid: 0,
        refilling: false,
        taken,
        events,
        options,
    };
    taken_init(&state);
    for send in state.options.store.pending() {
        state.order += 1;
        state.pending.insert(state.order, send);
    }
    let mut backoff = state.options.backoff_min;
    loop {
        let ended = state.connect_once(&mut commands).await;
        match ended {
            Ended::Stop { code, reason } => {
                state.stop(code, reason).await;
                return;
            }
            Ended::Reconnect {
                code,
                reached_welcome,
            } => {
                if state
                    .events
                    .send(SessionEvent::Disconnected { code })
                    .await
                    .is_err()
                {
                    return; // the app dropped the session
                }
                if reached_welcome {
                    backoff = state.options.backoff_min;
                }
                // Full jitter: a random wait up to the current bound.
                let wait = backoff.mul_f64(random_unit());
                backoff = (backoff * 2).min(state.options.backoff_max);
                let sleep = tokio::time::sleep(wait);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        command = commands.recv() => match command {
                            Some(Command::Send { pending, answer }) => state.queue(pending, answer),
                            Some(Command::Close) | None => {
                                state.stop(None, "closed by the app".into()).await;
                                return;
                            }
                        },
                    }
                }
            }
        }
    }
}

/// The app has taken nothing of this process yet: what was stored counts as taken.
fn taken_init(state: &Loop) {
    state.taken.store(state.delivered, Ordering::Release);
}

/// A number in [0, 1).
fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

impl Loop {
    fn queue(&mut self, pending: PendingSend, answer: oneshot::Sender<Result<Sent, SendError>>) {
        self.options.store.add_pending(pending.clone());
        self.waiting.insert(pending.id.clone(), answer);
        self.order += 1;
        self.pending.insert(self.order, pending);
    }

    async fn stop(&mut self, code: Option<u16>, reason: String) {
        for (_, answer) in self.waiting.drain() {
            let _ = answer.send(Err(SendError::Stopped));
        }
        let _ = self
            .events
            .send(SessionEvent::Stopped { code, reason })
            .await;
    }

    fn login(&self) -> Login {
        Login {
            token: self.options.token.clone(),
            appid: self.options.appid.clone(),
            since: self
                .epoch
                .as_ref()
                .map(|_| self.taken.load(Ordering::Acquire)),
            epoch: self.epoch.clone(),
        }
    }

    /// One connection, from login to its end.
    async fn connect_once(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Ended {
        let (mut conn, welcome) = match Connection::login(&self.options.url, self.login()).await {
            Ok(ok) => ok,
            Err(ClientError::Refused { code, message }) if is_login_refusal(&code) => {
                return Ended::Stop {
                    code: None,
                    reason: format!("{code}: {message}"),
                };
            }
            Err(ClientError::Closed(Some((code, reason)))) if is_final(code, &reason) => {
                return Ended::Stop {
                    code: Some(code),
                    reason,
                };
            }
            Err(ClientError::Closed(close)) => {
                return Ended::Reconnect {
                    code: close.map(|(code, _)| code),
                    reached_welcome: false,
                };
            }
            Err(_) => {
                return Ended::Reconnect {
                    code: None,
                    reached_welcome: false,
                };
            }
        };
        let dropped = || Ended::Stop {
            code: None,
            reason: "the app dropped the session".into(),
        };
        let same_log = self.epoch.as_deref() == Some(welcome.epoch.as_str());
        self.uid = welcome.uid;
        let head = welcome.seq;
        let recovered = welcome.recovered;
        let epoch = welcome.epoch.clone();
        if self
            .events
            .send(SessionEvent::Connected(welcome))
            .await
            .is_err()
        {
            return dropped();
        }
        let mut held = Vec::new();
        if (!same_log || !recovered) && self.epoch.is_none() {
            // A first login: nothing to refill, the device starts at the head.
            self.delivered = head;
            self.taken.store(head, Ordering::Release);
            self.acked = head;
            self.options.store.set_cursor(Cursor {
                seq: head,
                epoch: epoch.clone(),
            });
        } else if !same_log || !recovered {
            // A gap, or another log: refill it from history. Until that is handed over, the
            // epoch and the cursor stay as they were, so a cut refill is done again.
            if !self.refilling {
                self.refilling = true;
                if self
                    .events
                    .send(SessionEvent::Resync { head })
                    .await
                    .is_err()
                {
                    return dropped();
                }
            }
            let since = self.taken.load(Ordering::Acquire);
            let floor = if same_log { since } else { 0 };
            let limit = self.options.refill_limit;
            let found = match refill::page_back(&mut conn, head, floor, limit, &mut held).await {
                Ok(found) => found,
                Err(Cut::Closed(close)) => return self.ended_by(close),
                Err(Cut::Broken) => {
                    return Ended::Reconnect {
                        code: None,
                        reached_welcome: true,
                    };
                }
            };
            if !same_log {
                self.delivered = 0;
            }
            self.taken.store(floor, Ordering::Release);
            self.acked = floor;
            for frame in found.events {
                if self.hand(frame).await.is_err() {
                    return dropped();
                }
            }
            self.delivered = self.delivered.max(head);
            self.refilling = false;
            let complete = found.complete;
            if self
                .events
                .send(SessionEvent::Refilled { head, complete })
                .await
                .is_err()
            {
                return dropped();
            }
        }
        self.epoch = Some(epoch);
        let mut retry_at: Option<tokio::time::Instant> = None;
        // What came while the refill paged, in the order it came.
        for frame in held {
            if let Err(ended) = self.on_frame(frame, &mut retry_at).await {
                return ended;
            }
        }
        // Every unanswered send again, in order, with its id: the broker answers a repeat
        // with the stored message.
        for pending in self.pending.values() {
            if conn.send(&send_frame(pending)).await.is_err() {
                return self.closed(&mut conn).await;
            }
        }
        let mut ack_tick = tokio::time::interval(ACK_EVERY);
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                incoming = conn.recv() => match incoming {
                    Ok(Incoming::Frame(_, frame)) => {
                        if let Err(ended) = self.on_frame(frame, &mut retry_at).await {
                            return ended;
                        }
                    }
                    Ok(Incoming::Closed(close)) => return self.ended_by(close),
                    Err(_) => return Ended::Reconnect { code: None, reached_welcome: true },
                },
                command = commands.recv() => match command {
                    Some(Command::Send { pending, answer }) => {
                        let frame = send_frame(&pending);
                        self.queue(pending, answer);
                        if conn.send(&frame).await.is_err() {
                            return self.closed(&mut conn).await;
                        }
                    }
                    Some(Command::Close) | None => {
                        let _ = self.ack(&mut conn).await;
                        let _ = conn.close().await;
                        return Ended::Stop { code: Some(1000), reason: "closed by the app".into() };
                    }
                },
                _ = ack_tick.tick() => {
                    if self.ack(&mut conn).await.is_err() {
                        return self.closed(&mut conn).await;
                    }
                }
                () = retry => {
                    retry_at = None;
                    for pending in self.pending.values() {
                        if conn.send(&send_frame(pending)).await.is_err() {
                            return self.closed(&mut conn).await;
                        }
                    }
                }
            }
        }
    }

    /// Acknowledges what the app has taken, and keeps it as the cursor.
    async fn ack(&mut self, conn: &mut Connection) -> Result<(), ClientError> {
        let taken = self.taken.load(Ordering::Acquire);
        if taken <= self.acked {
            return Ok(());
        }
        conn.send(&ClientFrame::Ack(Ack { seq: taken })).await?;
        self.acked = taken;
        if let Some(epoch) = &self.epoch {
            self.options.store.set_cursor(Cursor {
                seq: taken,
                epoch: epoch.clone(),
            });
        }
        Ok(())
    }

    /// A write failed: the close may already be waiting to be read.
    async fn closed(&self, conn: &mut Connection) -> Ended {
        match tokio::time::timeout(Duration::from_millis(500), conn.recv()).await {
            Ok(Ok(Incoming::Closed(close))) => self.ended_by(close),
            _ => Ended::Reconnect {
                code: None,
                reached_welcome: true,
            },
        }
    }

    fn ended_by(&self, close: Option<(u16, String)>) -> Ended {
        match close {
            Some((code, reason)) if is_final(code, &reason) => Ended::Stop {
                code: Some(code),
                reason,
            },
            close => Ended::Reconnect {
                code: close.map(|(code, _)| code),
                reached_welcome: true,
            },
        }
    }
}

/// Login refusals that will not change by retrying with the same token.
fn is_login_refusal(code: &str) -> bool {
    ["auth_failed", "user_disabled", "login_required"].contains(&code)
}

fn send_frame(pending: &PendingSend) -> ClientFrame {
    ClientFrame::Send(Send {
        id: pending.id.clone(),
        to: pending.to.clone(),
        body: Some(pending.body.clone()),
        files: Vec::new(),
    })
}

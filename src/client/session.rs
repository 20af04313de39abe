//! [`Session`]: a device that stays connected. It logs in, and after any close that is not
//! final it reconnects with exponential backoff and full jitter, resuming with `since` and
//! `epoch`; it resends every send not yet answered with the same client id until it gets
//! `sent` or a final error; and it hands the app each logged event exactly once, in `seq`
//! order, acknowledging what the app has taken. This is the loop proto/README.md ("Writing a
//! client") asks of every client; the TypeScript client follows the same one.
//!
//! One task owns the connection. The app talks to it through [`Session::send`] (a command) and
//! [`Session::next`] (a bounded channel of [`SessionEvent`]s, so an app that does not keep up
//! slows the reading instead of growing memory).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::reconnect::{self, Command};
use super::store::{MemoryStore, PendingSend, SessionStore};
use crate::protocol::{CloseCode, ErrorFrame, Sent, ServerFrame, Welcome};

/// Where and as whom a [`Session`] connects.
#[derive(Clone)]
pub struct SessionOptions {
    /// The broker's WebSocket URL, e.g. `ws://127.0.0.1:8080/ws`.
    pub url: String,
    /// The device's user token.
    pub token: String,
    /// The app id the token was issued for.
    pub appid: String,
    /// Where the cursor and the unanswered sends are kept (in memory unless the app gives a
    /// durable store, which lets a restarted app resume where it left off).
    pub store: Arc<dyn SessionStore>,
    /// The first reconnect waits up to this long (full jitter: a random time up to it).
    pub backoff_min: Duration,
    /// Reconnect waits grow by doubling up to this.
    pub backoff_max: Duration,
    /// At most this many events are refilled from `history` after a `Resync`; a longer gap is
    /// reported incomplete in [`SessionEvent::Refilled`].
    pub refill_limit: usize,
}

impl SessionOptions {
    /// Options with an in-memory store and a backoff of 250 ms growing to 30 s.
    pub fn new(url: &str, token: &str, appid: &str) -> SessionOptions {
        SessionOptions {
            url: url.into(),
            token: token.into(),
            appid: appid.into(),
            store: Arc::new(MemoryStore::default()),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            refill_limit: 10_000,
        }
    }
}

/// What a [`Session`] tells the app.
#[derive(Debug)]
pub enum SessionEvent {
    /// Logged in (again): the broker's `welcome`.
    Connected(Welcome),
    /// A logged event (`message`, `receipt`, `read`, `call_record`, a profile change, …): each
    /// exactly once, in `seq` order, across reconnects.
    Event(ServerFrame),
    /// A frame that is not in the log (a call being rung, typing, presence, an answer to a
    /// request, or the `sent` of a send made before this process started).
    Live(ServerFrame),
    /// The broker could not replay what was missed (`recovered: false`, or a stored cursor from
    /// another log, another `epoch`). The session refills the gap from `history` by itself:
    /// next come the retained events the app lacks, up to `head`, as [`SessionEvent::Event`]s
    /// in `seq` order, each once (a message the app already had under another seq is dropped
    /// by its `mid`), then [`SessionEvent::Refilled`], then the live events after `head`.
    ///
    /// The refilled events are handed over only once the whole refill has arrived. If the
    /// connection closes during it, the app sees nothing of it: no event, no `Refilled`, and
    /// the stored cursor stays where it was, so the next connection refills again (without a
    /// second `Resync`) and hands the events over then. A gap is never presented as complete:
    /// only `Refilled { complete: true }` says it is.
    Resync {
        /// The log's head when the session went live again.
        head: u64,
    },
    /// The refill after [`SessionEvent::Resync`] is over: its events were handed over, and live
    /// events follow.
    Refilled {
        /// The head the refill went up to.
        head: u64,
        /// True when nothing between the app's last event and `head` is missing. False when
        /// the log no longer holds all of it (retention, a replaced log), or the gap was
        /// longer than [`SessionOptions::refill_limit`]: events older than the first one
        /// handed over may be lost (page further with `history` if the app needs them).
        complete: bool,
    },
    /// The connection closed; the session reconnects by itself.
    Disconnected {
        /// The close code, if the broker sent one.
        code: Option<u16>,
    },
    /// The session ended for good (revoked or replaced token, disabled user, or
    /// [`Session::close`]); nothing more follows.
    Stopped {
        /// The close code, if there was one.
        code: Option<u16>,
        /// Why.
        reason: String,
    },
}

/// Why a send did not get its `sent`.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The broker refused it for good (the frame itself is wrong: resending cannot help).
    #[error("refused: {}: {}", .0.code, .0.message)]
    Refused(ErrorFrame),
    /// The session ended before the answer came.
    #[error("the session stopped before the send was answered")]
    Stopped,
}

/// A device connection that survives disconnects. Dropping it ends the session.
pub struct Session {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::Receiver<SessionEvent>,
    /// The seq of the last logged event the app took (what is acknowledged and resumed from).
    taken: Arc<AtomicU64>,
    /// Set once the last event taken was a logged one: handled when the app asks for the next.
    last_taken: Option<u64>,
}

/// Logged events the app has not taken yet, at most.
const EVENT_QUEUE: usize = 256;

impl Session {
    /// Starts the session's task; the first event is `Connected` (or `Stopped`).
    pub fn start(options: SessionOptions) -> Session {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
        let taken = Arc::new(AtomicU64::new(0));
        tokio::spawn(reconnect::run(options, command_rx, event_tx, taken.clone()));
        Session {
            commands,
            events,
            taken,
            last_taken: None,
        }
    }

    /// Sends `body` to `to`; resolves with the `sent` answer (see [`SessionSender::send`]).
    pub async fn send(&self, to: &str, body: &RawValue) -> Result<Sent, SendError> {
        self.sender().send(to, body).await
    }

    /// A handle that sends from other tasks while this one takes events.
    pub fn sender(&self) -> SessionSender {
        SessionSender {
            commands: self.commands.clone(),
        }
    }

    /// The next event. Taking a logged event marks the one before it handled: it is
    /// acknowledged, and a reconnect resumes after it.
    pub async fn next(&mut self) -> Option<SessionEvent> {
        if let Some(seq) = self.last_taken.take() {
            self.taken.fetch_max(seq, Ordering::AcqRel);
        }
        let event = self.events.recv().await?;
        if let SessionEvent::Event(frame) = &event {
            self.last_taken = frame.log_seq();
        }
        Some(event)
    }

    /// Ends the session: the connection is closed and `Stopped` follows.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// Sends through a [`Session`] from any task; cheap to clone.
#[derive(Clone)]
pub struct SessionSender {
    commands: mpsc::UnboundedSender<Command>,
}

impl SessionSender {
    /// Sends `body` to `to`; resolves with the `sent` answer. The client id is made and kept
    /// in the store before the frame leaves, and the frame is resent with it after every
    /// reconnect until it is answered, so the message is stored once.
    pub async fn send(&self, to: &str, body: &RawValue) -> Result<Sent, SendError> {
        let mut id = [0u8; 12];
        getrandom::fill(&mut id).expect("the OS random source works");
        self.send_with_id(&hex::encode(id), to, body).await
    }

    /// [`SessionSender::send`] with the app's own client id.
    pub async fn send_with_id(
        &self,
        id: &str,
        to: &str,
        body: &RawValue,
    ) -> Result<Sent, SendError> {
        let (answer, answered) = oneshot::channel();
        let pending = PendingSend {
            id: id.into(),
            to: to.into(),
            body: body.to_owned(),
        };
        self.commands
            .send(Command::Send { pending, answer })
            .map_err(|_| SendError::Stopped)?;
        answered.await.unwrap_or(Err(SendError::Stopped))
    }
}

/// Whether a close ends the session (reconnecting cannot help, or would fight another
/// connection); every other close is followed by a reconnect. A 4004 because the device's user
/// was linked to another person is not final: the same token logs in to the new person's log
/// (proto/clients.md).
pub fn is_final(code: u16, reason: &str) -> bool {
    if code == CloseCode::Revoked.code() && reason.starts_with("linked to another person") {
        return false;
    }
    [
        CloseCode::AuthFailed,
        CloseCode::Replaced,
        CloseCode::Revoked,
        CloseCode::UserDisabled,
    ]
    .iter()
    .any(|c| c.code() == code)
        || code == 1002
        || code == 1007
}

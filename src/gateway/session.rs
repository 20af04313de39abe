//! One device connection from upgrade to cleanup: login deadline, authentication (in `login.rs`),
//! registration with the router, the reader loop, and cleanup. A successful login builds an
//! [`Online`] session, the only one the op handlers run on: `ops.rs` (dispatch, `send`, `ack`,
//! `read`, `profile`, `file_url`), `calls.rs` (`call`, call records), `sync.rs` (the catch-up
//! and `history`), `typing.rs`, `presence.rs` and `devices.rs` (`devices`, `revoke`). Its replies (`push`, `error`, the refusals that close) are in `replies.rs`.
//!
//! The session never writes to the socket itself: everything goes through its own bounded queue
//! to the writer task, so its replies and the router's deliveries keep one order.

use std::sync::Arc;

use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tracing::{Instrument, field};

use super::admission::AnonymousSlot;
use super::calls::record_call;
use super::login::first_data_frame;
use super::socket::{DeviceStream, Upgraded};
use super::writer;
use crate::auth::TokenHash;
use crate::protocol::{ClientFrame, CloseCode, DecodeError, ErrorCode};
use crate::router::{Bounds, ConnHandle, Mailbox, Outbound, OwnQueue};
use crate::state::{ServerState, now_millis};
use crate::store::{AuthFailure, Identity, StoreError};

/// Runs one connection to its end. `client` is the device's address (behind a trusted proxy
/// the forwarded one), `slot` its place among the sockets not logged in yet.
pub async fn run(
    state: Arc<ServerState>,
    upgraded: Upgraded,
    peer: std::net::SocketAddr,
    client: std::net::IpAddr,
    slot: AnonymousSlot,
) {
    let conn_id = state.router.conn_id();
    let span = tracing::info_span!(
        "conn",
        conn.id = conn_id,
        user.uid = field::Empty,
        person.id = field::Empty
    );
    state.metrics.connections.inc();
    // At debug: "logged in" and "connection closed" (with the peer) tell a connection's story
    // at info, and a third line per connection cost ~10 µs of a login's CPU.
    span.in_scope(|| tracing::debug!(peer = %peer, "connection opened"));
    run_inner(state.clone(), upgraded, conn_id, client, slot)
        .instrument(span)
        .await;
    state.metrics.connections.dec();
}

async fn run_inner(
    state: Arc<ServerState>,
    upgraded: Upgraded,
    conn_id: u64,
    peer: std::net::IpAddr,
    mut slot: AnonymousSlot,
) {
    let (read, leftover, write) = upgraded.into_parts();
    // One mailbox: the session's own queue (replies, catch-up), the live one the router fills
    // and the kick; the writer holds the live queue until the catch-up is done.
    let write = Arc::new(write);
    let mailbox = Mailbox::with_socket(
        Bounds {
            frames: state.config.queue_frames,
            bytes: state.config.queue_bytes,
        },
        Some(write.clone()),
    );
    let writer = tokio::spawn(
        writer::run(
            write,
            mailbox.clone(),
            state.metrics.clone(),
            writer::Ending {
                slow_close_wait: state.config.idle_timeout,
                shutdown: state.shutdown.subscribe(),
            },
        )
        .instrument(tracing::Span::current()),
    );
    let config = super::ws_config(state.config.max_frame_bytes);
    let mut stream = Upgraded::reader(read, leftover, mailbox.clone(), config).await;
    let mut session = Session {
        state: state.clone(),
        queue: OwnQueue::new(
            mailbox.clone(),
            state.config.idle_timeout,
            state.metrics.clone(),
        ),
        conn_id,
        appid: String::new(),
        peer,
    };
    let mut shutdown = state.shutdown.subscribe();
    let login = tokio::select! {
        login = tokio::time::timeout(state.config.login_timeout, first_data_frame(&mut stream)) => login,
        () = async { let _ = shutdown.wait_for(|down| *down).await; } => {
            let _ = session
                .queue
                .send(Outbound::Close(CloseCode::GoingAway, "server shutting down; reconnect".into()))
                .await;
            drop(session);
            finish_writer(writer, &mailbox, state.config.idle_timeout).await;
            Box::pin(discard_until_closed(&mut stream)).await;
            return;
        }
        // Too many sockets wait for their login: the oldest (this one) makes room.
        () = slot.evicted() => {
            session
                .refuse(
                    ErrorCode::LoginTimeout,
                    "too many connections are waiting to log in; send login right after connecting".into(),
                    CloseCode::LoginTimeout,
                )
                .await;
            state.metrics.logins.with_label_values(&["timeout"]).inc();
            drop(session);
            finish_writer(writer, &mailbox, state.config.idle_timeout).await;
            Box::pin(discard_until_closed(&mut stream)).await;
            return;
        }
    };
    // The logged-in connection's place under `max_connections`, held until the socket is gone.
    let mut counted = None;
    let ended = match login {
        Err(_) => {
            session
                .refuse(
                    ErrorCode::LoginTimeout,
                    format!(
                        "no login frame within {}",
                        human_duration(state.config.login_timeout)
                    ),
                    CloseCode::LoginTimeout,
                )
                .await;
            state.metrics.logins.with_label_values(&["timeout"]).inc();
            "login timeout"
        }
        // Login, catch-up and each frame's handling run boxed: their futures are large and
        // short-lived, and an idle connection should not carry their size for its lifetime.
        Ok(first) => match Box::pin(session.login(first)).await {
            // Only now does the connection count against max_connections: sockets that never
            // log in cannot keep a device with a valid token out.
            Ok((identity, hash, login)) => 'admitted: {
                let Some(place) = slot.logged_in(state.config.max_connections) else {
                    let full = format!(
                        "the broker is at its limit of {} connections; try again later",
                        state.config.max_connections
                    );
                    let code = CloseCode::TryAgainLater;
                    session.refuse(ErrorCode::ServerFull, full, code).await;
                    break 'admitted "server full";
                };
                counted = Some(place);
                state.metrics.logins.with_label_values(&["ok"]).inc();
                // Registered before the log's head is read: an event committed from here on is
                // delivered live (and dropped by the writer if the catch-up also sent it).
                let handle =
                    ConnHandle::new(identity.uid, conn_id, session.queue.mailbox().clone());
                state.router.register(identity.person, handle);
                state.presence.joined(identity.person);
                // Calls ringing this person ring here too: a phone woken by a `call` push
                // logs in to take the call it was woken for.
                state.router.call_ring_late(identity.person, identity.uid);
                state.last_seen.record(identity.uid, now_millis());
                let mut online = Online {
                    session: &session,
                    identity,
                };
                // A tokendel or userdel that committed between our token check and the
                // registration kicked nobody; checking again after registering closes that gap.
                let ended = if !Box::pin(online.still_valid(hash)).await {
                    "token revoked during login"
                } else if !Box::pin(online.catch_up(login.since, login.epoch)).await {
                    "catch-up failed"
                } else {
                    online.read_loop(&mut stream).await
                };
                Box::pin(online.leave()).await;
                ended
            }
            Err(reason) => {
                let result = match reason {
                    "auth failed" => "auth_failed",
                    "user disabled" => "user_disabled",
                    "closed before login" => "closed",
                    "store error at login" => "error",
                    _ => "bad_frame",
                };
                state.metrics.logins.with_label_values(&[result]).inc();
                reason
            }
        },
    };

    tracing::info!(peer = %peer, reason = ended, "connection closed");
    // Dropping the session drops its queue sender; with the router's handle gone the writer
    // drains what is queued, writes the close frame and ends.
    drop(session);
    finish_writer(writer, &mailbox, state.config.idle_timeout).await;
    Box::pin(discard_until_closed(&mut stream)).await;
    // The connection counts against `max_connections` until its socket is gone.
    drop(counted);
}

/// Waits for the writer to write what is queued and its close frame. A close the session queued
/// (idle timeout, token expiry, a catch-up gap) waits behind any stuck write to a peer that
/// stopped reading, and once the session has unregistered nothing else can kick this
/// connection (not a newer login, not shutdown's `kick_all`): so after `wait` the close is
/// made a kick, which wins over the stuck write, and the writer's own bounded slow-close wait
/// ends it.
async fn finish_writer(
    mut writer: tokio::task::JoinHandle<()>,
    mailbox: &Mailbox,
    wait: std::time::Duration,
) {
    if tokio::time::timeout(wait, &mut writer).await.is_err() {
        mailbox.kick(
            CloseCode::SlowConsumer,
            "nothing read while closing; reconnect and resync",
        );
        let _ = writer.await;
    }
}

/// How long a closed connection's leftover input is read (and thrown away) at most.
const DISCARD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads what the device still sent, until its answering close frame, the end of the stream or
/// [`DISCARD_WAIT`]. A TCP socket closed with unread input is reset, not closed, and a reset
/// can destroy the frames still in flight to the device, the close frame with its code
/// included: a device kicked while its own frames waited unread (a slow consumer that kept
/// sending) would see a bare reset instead of 4008.
async fn discard_until_closed(stream: &mut DeviceStream) {
    let _ = tokio::time::timeout(DISCARD_WAIT, async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// One connection before and after login: what every reply needs (its queue, the server).
/// The op handlers are not here but on [`Online`], which only a successful login builds.
pub(super) struct Session {
    pub(super) state: Arc<ServerState>,
    pub(super) queue: OwnQueue,
    pub(super) conn_id: u64,
    /// The appid the device logged in with.
    pub(super) appid: String,
    /// The device's IP address (failed logins are counted per address).
    pub(super) peer: std::net::IpAddr,
}

/// A session after a successful login, registered with the router: it holds the `Identity`
/// the token resolved to, so nothing that acts for the device (the read loop, the op handlers
/// in `ops.rs` and `calls.rs`, the catch-up and `history` in `sync.rs`) can run without one.
/// The session's reply helpers are reached through `Deref`.
pub(super) struct Online<'a> {
    session: &'a Session,
    /// Who the connection acts as: no frame field can name another sender.
    pub(super) identity: Identity,
}

impl std::ops::Deref for Online<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        self.session
    }
}

impl Online<'_> {
    /// The logged-in half of the cleanup: leaves the router (ending this connection's calls,
    /// which are recorded) and records last seen.
    async fn leave(self) {
        let state = &self.state;
        let now = now_millis();
        for ended in state
            .router
            .unregister(self.identity.person, self.conn_id, now)
        {
            record_call(state, ended).await;
        }
        state.presence.drop_conn(self.conn_id);
        state.presence.left(self.identity.person, now);
        state.last_seen.record(self.identity.uid, now_millis());
    }

    /// Re-checks the login token; on failure the connection is told and closing.
    async fn still_valid(&self, hash: TokenHash) -> bool {
        let appid = self.appid.clone();
        match self
            .state
            .store
            .authenticate(hash, &appid, now_millis())
            .await
        {
            Ok(again) if again == self.identity => true,
            Err(StoreError::AuthFailed(AuthFailure::Disabled)) => {
                self.refuse_disabled().await;
                false
            }
            Ok(_) | Err(StoreError::AuthFailed(_)) => {
                self.refuse(
                    ErrorCode::AuthFailed,
                    "the token was revoked while logging in; ask your backend for a new one".into(),
                    CloseCode::Revoked,
                )
                .await;
                false
            }
            // A store hiccup is not a revocation: keep the connection.
            Err(_) => true,
        }
    }

    /// Reads frames until the device leaves, breaks the protocol, or is kicked.
    async fn read_loop(&mut self, stream: &mut DeviceStream) -> &'static str {
        let mailbox = self.queue.mailbox().clone();
        let state = self.state.clone();
        let config = &state.config;
        let idle = config.idle_timeout;
        // Pings go out every third of the idle timeout, so a live peer always answers in time.
        let mut keepalive = tokio::time::interval(idle / 3);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.tick().await;
        let mut last_heard = tokio::time::Instant::now();
        let person = self.identity.person;
        // The token's expiry, on the monotonic clock: the connection lives no longer than the
        // token it logged in with.
        let left = self
            .identity
            .token_expires
            .saturating_sub(now_millis())
            .max(0) as u64;
        let expiry = tokio::time::sleep(std::time::Duration::from_millis(left));
        let mut expiry = std::pin::pin!(expiry);
        loop {
            let next = tokio::select! {
                // Kicked (replaced, revoked, slow, shutdown): the writer sends the close frame.
                _ = mailbox.kicked() => return "kicked",
                () = expiry.as_mut() => {
                    let _ = Box::pin(self.queue.send(Outbound::Close(
                        CloseCode::Revoked,
                        "the token expired; log in again with a new token".into(),
                    )))
                    .await;
                    return "token expired";
                }
                next = stream.next() => Some(next),
                _ = keepalive.tick() => None,
            };
            let Some(next) = next else {
                if last_heard.elapsed() >= idle {
                    let reason = format!("no frame for {}; reconnect", human_duration(idle));
                    let _ = self
                        .queue
                        .send(Outbound::Close(CloseCode::IdleTimeout, reason))
                        .await;
                    return "idle timeout";
                }
                let _ = Box::pin(self.queue.send(Outbound::Ping)).await;
                continue;
            };
            last_heard = tokio::time::Instant::now();
            match next {
                Some(Ok(Message::Text(text))) => {
                    // The budget is the person's, shared by its devices and kept across
                    // reconnects (`limits::SendRates`).
                    if state.send_rates.take(person) {
                        Box::pin(self.dispatch(&text)).await;
                    } else {
                        let (id, call) = ClientFrame::ids_of(&text);
                        let err = DecodeError::new(
                            ErrorCode::RateLimited,
                            format!(
                                "more than {} frames per second from this person's devices (bursts of {}); this frame was dropped, send it again later",
                                config.send_rate, config.send_burst
                            ),
                        );
                        Box::pin(self.error(err, id, call)).await;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    Box::pin(self.refuse_binary()).await;
                    return "binary frame";
                }
                Some(Ok(Message::Close(_))) => {
                    // tungstenite queued its answer (the device's own code echoed); this
                    // hands it to the writer, which then sends no close of its own.
                    let _ = futures::SinkExt::flush(stream).await;
                    return "closed by device";
                }
                None => return "closed by device",
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(err)) => {
                    Box::pin(self.refuse_read_error(err)).await;
                    return "read error";
                }
            }
        }
    }
}

/// "10 s" for whole seconds, "300 ms" otherwise.
fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

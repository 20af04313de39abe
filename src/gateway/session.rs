//! One device connection from upgrade to cleanup: login deadline, authentication, registration
//! with the router, the reader loop that dispatches frames, and cleanup. The catch-up and
//! `history` (reading the log to the device) are in `sync.rs`.
//!
//! The session never writes to the socket itself: everything goes through its own bounded queue
//! to the writer task, so its replies and the router's deliveries keep one order.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;
use futures::stream::SplitStream;
use tracing::{Instrument, field};

use super::admission::AnonymousSlot;
use super::writer;
use crate::auth::TokenHash;
use crate::files::{self, Variant};
use crate::protocol::{
    Ack, CallAction, CallRequest, ClientFrame, CloseCode, DecodeError, ErrorCode, ErrorFrame,
    FileUrl, FileUrlRequest, Login, MAX_ATTACHMENTS, ProfileFrame, ProfileRequest, ReadRequest,
    Send, Sent, ServerFrame, check_depth, check_profile_patch,
};
use crate::router::{
    Bounds, CallEnded, CallError, ConnHandle, Frame, Mailbox, Outbound, OwnQueue, Party,
};
use crate::state::{ServerState, now_millis};
use crate::store::{CallRecord, Identity, NewMessage, StoreError};
use serde_json::value::RawValue;

/// Longest client id accepted in `send`.
const MAX_CLIENT_ID: usize = 128;

/// How long the answer to a failed login is held once its address is over `login_attempts`:
/// with at most `max_anonymous_per_ip` sockets per address, this bounds the guesses one
/// address can make per second, and valid logins are never slowed.
const FAILED_LOGIN_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs one connection to its end. `client` is the device's address (behind a trusted proxy
/// the forwarded one), `slot` its place among the sockets not logged in yet.
pub async fn run(
    state: Arc<ServerState>,
    socket: WebSocket,
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
    run_inner(state.clone(), socket, conn_id, client, slot)
        .instrument(span)
        .await;
    state.metrics.connections.dec();
}

async fn run_inner(
    state: Arc<ServerState>,
    socket: WebSocket,
    conn_id: u64,
    peer: std::net::IpAddr,
    mut slot: AnonymousSlot,
) {
    let (sink, mut stream) = socket.split();
    // One mailbox: the session's own queue (replies, catch-up), the live one the router fills
    // and the kick; the writer holds the live queue until the catch-up is done.
    let mailbox = Mailbox::new(Bounds {
        frames: state.config.queue_frames,
        bytes: state.config.queue_bytes,
    });
    let writer = tokio::spawn(
        writer::run(
            sink,
            mailbox.clone(),
            state.metrics.clone(),
            writer::Ending {
                slow_close_wait: state.config.idle_timeout,
                shutdown: state.shutdown.subscribe(),
            },
        )
        .instrument(tracing::Span::current()),
    );
    let mut session = Session {
        state: state.clone(),
        queue: OwnQueue::new(
            mailbox.clone(),
            state.config.idle_timeout,
            state.metrics.clone(),
        ),
        conn_id,
        identity: None,
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
                state.last_seen.record(identity.uid, now_millis());
                session.identity = Some(identity);
                // A tokendel or userdel that committed between our token check and the
                // registration kicked nobody; checking again after registering closes that gap.
                if !Box::pin(session.still_valid(hash)).await {
                    "token revoked during login"
                } else if !Box::pin(session.catch_up(login.since, login.epoch)).await {
                    "catch-up failed"
                } else {
                    session.read_loop(&mut stream).await
                }
            }
            Err(reason) => {
                let result = match reason {
                    "auth failed" => "auth_failed",
                    "closed before login" => "closed",
                    "store error at login" => "error",
                    _ => "bad_frame",
                };
                state.metrics.logins.with_label_values(&[result]).inc();
                reason
            }
        },
    };

    if let Some(identity) = &session.identity {
        for ended in state
            .router
            .unregister(identity.person, conn_id, now_millis())
        {
            Box::pin(record_call(&state, ended)).await;
        }
        state.last_seen.record(identity.uid, now_millis());
    }
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
async fn discard_until_closed(stream: &mut SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(DISCARD_WAIT, async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

pub(super) struct Session {
    pub(super) state: Arc<ServerState>,
    pub(super) queue: OwnQueue,
    conn_id: u64,
    pub(super) identity: Option<Identity>,
    /// The appid the device logged in with.
    appid: String,
    /// The device's IP address (failed logins are counted per address).
    peer: std::net::IpAddr,
}

impl Session {
    /// Handles the first frame. On failure the connection is already told why and closing.
    async fn login(
        &mut self,
        first: Option<Result<Message, axum::Error>>,
    ) -> Result<(Identity, TokenHash, Login), &'static str> {
        let text = match first {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                self.refuse_binary().await;
                return Err("binary frame");
            }
            Some(Ok(_)) | None => return Err("closed before login"),
            Some(Err(err)) => {
                self.refuse_read_error(err).await;
                return Err("read error before login");
            }
        };
        let decoded = check_depth(text.as_bytes(), self.state.config.max_json_depth)
            .and_then(|()| ClientFrame::decode(&text));
        let login: Login = match decoded {
            Ok(ClientFrame::Login(login)) => login,
            Ok(_) => {
                let message =
                    "the first frame must be {\"op\":\"login\",\"token\":..,\"appid\":..}";
                self.refuse(
                    ErrorCode::LoginRequired,
                    message.into(),
                    CloseCode::AuthFailed,
                )
                .await;
                return Err("first frame not login");
            }
            Err(err) => {
                self.refuse(err.code, err.message, CloseCode::AuthFailed)
                    .await;
                return Err("bad login frame");
            }
        };
        let hash = TokenHash::of(&login.token);
        self.appid = login.appid.clone();
        match self
            .state
            .store
            .authenticate(hash, &login.appid, now_millis())
            .await
        {
            Ok(identity) => {
                let span = tracing::Span::current();
                span.record("user.uid", identity.uid);
                span.record("person.id", identity.person);
                tracing::info!(
                    "logged in uid {} (person {})",
                    identity.uid,
                    identity.person
                );
                Ok((identity, hash, login))
            }
            Err(StoreError::AuthFailed(why)) => {
                tracing::info!(reason = %why, "login refused");
                let attempts = self.state.config.login_attempts;
                if self
                    .state
                    .login_failures
                    .failed(crate::limits::ip_key(self.peer), attempts)
                {
                    // Over the limit: this failure is answered late and says why; a valid
                    // token from the same address is still let in at once.
                    tokio::time::sleep(FAILED_LOGIN_DELAY).await;
                    let message = format!(
                        "the token is not valid, and more than {attempts} logins from your address failed in the last minute, so failures are answered late; check the tokens your app uses"
                    );
                    self.refuse(ErrorCode::TooManyLogins, message, CloseCode::AuthFailed)
                        .await;
                    return Err("auth failed");
                }
                let message = match why {
                    crate::store::AuthFailure::WrongAppid => format!(
                        "the token was not issued for appid `{}`; log in with the appid the token was issued for",
                        login.appid
                    ),
                    _ => "the token is unknown, expired or revoked; ask your backend for a new one"
                        .into(),
                };
                self.refuse(ErrorCode::AuthFailed, message, CloseCode::AuthFailed)
                    .await;
                Err("auth failed")
            }
            Err(err) => {
                self.close_internal(&err, "login failed in the store").await;
                Err("store error at login")
            }
        }
    }

    /// Re-checks the login token; on failure the connection is told and closing.
    async fn still_valid(&self, hash: TokenHash) -> bool {
        let identity = self.identity.as_ref().expect("checked after login");
        let appid = self.appid.clone();
        match self
            .state
            .store
            .authenticate(hash, &appid, now_millis())
            .await
        {
            Ok(again) if again == *identity => true,
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
    async fn read_loop(&mut self, stream: &mut SplitStream<WebSocket>) -> &'static str {
        let mailbox = self.queue.mailbox().clone();
        let state = self.state.clone();
        let config = &state.config;
        let idle = config.idle_timeout;
        // Pings go out every third of the idle timeout, so a live peer always answers in time.
        let mut keepalive = tokio::time::interval(idle / 3);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.tick().await;
        let mut last_heard = tokio::time::Instant::now();
        let identity = self
            .identity
            .clone()
            .expect("the read loop runs after login");
        // The token's expiry, on the monotonic clock: the connection lives no longer than the
        // token it logged in with.
        let left = identity.token_expires.saturating_sub(now_millis()).max(0) as u64;
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
                    if state.send_rates.take(identity.person) {
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
                Some(Ok(Message::Close(_))) | None => return "closed by device",
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(err)) => {
                    Box::pin(self.refuse_read_error(err)).await;
                    return "read error";
                }
            }
        }
    }

    async fn dispatch(&mut self, text: &str) {
        if let Err(err) = check_depth(text.as_bytes(), self.state.config.max_json_depth) {
            self.state
                .metrics
                .frames_in
                .with_label_values(&["invalid"])
                .inc();
            let (id, call) = ClientFrame::ids_of(text);
            return self.error(err, id, call).await;
        }
        let frame = ClientFrame::decode(text);
        let op = frame.as_ref().map(ClientFrame::op).unwrap_or("invalid");
        self.state.metrics.frames_in.with_label_values(&[op]).inc();
        match frame {
            Ok(ClientFrame::Send(send)) => self.send(send).await,
            Ok(ClientFrame::FileUrl(req)) => self.file_url(req).await,
            Ok(ClientFrame::Call(call)) => self.call(call).await,
            Ok(ClientFrame::History(req)) => self.history(req).await,
            Ok(ClientFrame::Ack(ack)) => self.ack(ack).await,
            Ok(ClientFrame::Read(read)) => self.read(read).await,
            Ok(ClientFrame::Profile(req)) => self.profile(req).await,
            Ok(ClientFrame::Login(_)) => {
                let err = DecodeError::new(
                    ErrorCode::BadRequest,
                    "already logged in; login is only the first frame of a connection",
                );
                self.error(err, None, None).await;
            }
            Err(err) => {
                let (id, call) = ClientFrame::ids_of(text);
                self.error(err, id, call).await;
            }
        }
    }

    async fn send(&mut self, send: Send) {
        let identity = self.identity.clone().expect("send runs after login");
        if send.id.is_empty() || send.id.chars().count() > MAX_CLIENT_ID {
            let err = DecodeError::new(
                ErrorCode::BadValue,
                format!("`id` must be 1 to {MAX_CLIENT_ID} characters"),
            );
            return self.error(err, Some(send.id), None).await;
        }
        let client_id = send.id.clone();
        if send.files.len() > MAX_ATTACHMENTS {
            let err = DecodeError::new(
                ErrorCode::BadValue,
                format!(
                    "a message carries at most {MAX_ATTACHMENTS} files; send the rest in another"
                ),
            );
            return self.error(err, Some(client_id), None).await;
        }
        let body = match send.body {
            Some(body) => body,
            // A message of files alone has no caption.
            None if !send.files.is_empty() => {
                RawValue::from_string("null".into()).expect("null is JSON")
            }
            None => {
                let err = DecodeError::new(
                    ErrorCode::MissingField,
                    "missing field `body` (required unless `files` is given)",
                );
                return self.error(err, Some(client_id), None).await;
            }
        };
        let msg = NewMessage {
            from: identity.clone(),
            client_id: send.id,
            to: send.to,
            body,
            files: send.files,
            ts: now_millis(),
            accepted: std::time::Instant::now(),
        };
        // The store publishes the committed message to the fan-out (`crate::fanout`), which
        // delivers it in commit order per person and then answers here.
        let appended = match self.state.store.append_message(msg).await {
            Ok(appended) => appended,
            Err(err) => {
                let err = store_refusal(err, "send", "internal error; retry with the same id");
                return self.error(err, Some(client_id), None).await;
            }
        };
        let sent = ServerFrame::Sent(Sent {
            id: client_id,
            mid: appended.mid,
            seq: appended.sender_seq,
            ts: appended.ts,
        });
        self.push(sent.to_text().into()).await;
    }

    /// `file_url`: signed URLs for a file this person may read.
    async fn file_url(&mut self, req: FileUrlRequest) {
        let identity = self.identity.clone().expect("file_url runs after login");
        let file = match self.state.store.file(&req.id, Some(identity.person)).await {
            Ok(file) => file,
            Err(err) => {
                let err = store_refusal(err, "file_url", "internal error; retry");
                return self.error(err, Some(req.id), None).await;
            }
        };
        let expires = now_millis() + self.state.config.file_url_ttl.as_millis() as i64;
        let signer = &self.state.files.signer;
        let signed =
            |url: String, variant| format!("{url}?{}", signer.query(&file.id, variant, expires));
        let frame = ServerFrame::FileUrl(FileUrl {
            url: signed(files::file_url(&file.id), Variant::Data),
            thumb_url: file
                .blob
                .thumb
                .as_ref()
                .map(|_| signed(files::thumb_url(&file.id), Variant::Thumb)),
            id: file.id,
            expires,
        });
        self.push(frame.to_text().into()).await;
    }

    /// `ack`: records the device's position; newly delivered messages get receipts.
    async fn ack(&mut self, ack: Ack) {
        let identity = self.identity.clone().expect("ack runs after login");
        let result = self.state.store.ack(identity, ack.seq, now_millis()).await;
        self.marker_result(result, "ack").await;
    }

    /// `read`: a read marker to every device of the person and a read receipt to the peer.
    async fn read(&mut self, read: ReadRequest) {
        let identity = self.identity.clone().expect("read runs after login");
        let result = self
            .state
            .store
            .mark_read(identity, read.peer, read.upto, now_millis())
            .await;
        self.marker_result(result, "read").await;
    }

    async fn marker_result(&self, result: Result<(), StoreError>, op: &str) {
        let Err(err) = result else { return };
        let err = store_refusal(err, op, "internal error; send it again");
        self.error(err, None, None).await;
    }

    async fn call(&mut self, req: CallRequest) {
        let identity = self.identity.clone().expect("call runs after login");
        let call_id = req.call.clone();
        if call_id.is_empty() || call_id.chars().count() > MAX_CLIENT_ID {
            let err = DecodeError::new(
                ErrorCode::BadValue,
                format!("`call` must be 1 to {MAX_CLIENT_ID} characters"),
            );
            return self.error(err, None, Some(call_id)).await;
        }
        let party = Party {
            person: identity.person,
            uid: identity.uid,
            conn_id: self.conn_id,
        };
        let router = &self.state.router;
        let result = if req.action == CallAction::Ring {
            let Some(to) = req.to.as_deref() else {
                let err = DecodeError::new(
                    ErrorCode::MissingField,
                    "missing field `to` (ring needs the callee's address)",
                );
                return self.error(err, None, Some(call_id)).await;
            };
            let (callee, callee_address) = match self.state.store.resolve(to).await {
                Ok(found) => found,
                Err(err) => {
                    let err = store_refusal(err, "ring", "internal error; ring again");
                    return self.error(err, None, Some(call_id)).await;
                }
            };
            router
                .call_ring(
                    party,
                    callee,
                    &identity.primary_address,
                    &callee_address,
                    &call_id,
                    req.data.as_deref(),
                    now_millis(),
                )
                .map(|serial| {
                    let state = self.state.clone();
                    let call_id = call_id.clone();
                    let router = state.router.clone();
                    let timer = tokio::spawn(
                        async move {
                            tokio::time::sleep(state.config.ring_timeout).await;
                            if let Some(ended) =
                                state.router.call_timeout(&call_id, serial, now_millis())
                            {
                                record_call(&state, ended).await;
                            }
                        }
                        .instrument(tracing::Span::current()),
                    );
                    // Cancelled by the router when the call stops ringing.
                    router.call_arm_timer(serial, timer.abort_handle());
                    None
                })
        } else {
            router.call_act(
                party,
                &call_id,
                req.action,
                req.data.as_deref(),
                now_millis(),
            )
        };
        match result {
            Ok(Some(ended)) => record_call(&self.state, ended).await,
            Ok(None) => {}
            Err(err) => {
                let err = call_error(err);
                self.error(err, None, Some(call_id)).await;
            }
        }
    }

    /// `profile`: `set` changes this person's profile (logged, to every device of the
    /// person); `get` answers with a person's profile.
    async fn profile(&mut self, req: ProfileRequest) {
        let identity = self.identity.clone().expect("profile runs after login");
        match (req.set, req.get) {
            (Some(patch), None) => {
                if let Err(err) = check_profile_patch(".set", &patch) {
                    return self.error(err, None, None).await;
                }
                let result = self
                    .state
                    .store
                    .set_profile(identity.person, patch, now_millis())
                    .await
                    .map(|_| ());
                self.marker_result(result, "profile").await;
            }
            (None, Some(address)) => match self.state.store.profile(&address).await {
                Ok((address, profile, version)) => {
                    let frame = ServerFrame::Profile(ProfileFrame {
                        seq: None,
                        address,
                        profile,
                        version,
                        ts: None,
                    });
                    self.push(frame.to_text().into()).await;
                }
                Err(err) => self.marker_result(Err(err), "profile").await,
            },
            _ => {
                let err = DecodeError::new(
                    ErrorCode::BadValue,
                    "profile takes exactly one of `set` (an object) or `get` (an address)",
                );
                self.error(err, None, None).await;
            }
        }
    }

    /// Queues a frame for this connection; waiting here slows only this device's reader, and
    /// at most the idle timeout (then the device is kicked as a slow consumer). False when the
    /// connection is closing.
    pub(super) async fn push(&self, frame: Frame) -> bool {
        self.queue.send(Outbound::Frame(frame)).await.is_ok()
    }

    pub(super) async fn error(&self, err: DecodeError, id: Option<String>, call: Option<String>) {
        self.state
            .metrics
            .errors
            .with_label_values(&[err.code.as_str()])
            .inc();
        let frame = ServerFrame::Error(ErrorFrame {
            code: err.code,
            message: err.message,
            id,
            call,
        });
        self.push(frame.to_text().into()).await;
    }

    /// A store failure the device cannot fix: logged once here, and the device is told to
    /// reconnect (1001).
    pub(super) async fn close_internal(&self, err: &StoreError, what: &str) {
        tracing::error!(error = %err, "{what}");
        self.refuse(
            ErrorCode::Internal,
            "internal error; reconnect".into(),
            CloseCode::GoingAway,
        )
        .await;
    }

    /// Sends an error frame, then closes with `close`.
    async fn refuse(&self, code: ErrorCode, message: String, close: CloseCode) {
        self.error(DecodeError::new(code, message.clone()), None, None)
            .await;
        let reason = truncate_reason(&message);
        let _ = self.queue.send(Outbound::Close(close, reason)).await;
    }

    async fn refuse_binary(&self) {
        self.refuse(
            ErrorCode::BinaryFrame,
            "binary frames are not part of the protocol; send JSON text frames".into(),
            CloseCode::UnsupportedData,
        )
        .await;
    }

    async fn refuse_read_error(&self, err: axum::Error) {
        use tokio_tungstenite::tungstenite::Error as WsError;
        let inner = err.into_inner();
        match inner.downcast_ref::<WsError>() {
            // Reported from the frame header, before the payload is read or allocated.
            Some(WsError::Capacity(_)) => {
                let max = self.state.config.max_frame_bytes;
                self.refuse(
                    ErrorCode::FrameTooLarge,
                    format!("frames are limited to {max} bytes"),
                    CloseCode::MessageTooBig,
                )
                .await;
            }
            Some(WsError::Utf8(_)) => {
                self.refuse(
                    ErrorCode::BadUtf8,
                    "a text frame was not valid UTF-8".into(),
                    CloseCode::InvalidPayload,
                )
                .await;
            }
            _ => {
                tracing::debug!(error = %inner, "websocket read error");
                let _ = self
                    .queue
                    .send(Outbound::Close(
                        CloseCode::ProtocolError,
                        "protocol error".into(),
                    ))
                    .await;
            }
        }
    }
}

/// The first text, binary or close frame; pings and pongs before login are skipped.
async fn first_data_frame(
    stream: &mut SplitStream<WebSocket>,
) -> Option<Result<Message, axum::Error>> {
    loop {
        match stream.next().await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => return other,
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

/// Logs a call that ended in both persons' logs and delivers the records.
pub(super) async fn record_call(state: &Arc<ServerState>, ended: CallEnded) {
    let record = CallRecord {
        call: ended.call,
        caller: (ended.caller, ended.from),
        callee: (ended.callee, ended.to),
        status: ended.outcome.as_str(),
        duration_ms: ended.duration_ms,
        ts: now_millis(),
    };
    if let Err(err) = state.store.append_call_record(record).await {
        tracing::error!(error = %err, "could not record a call");
    }
}

/// What a device is told when the store refuses `what` (the shared table in
/// `StoreError::refusal`); a failure of the store itself is logged here and answered with
/// `retry`.
pub(super) fn store_refusal(err: StoreError, what: &str, retry: &'static str) -> DecodeError {
    match err.refusal() {
        Some((code, message)) => DecodeError::new(code, message),
        None => {
            tracing::error!(error = %err, "{what} failed in the store");
            DecodeError::new(ErrorCode::Internal, retry)
        }
    }
}

fn call_error(err: CallError) -> DecodeError {
    DecodeError::new(err.code(), err.to_string())
}

/// WebSocket close reasons are limited to 123 bytes.
fn truncate_reason(message: &str) -> String {
    let mut end = message.len().min(123);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}

//! The op handlers of a logged-in connection: `dispatch` and the ops it runs (`send`,
//! `file_url`, `ack`, `read`, `profile`; `call` is in `calls.rs`, `history` in `sync.rs`).

use serde_json::value::RawValue;

use super::replies::store_refusal;
use super::session::Online;
use crate::files::{self, Variant};
use crate::protocol::MAX_CLIENT_ID;
use crate::protocol::{
    Ack, ClientFrame, DecodeError, ErrorCode, FileUrl, FileUrlRequest, MAX_ATTACHMENTS,
    ProfileFrame, ProfileRequest, ReadRequest, Send, Sent, ServerFrame, check_depth,
    check_profile_patch,
};
use crate::state::now_millis;
use crate::store::{NewMessage, StoreError};

/// Checks a client id: a `send`'s, or the tag of a `history`, `profile`, `devices` or `revoke`
/// request.
pub(super) fn check_id(id: &str) -> Result<(), DecodeError> {
    if id.is_empty() || id.chars().count() > MAX_CLIENT_ID {
        return Err(DecodeError::new(
            ErrorCode::BadValue,
            format!("`id` must be 1 to {MAX_CLIENT_ID} characters"),
        ));
    }
    Ok(())
}

impl Online<'_> {
    /// Decodes one frame and runs its op.
    pub(super) async fn dispatch(&mut self, text: &str) {
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
            Ok(ClientFrame::Typing(req)) => self.typing(req).await,
            Ok(ClientFrame::Presence(req)) => self.presence(req).await,
            Ok(ClientFrame::Devices(req)) => self.devices(req).await,
            Ok(ClientFrame::Revoke(req)) => self.revoke(req).await,
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
        if let Err(err) = check_id(&send.id) {
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
            from: self.identity.clone(),
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
        let person = self.identity.person;
        let file = match self.state.store.file(&req.id, Some(person)).await {
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
        let who = self.identity.clone();
        let result = self.state.store.ack(who, ack.seq, now_millis()).await;
        self.marker_result(result, "ack").await;
    }

    /// `read`: a read marker to every device of the person and a read receipt to the peer.
    async fn read(&mut self, read: ReadRequest) {
        let who = self.identity.clone();
        let result = self
            .state
            .store
            .mark_read(who, read.peer, read.upto, now_millis())
            .await;
        self.marker_result(result, "read").await;
    }

    async fn marker_result(&self, result: Result<(), StoreError>, op: &str) {
        self.request_result(result, op, None).await;
    }

    /// A refusal by the store, echoing the request's `id` (`history`, `profile`).
    async fn request_result(&self, result: Result<(), StoreError>, op: &str, id: Option<String>) {
        let Err(err) = result else { return };
        let err = store_refusal(err, op, "internal error; send it again");
        self.error(err, id, None).await;
    }

    /// `profile`: `set` changes this person's profile (logged, to every device of the
    /// person); `get` answers with a person's profile. The request's `id`, if any, is echoed on
    /// the answer and on a refusal.
    async fn profile(&mut self, req: ProfileRequest) {
        let id = req.id;
        if let Some(Err(err)) = id.as_deref().map(check_id) {
            return self.error(err, id, None).await;
        }
        match (req.set, req.get) {
            (Some(patch), None) => {
                if let Err(err) = check_profile_patch(".set", &patch) {
                    return self.error(err, id, None).await;
                }
                let result = self
                    .state
                    .store
                    .set_profile(self.identity.person, patch, now_millis())
                    .await
                    .map(|_| ());
                self.request_result(result, "profile", id).await;
            }
            (None, Some(address)) => match self.state.store.profile(&address).await {
                Ok((address, profile, version)) => {
                    let frame = ServerFrame::Profile(ProfileFrame {
                        id,
                        seq: None,
                        address,
                        profile,
                        version,
                        ts: None,
                    });
                    self.push(frame.to_text().into()).await;
                }
                Err(err) => self.request_result(Err(err), "profile", id).await,
            },
            _ => {
                let err = DecodeError::new(
                    ErrorCode::BadValue,
                    "profile takes exactly one of `set` (an object) or `get` (an address)",
                );
                self.error(err, id, None).await;
            }
        }
    }
}

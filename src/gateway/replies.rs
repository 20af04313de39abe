//! How a session answers its device: queued frames, `error` frames, refusals that close the
//! connection (with the close code that says why), and the table of store refusals. Every
//! reply goes through the session's own queue, so it keeps its place among the catch-up and
//! live frames.

use tokio_tungstenite::tungstenite::Error as WsError;

use super::session::Session;
use crate::protocol::{CloseCode, DecodeError, ErrorCode, ErrorFrame, ServerFrame};
use crate::router::{Frame, Outbound};
use crate::store::StoreError;

impl Session {
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
    pub(super) async fn refuse(&self, code: ErrorCode, message: String, close: CloseCode) {
        self.error(DecodeError::new(code, message.clone()), None, None)
            .await;
        let reason = truncate_reason(&message);
        let _ = self.queue.send(Outbound::Close(close, reason)).await;
    }

    pub(super) async fn refuse_binary(&self) {
        self.refuse(
            ErrorCode::BinaryFrame,
            "binary frames are not part of the protocol; send JSON text frames".into(),
            CloseCode::UnsupportedData,
        )
        .await;
    }

    pub(super) async fn refuse_read_error(&self, err: WsError) {
        match err {
            // Reported from the frame header, before the payload is read or allocated.
            WsError::Capacity(_) => {
                let max = self.state.config.max_frame_bytes;
                self.refuse(
                    ErrorCode::FrameTooLarge,
                    format!("frames are limited to {max} bytes"),
                    CloseCode::MessageTooBig,
                )
                .await;
            }
            WsError::Utf8(_) => {
                self.refuse(
                    ErrorCode::BadUtf8,
                    "a text frame was not valid UTF-8".into(),
                    CloseCode::InvalidPayload,
                )
                .await;
            }
            other => {
                tracing::debug!(error = %other, "websocket read error");
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
/// WebSocket close reasons are limited to 123 bytes.
fn truncate_reason(message: &str) -> String {
    let mut end = message.len().min(123);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}

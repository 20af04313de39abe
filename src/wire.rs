//! WebSocket frames as they leave the broker, encoded once.
//!
//! A server frame is never masked (RFC 6455 §5.1), so the bytes of an event's frame — header
//! included — are the same for every device that gets it: the fan-out encodes a frame once per
//! person and every connection writes the same shared [`Bytes`]. Writing needs no WebSocket
//! library on the way out; reading (masked client frames, fragments, UTF-8, control frames)
//! stays with tungstenite (`gateway::socket`).

use bytes::{BufMut, Bytes, BytesMut};

/// Opcodes the broker sends.
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
/// FIN: every frame the broker sends is a whole message.
const FIN: u8 = 0x80;

/// One encoded server frame: header and payload in one buffer, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
    /// Where the payload starts.
    header: u8,
}

impl Frame {
    /// A text frame carrying `text`.
    pub fn text(text: &str) -> Frame {
        Frame::encode(TEXT, text.as_bytes())
    }

    /// A binary frame carrying `data` (the conformance echo).
    pub fn binary(data: &[u8]) -> Frame {
        Frame::encode(BINARY, data)
    }

    /// A ping with an empty payload (keepalive).
    pub fn ping() -> Frame {
        Frame::encode(PING, &[])
    }

    /// A close frame with `code` and `reason` (cut to the 123 bytes a close payload allows,
    /// at a character boundary).
    pub fn close(code: u16, reason: &str) -> Frame {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        Frame::encode(CLOSE, &payload)
    }

    /// Already encoded frames (tungstenite's replies to pings and closes), kept whole.
    pub fn raw(bytes: Bytes) -> Frame {
        Frame { bytes, header: 0 }
    }

    fn encode(opcode: u8, payload: &[u8]) -> Frame {
        let mut out = BytesMut::with_capacity(payload.len() + 10);
        out.put_u8(FIN | opcode);
        // Server frames are unmasked: the mask bit stays 0.
        match payload.len() {
            len @ 0..=125 => out.put_u8(len as u8),
            len @ 126..=0xFFFF => {
                out.put_u8(126);
                out.put_u16(len as u16);
            }
            len => {
                out.put_u8(127);
                out.put_u64(len as u64);
            }
        }
        let header = out.len() as u8;
        out.extend_from_slice(payload);
        Frame {
            bytes: out.freeze(),
            header,
        }
    }

    /// The whole frame, header included: what goes on the wire.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The payload (for a text frame, its JSON).
    pub fn payload(&self) -> &[u8] {
        &self.bytes[self.header as usize..]
    }

    /// Whether this holds frames encoded elsewhere ([`Frame::raw`]).
    pub fn is_raw(&self) -> bool {
        self.header == 0
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it holds nothing (never, for an encoded frame).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Frame {
        Frame::text(&text)
    }
}

/// Whether `bytes`, a run of whole server frames, holds a close frame.
pub fn holds_close(mut bytes: &[u8]) -> bool {
    while bytes.len() >= 2 {
        if bytes[0] & 0x0F == CLOSE {
            return true;
        }
        let (len, header) = match bytes[1] & 0x7F {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&bytes[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return false,
            len => (len as usize, 2),
        };
        let masked = if bytes[1] & 0x80 != 0 { 4 } else { 0 };
        let Some(rest) = bytes.get(header + masked + len..) else {
            return false;
        };
        bytes = rest;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
    use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

    /// Reads `bytes` as a client would, with tungstenite.
    fn read_as_client(bytes: Vec<u8>) -> Vec<Message> {
        let io = std::io::Cursor::new(bytes);
        let mut ws = WebSocket::from_raw_socket(io, Role::Client, None);
        let mut out = Vec::new();
        while let Ok(message) = ws.read() {
            out.push(message);
        }
        out
    }

    #[test]
    fn every_length_class_reads_back_as_the_same_message() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 1_000_000] {
            let text = "x".repeat(len);
            let frame = Frame::text(&text);
            assert_eq!(frame.payload(), text.as_bytes());
            let read = read_as_client(frame.bytes().to_vec());
            assert_eq!(read, vec![Message::Text(text.into())], "length {len}");
        }
    }

    #[test]
    fn control_frames_read_back() {
        let mut wire = Vec::new();
        wire.extend_from_slice(Frame::ping().bytes());
        wire.extend_from_slice(Frame::binary(&[1, 2, 3]).bytes());
        wire.extend_from_slice(Frame::close(4008, "slow consumer").bytes());
        let read = read_as_client(wire);
        assert!(matches!(read[0], Message::Ping(ref p) if p.is_empty()));
        assert_eq!(read[1], Message::Binary(vec![1, 2, 3].into()));
        match &read[2] {
            Message::Close(Some(close)) => {
                assert_eq!(close.code, CloseCode::from(4008));
                assert_eq!(close.reason, "slow consumer");
            }
            other => panic!("expected a close, got {other:?}"),
        }
    }

    #[test]
    fn a_long_close_reason_is_cut_at_a_character_boundary() {
        let reason = "é".repeat(100);
        let frame = Frame::close(1000, &reason);
        assert!(frame.payload().len() <= 125);
        assert!(std::str::from_utf8(&frame.payload()[2..]).is_ok());
    }

    #[test]
    fn a_close_is_found_among_frames() {
        let mut wire = Vec::new();
        wire.extend_from_slice(Frame::text(&"y".repeat(300)).bytes());
        assert!(!holds_close(&wire));
        wire.extend_from_slice(Frame::close(1000, "").bytes());
        assert!(holds_close(&wire));
        assert!(holds_close(Frame::close(1000, "bye").bytes()));
        assert!(!holds_close(Frame::ping().bytes()));
    }
}

//! NATS core over WebSocket: anonymous connections, a subject per person, `PUB` per send. Also
//! the client protocol pieces [`jetstream`](super::jetstream) shares: the handshake and a
//! parser of the server's `MSG` / `HMSG` lines.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::{Creds, Stamp, Ws, connect_ws, contains, find, stamp_body};

/// A nats-server with its WebSocket listener, doing the same work: a person is a subject
/// (`p.<n>`), each device a subscriber, and a send is a PUB to the recipient's subject and to
/// the sender's (with `echo` off, so the sending connection does not get its own copy).
#[derive(Debug, Clone)]
pub struct Nats {
    /// `host:port` of the WebSocket listener.
    pub addr: SocketAddr,
}

impl Nats {
    /// No credentials: every device connects anonymously.
    pub fn prepare(&self, persons: u32, devices: u32) -> Vec<Creds> {
        anonymous(persons, devices)
    }

    /// Connects, subscribes to the person's subject and waits for the PONG that confirms it.
    pub async fn open(
        &self,
        creds: &Creds,
        source: IpAddr,
        rcvbuf: Option<u32>,
    ) -> anyhow::Result<(Ws, Duration)> {
        let hello = format!(
            "CONNECT {{\"echo\":false,\"verbose\":false,\"pedantic\":false}}\r\nSUB p.{} 1\r\nPING\r\n",
            creds.person
        );
        handshake(self.addr, &hello, source, rcvbuf).await
    }

    /// Two PUBs in one frame: to the recipient person and to the sender person.
    pub fn send_frame(&self, from: u32, to: u32, stamp: &Stamp, pad: usize) -> Message {
        let body = stamp_body(stamp, pad);
        let frame = format!(
            "PUB p.{to} {len}\r\n{body}\r\nPUB p.{from} {len}\r\n{body}\r\n",
            len = body.len()
        );
        Message::binary(frame.into_bytes())
    }

    /// Every complete `MSG` (or `HMSG`) in a frame whose payload is a stamp (small payloads
    /// arrive whole).
    pub fn deliveries(&self, frame: &[u8], out: &mut Vec<Stamp>) {
        for_each_msg(frame, |msg| {
            if let Ok(stamp) = serde_json::from_slice::<Stamp>(msg.payload) {
                out.push(stamp);
            }
        });
    }
}

/// Devices without credentials.
pub(crate) fn anonymous(persons: u32, devices: u32) -> Vec<Creds> {
    (0..persons)
        .flat_map(|p| (0..devices).map(move |d| (p, d)))
        .map(|(person, device)| Creds {
            person,
            device,
            token: String::new(),
        })
        .collect()
}

/// Opens a WebSocket to a nats-server, sends `hello` (which ends in `PING`) and waits for the
/// `PONG` that confirms everything before it was processed.
pub(crate) async fn handshake(
    addr: SocketAddr,
    hello: &str,
    source: IpAddr,
    rcvbuf: Option<u32>,
) -> anyhow::Result<(Ws, Duration)> {
    let started = Instant::now();
    let mut ws = connect_ws(addr, source, "/", rcvbuf).await?;
    ws.send(Message::binary(hello.as_bytes().to_vec())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(data))) if contains(&data, b"-ERR") => {
                bail!("nats refused: {}", String::from_utf8_lossy(&data));
            }
            Some(Ok(Message::Binary(data))) if contains(&data, b"PONG\r\n") => {
                return Ok((ws, started.elapsed()));
            }
            Some(Ok(Message::Text(text))) if text.contains("PONG\r\n") => {
                return Ok((ws, started.elapsed()));
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
            None => bail!("closed during connect"),
        }
    }
}

/// One message as the server delivered it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Msg<'a> {
    /// The subject it was published to.
    pub subject: &'a [u8],
    /// Its headers (`NATS/1.0 …` block) for an `HMSG`, empty for a `MSG`.
    pub headers: &'a [u8],
    /// Its payload.
    pub payload: &'a [u8],
}

/// Calls `each` for every complete `MSG` and `HMSG` in `frame`, in order. Other protocol lines
/// (`PING`, `+OK`, `INFO`, …) are skipped, and so is a truncated message at the end.
pub(crate) fn for_each_msg<'a>(frame: &'a [u8], mut each: impl FnMut(Msg<'a>)) {
    let mut rest = frame;
    while !rest.is_empty() {
        let Some(eol) = find(rest, b"\r\n") else {
            return;
        };
        let line = &rest[..eol];
        let after = &rest[eol + 2..];
        let (with_headers, args) = if let Some(args) = line.strip_prefix(b"MSG ") {
            (false, args)
        } else if let Some(args) = line.strip_prefix(b"HMSG ") {
            (true, args)
        } else {
            rest = after;
            continue;
        };
        let args: Vec<&[u8]> = args
            .split(|b| *b == b' ' || *b == b'\t')
            .filter(|a| !a.is_empty())
            .collect();
        let number =
            |a: Option<&&[u8]>| -> Option<usize> { std::str::from_utf8(a?).ok()?.parse().ok() };
        // MSG <subject> <sid> [reply] <size>; HMSG <subject> <sid> [reply] <hdr> <total>.
        let (header_len, total) = if with_headers {
            (
                number(args.get(args.len().wrapping_sub(2))),
                number(args.last()),
            )
        } else {
            (Some(0), number(args.last()))
        };
        let (Some(header_len), Some(total), Some(subject)) = (header_len, total, args.first())
        else {
            rest = after;
            continue;
        };
        if header_len > total || after.len() < total {
            return;
        }
        each(Msg {
            subject,
            headers: &after[..header_len],
            payload: &after[header_len..total],
        });
        rest = after[total..]
            .strip_prefix(b"\r\n")
            .unwrap_or(&after[total..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(frame: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for_each_msg(frame.as_bytes(), |m| {
            let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            out.push((s(m.subject), s(m.headers), s(m.payload)));
        });
        out
    }

    #[test]
    fn msg_and_hmsg_with_and_without_reply() {
        let h = "NATS/1.0\r\nNats-Msg-Id: a\r\n\r\n";
        let frame = format!(
            "+OK\r\nMSG p.1 1 3\r\nabc\r\nMSG _INBOX.x 2 _R.y 2\r\nhi\r\nHMSG p.2 1 {} {}\r\n{h}xyz\r\nHMSG p.3 1 _R.z {} {}\r\n{h}\r\nPING\r\n",
            h.len(),
            h.len() + 3,
            h.len(),
            h.len()
        );
        assert_eq!(
            parse(&frame),
            vec![
                ("p.1".into(), "".into(), "abc".into()),
                ("_INBOX.x".into(), "".into(), "hi".into()),
                ("p.2".into(), h.into(), "xyz".into()),
                ("p.3".into(), h.into(), "".into()),
            ]
        );
    }

    #[test]
    fn a_truncated_message_ends_the_frame() {
        assert_eq!(
            parse("MSG p.1 1 3\r\nabc\r\nMSG p.2 1 10\r\nabc"),
            vec![("p.1".into(), "".into(), "abc".into())]
        );
        assert!(parse("HMSG p.1 1 9 3\r\nabc\r\n").is_empty());
    }
}

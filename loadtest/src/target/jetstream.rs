//! NATS JetStream, the durable peer: the same subjects as NATS core (`p.<person>`), captured by
//! one file-storage stream, each publish acknowledged by the server once stored.
//!
//! - Setup ([`JetStream::prepare`]): a request on `$JS.API.STREAM.CREATE.<stream>` with the
//!   stream's config (file storage, limits retention, discard old, subjects `p.*`).
//! - A send: two `HPUB`s (to the recipient's and to the sender's subject, as for NATS core),
//!   each with a reply inbox, so JetStream answers with a PubAck `{"stream":..,"seq":..}`, and a
//!   `Nats-Msg-Id` header, so a retried publish would be stored once. `sent` = both acked.
//! - Deliveries: plain core subscriptions on the persons' subjects (a message a stream stores is
//!   still delivered to the subject's core subscribers).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::nats::{anonymous, for_each_msg, handshake};
use super::{Ack, Creds, Stamp, Ws, connect_ws, stamp_body};

/// The stream's name unless told otherwise.
pub const STREAM: &str = "PERSONS";

/// The subject prefix of a device's acknowledgement inbox: a publish's reply subject is
/// `_INBOX.octet.<person>.<device>.<sender>.<counter>` (its stamp's), so the PubAck names it.
const INBOX: &str = "_INBOX.octet";

/// A nats-server with JetStream on (`-js`) and its WebSocket listener.
#[derive(Debug, Clone)]
pub struct JetStream {
    /// `host:port` of the WebSocket listener.
    pub addr: SocketAddr,
    /// The stream that captures `p.*`.
    pub stream: String,
    /// Makes this run's `Nats-Msg-Id`s differ from an earlier run's against the same server
    /// (a repeated id inside the duplicate window would be dropped, and counted as lost).
    pub run: u64,
}

impl JetStream {
    /// A JetStream peer at `addr` with the default stream name and a fresh run id.
    pub fn new(addr: SocketAddr) -> JetStream {
        let run = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        JetStream {
            addr,
            stream: STREAM.to_string(),
            run,
        }
    }

    /// The stream's configuration, as `$JS.API.STREAM.CREATE` takes it (nats-server's
    /// `StreamConfig`; what is left out gets the server's defaults: no limits, one replica,
    /// a 2-minute duplicate window).
    pub fn stream_config(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.stream,
            "subjects": ["p.*"],
            "storage": "file",
            "retention": "limits",
            "discard": "old",
            "num_replicas": 1,
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_consumers": -1,
            "duplicate_window": 120_000_000_000u64,
        })
    }

    /// Creates the stream (the same config again is accepted), then credentials for every
    /// device (none: anonymous).
    pub async fn prepare(&self, persons: u32, devices: u32) -> anyhow::Result<Vec<Creds>> {
        let subject = format!("$JS.API.STREAM.CREATE.{}", self.stream);
        let answer = self
            .request(&subject, &self.stream_config().to_string())
            .await
            .context("creating the JetStream stream")?;
        let parsed: serde_json::Value = serde_json::from_str(&answer)
            .with_context(|| format!("stream create answered {answer}"))?;
        if let Some(error) = parsed.get("error") {
            bail!("stream create refused: {error}");
        }
        Ok(anonymous(persons, devices))
    }

    /// One request/reply on a fresh connection, within 10 s; the reply's payload.
    async fn request(&self, subject: &str, payload: &str) -> anyhow::Result<String> {
        let source = IpAddr::from([127, 0, 0, 1]);
        let mut ws: Ws = connect_ws(self.addr, source, "/", None).await?;
        let hello = format!(
            "CONNECT {}\r\nSUB {INBOX}.setup 1\r\nPUB {subject} {INBOX}.setup {}\r\n{payload}\r\n",
            connect_options(),
            payload.len()
        );
        ws.send(Message::binary(hello.into_bytes())).await?;
        let read = async {
            loop {
                let data = match ws.next().await {
                    Some(Ok(Message::Binary(data))) => data.to_vec(),
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => return Err(err.into()),
                    None => bail!("closed before the reply"),
                };
                if let Some(err) = data.windows(4).position(|w| w == b"-ERR") {
                    bail!("nats refused: {}", String::from_utf8_lossy(&data[err..]));
                }
                let mut reply = None;
                for_each_msg(&data, |msg| {
                    if msg.headers.starts_with(b"NATS/1.0 503") {
                        reply = Some(Err(anyhow::anyhow!(
                            "no responders: is JetStream on (nats-server -js)?"
                        )));
                    } else {
                        reply = Some(Ok(String::from_utf8_lossy(msg.payload).into_owned()));
                    }
                });
                if let Some(reply) = reply {
                    return reply;
                }
            }
        };
        let reply = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .context("no reply within 10 s")?;
        let _ = ws.close(None).await;
        reply
    }

    /// Connects with headers on, subscribes to the person's subject and to this device's
    /// acknowledgement inbox, and waits for the PONG that confirms both.
    pub async fn open(
        &self,
        creds: &Creds,
        source: IpAddr,
        rcvbuf: Option<u32>,
    ) -> anyhow::Result<(Ws, Duration)> {
        let hello = format!(
            "CONNECT {}\r\nSUB p.{p} 1\r\nSUB {INBOX}.{p}.{d}.> 2\r\nPING\r\n",
            connect_options(),
            p = creds.person,
            d = creds.device,
        );
        handshake(self.addr, &hello, source, rcvbuf).await
    }

    /// Two acknowledged publishes in one frame, to the recipient person and to the sender
    /// person, from the sender's device 0 (whose inbox gets the PubAcks).
    pub fn send_frame(&self, from: u32, to: u32, stamp: &Stamp, pad: usize) -> Message {
        let body = stamp_body(stamp, pad);
        let mut frame = String::with_capacity(2 * (body.len() + 128));
        for (subject, which) in [(to, 't'), (from, 'f')] {
            let headers = format!(
                "NATS/1.0\r\nNats-Msg-Id: {:x}-{}-{}-{which}\r\n\r\n",
                self.run, stamp.s, stamp.n
            );
            frame.push_str(&format!(
                "HPUB p.{subject} {INBOX}.{from}.0.{}.{} {} {}\r\n{headers}{body}\r\n",
                stamp.s,
                stamp.n,
                headers.len(),
                headers.len() + body.len()
            ));
        }
        Message::binary(frame.into_bytes())
    }

    /// The stamps and the acknowledgements in one received frame.
    pub fn receive(&self, frame: &[u8], stamps: &mut Vec<Stamp>, acks: &mut Vec<Ack>) {
        for_each_msg(frame, |msg| {
            if msg.subject.starts_with(INBOX.as_bytes()) {
                acks.push(Ack {
                    stored: pub_ack(msg.headers, msg.payload),
                    send: reply_send(msg.subject),
                });
            } else if let Ok(stamp) = serde_json::from_slice::<Stamp>(msg.payload) {
                stamps.push(stamp);
            }
        });
    }
}

/// The CONNECT options: no echo, headers on (for `HPUB` and `Nats-Msg-Id`), and no-responders
/// answers (so a publish no stream captures is refused at once instead of never acked).
fn connect_options() -> &'static str {
    r#"{"echo":false,"verbose":false,"pedantic":false,"headers":true,"no_responders":true}"#
}

/// The (sender, counter) at the end of a reply subject.
fn reply_send(subject: &[u8]) -> Option<(u32, u32)> {
    let subject = std::str::from_utf8(subject).ok()?;
    let mut tokens = subject.rsplit('.');
    let n = tokens.next()?.parse().ok()?;
    let s = tokens.next()?.parse().ok()?;
    Some((s, n))
}

/// Whether a reply on the inbox says a publish was stored.
fn pub_ack(headers: &[u8], payload: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct PubAck {
        stream: Option<String>,
        seq: Option<u64>,
        error: Option<serde_json::Value>,
    }
    if headers.starts_with(b"NATS/1.0 503") {
        return false;
    }
    matches!(
        serde_json::from_slice::<PubAck>(payload),
        Ok(PubAck {
            stream: Some(_),
            seq: Some(_),
            error: None,
        })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpub_frames_carry_the_id_header_and_the_reply_inbox() {
        let js = JetStream {
            addr: "127.0.0.1:1".parse().unwrap(),
            stream: STREAM.into(),
            run: 0xab,
        };
        let stamp = Stamp {
            s: 3,
            n: 7,
            t: 1,
            p: 0,
            w: 0,
        };
        let frame = js.send_frame(5, 9, &stamp, 0).into_data();
        let text = String::from_utf8(frame.to_vec()).unwrap();
        let body = stamp_body(&stamp, 0);
        let headers = "NATS/1.0\r\nNats-Msg-Id: ab-3-7-t\r\n\r\n";
        let first = format!(
            "HPUB p.9 _INBOX.octet.5.0.3.7 {} {}\r\n{headers}{body}\r\n",
            headers.len(),
            headers.len() + body.len()
        );
        assert!(text.starts_with(&first), "{text}");
        assert!(text.contains("Nats-Msg-Id: ab-3-7-f\r\n"), "{text}");
        assert!(text[first.len()..].starts_with("HPUB p.5 _INBOX.octet.5.0.3.7 "));
    }

    #[test]
    fn acks_and_deliveries_are_told_apart() {
        let js = JetStream::new("127.0.0.1:1".parse().unwrap());
        let stamp = r#"{"s":1,"n":2,"t":3,"p":0,"w":0}"#;
        let ack = r#"{"stream":"PERSONS","seq":17}"#;
        let err = r#"{"error":{"code":503,"description":"x"}}"#;
        let no_resp = "NATS/1.0 503\r\n\r\n";
        let hdr = "NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n";
        let frame = format!(
            "MSG _INBOX.octet.1.0.1.2 2 {}\r\n{ack}\r\nHMSG p.4 1 {} {}\r\n{hdr}{stamp}\r\nMSG _INBOX.octet.1.0.1.3 2 {}\r\n{err}\r\nHMSG _INBOX.octet.1.0.1.4 2 {} {}\r\n{no_resp}\r\n",
            ack.len(),
            hdr.len(),
            hdr.len() + stamp.len(),
            err.len(),
            no_resp.len(),
            no_resp.len()
        );
        let (mut stamps, mut acks) = (Vec::new(), Vec::new());
        js.receive(frame.as_bytes(), &mut stamps, &mut acks);
        assert_eq!(stamps.len(), 1);
        assert_eq!((stamps[0].s, stamps[0].n), (1, 2));
        let ack = |stored, send| Ack { stored, send };
        assert_eq!(
            acks,
            vec![
                ack(true, Some((1, 2))),
                ack(false, Some((1, 3))),
                ack(false, Some((1, 4)))
            ]
        );
    }
}

//! The broker under test: how to get credentials, connect and log in a device, frame a send,
//! and recognise a delivery and an acknowledgement. One file per broker: [`Octet`], NATS core
//! over WebSocket ([`Nats`]) and NATS JetStream ([`JetStream`], the durable peer).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub mod jetstream;
mod nats;
mod octet;

pub use jetstream::JetStream;
pub use nats::Nats;
pub use octet::Octet;

/// A broker's answer to a send (octet's `sent` or `error`) or to one of its publishes
/// (JetStream's PubAck).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Stored; `false`: refused.
    pub stored: bool,
    /// The send it answers, as its stamp's (sender, counter), when the answer names it.
    pub send: Option<(u32, u32)>,
}

/// The (sender, counter) in a send's id `<sender>-<counter>`.
pub(crate) fn send_id(id: &str) -> Option<(u32, u32)> {
    let (s, n) = id.split_once('-')?;
    Some((s.parse().ok()?, n.parse().ok()?))
}

/// A device's socket.
pub type Ws = WebSocketStream<TcpStream>;

/// What every message body carries, so arrival can be checked and timed.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize)]
pub struct Stamp {
    /// The sender's index.
    pub s: u32,
    /// The sender's counter, from 1.
    pub n: u32,
    /// The scheduled send time, in ns since the run's start.
    pub t: u64,
    /// The phase (rate step) it belongs to.
    pub p: u16,
    /// 1 while warming up (not measured).
    pub w: u8,
}

/// A stamp as JSON, with `pad` filler bytes in an extra field `x` (ignored when read back).
pub(crate) fn stamp_body(stamp: &Stamp, pad: usize) -> String {
    let mut body = serde_json::to_string(stamp).expect("stamps serialize");
    if pad > 0 {
        body.pop();
        body.push_str(",\"x\":\"");
        body.extend(std::iter::repeat_n('x', pad));
        body.push_str("\"}");
    }
    body
}

/// One device's login.
#[derive(Debug, Clone)]
pub struct Creds {
    /// The person's index.
    pub person: u32,
    /// The device's index within the person.
    pub device: u32,
    /// The user token.
    pub token: String,
}

/// The address of person `p` in load runs.
pub fn address(p: u32) -> String {
    format!("load-{p}@octet.test")
}

/// A WebSocket to `addr` + `path` from the source address `source`, with a lean client
/// (16 KiB read buffer, writes go out at once).
/// `rcvbuf` shrinks the socket's receive buffer (a device that stops reading then fills the
/// broker's side sooner).
pub(crate) async fn connect_ws(
    addr: SocketAddr,
    source: IpAddr,
    path: &str,
    rcvbuf: Option<u32>,
) -> anyhow::Result<Ws> {
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Runs one after another leave tens of thousands of client ports in TIME_WAIT. A plain
    // bind picks its port without knowing the destination and searches past them
    // (milliseconds of kernel time per socket at 18,000 connections, which showed up as the
    // generator's CPU and slowed logins). IP_BIND_ADDRESS_NO_PORT defers the port to
    // connect(), which picks by the whole address pair and reuses TIME_WAIT ports on loopback.
    bind_address_no_port(&socket);
    socket.bind(SocketAddr::new(source, 0))?;
    socket.set_nodelay(true)?;
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    let stream = socket.connect(addr).await.context("tcp connect")?;
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0);
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("websocket handshake")?;
    Ok(ws)
}

/// Sets IP_BIND_ADDRESS_NO_PORT (Linux); elsewhere, or if refused, the bind picks a port.
fn bind_address_no_port(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Source addresses to spread client sockets over (each gives ~28k ephemeral ports).
pub fn sources(count: u8) -> Vec<IpAddr> {
    (1..=count.max(1))
        .map(|i| IpAddr::from([127, 0, 0, i]))
        .collect()
}

/// Raises the soft open-files limit to the hard one; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    match rlimit::Resource::NOFILE.get() {
        Ok((_, hard)) => {
            let _ = rlimit::Resource::NOFILE.set(hard, hard);
            rlimit::Resource::NOFILE
                .get()
                .map(|(soft, _)| soft)
                .unwrap_or(hard)
        }
        Err(_) => 1024,
    }
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// The broker under test.
#[derive(Debug, Clone)]
pub enum Target {
    /// octet.
    Octet(Octet),
    /// nats-server over WebSocket.
    Nats(Nats),
    /// nats-server with JetStream, over WebSocket: every send stored and acknowledged.
    JetStream(JetStream),
}

impl Target {
    /// Credentials for every device.
    pub async fn prepare(
        &self,
        persons: u32,
        devices: u32,
        inflight: usize,
    ) -> anyhow::Result<Vec<Creds>> {
        match self {
            Target::Octet(o) => o.prepare(persons, devices, inflight).await,
            Target::Nats(n) => Ok(n.prepare(persons, devices)),
            Target::JetStream(j) => j.prepare(persons, devices).await,
        }
    }

    /// Connects and logs in (or subscribes) one device, with the socket's receive buffer set to
    /// `rcvbuf` bytes (`None`: the system's).
    pub async fn open_with(
        &self,
        creds: &Creds,
        source: IpAddr,
        rcvbuf: Option<u32>,
    ) -> anyhow::Result<(Ws, Duration)> {
        match self {
            Target::Octet(o) => o.open(creds, source, rcvbuf).await,
            Target::Nats(n) => n.open(creds, source, rcvbuf).await,
            Target::JetStream(j) => j.open(creds, source, rcvbuf).await,
        }
    }

    /// Opens every device in `creds` with at most `inflight` handshakes at once, spread over
    /// `source_count` source addresses, ticking `bar` per connection. `rcvbuf` picks a device's
    /// socket receive buffer (`None`: the system's). In `creds`' order, each with how long its
    /// handshake and login took.
    pub async fn open_all(
        &self,
        creds: Vec<Creds>,
        inflight: usize,
        source_count: u8,
        bar: &indicatif::ProgressBar,
        rcvbuf: impl Fn(&Creds) -> Option<u32>,
    ) -> anyhow::Result<Vec<(Creds, Ws, Duration)>> {
        let srcs = sources(source_count);
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(inflight.max(1)));
        let mut opens = Vec::with_capacity(creds.len());
        for (idx, c) in creds.into_iter().enumerate() {
            let target = self.clone();
            let sem = sem.clone();
            let source = srcs[idx % srcs.len()];
            let bar = bar.clone();
            let rcvbuf = rcvbuf(&c);
            opens.push(tokio::spawn(async move {
                let _permit = sem.acquire().await?;
                let (ws, took) = target.open_with(&c, source, rcvbuf).await?;
                bar.inc(1);
                anyhow::Ok((c, ws, took))
            }));
        }
        let mut conns = Vec::with_capacity(opens.len());
        for open in opens {
            conns.push(open.await??);
        }
        Ok(conns)
    }

    /// The frame for one send from person `from` to person `to`.
    pub fn send_frame(&self, from: u32, to: u32, stamp: &Stamp) -> Message {
        self.send_frame_padded(from, to, stamp, 0)
    }

    /// Like [`Target::send_frame`], with `pad` filler bytes in the body.
    pub fn send_frame_padded(&self, from: u32, to: u32, stamp: &Stamp, pad: usize) -> Message {
        match self {
            Target::Octet(o) => o.send_frame(to, stamp, pad),
            Target::Nats(n) => n.send_frame(from, to, stamp, pad),
            Target::JetStream(j) => j.send_frame(from, to, stamp, pad),
        }
    }

    /// The deliveries in one received frame.
    pub fn deliveries(&self, message: &Message, out: &mut Vec<Stamp>) {
        let mut acks = Vec::new();
        self.receive(message, out, &mut acks);
    }

    /// The deliveries and the acknowledgements of sends (octet's `sent` or an `error`,
    /// JetStream's PubAcks) in one received frame.
    pub fn receive(&self, message: &Message, stamps: &mut Vec<Stamp>, acks: &mut Vec<Ack>) {
        match (self, message) {
            (Target::Octet(o), Message::Text(text)) => {
                stamps.extend(o.delivery(text));
                acks.extend(o.ack(text));
            }
            (Target::Nats(n), Message::Binary(data)) => n.deliveries(data, stamps),
            (Target::Nats(n), Message::Text(text)) => n.deliveries(text.as_bytes(), stamps),
            (Target::JetStream(j), Message::Binary(data)) => j.receive(data, stamps, acks),
            (Target::JetStream(j), Message::Text(text)) => j.receive(text.as_bytes(), stamps, acks),
            _ => {}
        }
    }

    /// Acknowledgements a send owes its sender: octet's one `sent`, JetStream's two PubAcks
    /// (one per subject), none from NATS core.
    pub fn acks_per_send(&self) -> u64 {
        match self {
            Target::Octet(_) => 1,
            Target::Nats(_) => 0,
            Target::JetStream(_) => 2,
        }
    }

    /// The broker's name, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Octet(_) => "octet",
            Target::Nats(_) => "nats",
            Target::JetStream(_) => "jetstream",
        }
    }
}

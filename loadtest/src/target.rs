//! The broker under test: how to get credentials, connect and log in a device, frame a send,
//! and recognise a delivery. Only `octet` today; the NATS adapter arrives with the comparison.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use octet::client::Backend;
use octet::protocol::{ClientFrame, Login, Send};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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
fn stamp_body(stamp: &Stamp, pad: usize) -> String {
    let mut body = serde_json::to_string(stamp).expect("stamps serialize");
    if pad > 0 {
        body.pop();
        body.push_str(",\"x\":\"");
        body.extend(std::iter::repeat_n('x', pad));
        body.push_str("\"}");
    }
    body
}

/// An octet broker.
#[derive(Debug, Clone)]
pub struct Octet {
    /// `host:port` of the broker.
    pub addr: SocketAddr,
    /// The app token for the backend API.
    pub app_token: String,
    /// The appid tokens are issued for.
    pub appid: String,
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

impl Octet {
    /// Issues a device token for every device (`useradd` with `token.device`), `inflight` at once.
    pub async fn prepare(
        &self,
        persons: u32,
        devices: u32,
        inflight: usize,
    ) -> anyhow::Result<Vec<Creds>> {
        let backend = Backend::new(&format!("http://{}", self.addr), &self.app_token);
        let jobs: Vec<(u32, u32)> = (0..persons)
            .flat_map(|p| (0..devices).map(move |d| (p, d)))
            .collect();
        let mut creds = Vec::with_capacity(jobs.len());
        // Devices of one person are issued in order, so the first one is the primary.
        for chunk in jobs.chunks(devices as usize * inflight.max(1)) {
            let mut per_person: Vec<_> = Vec::new();
            for p in chunk
                .iter()
                .map(|(p, _)| *p)
                .collect::<std::collections::BTreeSet<_>>()
            {
                let backend = backend.clone();
                let appid = self.appid.clone();
                per_person.push(tokio::spawn(async move {
                    let mut out = Vec::new();
                    for d in 0..devices {
                        let t = backend
                            .device_token(&address(p), &format!("dev-{d}"), &appid)
                            .await?;
                        out.push(Creds {
                            person: p,
                            device: d,
                            token: t.token,
                        });
                    }
                    anyhow::Ok(out)
                }));
            }
            for task in per_person {
                creds.extend(task.await??);
            }
        }
        Ok(creds)
    }

    /// Connects from `source` and logs in; returns the socket once `synced` arrived, and how
    /// long the handshake and login took.
    pub async fn open(
        &self,
        creds: &Creds,
        source: IpAddr,
        rcvbuf: Option<u32>,
    ) -> anyhow::Result<(Ws, Duration)> {
        let started = Instant::now();
        let mut ws = connect_ws(self.addr, source, "/ws", rcvbuf).await?;
        let login = ClientFrame::Login(Login {
            token: creds.token.clone(),
            appid: self.appid.clone(),
            since: None,
            epoch: None,
        });
        ws.send(Message::text(serde_json::to_string(&login)?))
            .await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    if text.starts_with("{\"op\":\"synced\"") {
                        return Ok((ws, started.elapsed()));
                    }
                    if text.starts_with("{\"op\":\"error\"") {
                        bail!("login refused: {text}");
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.into()),
                None => bail!("closed during login"),
            }
        }
    }

    /// The frame that sends `stamp` from a device of person `from` to person `to`.
    pub fn send_frame(&self, to: u32, stamp: &Stamp, pad: usize) -> Message {
        let body = serde_json::value::RawValue::from_string(stamp_body(stamp, pad))
            .expect("stamps serialize");
        let frame = ClientFrame::Send(Send {
            id: format!("{}-{}", stamp.s, stamp.n),
            to: address(to),
            body: Some(body),
            files: Vec::new(),
        });
        Message::text(serde_json::to_string(&frame).expect("frames serialize"))
    }

    /// The stamp of a delivered message frame; `None` for every other frame.
    pub fn delivery(&self, frame: &str) -> Option<Stamp> {
        #[derive(Deserialize)]
        struct Frame<'a> {
            #[serde(borrow)]
            op: &'a str,
            body: Option<Stamp>,
        }
        if !frame.starts_with("{\"op\":\"message\"") {
            return None;
        }
        let parsed: Frame<'_> = serde_json::from_str(frame).ok()?;
        (parsed.op == "message").then_some(parsed.body).flatten()
    }
}

/// A WebSocket to `addr` + `path` from the source address `source`, with a lean client
/// (16 KiB read buffer, writes go out at once).
/// `rcvbuf` shrinks the socket's receive buffer (a device that stops reading then fills the
/// broker's side sooner).
async fn connect_ws(
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
        (0..persons)
            .flat_map(|p| (0..devices).map(move |d| (p, d)))
            .map(|(person, device)| Creds {
                person,
                device,
                token: String::new(),
            })
            .collect()
    }

    /// Connects, subscribes to the person's subject and waits for the PONG that confirms it.
    pub async fn open(
        &self,
        creds: &Creds,
        source: IpAddr,
        rcvbuf: Option<u32>,
    ) -> anyhow::Result<(Ws, Duration)> {
        let started = Instant::now();
        let mut ws = connect_ws(self.addr, source, "/", rcvbuf).await?;
        let hello = format!(
            "CONNECT {{\"echo\":false,\"verbose\":false,\"pedantic\":false}}\r\nSUB p.{} 1\r\nPING\r\n",
            creds.person
        );
        ws.send(Message::binary(hello.into_bytes())).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(data))) if contains(&data, b"PONG\r\n") => {
                    return Ok((ws, started.elapsed()));
                }
                Some(Ok(Message::Text(text))) if text.contains("PONG\r\n") => {
                    return Ok((ws, started.elapsed()));
                }
                Some(Ok(Message::Binary(data))) if contains(&data, b"-ERR") => {
                    bail!("nats refused: {}", String::from_utf8_lossy(&data));
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.into()),
                None => bail!("closed during connect"),
            }
        }
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

    /// Every complete `MSG` in a frame (small payloads arrive whole).
    pub fn deliveries(&self, frame: &[u8], out: &mut Vec<Stamp>) {
        let mut rest = frame;
        while let Some(at) = find(rest, b"MSG ") {
            rest = &rest[at..];
            let Some(eol) = find(rest, b"\r\n") else {
                return;
            };
            let header = std::str::from_utf8(&rest[..eol]).unwrap_or("");
            let Some(len) = header
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
            else {
                return;
            };
            let start = eol + 2;
            if rest.len() < start + len {
                return;
            }
            if let Ok(stamp) = serde_json::from_slice::<Stamp>(&rest[start..start + len]) {
                out.push(stamp);
            }
            rest = &rest[start + len..];
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// The broker under test.
#[derive(Debug, Clone)]
pub enum Target {
    /// octet.
    Octet(Octet),
    /// nats-server over WebSocket.
    Nats(Nats),
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
        }
    }

    /// The deliveries in one received frame.
    pub fn deliveries(&self, message: &Message, out: &mut Vec<Stamp>) {
        match (self, message) {
            (Target::Octet(o), Message::Text(text)) => out.extend(o.delivery(text)),
            (Target::Nats(n), Message::Binary(data)) => n.deliveries(data, out),
            (Target::Nats(n), Message::Text(text)) => n.deliveries(text.as_bytes(), out),
            _ => {}
        }
    }

    /// The broker's name, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Octet(_) => "octet",
            Target::Nats(_) => "nats",
        }
    }
}

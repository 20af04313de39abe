//! octet: device tokens from the backend API, a login per device, `send` frames.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ::octet::client::Backend;
use ::octet::protocol::{ClientFrame, Login, Send};
use anyhow::bail;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use super::{Ack, Creds, Stamp, Ws, address, connect_ws, send_id, stamp_body};

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

    /// A `sent` (stored) or an `error` naming a send's id (refused); `None` for other frames.
    pub fn ack(&self, frame: &str) -> Option<Ack> {
        #[derive(Deserialize)]
        struct Answer<'a> {
            #[serde(borrow)]
            id: Option<&'a str>,
        }
        let stored = if frame.starts_with("{\"op\":\"sent\"") {
            true
        } else if frame.starts_with("{\"op\":\"error\"") && frame.contains("\"id\":") {
            false
        } else {
            return None;
        };
        let id = serde_json::from_str::<Answer<'_>>(frame)
            .ok()
            .and_then(|a| a.id);
        Some(Ack {
            stored,
            send: id.and_then(send_id),
        })
    }
}

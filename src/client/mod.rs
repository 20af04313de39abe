//! octet's own client: the backend API over HTTP, a device's plain WebSocket [`Connection`]
//! (what the integration tests and the load generator drive frame by frame), and [`Session`],
//! a device that reconnects, resends and dedupes by itself (what an app uses). Depends only on
//! [`crate::protocol`].

mod reconnect;
mod refill;
mod session;
mod store;

pub use session::{SendError, Session, SessionEvent, SessionOptions, SessionSender, is_final};
pub use store::{Cursor, MemoryStore, PendingSend, SessionStore};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::protocol::{ClientFrame, DecodeError, Login, ServerFrame, Uid, Welcome};

/// What can go wrong talking to octet.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP request failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// The broker sent something this client cannot decode.
    #[error("decoding a frame: {0}")]
    Decode(#[from] DecodeError),
    /// The broker refused the request.
    #[error("refused: {code}: {message}")]
    Refused {
        /// The error code.
        code: String,
        /// The message.
        message: String,
    },
    /// The connection closed.
    #[error("closed: {0:?}")]
    Closed(Option<(u16, String)>),
}

/// The backend API, as an app backend uses it.
#[derive(Debug, Clone)]
pub struct Backend {
    http: reqwest::Client,
    url: String,
    app_token: String,
}

/// A token issued for a device.
#[derive(Debug, Clone)]
pub struct DeviceToken {
    /// The device's user.
    pub uid: Uid,
    /// That user's address.
    pub address: String,
    /// The user token.
    pub token: String,
    /// The primary's uid when the device's user is a linked user.
    pub linkto: Option<Uid>,
}

impl Backend {
    /// A backend client for the broker at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, app_token: &str) -> Backend {
        Backend {
            http: reqwest::Client::new(),
            url: format!("{}/backend", base.trim_end_matches('/')),
            app_token: app_token.to_string(),
        }
    }

    /// Posts a request body as given (no app token added) and returns status and JSON answer.
    pub async fn post_raw(&self, body: &str) -> Result<(u16, Value), ClientError> {
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    /// Posts `request` with the app token set in `token`; returns the JSON answer.
    pub async fn call(&self, mut request: Value) -> Result<Value, ClientError> {
        if let Value::Object(map) = &mut request {
            map.insert("token".into(), Value::String(self.app_token.clone()));
        }
        Ok(self.post_raw(&request.to_string()).await?.1)
    }

    /// `useradd` with `token.device`: a token for `device` of the person at `address`.
    pub async fn device_token(
        &self,
        address: &str,
        device: &str,
        appid: &str,
    ) -> Result<DeviceToken, ClientError> {
        let answer = self
            .call(json!({
                "op": "useradd",
                "user": {"address": address, "token": {"appid": appid, "expiry": 525600, "device": device}}
            }))
            .await?;
        if answer["result"] != json!(true) {
            return Err(ClientError::Refused {
                code: answer["error"].as_str().unwrap_or_default().into(),
                message: answer["message"].as_str().unwrap_or_default().into(),
            });
        }
        let user = &answer["user"];
        Ok(DeviceToken {
            uid: user["uid"].as_u64().unwrap_or_default(),
            address: user["address"].as_str().unwrap_or_default().into(),
            token: user["token"].as_str().unwrap_or_default().into(),
            linkto: answer["linkto"].as_u64(),
        })
    }
}

/// What arrives on a device connection.
#[derive(Debug)]
pub enum Incoming {
    /// A text frame, raw and decoded.
    Frame(String, ServerFrame),
    /// The broker closed the connection with this code and reason.
    Closed(Option<(u16, String)>),
}

/// One device's WebSocket connection.
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Connection {
    /// Opens a WebSocket to `url` (e.g. `ws://127.0.0.1:8080/ws`) without logging in.
    pub async fn connect(url: &str) -> Result<Connection, ClientError> {
        let config = WebSocketConfig::default().max_message_size(Some(16 << 20));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
        Ok(Connection { ws })
    }

    /// Connects and sends `login` (with `since` to catch up); returns the connection and its
    /// `welcome`. The catch-up, `synced` and live frames follow on [`Connection::recv`].
    pub async fn login(url: &str, login: Login) -> Result<(Connection, Welcome), ClientError> {
        let mut conn = Connection::connect(url).await?;
        conn.send(&ClientFrame::Login(login)).await?;
        match conn.recv().await? {
            Incoming::Frame(_, ServerFrame::Welcome(welcome)) => Ok((conn, welcome)),
            Incoming::Frame(_, ServerFrame::Error(err)) => Err(ClientError::Refused {
                code: err.code.to_string(),
                message: err.message,
            }),
            Incoming::Frame(text, _) => Err(ClientError::Refused {
                code: "unexpected".into(),
                message: text,
            }),
            Incoming::Closed(close) => Err(ClientError::Closed(close)),
        }
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let text = serde_json::to_string(frame).expect("client frames always serialize");
        self.send_text(&text).await
    }

    /// Sends raw text (for tests of bad input).
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.ws.send(WsMessage::text(text)).await?;
        Ok(())
    }

    /// Sends a raw WebSocket message (binary frames, oversized frames).
    pub async fn send_raw(&mut self, message: WsMessage) -> Result<(), ClientError> {
        self.ws.send(message).await?;
        Ok(())
    }

    /// The next frame or the close.
    pub async fn recv(&mut self) -> Result<Incoming, ClientError> {
        loop {
            match self.ws.next().await {
                Some(Ok(WsMessage::Text(text))) => {
                    let frame = ServerFrame::decode(&text)?;
                    return Ok(Incoming::Frame(text.to_string(), frame));
                }
                Some(Ok(WsMessage::Close(close))) => {
                    return Ok(Incoming::Closed(
                        close.map(|c| (u16::from(c.code), c.reason.to_string())),
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed))
                | Some(Err(tokio_tungstenite::tungstenite::Error::AlreadyClosed))
                | None => return Ok(Incoming::Closed(None)),
                Some(Err(err)) => return Err(err.into()),
            }
        }
    }

    /// Closes the connection with a normal close.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.ws.close(None).await?;
        Ok(())
    }
}

//! Starts the real server on an ephemeral port with a temporary data dir, and drives it over
//! real HTTP and real WebSockets with `octet::client`. Every wait has a timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use octet::client::{Backend, Connection, Incoming};
use octet::config::Config;
use octet::protocol::{ClientFrame, Login};
use octet::server;
use octet::state::ServerState;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod broker;
mod raw;
mod snapshot;

pub use broker::{Broker, announced_addr, check_config, client_login, octet_command};
pub use raw::read_close_raw;

/// The appid tests log in with.
pub const APPID: &str = "com.example.app";
/// The app token every test server uses.
pub const APP_TOKEN: &str = "test-app-token-0123456789";
/// How long any single wait may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// A running broker.
pub struct TestServer {
    pub addr: SocketAddr,
    pub backend: Backend,
    pub state: Arc<ServerState>,
    /// The app token this start generated and printed (none configured, none stored).
    pub generated_app_token: Option<String>,
    data_dir: TempDir,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A fresh server with default settings.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A fresh server with settings changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::new(data_dir.path().to_path_buf());
        config.app_token = Some(APP_TOKEN.into());
        // Tests send in tight loops; tests/it/limits.rs sets the rate limit it checks.
        config.send_rate = 100_000;
        config.send_burst = 100_000;
        tweak(&mut config);
        TestServer::launch(data_dir, config).await
    }

    async fn launch(data_dir: TempDir, config: Config) -> TestServer {
        let prepared = server::prepare(config.clone())
            .await
            .expect("server prepares");
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        let addr = listener.local_addr().unwrap();
        let state = prepared.state;
        let generated_app_token = prepared.generated_app_token.map(|t| t.expose().to_string());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                server::run(listener, state, async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
            }
        });
        TestServer {
            addr,
            backend: Backend::new(&format!("http://{addr}"), APP_TOKEN),
            state,
            generated_app_token,
            data_dir,
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and starts a new one on the same data dir.
    pub async fn restart(self) -> TestServer {
        self.restart_with(|_| {}).await
    }

    /// Stops the server and starts a new one on the same data dir, its settings changed by
    /// `tweak`.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Config)) -> TestServer {
        self.shutdown().await;
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap());
        let mut config = self.config.clone();
        tweak(&mut config);
        TestServer::launch(data_dir, config).await
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops in time")
                .expect("server task ends cleanly");
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Posts a backend request with the app token filled in.
    pub async fn backend(&self, request: Value) -> Value {
        self.backend.call(request).await.expect("backend answers")
    }

    /// Posts a raw body (no token added); returns status and answer.
    pub async fn backend_raw(&self, body: &str) -> (u16, Value) {
        self.backend.post_raw(body).await.expect("backend answers")
    }

    /// Issues a device token (`useradd` with `token.device`) and asserts it succeeded.
    pub async fn device_token(&self, address: &str, device: &str) -> Value {
        let answer = self
            .backend(json!({"op":"useradd","user":{"address":address,"token":{"appid":APPID,"expiry":525600,"device":device}}}))
            .await;
        assert_eq!(
            answer["result"],
            json!(true),
            "device token refused: {answer}"
        );
        answer
    }

    /// Issues a device token and logs in with it; the `welcome` is already consumed.
    pub async fn device(&self, address: &str, device: &str) -> Device {
        let answer = self.device_token(address, device).await;
        let token = answer["user"]["token"].as_str().unwrap().to_string();
        let mut dev = self.login(&token).await;
        let welcome = dev.expect("welcome").await;
        dev.expect("synced").await;
        dev.uid = welcome["uid"].as_u64().unwrap();
        dev.address = welcome["address"].as_str().unwrap().to_string();
        dev
    }

    /// Opens a connection and sends `login` with `token` (nothing read yet).
    pub async fn login(&self, token: &str) -> Device {
        self.login_since(token, None, None).await
    }

    /// Opens a connection and sends `login` with `since` and `epoch` (nothing read yet).
    pub async fn login_since(
        &self,
        token: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Device {
        let mut conn = self.connect().await;
        conn.send_frame(&ClientFrame::Login(Login {
            token: token.into(),
            appid: APPID.into(),
            since,
            epoch: epoch.map(str::to_string),
        }))
        .await;
        conn.token = token.to_string();
        conn
    }

    /// Opens a connection without logging in.
    pub async fn connect(&self) -> Device {
        let conn = tokio::time::timeout(WAIT, Connection::connect(&self.ws_url()))
            .await
            .expect("connect in time")
            .expect("websocket connects");
        Device {
            conn,
            seen: Vec::new(),
            uid: 0,
            address: String::new(),
            token: String::new(),
        }
    }

    /// The epoch of a person's log (what its devices' `welcome` shows).
    pub async fn epoch(&self, person: u64) -> String {
        self.state
            .store
            .head(person)
            .await
            .expect("person exists")
            .epoch
    }

    /// How many users (devices) the person at `address` has.
    pub async fn device_count(&self, address: &str) -> usize {
        let answer = self.devices(address).await;
        answer["devices"]
            .as_array()
            .unwrap_or_else(|| panic!("no devices list: {answer}"))
            .len()
    }

    /// The `devices` answer for a person, by any address.
    pub async fn devices(&self, address: &str) -> Value {
        self.backend(json!({"op":"devices","user":{"address":address}}))
            .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Heavy tests (thousands of sockets, seconds of full CPU) take this exclusively, and tests
/// that assert sub-second timings take it shared: on a 2-core machine one binary runs all
/// tests in parallel, and a 300 ms deadline must not starve behind a reconnect storm.
static LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Held for the whole of a heavy test: no timing-sensitive test runs meanwhile.
pub async fn heavy() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    LOAD.write().await
}

/// Held for the whole of a test that asserts a sub-second deadline: no heavy test runs
/// meanwhile (other timed tests may).
pub async fn timed() -> tokio::sync::RwLockReadGuard<'static, ()> {
    LOAD.read().await
}

/// A device connection with helpers that wait at most [`WAIT`].
pub struct Device {
    pub conn: Connection,
    /// Every frame received so far, for failure messages.
    pub seen: Vec<String>,
    pub uid: u64,
    pub address: String,
    pub token: String,
}

impl Device {
    pub async fn send_frame(&mut self, frame: &ClientFrame) {
        self.conn.send(frame).await.expect("frame sent");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.conn
            .send_text(&value.to_string())
            .await
            .expect("frame sent");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.conn.send_text(text).await.expect("frame sent");
    }

    /// Sends a message and returns the `sent` answer.
    pub async fn send_msg(&mut self, id: &str, to: &str, body: Value) -> Value {
        self.send_json(json!({"op":"send","id":id,"to":to,"body":body}))
            .await;
        let sent = self.expect("sent").await;
        assert_eq!(sent["id"], json!(id));
        sent
    }

    /// The next frame, or the close as `{"op":"closed","code":..,"reason":..}`.
    pub async fn next(&mut self) -> Value {
        let incoming = tokio::time::timeout(WAIT, self.conn.recv())
            .await
            .unwrap_or_else(|_| panic!("no frame within {WAIT:?}; seen so far: {:?}", self.seen))
            .expect("receive");
        let value = match incoming {
            Incoming::Frame(text, _) => serde_json::from_str(&text).unwrap(),
            Incoming::Closed(Some((code, reason))) => {
                json!({"op":"closed","code":code,"reason":reason})
            }
            Incoming::Closed(None) => json!({"op":"closed","code":null,"reason":null}),
        };
        self.seen.push(value.to_string());
        value
    }

    /// Waits for the next frame and asserts its op. A `synced` frame (which follows every
    /// `welcome`) and `devices_changed` events (which linking the next device of a test's
    /// person sends to the devices already connected) are passed over unless asked for; use
    /// [`Device::next`] to see all.
    pub async fn expect(&mut self, op: &str) -> Value {
        let mut frame = self.next().await;
        while ["synced", "devices_changed"].contains(&frame["op"].as_str().unwrap_or(""))
            && frame["op"] != op
        {
            frame = self.next().await;
        }
        assert_eq!(
            frame["op"],
            json!(op),
            "expected `{op}`, got {frame}; seen: {:?}",
            self.seen
        );
        frame
    }

    /// Waits for the close and returns its code and reason.
    pub async fn expect_closed(&mut self) -> (u64, String) {
        loop {
            let frame = self.next().await;
            if frame["op"] == "closed" {
                return (
                    frame["code"].as_u64().unwrap_or(0),
                    frame["reason"].as_str().unwrap_or("").to_string(),
                );
            }
        }
    }

    /// Sends large messages to `to` (a person whose only device has stopped reading) until the
    /// broker closes that device as a slow consumer; returns how many were sent. Panics if it
    /// never does within 400 sends.
    pub async fn send_until_kicked(&mut self, server: &TestServer, to: &str, person: u64) -> usize {
        let big = "x".repeat(60_000);
        let mut n = 0;
        while server.state.router.online(person).len() == 1 {
            assert!(
                n < 400,
                "the stalled device was never closed as a slow consumer"
            );
            n += 1;
            self.send_msg(&format!("m{n}"), to, json!(big)).await;
        }
        n
    }

    /// Asserts nothing arrives for a short while but `devices_changed` events (passed over as
    /// [`Device::expect`] does; [`Device::expect_nothing`] counts them too).
    pub async fn expect_silence(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(incoming) = tokio::time::timeout_at(deadline, self.conn.recv()).await {
            match incoming {
                Ok(Incoming::Frame(text, _)) if text.contains(r#""op":"devices_changed""#) => {}
                other => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Asserts no frame at all arrives for a short while.
    pub async fn expect_nothing(&mut self) {
        if let Ok(incoming) =
            tokio::time::timeout(Duration::from_millis(300), self.conn.recv()).await
        {
            panic!("expected nothing, got {incoming:?}");
        }
    }
}

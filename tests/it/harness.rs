//! Starts the real server on an ephemeral port with a temporary data dir, and drives it over
//! real HTTP and real WebSockets with `octet::client`. Every wait has a timeout.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use octet::client::{Backend, Connection, Incoming};
use octet::config::Config;
use octet::protocol::{ClientFrame, Login};
use octet::server;
use octet::state::ServerState;
use rusqlite::types::ValueRef;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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

    /// Every row of every table (whatever tables the schema has) and every file under
    /// `files/` with its size, read straight from the data dir: compare two snapshots to prove
    /// a refused request changed nothing. A session that ends records its device's last-seen
    /// time: after a disconnect, call [`TestServer::sessions_settled`] first.
    pub fn snapshot(&self) -> Vec<String> {
        let data_dir = &self.state.config.data_dir;
        let conn = rusqlite::Connection::open(data_dir.join("octet.db")).unwrap();
        let tables: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            tables.iter().any(|t| t == "messages"),
            "no schema in the snapshot: {tables:?}"
        );
        let mut rows = Vec::new();
        for table in &tables {
            let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
            let n = stmt.column_count();
            // Last-seen times reach the table up to a second late; the state is the table's
            // with the pending ones merged in (what `devices` reports), whenever it is taken.
            let last_seen = (table == "users")
                .then(|| stmt.column_index("last_seen").unwrap())
                .zip(stmt.column_index("uid").ok());
            let mut q = stmt.query([]).unwrap();
            let mut table_rows = Vec::new();
            while let Some(row) = q.next().unwrap() {
                let cols: Vec<String> = (0..n)
                    .map(|i| match last_seen {
                        Some((col, uid)) if col == i => {
                            let stored = row.get::<_, Option<i64>>(i).unwrap();
                            let uid = row.get(uid).unwrap();
                            let seen = self.state.last_seen.merged(uid, stored);
                            format!("{:?}", seen.map_or(ValueRef::Null, ValueRef::Integer))
                        }
                        _ => match row.get_ref(i).unwrap() {
                            ValueRef::Text(text) => {
                                format!("{:?}", String::from_utf8_lossy(text))
                            }
                            value => format!("{value:?}"),
                        },
                    })
                    .collect();
                table_rows.push(format!("{table}: {}", cols.join(" | ")));
            }
            // Composite keys: sorting the rendered rows orders every table fully.
            table_rows.sort();
            rows.extend(table_rows);
        }
        let files = data_dir.join("files");
        let mut listing = Vec::new();
        list_files(&files, &files, &mut listing);
        listing.sort();
        rows.extend(listing);
        rows
    }

    /// Waits until every WebSocket session has ended (the `connections` gauge falls only after
    /// a session recorded its last-seen time and ended its calls), so a snapshot taken next
    /// does not race a disconnect.
    pub async fn sessions_settled(&self) {
        self.sessions_down_to(0).await;
    }

    /// Waits until only `open` WebSocket sessions remain (the ones the test still holds):
    /// every other one has recorded its last-seen time and ended.
    pub async fn sessions_down_to(&self, open: i64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.state.metrics.connections.get();
            if now <= open {
                assert_eq!(now, open, "a session the test holds has ended");
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{now} sessions still open after {WAIT:?}, {open} expected"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
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

/// Every file under `dir` as `files/<path relative to root> <size>`.
fn list_files(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            list_files(root, &entry.path(), out);
        } else {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.push(format!("files/{rel} {}", meta.len()));
        }
    }
}

/// Reads a WebSocket's server frames from its bare socket until the close frame (skipping
/// every other frame) and returns its code and reason. Writes nothing, so nothing the peer
/// closed on can reset the socket and destroy the close in flight.
pub async fn read_close_raw(tcp: &mut tokio::net::TcpStream) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    // Where the first frame not walked yet starts.
    let mut at = 0;
    loop {
        while buf.len() >= at + 2 {
            let (op, len7) = (buf[at] & 0x0f, (buf[at + 1] & 0x7f) as usize);
            let masked = buf[at + 1] & 0x80 != 0;
            let (len, mut head) = match len7 {
                126 if buf.len() >= at + 4 => {
                    (u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize, 4)
                }
                127 if buf.len() >= at + 10 => {
                    let bytes: [u8; 8] = buf[at + 2..at + 10].try_into().unwrap();
                    (u64::from_be_bytes(bytes) as usize, 10)
                }
                126 | 127 => break,
                n => (n, 2),
            };
            head += if masked { 4 } else { 0 };
            if buf.len() < at + head + len {
                break;
            }
            let payload = &buf[at + head..at + head + len];
            if op == 0x8 {
                assert!(!masked, "a server frame is never masked");
                assert!(len >= 2, "a close frame without a code");
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
            }
            at += head + len;
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no close frame within {WAIT:?}"))
            .expect("the socket closes cleanly, not by a reset");
        assert!(n > 0, "the socket ended without a close frame");
        buf.extend_from_slice(&chunk[..n]);
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
    /// `welcome`) is passed over unless it is the one asked for; use [`Device::next`] to see all.
    pub async fn expect(&mut self, op: &str) -> Value {
        let mut frame = self.next().await;
        if frame["op"] == "synced" && op != "synced" {
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

    /// Asserts nothing arrives for a short while.
    pub async fn expect_silence(&mut self) {
        if let Ok(incoming) =
            tokio::time::timeout(Duration::from_millis(300), self.conn.recv()).await
        {
            panic!("expected silence, got {incoming:?}");
        }
    }
}

/// Where a real `octet serve` child listens, read from the line it logs once bound (so the
/// kernel picks a free port and no other process can take it first). `child` must have been
/// spawned with its stdout piped; the rest of its output is read and dropped, so the child
/// never blocks on a full pipe.
pub fn announced_addr(child: &mut Child) -> SocketAddr {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Some(rest) = line.split("listening on http://").nth(1) else {
                continue;
            };
            let end = rest.find(|c: char| c.is_whitespace() || c == '"' || c == '\x1b');
            if let Ok(addr) = rest[..end.unwrap_or(rest.len())].parse::<SocketAddr>()
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the broker logged no `listening on http://ADDR` line within 10 s")
}

/// The real `octet` binary as a child process, on a free loopback port.
pub struct Broker {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Broker {
    /// Starts the real binary on a port the kernel picks and waits until it is healthy.
    pub async fn start(data_dir: &std::path::Path) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_octet"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--app-token",
                APP_TOKEN,
                // The two senders stream as fast as the broker answers.
                "--send-rate",
                "100000",
                "--send-burst",
                "100000",
                // Every test client is 127.0.0.1: the storm's thousand at once are one address.
                "--max-http-connections-per-ip",
                "100000",
                "--max-anonymous-per-ip",
                "100000",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            // The line announcing the address is logged at info.
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("octet binary starts");
        let addr = announced_addr(&mut child);
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "broker never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Broker { child, addr }
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL"); // std sends SIGKILL on unix
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits (at most 15 s) for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no exit within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

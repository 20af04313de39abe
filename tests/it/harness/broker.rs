//! The real `octet` binary as a child process, and reading where it listens.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::APP_TOKEN;

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
        Broker::start_on(data_dir, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts the real binary listening on `listen` (a restart on the address clients know).
    pub async fn start_on(data_dir: &std::path::Path, listen: SocketAddr) -> Broker {
        Broker::start_with(data_dir, listen, &[]).await
    }

    /// [`Broker::start_on`] with more flags (e.g. `--webhook-url`).
    pub async fn start_with(
        data_dir: &std::path::Path,
        listen: SocketAddr,
        flags: &[&str],
    ) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_octet"))
            .args([
                "serve",
                "--listen",
                &listen.to_string(),
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
            .args(flags)
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

/// Logs in to the broker at `url` (a `ws://` URL) with `since`, with octet's own client;
/// the connection and the welcome's head seq.
pub async fn client_login(
    url: &str,
    token: &str,
    since: Option<u64>,
) -> (octet::client::Connection, u64) {
    let login = octet::protocol::Login {
        token: token.into(),
        appid: super::APPID.into(),
        since,
        epoch: None,
    };
    let (conn, welcome) =
        tokio::time::timeout(super::WAIT, octet::client::Connection::login(url, login))
            .await
            .expect("login in time")
            .expect("login works");
    (conn, welcome.seq)
}

/// The real binary with nothing from the test runner's environment (`OCTET_*`) leaking in.
pub fn octet_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_octet"));
    for (key, _) in std::env::vars() {
        if key.starts_with("OCTET_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `octet check-config <file>`, run to its end.
pub fn check_config(file: &std::path::Path) -> std::process::Output {
    octet_command()
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap()
}

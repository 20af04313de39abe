//! A real nats-server for the NATS and JetStream adapters' tests (Debian's package;
//! `scripts/test` installs it); the tests fail loudly without it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server on random ports (JetStream's file store in `dir` when on); killed when
/// dropped.
pub struct Server {
    /// The server process.
    pub child: Child,
    /// Its WebSocket listener.
    pub ws: SocketAddr,
}

impl Server {
    /// Starts one, with JetStream on when `jetstream`.
    pub fn start(dir: &Path, jetstream: bool) -> Server {
        let config = dir.join("nats.conf");
        let js = if jetstream {
            format!(
                "jetstream {{ store_dir: {:?} }}\n",
                dir.join("js").display().to_string()
            )
        } else {
            String::new()
        };
        // Port -1: a random free port. The server writes what it got to the ports file
        // (`<dir>/nats-server_<pid>.ports`) once every listener is up.
        std::fs::write(
            &config,
            format!(
                "host: 127.0.0.1\nport: -1\nports_file_dir: {dir:?}\n\
                 websocket {{ host: 127.0.0.1, port: -1, no_tls: true }}\n{js}",
                dir = dir.display().to_string(),
            ),
        )
        .unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("nats-server is not installed ({err}): apt-get install nats-server (scripts/test does it)")
            });
        let ports = dir.join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let ws = loop {
            if let Ok(text) = std::fs::read_to_string(&ports)
                && let Ok(parsed) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(url) = parsed["websocket"][0].as_str()
            {
                break url.trim_start_matches("ws://").parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "nats-server wrote no ports file at {}",
                ports.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Server { child, ws }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A real broker, in process, on a loopback port and a temporary data dir, for the load
//! generator's end-to-end tests.

use octet::config::Config;
use octet::server;
use octet_loadtest::target::{Octet, Target};

const APP_TOKEN: &str = "loadtest-app-token-0123456789";

/// A running broker; stops when dropped.
pub struct Broker {
    /// The generator's view of it.
    pub target: Target,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker with the send rate limit out of the way, after `tweak`.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path().to_path_buf());
        config.app_token = Some(APP_TOKEN.into());
        config.send_rate = 100_000;
        config.send_burst = 100_000;
        tweak(&mut config);
        let prepared = server::prepare(config).await.unwrap();
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server::run(listener, prepared.state, async {
            let _ = stopped.await;
        }));
        Broker {
            target: Target::Octet(Octet {
                addr,
                app_token: APP_TOKEN.into(),
                appid: "com.octet.loadtest".into(),
            }),
            stop: Some(stop),
            _dir: dir,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

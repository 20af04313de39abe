//! Configuration through the real binary: file < environment < flag, token files, and
//! `check-config` saying exactly what is wrong.

use std::net::SocketAddr;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::{announced_addr, check_config, octet_command};

fn check(text: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("octet.toml");
    std::fs::write(&file, text).unwrap();
    check_config(&file)
}

#[test]
fn check_config_accepts_a_valid_file() {
    let out = check(
        "listen = \"127.0.0.1:9000\"\nretention_days = 0\nsync = \"full\"\nlog_format = \"json\"\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
}

#[test]
fn check_config_says_exactly_what_is_wrong() {
    for (text, says) in [
        ("listen = \"127.0.0.1:9000\"\nring_timeout = \n", "line 2"),
        ("lisen = \"127.0.0.1:9000\"\n", "unknown field `lisen`"),
        ("ring_timeout = 0\n", "ring_timeout: 0 is out of range"),
        ("retention_days = 99999\n", "retention_days"),
        ("sync = \"sometimes\"\n", "sometimes"),
        ("listen = \"not an address\"\n", "listen"),
        ("queue_frames = 2\n", "queue_frames: 2 is out of range"),
        (
            "app_token = \"short\"\n",
            "app_token: use at least 16 characters",
        ),
        (
            "app_token = \"0123456789abcdef\"\napp_token_file = \"/nonexistent\"\n",
            "not both",
        ),
        (
            "admin_token_file = \"/nonexistent/octet-token\"\n",
            "/nonexistent/octet-token",
        ),
    ] {
        let out = check(text);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?} was accepted");
        assert!(
            stderr.contains(says),
            "{text:?}: expected {says:?} in {stderr}"
        );
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn ready(addr: SocketAddr) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("http://{addr}/readyz")).await
            && r.status() == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn flags_override_environment_which_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("app-token");
    std::fs::write(&token_file, "file-app-token-0123456789\n").unwrap();
    // Each source names its own loopback address with port 0: the kernel picks a free port
    // and the broker logs where it listens, so which source won shows in the address.
    let addr = |ip: &str| -> SocketAddr { format!("{ip}:0").parse().unwrap() };
    let (from_file, from_env, from_flag) =
        (addr("127.0.0.1"), addr("127.0.0.2"), addr("127.0.0.3"));
    let config = dir.path().join("octet.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{from_file}\"\ndata_dir = \"{}\"\napp_token_file = \"{}\"\nadmin_token = \"file-admin-token-0123456789\"\n",
            dir.path().join("data").display(),
            token_file.display()
        ),
    )
    .unwrap();
    let start = |env_listen: Option<SocketAddr>, flag_listen: Option<SocketAddr>| {
        let mut cmd = octet_command();
        cmd.arg("serve").arg("--config").arg(&config);
        if let Some(addr) = env_listen {
            cmd.env("OCTET_LISTEN", addr.to_string());
        }
        if let Some(addr) = flag_listen {
            cmd.arg("--listen").arg(addr.to_string());
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let bound = announced_addr(&mut child);
        (Running(child), bound)
    };

    {
        let (_octet, bound) = start(Some(from_env), Some(from_flag));
        assert_eq!(
            bound.ip(),
            from_flag.ip(),
            "the flag's address was not used"
        );
        assert!(ready(bound).await);
    }
    {
        let (_octet, bound) = start(Some(from_env), None);
        assert_eq!(
            bound.ip(),
            from_env.ip(),
            "the environment's address was not used"
        );
        assert!(ready(bound).await);
    }
    {
        let (_octet, bound) = start(None, None);
        assert_eq!(
            bound.ip(),
            from_file.ip(),
            "the file's address was not used"
        );
        assert!(ready(bound).await);
        // The app token came from the file named in the config; the admin token inline.
        let backend =
            octet::client::Backend::new(&format!("http://{bound}"), "file-app-token-0123456789");
        let answer = backend
            .call(json!({"op":"useradd","user":{"address":"a@example.com"}}))
            .await
            .unwrap();
        assert_eq!(answer["result"], true, "{answer}");
        let (_, stats) = backend
            .post_raw(&json!({"op":"stats","token":"file-admin-token-0123456789"}).to_string())
            .await
            .unwrap();
        assert_eq!(stats["users"], 1, "{stats}");
    }
}

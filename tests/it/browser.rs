//! A headless Chromium (`/usr/bin/chromium`, Debian's package) driven over the Chrome DevTools
//! Protocol with a few JSON-RPC calls over tokio-tungstenite: launch, open a page, evaluate
//! JavaScript in it. Tests that use it never skip: without Chromium they fail and say how to
//! install it (`scripts/test` installs it when it is missing). Every wait is bounded and the
//! browser is killed on drop.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long Chromium may take to start and print its DevTools address.
const BROWSER_START: Duration = Duration::from_secs(30);
/// How long one DevTools call may take.
const CDP_WAIT: Duration = Duration::from_secs(10);
/// How long a page may take to show what a test waits for.
const PAGE_WAIT: Duration = Duration::from_secs(20);

pub struct Browser {
    child: Child,
    devtools: String,
    /// The last lines Chromium wrote to stderr, for failure messages.
    log: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn launch() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: the dashboard test drives a real browser and does not skip. \
             Install Chromium with `apt-get update && apt-get install -y chromium` \
             (.ci/run does this when it is missing)"
        );
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {CHROMIUM}: {err}"));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let found = tokio::time::timeout(BROWSER_START, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.trim().strip_prefix("DevTools listening on ") {
                    return Some(url.to_string());
                }
                keep(&log, line);
            }
            None
        })
        .await;
        let devtools = match found {
            Ok(Some(url)) => url,
            Ok(None) => panic!(
                "{CHROMIUM} exited without a DevTools address; stderr:\n{}",
                log.lock().unwrap().join("\n")
            ),
            Err(_) => panic!(
                "{CHROMIUM} printed no DevTools address within {BROWSER_START:?}; stderr:\n{}",
                log.lock().unwrap().join("\n")
            ),
        };
        // Keep draining stderr so Chromium never blocks on a full pipe.
        let drain = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep(&drain, line);
            }
        });
        Browser {
            child,
            devtools,
            log,
            _profile: profile,
        }
    }

    pub async fn connect(&self) -> Cdp {
        let (ws, _) =
            tokio::time::timeout(CDP_WAIT, tokio_tungstenite::connect_async(&self.devtools))
                .await
                .expect("DevTools connects in time")
                .expect("DevTools websocket");
        Cdp {
            ws,
            next_id: 0,
            log: self.log.clone(),
        }
    }

    /// Asks Chromium to quit, and kills it if it does not within [`CDP_WAIT`].
    pub async fn close(mut self, mut cdp: Cdp) {
        cdp.send(None, "Browser.close", json!({})).await;
        if tokio::time::timeout(CDP_WAIT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn keep(log: &Mutex<Vec<String>>, line: String) {
    let mut log = log.lock().unwrap();
    if log.len() == 200 {
        log.remove(0);
    }
    log.push(line);
}

/// A DevTools session attached to one tab.
pub struct PageSession(String);

/// A minimal Chrome DevTools Protocol client: JSON-RPC over the browser's WebSocket, with
/// flattened sessions for tabs.
pub struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    log: Arc<Mutex<Vec<String>>>,
}

impl Cdp {
    /// Sends a command; returns its id.
    async fn send(&mut self, session: Option<&PageSession>, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let mut command = json!({"id": self.next_id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session.0);
        }
        self.ws
            .send(Message::Text(command.to_string().into()))
            .await
            .expect("DevTools command sent");
        self.next_id
    }

    /// Runs a browser-level command and returns its result (events in between are ignored).
    async fn browser_call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(None, method, params).await;
        self.answer(id, method)
            .await
            .unwrap_or_else(|error| panic!("{method} failed: {error}"))
    }

    /// Runs a command in a tab and returns its result.
    pub async fn call(&mut self, page: &PageSession, method: &str, params: Value) -> Value {
        self.try_call(page, method, params)
            .await
            .unwrap_or_else(|error| panic!("{method} failed: {error}"))
    }

    /// Runs a command in a tab: its result, or the error DevTools answered.
    async fn try_call(
        &mut self,
        page: &PageSession,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        let id = self.send(Some(page), method, params).await;
        self.answer(id, method).await
    }

    async fn answer(&mut self, id: u64, method: &str) -> Result<Value, Value> {
        let mut answer = tokio::time::timeout(CDP_WAIT, async {
            loop {
                let message = self
                    .ws
                    .next()
                    .await
                    .expect("DevTools connection open")
                    .expect("DevTools message");
                let Message::Text(text) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
                if value["id"] == json!(id) {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} within {CDP_WAIT:?}"));
        match answer.get_mut("error") {
            Some(error) => Err(error.take()),
            None => Ok(answer["result"].take()),
        }
    }

    /// Opens a new tab at `url` and attaches to it.
    pub async fn open_page(&mut self, url: &str) -> PageSession {
        let target = self
            .browser_call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self
            .browser_call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        let page = PageSession(attached["sessionId"].as_str().expect("sessionId").into());
        self.call(
            &page,
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        self.call(&page, "Page.enable", json!({})).await;
        let navigated = self.call(&page, "Page.navigate", json!({"url": url})).await;
        assert!(
            navigated.get("errorText").is_none(),
            "navigating to {url}: {navigated}"
        );
        page
    }

    /// Evaluates `expression` in the page and returns its value. While a navigation is
    /// settling the evaluation may fail: that comes back as `{"evaluation": <error>}`.
    pub async fn evaluate(&mut self, page: &PageSession, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true});
        match self.try_call(page, "Runtime.evaluate", params).await {
            Ok(result) if result.get("exceptionDetails").is_none() => {
                result["result"]["value"].clone()
            }
            Ok(result) => json!({"evaluation": result["exceptionDetails"]}),
            Err(error) => json!({"evaluation": error}),
        }
    }

    /// Evaluates `expression` until `ready` holds for its value, at most [`PAGE_WAIT`].
    pub async fn wait_for(
        &mut self,
        page: &PageSession,
        what: &str,
        expression: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let value = self.evaluate(page, expression).await;
            if ready(&value) {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "waited {PAGE_WAIT:?} for: {what}\nthe page shows: {value:#}\nChromium's stderr (last lines):\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

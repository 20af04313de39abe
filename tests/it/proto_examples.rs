//! Keeps `proto/` honest: every scenario in `proto/examples/*.json` runs against a fresh real
//! server and must get exactly the answers and frames written there, and every ```json block in
//! `proto/*.md` must be one of those checked examples. A change to the wire shows up here as a
//! failing example, never as a stale document.
//!
//! The example format is described in `proto/README.md` ("The examples files").

mod documents;
mod matching;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use octet::client::Incoming;
use octet::protocol::{
    BACKEND_OPS, CallAction, CallEventKind, ClientFrame, CloseCode, ErrorCode, ServerFrame,
};
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::harness::{APP_TOKEN, Device, TestServer, WAIT};
use matching::{Bindings, compare};

/// Stands for the app token in example requests; the test puts in the test server's.
const APP_TOKEN_PLACEHOLDER: &str = "<app-token>";
/// Stands for the admin token every example server starts with.
const ADMIN_TOKEN_PLACEHOLDER: &str = "<admin-token>";
const ADMIN_TOKEN: &str = "proto-admin-token-0123456789";
/// User tokens in examples are written `octu_<name>`: bound to the real token on first sight.
const USER_TOKEN_PREFIX: &str = "octu_";
/// The examples files, under `proto/examples/`.
const EXAMPLE_FILES: &[&str] = &["backend.json", "frames.json", "files.json"];
/// How long a device must stay quiet at the end of a scenario.
const SILENCE: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// The examples format
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExampleFile {
    #[serde(default)]
    #[allow(dead_code)]
    about: Option<String>,
    scenarios: Vec<Scenario>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    about: Option<String>,
    #[serde(default)]
    config: ScenarioConfig,
    steps: Vec<Step>,
}

/// Server settings a scenario needs shortened (so it does not wait a minute for `missed`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioConfig {
    ring_timeout_ms: Option<u64>,
    login_timeout_ms: Option<u64>,
    max_file_kib: Option<u64>,
    upload_quota_kib: Option<u64>,
    presence_grace_ms: Option<u64>,
    /// Webhooks on, to a receiver that is not there (the examples send no events).
    webhooks: Option<bool>,
    device_self_revoke: Option<bool>,
}

/// One step: a backend request (`request`, `raw` or `http`), a device action (`device` with
/// `send`, `send_text`, `send_binary`, `send_oversized`, `connect` or `close`), or `shutdown`.
/// Any step may carry `expect`: the frames each named device must receive next, in order.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Step {
    #[allow(dead_code)]
    about: Option<String>,
    request: Option<Value>,
    raw: Option<String>,
    http: Option<Http>,
    status: Option<u16>,
    response: Option<Value>,
    /// Response headers that must be present with exactly these values.
    response_headers: BTreeMap<String, String>,
    device: Option<String>,
    send: Option<Value>,
    send_text: Option<String>,
    send_binary: Option<Vec<u8>>,
    send_oversized: Option<usize>,
    connect: bool,
    close: bool,
    shutdown: bool,
    expect: BTreeMap<String, Vec<Value>>,
}

/// A request that is not a plain `POST /backend` with a JSON content type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Http {
    #[serde(default = "default_method")]
    method: String,
    #[serde(default = "default_path")]
    path: String,
    /// Empty: no Content-Type header at all.
    #[serde(default = "default_content_type")]
    content_type: String,
    /// A JSON body of exactly this many bytes (`{"pad":"xxx…"}`).
    body_bytes: Option<usize>,
    /// A body of this text, as is.
    body_text: Option<String>,
    /// A body of these bytes, in hex.
    body_hex: Option<String>,
    /// `Authorization: Bearer <this>` (a user token placeholder).
    bearer: Option<String>,
    /// More request headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn default_method() -> String {
    "POST".into()
}

fn default_path() -> String {
    "/backend".into()
}

fn default_content_type() -> String {
    "application/json".into()
}

fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto")
}

fn load_examples() -> Vec<(String, Scenario)> {
    let mut all = Vec::new();
    for file in EXAMPLE_FILES {
        let path = proto_dir().join("examples").join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        let parsed: ExampleFile = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{} is not a valid examples file: {err}", path.display()));
        for scenario in parsed.scenarios {
            all.push((file.to_string(), scenario));
        }
    }
    all
}

// ---------------------------------------------------------------------------------------------
// Running a scenario against a live server
// ---------------------------------------------------------------------------------------------

/// Runs one scenario on a fresh server; returns every mismatch.
async fn run_scenario(scenario: Scenario) -> Vec<String> {
    let config = scenario.config.clone();
    let mut server = TestServer::start_with(|c| {
        c.admin_token = Some(ADMIN_TOKEN.into());
        if let Some(ms) = config.ring_timeout_ms {
            c.ring_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = config.login_timeout_ms {
            c.login_timeout = Duration::from_millis(ms);
        }
        if let Some(kib) = config.max_file_kib {
            c.max_file_bytes = kib * 1024;
        }
        if let Some(kib) = config.upload_quota_kib {
            c.upload_quota_bytes = kib * 1024;
        }
        if let Some(ms) = config.presence_grace_ms {
            c.presence_grace = Duration::from_millis(ms);
        }
        if config.webhooks == Some(true) {
            c.webhook = Some(octet::config::WebhookConfig::new(
                "http://127.0.0.1:9/hooks",
                "proto-webhook-secret-0123",
            ));
        }
        if let Some(on) = config.device_self_revoke {
            c.device_self_revoke = on;
        }
    })
    .await;
    let mut bind = Bindings::new();
    let mut devices: BTreeMap<String, Device> = BTreeMap::new();
    let mut errors = Vec::new();
    for (n, step) in scenario.steps.iter().enumerate() {
        let at = format!("step {}", n + 1);
        let mut step_errors = Vec::new();
        if step.shutdown {
            // Graceful shutdown (what SIGTERM does), then a new server on the same data dir.
            server = server.restart().await;
        }
        run_step(&server, step, &mut bind, &mut devices, &mut step_errors).await;
        errors.extend(step_errors.into_iter().map(|e| format!("{at}: {e}")));
    }
    // Nothing more may arrive anywhere: every frame a step causes is written in its `expect`.
    let quiet = futures::future::join_all(devices.iter_mut().map(|(name, dev)| async move {
        let got = match tokio::time::timeout(SILENCE, dev.conn.recv()).await {
            Err(_) => return None,
            Ok(Ok(Incoming::Frame(text, _))) => text,
            Ok(Ok(Incoming::Closed(close))) => format!("a close {close:?}"),
            Ok(Err(err)) => format!("an error: {err}"),
        };
        Some(format!(
            "at the end: `{name}` got {got}, which no step expects"
        ))
    }))
    .await;
    errors.extend(quiet.into_iter().flatten());
    errors
}

async fn run_step(
    server: &TestServer,
    step: &Step,
    bind: &mut Bindings,
    devices: &mut BTreeMap<String, Device>,
    errors: &mut Vec<String>,
) {
    let backend = step.request.is_some() || step.raw.is_some() || step.http.is_some();
    let device_actions = [
        step.send.is_some(),
        step.send_text.is_some(),
        step.send_binary.is_some(),
        step.send_oversized.is_some(),
        step.connect,
        step.close,
    ]
    .iter()
    .filter(|a| **a)
    .count();
    let kinds = usize::from(backend) + device_actions + usize::from(step.shutdown);
    if kinds > 1 || (kinds == 0 && step.expect.is_empty()) {
        errors.push("a step does exactly one thing (or only expects)".into());
        return;
    }
    if !backend
        && (step.response.is_some() || step.status.is_some() || !step.response_headers.is_empty())
    {
        errors.push("`response` and `status` belong to backend steps".into());
        return;
    }
    if device_actions > 0 && step.device.is_none() {
        errors.push("a device action needs `device`".into());
        return;
    }
    if backend {
        run_backend(server, step, bind, errors).await;
    } else if let Some(name) = &step.device {
        run_device(server, step, name, bind, devices, errors).await;
    }
    for (name, frames) in &step.expect {
        let Some(dev) = devices.get_mut(name) else {
            errors.push(format!("expect names `{name}`, which no step connected"));
            continue;
        };
        let mut closed = false;
        for (i, want) in frames.iter().enumerate() {
            let got = dev.next().await;
            let mut diffs = Vec::new();
            compare(want, &got, None, "", bind, &mut diffs);
            errors.extend(
                diffs
                    .into_iter()
                    .map(|d| format!("`{name}` frame {}{d}\n    got: {got}", i + 1)),
            );
            if got["op"] == "welcome" {
                wait_registered(server, &got).await;
            }
            closed |= got["op"] == "closed";
        }
        if closed {
            devices.remove(name);
        }
    }
}

/// `welcome` is queued before the connection joins the routing table; wait until it has, so
/// the next step's fan-out reaches it.
async fn wait_registered(server: &TestServer, welcome: &Value) {
    let (Some(uid), Some(person)) = (welcome["uid"].as_u64(), welcome["primary"]["uid"].as_u64())
    else {
        return;
    };
    let registered = async {
        while !server.state.router.online(person).contains(&uid) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(WAIT, registered)
        .await
        .expect("a welcomed connection joins the routing table");
}

async fn run_backend(
    server: &TestServer,
    step: &Step,
    bind: &mut Bindings,
    errors: &mut Vec<String>,
) {
    let http = step.http.as_ref();
    let body: Vec<u8> = match (
        &step.request,
        &step.raw,
        http.and_then(|h| h.body_bytes),
        http.and_then(|h| h.body_text.as_ref()),
        http.and_then(|h| h.body_hex.as_ref()),
    ) {
        (Some(request), None, None, None, None) => bind.fill(request, errors).to_string().into(),
        (None, Some(raw), None, None, None) => bind.fill_text(raw).into(),
        (None, None, Some(n), None, None) => {
            let pad = n.saturating_sub(r#"{"pad":""}"#.len());
            format!(r#"{{"pad":"{}"}}"#, "x".repeat(pad)).into()
        }
        (None, None, None, Some(text), None) => text.clone().into(),
        (None, None, None, None, Some(hex)) => hex::decode(hex).expect("`body_hex` is hex"),
        (None, None, None, None, None) => Vec::new(),
        _ => {
            errors.push(
                "a backend step has one of `request`, `raw`, `http.body_bytes`, `http.body_text`, `http.body_hex`"
                    .into(),
            );
            return;
        }
    };
    let mut headers = reqwest::header::HeaderMap::new();
    let (status, answer) = match &step.http {
        None => {
            server
                .backend_raw(&String::from_utf8(body).expect("UTF-8"))
                .await
        }
        Some(http) => {
            let method = reqwest::Method::from_bytes(http.method.as_bytes()).expect("a method");
            let mut request = reqwest::Client::new()
                .request(method, server.http_url(&bind.fill_text(&http.path)))
                .timeout(WAIT);
            if !http.content_type.is_empty() {
                request = request.header("content-type", &http.content_type);
            }
            if let Some(token) = &http.bearer {
                match bind.strings.get(token) {
                    Some(real) => request = request.bearer_auth(real),
                    None => errors.push(format!("{token} is used before a response issued it")),
                }
            }
            for (name, value) in &http.headers {
                request = request.header(name, bind.fill_text(value));
            }
            if !body.is_empty() {
                request = request.body(body);
            }
            let response = request.send().await.expect("the server answers");
            let status = response.status().as_u16();
            headers = response.headers().clone();
            let text = response.text().await.expect("a body");
            let answer = serde_json::from_str(&text).unwrap_or(Value::String(text));
            (status, answer)
        }
    };
    for (name, want) in &step.response_headers {
        let want = bind.fill_text(want);
        let got = headers.get(name).and_then(|v| v.to_str().ok());
        if got != Some(want.as_str()) {
            errors.push(format!(
                "response header {name}: expected {want:?}, got {got:?}"
            ));
        }
    }
    let want_status = step.status.unwrap_or(200);
    if status != want_status {
        errors.push(format!(
            "HTTP status {status}, the example says {want_status}"
        ));
    }
    match &step.response {
        Some(want) => {
            let mut diffs = Vec::new();
            compare(want, &answer, None, "", bind, &mut diffs);
            errors.extend(
                diffs
                    .into_iter()
                    .map(|d| format!("response{d}\n    got: {answer}")),
            );
        }
        None => errors.push(format!("a backend step needs `response`; got {answer}")),
    }
}

async fn run_device(
    server: &TestServer,
    step: &Step,
    name: &str,
    bind: &mut Bindings,
    devices: &mut BTreeMap<String, Device>,
    errors: &mut Vec<String>,
) {
    if step.close {
        match devices.remove(name) {
            Some(dev) => dev.conn.close().await.expect("close sent"),
            None => errors.push(format!("`{name}` is not connected")),
        }
        return;
    }
    if !devices.contains_key(name) {
        devices.insert(name.to_string(), server.connect().await);
    }
    let dev = devices.get_mut(name).expect("connected above");
    if let Some(frame) = &step.send {
        let mut frame = bind.fill(frame, errors);
        // A frame's `epoch` that a `welcome` showed becomes the real epoch; any other is sent as
        // written and stands for an epoch of another database.
        if let Some(example) = frame["epoch"].as_str().map(str::to_string) {
            match bind.epochs.get(&example) {
                Some(real) => frame["epoch"] = Value::String(real.clone()),
                None => {
                    bind.foreign_epochs.insert(example);
                }
            }
        }
        dev.send_json(frame).await;
    } else if let Some(text) = &step.send_text {
        dev.send_text(text).await;
    } else if let Some(bytes) = &step.send_binary {
        dev.conn
            .send_raw(WsMessage::binary(bytes.clone()))
            .await
            .expect("binary frame sent");
    } else if let Some(n) = step.send_oversized {
        let frame = serde_json::json!({"op":"send","id":"big","to":"x","body":"y".repeat(n)});
        dev.send_json(frame).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn examples_match_the_live_server() {
    let tasks: Vec<_> = load_examples()
        .into_iter()
        .map(|(file, scenario)| {
            let label = format!("{file}: {}", scenario.name);
            (label, tokio::spawn(run_scenario(scenario)))
        })
        .collect();
    let mut failures = Vec::new();
    for (label, task) in tasks {
        match task.await {
            Ok(errors) => failures.extend(errors.into_iter().map(|e| format!("{label}: {e}"))),
            Err(err) => {
                let why = err
                    .try_into_panic()
                    .ok()
                    .and_then(|p| {
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    })
                    .unwrap_or_else(|| "cancelled".into());
                failures.push(format!("{label}: panicked: {why}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} example mismatch(es) between proto/examples and the server:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

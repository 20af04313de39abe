//! The web demo: `GET /demo` and its assets, and `POST /demo/token`, all only with `--demo`.
//!
//! The page (`src/demo/`: one HTML page, one stylesheet, one app script, and the TypeScript
//! client bundled into one ES module by `npm --prefix clients/js run demo`) is compiled into the
//! binary with `include_str!`; it loads nothing from elsewhere. Each browser tab asks
//! `POST /demo/token {"name": "alice"}` for a token for a NEW device of the person
//! `alice@demo`, so every tab is one device of its person and the multi-device sync shows.
//! The store's limit of [`MAX_DEVICES`] devices per person applies, and its refusal is passed
//! on. The endpoint hands tokens to anyone who asks: that is why it exists only with `--demo`.

use std::sync::Arc;

use axum::Router as Routes;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::api::{ApiError, method_not_allowed, transport_error};
use crate::protocol::ErrorCode;
use crate::state::{ServerState, now_millis};
use crate::store::{MAX_DEVICES, NewUser, StoreError, TokenRequest, TokenTerms};

/// The app id the demo's tokens are bound to.
pub const DEMO_APPID: &str = "octet.demo";
/// The domain of every demo person's address: `<name>@demo`.
pub const DEMO_DOMAIN: &str = "demo";
/// The longest name.
pub const MAX_NAME: usize = 32;
/// How long a demo token is valid: one day.
const EXPIRY_MINUTES: i64 = 24 * 60;

const PAGE: &str = include_str!("demo/index.html");
const STYLE: &str = include_str!("demo/style.css");
const APP: &str = include_str!("demo/app.js");
const CLIENT: &str = include_str!("demo/assets/octet-client.js");

/// The page talks only to its own origin (WebSocket and uploads included); photos shown are
/// its own downloads (blob URLs of the signed file URLs are not needed: `img-src 'self'`).
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' blob:; media-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `/demo`, its assets and `POST /demo/token`; empty (every path 404) without `--demo`.
pub fn routes(state: &ServerState) -> Routes<Arc<ServerState>> {
    if !state.config.demo {
        return Routes::new();
    }
    Routes::new()
        .route("/demo", get(page))
        .route("/demo/", get(page))
        .route(
            "/demo/style.css",
            get(|| asset(STYLE, "text/css; charset=utf-8")),
        )
        .route(
            "/demo/app.js",
            get(|| asset(APP, "text/javascript; charset=utf-8")),
        )
        .route(
            "/demo/octet-client.js",
            get(|| asset(CLIENT, "text/javascript; charset=utf-8")),
        )
        .route(
            "/demo/token",
            post(token).fallback(method_not_allowed(
                "POST",
                "use POST /demo/token with a JSON body {\"name\": \"alice\"}",
            )),
        )
}

async fn page() -> Response {
    let mut response = asset(PAGE, "text/html; charset=utf-8").await;
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    response
}

async fn asset(text: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Small and served from memory: always fresh, so a rebuilt broker shows its own page.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response()
}

/// `POST /demo/token {"name": "alice"}` → `{"result": true, "token", "uid", "address",
/// "appid", "device"}` for a new device of `alice@demo`.
async fn token(State(state): State<Arc<ServerState>>, body: Bytes) -> Response {
    let refuse = |status: StatusCode, err: ApiError| {
        transport_error(&state.metrics, status, err.code, err.message)
    };
    let name = match demo_name(&body) {
        Ok(name) => name,
        Err(err) => return refuse(StatusCode::BAD_REQUEST, err),
    };
    let device = format!("tab-{}", random_hex());
    let address = format!("{name}@{DEMO_DOMAIN}");
    let request = NewUser {
        address: address.clone(),
        name: None,
        token: TokenRequest::Device(
            TokenTerms {
                appid: DEMO_APPID.into(),
                expiry_minutes: EXPIRY_MINUTES,
            },
            device.clone(),
        ),
    };
    match state.store.useradd(request, now_millis()).await {
        Ok(issued) => axum::Json(json!({
            "result": true,
            "token": issued.token.map(|t| t.reveal()),
            "uid": issued.uid,
            "address": address,
            "appid": DEMO_APPID,
            "device": device,
        }))
        .into_response(),
        Err(StoreError::DeviceLimit { .. }) => refuse(
            StatusCode::CONFLICT,
            ApiError::new(
                ErrorCode::DeviceLimit,
                format!(
                    "{address} already has {MAX_DEVICES} devices, the most a person may have \
                     (each demo tab is a new device): pick another name"
                ),
            ),
        ),
        Err(err) => {
            let err = ApiError::from(err);
            refuse(StatusCode::INTERNAL_SERVER_ERROR, err)
        }
    }
}

/// The `name` of a token request: 1 to [`MAX_NAME`] of `a-z`, `0-9`, `-`, `_`, so that
/// `<name>@demo` is a valid address and names cannot collide by case.
fn demo_name(body: &[u8]) -> Result<String, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        ApiError::new(
            ErrorCode::BadJson,
            format!("the body is not JSON ({err}); send {{\"name\": \"alice\"}}"),
        )
    })?;
    let name = match value.get("name") {
        None => {
            return Err(ApiError::new(
                ErrorCode::MissingField,
                "`name` is missing; send {\"name\": \"alice\"}",
            ));
        }
        Some(Value::String(name)) => name,
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::WrongType,
                "`name` must be a string, e.g. {\"name\": \"alice\"}",
            ));
        }
    };
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if name.is_empty() || name.len() > MAX_NAME || !valid_chars {
        return Err(ApiError::new(
            ErrorCode::BadValue,
            format!(
                "`name` {name:?} is not a demo name: use 1 to {MAX_NAME} lowercase letters, \
                 digits, '-' or '_'"
            ),
        ));
    }
    Ok(name.clone())
}

/// 8 random bytes as hex: a device id no other tab has.
fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    hex::encode(bytes)
}

//! The HTTP side of files: `POST /files`, `GET /files/{id}`, `GET /files/{id}/thumb`.
//!
//! Uploads (`post.rs`) need a user token (`Authorization: Bearer`). Downloads need a user
//! token of a person that may read the file, or a signed URL; anyone else gets 404 — the same
//! answer as for a file that does not exist, so ids cannot be probed. Downloads support
//! `Range`, `ETag` / `If-None-Match` and `If-Range`. A request may name its app in
//! `Octet-Appid`; the token must then be bound to that appid.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{FileError, Variant};
use crate::api::{ApiError, method_not_allowed, refusal};
use crate::auth::TokenHash;
use crate::protocol::ErrorCode;
use crate::state::{ServerState, now_millis};
use crate::store::Identity;

/// The routes, merged into the server's.
pub fn routes() -> axum::Router<Arc<ServerState>> {
    axum::Router::new()
        .route(
            "/files",
            post(super::post::upload).fallback(method_not_allowed("POST", "use POST on this path")),
        )
        .route(
            "/files/{id}",
            get(|s, p, q, h| download(s, p, q, h, Variant::Data))
                .fallback(method_not_allowed("GET", "use GET on this path")),
        )
        .route(
            "/files/{id}/thumb",
            get(|s, p, q, h| download(s, p, q, h, Variant::Thumb))
                .fallback(method_not_allowed("GET", "use GET on this path")),
        )
        // The upload enforces its own limit (--max-file-mib) while streaming.
        .layer(DefaultBodyLimit::disable())
}

/// The refusal a client sees: the stable code, the status, and the headers some refusals need.
pub(super) fn failure(state: &ServerState, op: &str, err: FileError) -> Response {
    let (code, status) = err.code();
    if code == ErrorCode::Internal {
        tracing::error!(error = %err, op, "file request failed");
    }
    let message = if code == ErrorCode::Internal {
        "internal error; retry the request".to_string()
    } else {
        err.to_string()
    };
    let mut response = (
        status,
        refusal(&state.metrics, op, None, ApiError::new(code, message)),
    )
        .into_response();
    if let FileError::Range(size) = err
        && let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}"))
    {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    if let FileError::UploadRate { retry_after, .. } = err {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after.as_secs()),
        );
    }
    response
}

/// The user token in `Authorization: Bearer …`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub(super) async fn identify(
    state: &ServerState,
    headers: &HeaderMap,
) -> Result<Identity, FileError> {
    let token = bearer(headers).ok_or(FileError::NoToken)?;
    let hash = TokenHash::of(token);
    let found = match appid(headers)? {
        // The client says which app it is: the token must be bound to it, as at `login`.
        Some(appid) => state.store.authenticate(hash, appid, now_millis()).await,
        None => state.store.identify(hash, now_millis()).await,
    };
    match found {
        Ok(identity) => Ok(identity),
        Err(crate::store::StoreError::AuthFailed(crate::store::AuthFailure::WrongAppid)) => {
            Err(FileError::WrongAppid)
        }
        Err(crate::store::StoreError::AuthFailed(_)) => Err(FileError::BadToken),
        Err(err) => Err(err.into()),
    }
}

/// The header a file request names its app with (optional; see proto/files.md).
pub const APPID_HEADER: &str = "octet-appid";

/// The `Octet-Appid` header, if sent.
fn appid(headers: &HeaderMap) -> Result<Option<&str>, FileError> {
    match headers.get(APPID_HEADER) {
        None => Ok(None),
        Some(value) => match value.to_str().map(str::trim) {
            Ok(appid) if !appid.is_empty() => Ok(Some(appid)),
            _ => Err(FileError::WrongAppid),
        },
    }
}

#[derive(Debug, Deserialize)]
struct Signed {
    exp: Option<i64>,
    sig: Option<String>,
}

/// `GET /files/{id}` and `GET /files/{id}/thumb`.
async fn download(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<String>,
    query: Result<Query<Signed>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    variant: Variant,
) -> Response {
    match download_inner(&state, &id, query, &headers, variant).await {
        Ok(response) => response,
        Err(err) => failure(&state, "download", err),
    }
}

async fn download_inner(
    state: &ServerState,
    id: &str,
    query: Result<Query<Signed>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
    variant: Variant,
) -> Result<Response, FileError> {
    let Query(signed) = query.map_err(|err| FileError::BadQuery(err.body_text()))?;
    let not_found = || FileError::NotFound(id.to_string());
    let reader = match (signed.exp, signed.sig) {
        (Some(exp), Some(sig)) => {
            if !state
                .files
                .signer
                .verify(id, variant, exp, &sig, now_millis())
            {
                return Err(not_found());
            }
            None
        }
        _ => match identify(state, headers).await {
            Ok(identity) => Some(identity.person),
            // A revoked token learns nothing more than a stranger does.
            Err(FileError::BadToken | FileError::WrongAppid) => return Err(not_found()),
            Err(err) => return Err(err),
        },
    };
    let file = match state.store.file(id, reader).await {
        Ok(file) => file,
        Err(crate::store::StoreError::NoSuchFile(_)) => return Err(not_found()),
        Err(err) => return Err(err.into()),
    };
    let blob = &file.blob;
    let (path, content_type, etag) = match variant {
        Variant::Data => (
            state.files.dir.data(&blob.sha256),
            blob.content_type.clone(),
            format!("\"{}\"", blob.sha256),
        ),
        Variant::Thumb => {
            let thumb = blob
                .thumb
                .as_ref()
                .ok_or(FileError::NoThumb(file.id.clone()))?;
            (
                state.files.dir.thumb(&blob.sha256),
                thumb.content_type.clone(),
                format!("\"{}.thumb\"", blob.sha256),
            )
        }
    };
    let response = match serve(&path, &content_type, &etag, &file.name, headers).await {
        // A pruning removed the bytes since the check: the file is gone.
        Err(FileError::Io(err)) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_found());
        }
        other => other?,
    };
    state.metrics.file_downloads.inc();
    Ok(response)
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// Serves the bytes at `path`: whole, one range, or 304.
async fn serve(
    path: &std::path::Path,
    content_type: &str,
    etag: &str,
    name: &str,
    headers: &HeaderMap,
) -> Result<Response, FileError> {
    let mut response = Response::builder()
        .header(header::ETAG, etag)
        // Content-addressed: the bytes behind a URL never change.
        .header(
            header::CACHE_CONTROL,
            "private, max-age=31536000, immutable",
        )
        .header(header::ACCEPT_RANGES, "bytes");
    if not_modified(headers, etag) {
        return Ok(response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response"));
    }
    let mut file = tokio::fs::File::open(path).await.map_err(FileError::Io)?;
    let size = file.metadata().await.map_err(FileError::Io)?.len();
    // `If-Range` with another validator: the client's copy is stale, send it all.
    let range_applies = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        // A Range that does not parse is ignored, as RFC 9110 says.
        Some(value) if range_applies => match http_range_header::parse_range_header(value) {
            Ok(parsed) => match parsed.validate(size) {
                // Several ranges would need a multipart body; the whole file is as correct.
                Ok(ranges) if ranges.len() == 1 => Some(ranges[0].clone()),
                Ok(_) => None,
                Err(_) => return Err(FileError::Range(size)),
            },
            Err(_) => None,
        },
        _ => None,
    };
    let (start, len) = match &range {
        Some(r) => (*r.start(), r.end() - r.start() + 1),
        None => (0, size),
    };
    if let Some(r) = &range {
        response = response.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", r.start(), r.end()),
        );
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(FileError::Io)?;
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file.take(len),
        64 * 1024,
    ));
    Ok(response
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_DISPOSITION, disposition(content_type, name))
        // Never let a browser run an uploaded page or script on the broker's origin.
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "sandbox; default-src 'none'",
        )
        .body(body)
        .expect("valid response"))
}

/// `inline` for pictures a browser shows, `attachment` for everything else; the name as
/// ASCII and as UTF-8 (RFC 6266).
fn disposition(content_type: &str, name: &str) -> HeaderValue {
    let kind = match content_type {
        "image/jpeg" | "image/png" | "image/gif" | "image/webp" => "inline",
        _ => "attachment",
    };
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let utf8 = percent_encoding::utf8_percent_encode(name, RFC5987).to_string();
    HeaderValue::from_str(&format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{utf8}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// Everything but RFC 5987's attr-char is percent-encoded.
const RFC5987: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_carry_both_names() {
        let v = disposition("image/png", "straße \"1\".png");
        assert_eq!(
            v.to_str().unwrap(),
            "inline; filename=\"stra_e _1_.png\"; filename*=UTF-8''stra%C3%9Fe%20%221%22.png"
        );
        assert!(
            disposition("text/html", "x.html")
                .to_str()
                .unwrap()
                .starts_with("attachment;")
        );
    }

    #[test]
    fn bearer_tokens_and_etags_are_read_leniently() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"y\""),
        );
        assert!(not_modified(&headers, "\"y\""));
        assert!(!not_modified(&headers, "\"z\""));
    }
}

//! The HTTP side of files: `POST /files`, `GET /files/{id}`, `GET /files/{id}/thumb`.
//!
//! Uploads need a user token (`Authorization: Bearer`). Downloads need a user token of a person
//! that may read the file, or a signed URL; anyone else gets 404 — the same answer as for a
//! file that does not exist, so ids cannot be probed. Downloads support `Range`, `ETag` /
//! `If-None-Match` and `If-Range`.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::upload::{Received, TempFile, bounded, drain, receive};
use super::{FileError, Variant, attachment, clean_name, media, new_file_id};
use crate::api::{ApiError, method_not_allowed, refusal};
use crate::auth::TokenHash;
use crate::protocol::{BackendResponse, ErrorCode, UploadBody};
use crate::state::{ServerState, now_millis};
use crate::store::{BlobMeta, FileRecord, Identity, NewFile, PersonId, Staged};

/// The routes, merged into the server's.
pub fn routes() -> axum::Router<Arc<ServerState>> {
    axum::Router::new()
        .route(
            "/files",
            post(upload).fallback(method_not_allowed("POST", "use POST on this path")),
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

fn failure(state: &ServerState, op: &str, err: FileError) -> Response {
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

async fn identify(state: &ServerState, headers: &HeaderMap) -> Result<Identity, FileError> {
    let token = bearer(headers).ok_or(FileError::NoToken)?;
    match state
        .store
        .identify(TokenHash::of(token), now_millis())
        .await
    {
        Ok(identity) => Ok(identity),
        Err(crate::store::StoreError::AuthFailed(_)) => Err(FileError::BadToken),
        Err(err) => Err(err.into()),
    }
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    /// The file's name, for a raw body.
    name: Option<String>,
}

/// `POST /files`.
async fn upload(
    State(state): State<Arc<ServerState>>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Response {
    match upload_inner(&state, query, request).await {
        Ok(file) => Json(BackendResponse {
            op: "upload".into(),
            result: true,
            id: None,
            body: UploadBody {
                file: attachment(&file),
            },
        })
        .into_response(),
        Err(err) => failure(&state, "upload", err),
    }
}

async fn upload_inner(
    state: &Arc<ServerState>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<FileRecord, FileError> {
    let Query(query) = query.map_err(|err| FileError::BadQuery(err.body_text()))?;
    let identity = identify(state, request.headers()).await?;
    let limit = state.config.max_file_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit + MULTIPART_OVERHEAD) {
        // Refused before a byte is stored. A client that waits for `100 Continue` sends
        // nothing more; any other is read to the end (bounded) so that it reads the refusal.
        let expects_continue = request
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !expects_continue {
            drain(&mut request.into_body().into_data_stream()).await;
        }
        return Err(FileError::TooLarge { limit });
    }
    let dir = state.files.dir.tmp();
    let stall = state.config.idle_timeout;
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let (received, name) = if is_multipart {
        // The whole multipart body is bounded too: form fields and boundaries count, and a
        // stall anywhere ends it.
        let (parts, body) = request.into_parts();
        let body = bounded(body.into_data_stream(), limit + MULTIPART_OVERHEAD, stall);
        let request = Request::from_parts(parts, Body::from_stream(body));
        let mut multipart = Multipart::from_request(request, state)
            .await
            .map_err(|err| FileError::Interrupted(err.body_text()))?;
        let (received, name) = loop {
            let mut field = multipart
                .next_field()
                .await
                .map_err(|err| FileError::Interrupted(err.body_text()))?
                .ok_or(FileError::NoFilePart)?;
            if field.file_name().is_none() && field.name() != Some("file") {
                continue; // another form field
            }
            let name = field.file_name().map(str::to_string).or(query.name.clone());
            let received = receive(&mut field, &dir, limit, stall).await;
            if let Err(FileError::TooLarge { .. }) = received {
                drain(&mut field).await;
            }
            break (received, name);
        };
        // Whatever follows the file (more fields, the closing boundary) is read, so the client
        // reads the answer instead of a reset.
        let rest = async {
            while let Ok(Some(mut field)) = multipart.next_field().await {
                drain(&mut field).await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), rest).await;
        (received?, name)
    } else {
        let name = query
            .name
            .clone()
            .or_else(|| disposition_name(request.headers()));
        let mut body = request.into_body().into_data_stream();
        let received = receive(&mut body, &dir, limit, stall).await;
        if let Err(FileError::TooLarge { .. }) = received {
            drain(&mut body).await;
        }
        (received?, name)
    };
    let name = clean_name(name.as_deref().unwrap_or_default());
    store_upload(state, identity.person, name, received).await
}

/// How long an upload waits for its turn to decode an image before it is refused as busy.
const DECODE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Slack for multipart boundaries and headers around a file of exactly the limit.
const MULTIPART_OVERHEAD: u64 = 16 * 1024;

/// The `filename` of a `Content-Disposition` request header.
fn disposition_name(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_DISPOSITION)?.to_str().ok()?;
    value.split(';').find_map(|part| {
        let (key, value) = part.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("filename")
            .then(|| value.trim().trim_matches('"').to_string())
    })
}

/// Learns what the bytes are (once per distinct content), then records the upload.
async fn store_upload(
    state: &Arc<ServerState>,
    uploader: PersonId,
    name: String,
    received: Received,
) -> Result<FileRecord, FileError> {
    let Received {
        data,
        sha256,
        size,
        head,
    } = received;
    let (blob, thumb) = match state.store.blob(&sha256).await? {
        // The same bytes are stored: their facts and preview are reused.
        Some(blob) => (blob, None),
        None => {
            let (content_type, format) = media::sniff(&head);
            let mut blob = BlobMeta {
                sha256: sha256.clone(),
                size,
                content_type,
                dimensions: None,
                thumb: None,
                blurhash: None,
            };
            let mut thumb = None;
            if let Some(format) = format {
                let permit =
                    tokio::time::timeout(DECODE_WAIT, state.files.decoding.clone().acquire_owned())
                        .await
                        .map_err(|_| FileError::Busy)?
                        .map_err(|_| FileError::Busy)?;
                let source = data.path().to_path_buf();
                let target = TempFile::new(&state.files.dir.tmp(), "thumb");
                // The permit and the preview's file go with the decode: if this request is
                // dropped (the client left), the decode still holds its permit until it ends,
                // and its preview is deleted with the unclaimed result.
                let (facts, target) = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    (media::inspect(&source, format, target.path()), target)
                })
                .await
                .map_err(|err| FileError::Io(std::io::Error::other(err)))?;
                let facts = facts?;
                blob.dimensions = Some(facts.dimensions);
                blob.thumb = Some(facts.thumb);
                blob.blurhash = Some(facts.blurhash);
                thumb = Some(target);
            }
            (blob, thumb)
        }
    };
    let file = NewFile {
        id: new_file_id(),
        name,
        uploader,
        ts: now_millis(),
        blob,
        staged: Staged {
            data: data.path().to_path_buf(),
            thumb: thumb.as_ref().map(|t| t.path().to_path_buf()),
        },
    };
    let record = state.store.add_file(file).await?;
    state.metrics.files_uploaded.inc();
    state.metrics.file_bytes_uploaded.inc_by(size);
    // `data` and `thumb` drop here: already moved into place (or removed) by the store.
    Ok(record)
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
            Err(FileError::BadToken) => return Err(not_found()),
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

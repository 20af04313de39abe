//! `POST /files`: an upload is admitted (the person's upload rate, concurrency and quota, all
//! before a byte of the body is stored), received to a temporary file, learnt (type, image
//! facts, preview) and recorded by the store, which checks the quota again in the transaction
//! that records it. A refused upload leaves nothing: no row, no bytes, no temporary file.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::http::{failure, identify};
use super::upload::{Received, TempFile, bounded, drain, receive};
use super::{FileError, attachment, clean_name, media, new_file_id};
use crate::protocol::{BackendResponse, UploadBody};
use crate::state::{ServerState, now_millis};
use crate::store::{BlobMeta, FileRecord, NewFile, PersonId, Staged, StoreError, UploadQuota};

#[derive(Debug, Deserialize)]
pub(super) struct UploadQuery {
    /// The file's name, for a raw body.
    name: Option<String>,
}

/// How long an upload waits for its turn to decode an image before it is refused as busy.
const DECODE_WAIT: Duration = Duration::from_secs(30);

/// Slack for multipart boundaries and headers around a file of exactly the limit.
const MULTIPART_OVERHEAD: u64 = 16 * 1024;

/// The window the upload quota counts.
const QUOTA_WINDOW_MS: i64 = 86_400_000;

/// `POST /files`.
pub(super) async fn upload(
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

/// Refuses an upload before its body is read: a client that waits for `100 Continue` sends
/// nothing more; any other is read to the end (bounded) so that it reads the refusal.
async fn refuse_unread(request: Request, err: FileError) -> FileError {
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects_continue {
        drain(&mut request.into_body().into_data_stream()).await;
    }
    err
}

async fn upload_inner(
    state: &Arc<ServerState>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<FileRecord, FileError> {
    let Query(query) = query.map_err(|err| FileError::BadQuery(err.body_text()))?;
    let identity = identify(state, request.headers()).await?;
    let person = identity.person;
    // Held until the upload is answered (or dropped): the person's uploads in progress.
    let _slot = match state.files.gate.admit(person) {
        Ok(slot) => slot,
        Err(err) => return Err(refuse_unread(request, err).await),
    };
    let now = now_millis();
    let quota = UploadQuota {
        bytes: state.config.upload_quota_bytes,
        since: now.saturating_sub(QUOTA_WINDOW_MS),
    };
    let used = state.store.uploaded_since(person, quota.since).await?;
    let room = quota.bytes.saturating_sub(used);
    let over_quota = FileError::QuotaExceeded {
        quota: quota.bytes,
        used,
    };
    let max_file = state.config.max_file_bytes;
    // The most this upload may be: the file limit, or what is left of the quota.
    let limit = max_file.min(room);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if room == 0 {
        return Err(refuse_unread(request, over_quota).await);
    }
    if declared.is_some_and(|n| n > limit + MULTIPART_OVERHEAD) {
        let err = if limit < max_file {
            over_quota
        } else {
            FileError::TooLarge { limit }
        };
        return Err(refuse_unread(request, err).await);
    }
    // Over `limit` while streaming: over the quota when that is what `limit` is.
    let too_large = |err: FileError| match err {
        FileError::TooLarge { .. } if limit < max_file => FileError::QuotaExceeded {
            quota: quota.bytes,
            used,
        },
        other => other,
    };
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
        let _ = tokio::time::timeout(Duration::from_secs(5), rest).await;
        (received.map_err(too_large)?, name)
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
        (received.map_err(too_large)?, name)
    };
    let name = clean_name(name.as_deref().unwrap_or_default());
    match store_upload(state, person, name, received, quota).await {
        Err(FileError::Store(StoreError::QuotaExceeded { quota, used })) => {
            Err(FileError::QuotaExceeded { quota, used })
        }
        other => other,
    }
}

/// The `filename` of a `Content-Disposition` request header.
fn disposition_name(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_DISPOSITION)?.to_str().ok()?;
    value.split(';').find_map(|part| {
        let (key, value) = part.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("filename")
            .then(|| value.trim().trim_matches('"').to_string())
    })
}

/// Learns what the bytes are (once per distinct content and person), then records the upload.
///
/// Dedupe is per person: unless the uploader's own person stored these bytes before, the
/// upload does all the work of new bytes (sniffing, decoding, a preview), even when another
/// person stored them, so neither the answer nor its timing says whether someone else has the
/// file (SECURITY.md). Only the disk copy is shared: the store keeps one copy of the bytes.
async fn store_upload(
    state: &Arc<ServerState>,
    uploader: PersonId,
    name: String,
    received: Received,
    quota: UploadQuota,
) -> Result<FileRecord, FileError> {
    let Received {
        data,
        sha256,
        size,
        head,
    } = received;
    let (blob, thumb) = match state.store.own_blob(&sha256, uploader).await? {
        // This person stored the same bytes: their facts and preview are reused.
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
                let turn = state.files.gate.decode_turn(uploader, DECODE_WAIT).await?;
                let source = data.path().to_path_buf();
                let target = TempFile::new(&state.files.dir.tmp(), "thumb");
                // The turn and the preview's file go with the decode: if this request is
                // dropped (the client left), the decode still holds its turn until it ends,
                // and its preview is deleted with the unclaimed result.
                let (facts, target) = tokio::task::spawn_blocking(move || {
                    let _turn = turn;
                    (media::inspect(&source, format, target.path()), target)
                })
                .await
                .map_err(|err| FileError::Io(std::io::Error::other(err)))?;
                let facts = facts?;
                state.metrics.file_previews.inc();
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
        quota,
    };
    let record = state.store.add_file(file).await?;
    state.metrics.files_uploaded.inc();
    state.metrics.file_bytes_uploaded.inc_by(size);
    // `data` and `thumb` drop here: already moved into place (or removed) by the store.
    Ok(record)
}

//! Files: uploads streamed to disk and stored by content, image previews, attachments, and
//! authorized downloads.
//!
//! Bytes live under `<data dir>/files/`, named by their SHA-256 (`ab/abcdef…`), with an image's
//! preview beside them (`…​.thumb`); the store keeps what is known of them (the `blobs` table),
//! every upload (`files`: id, name, uploader) and which messages carry which files. An upload is
//! written to `files/tmp/` first and moved into place by the store's writer, inside the
//! transaction that records it, so the same bytes uploaded twice are kept once and a pruning
//! cannot race an upload of the same bytes.
//!
//! HTTP: `POST /files` (upload), `GET /files/{id}` and `GET /files/{id}/thumb` (download, with a
//! user token or a signed URL from the `file_url` frame). See `proto/files.md`.

pub mod gate;
pub mod http;
pub mod media;
mod post;
pub mod signing;
mod upload;

use std::path::Path;
use std::time::Duration;

use axum::http::StatusCode;

use crate::protocol::ErrorCode;
use crate::store::StoreError;

// The blob layout and the attachment shape belong to the store (it moves uploads into place
// and writes attachments into messages); they are re-exported here for the file service.
pub use crate::store::blobs::{BlobDir, attachment, file_url, thumb_url};

pub use signing::{UrlSigner, Variant};

/// The file service's shared parts, held in the server state.
#[derive(Debug)]
pub struct Files {
    /// Where the bytes live.
    pub dir: BlobDir,
    /// Signs download URLs.
    pub signer: UrlSigner,
    /// Per-person upload rate and concurrency, and turns at the image decoder.
    pub gate: gate::UploadGate,
}

/// Images decoded at once in all: decoding is memory-hungry (up to
/// [`media::MAX_DECODE_BYTES`] each), so this bounds the broker's memory.
pub const DECODERS: usize = 1;

impl Files {
    /// The file service of a data dir; removes what interrupted uploads left. `per_minute` and
    /// `concurrency` are the per-person upload limits.
    pub fn open(
        data_dir: &Path,
        url_key: [u8; 32],
        per_minute: u32,
        concurrency: usize,
    ) -> std::io::Result<Files> {
        let dir = BlobDir::new(data_dir);
        dir.prepare()?;
        Ok(Files {
            dir,
            signer: UrlSigner::new(url_key),
            gate: gate::UploadGate::new(per_minute, concurrency, DECODERS),
        })
    }
}

/// Why an upload or download was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// No `Authorization` header.
    #[error(
        "send the user's token as `Authorization: Bearer <token>` (or use a signed URL from `file_url`)"
    )]
    NoToken,
    /// The token is unknown, revoked or expired.
    #[error(
        "authentication failed: the token is unknown, revoked or expired; get a new one from the app's backend"
    )]
    BadToken,
    /// The token was issued for another appid than the request's `Octet-Appid` header names
    /// (or the header is empty).
    #[error(
        "authentication failed: the token was not issued for the appid the Octet-Appid header names; send the appid the token was issued for, or no Octet-Appid header"
    )]
    WrongAppid,
    /// No such file for this reader (or an invalid signed URL): the same answer either way.
    #[error(
        "no file {0} that this token may read (or the signed link expired; ask for a new one with file_url)"
    )]
    NotFound(String),
    /// The file has no preview.
    #[error("file {0} has no preview; only JPEG, PNG, WebP and GIF images get one")]
    NoThumb(String),
    /// The upload is over the size limit.
    #[error("the file is larger than the limit of {limit} bytes (--max-file-mib)")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Nothing was uploaded.
    #[error("the file is empty; send its bytes as the request body or as a multipart field")]
    Empty,
    /// The multipart body has no file field.
    #[error("the multipart body has no file field; send one field named `file` (with a filename)")]
    NoFilePart,
    /// The body could not be read to its end.
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    /// No bytes arrived for too long.
    #[error("the upload stalled: no bytes for {0:?}")]
    Stalled(Duration),
    /// The bytes say image, but it cannot be decoded.
    #[error("not a readable {format} image: {reason}")]
    BadImage {
        /// The sniffed type.
        format: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// The image's dimensions or decoded size are over the limits.
    #[error("the image is too large to process ({0}); the limits are {max_side} px a side and {max_pixels} pixels", max_side = media::MAX_SIDE, max_pixels = media::MAX_PIXELS)]
    ImageTooLarge(String),
    /// The query string could not be read.
    #[error("bad query string: {0}")]
    BadQuery(String),
    /// Another image has been decoding for too long.
    #[error("the broker is busy making previews of other images; retry in a minute")]
    Busy,
    /// The upload would take the person over its daily upload quota.
    #[error(
        "this upload would take the person over its upload quota of {quota} bytes a day ({used} bytes uploaded in the last 24 hours); upload it later, or ask the operator to raise --upload-quota-mib"
    )]
    QuotaExceeded {
        /// The quota in bytes.
        quota: u64,
        /// Bytes uploaded in the window before this upload.
        used: u64,
    },
    /// The person started more uploads a minute than allowed.
    #[error(
        "more than {per_minute} uploads a minute from this person (--upload-rate); retry in {} s", retry_after.as_secs()
    )]
    UploadRate {
        /// The limit.
        per_minute: u32,
        /// When the next upload is allowed.
        retry_after: Duration,
    },
    /// The person has as many uploads in progress as allowed.
    #[error(
        "{0} uploads of this person are already in progress (--upload-concurrency); wait for one to finish"
    )]
    TooManyUploads(usize),
    /// The `Range` asks for bytes past the end.
    #[error("the range is outside the file's {0} bytes")]
    Range(u64),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing the bytes failed.
    #[error("file storage: {0}")]
    Io(std::io::Error),
}

impl FileError {
    /// The stable code and HTTP status a client sees.
    pub fn code(&self) -> (ErrorCode, StatusCode) {
        match self {
            FileError::NoToken | FileError::BadToken | FileError::WrongAppid => {
                (ErrorCode::AuthFailed, StatusCode::UNAUTHORIZED)
            }
            FileError::NotFound(_) | FileError::NoThumb(_) => {
                (ErrorCode::NotFound, StatusCode::NOT_FOUND)
            }
            FileError::TooLarge { .. } => (ErrorCode::FileTooLarge, StatusCode::PAYLOAD_TOO_LARGE),
            FileError::Empty | FileError::NoFilePart | FileError::BadQuery(_) => {
                (ErrorCode::BadRequest, StatusCode::BAD_REQUEST)
            }
            FileError::Interrupted(_) | FileError::Stalled(_) => {
                (ErrorCode::BadRequest, StatusCode::BAD_REQUEST)
            }
            FileError::BadImage { .. } => (ErrorCode::BadImage, StatusCode::UNPROCESSABLE_ENTITY),
            FileError::ImageTooLarge(_) => {
                (ErrorCode::ImageTooLarge, StatusCode::UNPROCESSABLE_ENTITY)
            }
            FileError::Busy => (ErrorCode::ServerFull, StatusCode::SERVICE_UNAVAILABLE),
            FileError::QuotaExceeded { .. }
            | FileError::Store(StoreError::QuotaExceeded { .. }) => {
                (ErrorCode::QuotaExceeded, StatusCode::PAYLOAD_TOO_LARGE)
            }
            FileError::UploadRate { .. } | FileError::TooManyUploads(_) => {
                (ErrorCode::RateLimited, StatusCode::TOO_MANY_REQUESTS)
            }
            FileError::Range(_) => (
                ErrorCode::RangeNotSatisfiable,
                StatusCode::RANGE_NOT_SATISFIABLE,
            ),
            FileError::Store(StoreError::NoSuchFile(_)) => {
                (ErrorCode::NotFound, StatusCode::NOT_FOUND)
            }
            FileError::Store(_) | FileError::Io(_) => {
                (ErrorCode::Internal, StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

/// A new, unguessable file id: `f_` and 128 random bits in hex.
pub fn new_file_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    format!("f_{}", hex::encode(bytes))
}

/// The longest file name kept, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// A file name as given by a client, made safe to store and to put in a header: the last path
/// component, without control characters, at most [`MAX_NAME_CHARS`]; `file` if nothing is left.
pub fn clean_name(given: &str) -> String {
    let last = given.rsplit(['/', '\\']).next().unwrap_or_default();
    let name: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_invisible_format(*c))
        .take(MAX_NAME_CHARS)
        .collect();
    let name = name.trim();
    if name.is_empty() || name == "." || name == ".." {
        "file".into()
    } else {
        name.to_string()
    }
}

/// Bidirectional overrides and zero-width or invisible characters: they make
/// `invoice\u{202E}fdp.exe` show as `invoiceexe.pdf`, and two addresses that differ only by
/// them look the same (file names drop them; addresses refuse them, `api::check_address`).
pub(crate) fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}'
        | '\u{00AD}' | '\u{034F}' | '\u{180E}' | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_paths_and_control_characters() {
        assert_eq!(clean_name("C:\\Users\\me\\photo.jpg"), "photo.jpg");
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("a\u{0}b\r\n.txt"), "ab.txt");
        assert_eq!(clean_name(""), "file");
        assert_eq!(clean_name(".."), "file");
        assert_eq!(
            clean_name(&"x".repeat(1000)).chars().count(),
            MAX_NAME_CHARS
        );
        assert_eq!(clean_name("résumé.pdf"), "résumé.pdf");
        assert_eq!(clean_name("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
    }

    #[test]
    fn file_ids_are_distinct_and_shaped() {
        let a = new_file_id();
        assert_eq!(a.len(), 34);
        assert!(a.starts_with("f_"));
        assert_ne!(a, new_file_id());
    }
}

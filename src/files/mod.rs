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

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::StatusCode;

use crate::protocol::{Attachment, ErrorCode, Thumb};
use crate::store::{FileRecord, StoreError};

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

/// Where the bytes of stored files live.
#[derive(Debug, Clone)]
pub struct BlobDir {
    root: PathBuf,
    /// `--sync full`: a blob moved into place is fsynced with the directories naming it.
    synced: bool,
}

impl BlobDir {
    /// The blob dir of a data dir.
    pub fn new(data_dir: &Path) -> BlobDir {
        BlobDir {
            root: data_dir.join("files"),
            synced: false,
        }
    }

    /// The same dir, with [`BlobDir::put`] fsyncing what it moves (`--sync full`).
    pub fn synced(mut self, synced: bool) -> BlobDir {
        self.synced = synced;
        self
    }

    /// The bytes of the blob `sha256` (64 hex digits, from the store).
    pub fn data(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(sha256)
    }

    /// The blob's image preview.
    pub fn thumb(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(format!("{sha256}.thumb"))
    }

    /// Where uploads are written until they are complete.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Creates the dirs and removes what interrupted uploads of an earlier run left.
    pub fn prepare(&self) -> std::io::Result<()> {
        let tmp = self.tmp();
        std::fs::create_dir_all(&tmp)?;
        for entry in std::fs::read_dir(&tmp)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(())
    }

    /// Every stored file (bytes and previews) with the blob it belongs to.
    pub fn entries(&self) -> std::io::Result<Vec<(String, PathBuf)>> {
        let mut found = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.root) else {
            return Ok(found); // nothing stored yet
        };
        for dir in dirs {
            let dir = dir?;
            if dir.file_name().len() != 2 || !dir.file_type()?.is_dir() {
                continue; // tmp/
            }
            for file in std::fs::read_dir(dir.path())? {
                let path = file?.path();
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let sha256 = name.trim_end_matches(".thumb").to_string();
                found.push((sha256, path));
            }
        }
        Ok(found)
    }

    /// Moves staged bytes (and preview) into place as the blob `sha256`. When synced, the
    /// files, their directory and (if it is new) the directory above are fsynced before this
    /// returns, so the commit that records the upload never names bytes a power loss can take.
    pub fn put(&self, sha256: &str, data: &Path, thumb: Option<&Path>) -> std::io::Result<()> {
        let target = self.data(sha256);
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        let new_dir = !parent.is_dir();
        std::fs::create_dir_all(&parent)?;
        if self.synced {
            // The upload fsynced the bytes when they arrived; again here, as the contract of
            // this method is not to rely on the caller for it.
            sync_path(data)?;
            if let Some(thumb) = thumb {
                sync_path(thumb)?;
            }
        }
        std::fs::rename(data, &target)?;
        if let Some(thumb) = thumb {
            std::fs::rename(thumb, self.thumb(sha256))?;
        }
        if self.synced {
            // A rename is durable once the directory holding the new name is; a new directory
            // once the one above it is.
            sync_path(&parent)?;
            if new_dir {
                sync_path(&self.root)?;
            }
        }
        Ok(())
    }

    /// Deletes a blob's bytes and preview.
    pub fn remove(&self, sha256: &str) {
        for path in [self.data(sha256), self.thumb(sha256)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "could not delete a pruned file")
                }
            }
        }
    }
}

/// fsyncs a file or directory (a directory is opened read-only, which Linux allows to fsync).
fn sync_path(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// The URL a file is downloaded from (relative to the broker's address).
pub fn file_url(id: &str) -> String {
    format!("/files/{id}")
}

/// The URL of a file's image preview.
pub fn thumb_url(id: &str) -> String {
    format!("/files/{id}/thumb")
}

/// A stored file as messages carry it.
pub fn attachment(file: &FileRecord) -> Attachment {
    let blob = &file.blob;
    Attachment {
        id: file.id.clone(),
        name: file.name.clone(),
        size: blob.size,
        content_type: blob.content_type.clone(),
        sha256: blob.sha256.clone(),
        width: blob.dimensions.map(|d| d.0),
        height: blob.dimensions.map(|d| d.1),
        url: file_url(&file.id),
        thumb: blob.thumb.as_ref().map(|t| Thumb {
            url: thumb_url(&file.id),
            width: t.width,
            height: t.height,
            content_type: t.content_type.clone(),
            size: t.size,
        }),
        blurhash: blob.blurhash.clone(),
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
    fn a_synced_put_moves_bytes_and_preview_into_a_new_dir() {
        let data_dir = tempfile::tempdir().unwrap();
        let blobs = BlobDir::new(data_dir.path()).synced(true);
        blobs.prepare().unwrap();
        let sha256 = "ab".repeat(32);
        let staged = blobs.tmp().join("x.part");
        let thumb = blobs.tmp().join("x.thumb");
        std::fs::write(&staged, b"bytes").unwrap();
        std::fs::write(&thumb, b"preview").unwrap();
        blobs.put(&sha256, &staged, Some(&thumb)).unwrap();
        assert_eq!(std::fs::read(blobs.data(&sha256)).unwrap(), b"bytes");
        assert_eq!(std::fs::read(blobs.thumb(&sha256)).unwrap(), b"preview");
        assert!(!staged.exists() && !thumb.exists());
    }

    #[test]
    fn file_ids_are_distinct_and_shaped() {
        let a = new_file_id();
        assert_eq!(a.len(), 34);
        assert!(a.starts_with("f_"));
        assert_ne!(a, new_file_id());
    }
}

//! Where stored files' bytes live and how a stored file looks inside a message.
//!
//! The store owns both: its writer moves an upload's bytes into place in the transaction that
//! records it and deletes a pruned blob's bytes after the commit, and a `send` writes each
//! file's attachment into the message. The file service (`crate::files`) uses them from here.
//!
//! Bytes live under `<data dir>/files/`, named by their SHA-256 (`ab/abcdef…`), with an image's
//! preview beside them (`….thumb`); uploads are written to `files/tmp/` first.

use std::path::{Path, PathBuf};

use super::FileRecord;
use crate::protocol::{Attachment, Thumb};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! The files' part of the SQLite store: blobs (stored bytes), files (uploads), the per-person
//! upload quota and dedupe, and the pruning of files no log references. Each function runs on
//! the writer (inside one savepoint) or on a reader; `sqlite/mod.rs` calls them from its `Store`
//! methods.

use std::collections::HashSet;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::log::HELD;
use crate::protocol::Millis;
use crate::store::{BlobDir, BlobMeta, FileRecord, NewFile, PersonId, StoreError, ThumbMeta};

/// Deletes stored bytes no `blobs` row names: left by a batch whose commit failed after its
/// upload was moved into place, or by a crash between a pruning's commit and its deletes.
pub(super) fn remove_orphans(conn: &Connection, blobs: &BlobDir) -> Result<(), StoreError> {
    let mut known = conn.prepare("SELECT 1 FROM blobs WHERE sha256 = ?1")?;
    for (sha256, path) in blobs.entries()? {
        if !known.exists([&sha256])? {
            tracing::info!(path = %path.display(), "removing stored bytes no file refers to");
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

const BLOB_COLUMNS: &str = "b.sha256, b.size, b.content_type, b.width, b.height, b.thumb_type,
     b.thumb_width, b.thumb_height, b.thumb_size, b.blurhash";

/// Maps [`BLOB_COLUMNS`] starting at column `at`.
fn blob_meta(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<BlobMeta> {
    let width: Option<u32> = r.get(at + 3)?;
    let height: Option<u32> = r.get(at + 4)?;
    let thumb_type: Option<String> = r.get(at + 5)?;
    Ok(BlobMeta {
        sha256: r.get(at)?,
        size: r.get(at + 1)?,
        content_type: r.get(at + 2)?,
        dimensions: width.zip(height),
        thumb: match thumb_type {
            Some(content_type) => Some(ThumbMeta {
                width: r.get(at + 6)?,
                height: r.get(at + 7)?,
                content_type,
                size: r.get(at + 8)?,
            }),
            None => None,
        },
        blurhash: r.get(at + 9)?,
    })
}

/// The blob `sha256` if `uploader` has a stored upload of it: the upload may skip the work of
/// learning what the bytes are. Another person's copy is not reported (dedupe per person).
pub(super) fn own_blob(
    conn: &Connection,
    sha256: &str,
    uploader: PersonId,
) -> Result<Option<BlobMeta>, StoreError> {
    let sql = format!(
        "SELECT {BLOB_COLUMNS} FROM blobs b WHERE b.sha256 = ?1
         AND EXISTS (SELECT 1 FROM files f WHERE f.sha256 = b.sha256 AND f.uploader = ?2)"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![sha256, uploader], |r| blob_meta(r, 0))
        .optional()?)
}

/// Bytes of `uploader`'s stored uploads made at or after `since`.
pub(super) fn uploaded_since(
    conn: &Connection,
    uploader: PersonId,
    since: Millis,
) -> Result<u64, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT coalesce(sum(b.size), 0) FROM files f JOIN blobs b ON b.sha256 = f.sha256
             WHERE f.uploader = ?1 AND f.created_at >= ?2",
        )?
        .query_row(params![uploader, since], |r| r.get(0))?)
}

fn find_blob(conn: &Connection, sha256: &str) -> Result<Option<BlobMeta>, StoreError> {
    let sql = format!("SELECT {BLOB_COLUMNS} FROM blobs b WHERE b.sha256 = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([sha256], |r| blob_meta(r, 0))
        .optional()?)
}

/// A file `reader` may read (`None`: anyone), else [`StoreError::NoSuchFile`] — the same answer
/// whether the file is missing or someone else's, so ids cannot be probed.
pub(super) fn readable_file(
    conn: &Connection,
    id: &str,
    reader: Option<PersonId>,
) -> Result<FileRecord, StoreError> {
    let sql = format!(
        "SELECT f.id, f.name, {BLOB_COLUMNS}
         FROM files f JOIN blobs b ON b.sha256 = f.sha256
         WHERE f.id = ?1 AND (?2 IS NULL OR f.uploader = ?2 OR EXISTS (
             SELECT 1 FROM message_files mf JOIN messages m ON m.mid = mf.mid
             WHERE mf.file_id = f.id AND (m.sender_person = ?2 OR m.recipient_person = ?2)))"
    );
    conn.prepare_cached(&sql)?
        .query_row(params![id, reader], |r| {
            Ok(FileRecord {
                id: r.get(0)?,
                name: r.get(1)?,
                blob: blob_meta(r, 2)?,
            })
        })
        .optional()?
        .ok_or_else(|| StoreError::NoSuchFile(id.to_string()))
}

pub(super) fn add_file(
    conn: &Connection,
    blobs: &BlobDir,
    doomed: &Mutex<HashSet<String>>,
    file: NewFile,
) -> Result<FileRecord, StoreError> {
    let NewFile {
        id,
        name,
        uploader,
        ts,
        mut blob,
        staged,
        quota,
    } = file;
    // Checked here, in the writer's transaction: uploads of one person running at once are
    // recorded one after the other, so together they cannot pass the quota.
    let used = uploaded_since(conn, uploader, quota.since)?;
    if used.saturating_add(blob.size) > quota.bytes {
        return Err(StoreError::QuotaExceeded {
            quota: quota.bytes,
            used,
        });
    }
    // The same bytes again take their blob back from a pruning in this same batch.
    doomed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&blob.sha256);
    match find_blob(conn, &blob.sha256)? {
        Some(stored) => {
            blob = stored;
            // Only the stored copy is kept.
            let _ = std::fs::remove_file(&staged.data);
            if let Some(thumb) = &staged.thumb {
                let _ = std::fs::remove_file(thumb);
            }
        }
        None => {
            // The upload found the blob stored, but a pruning removed it since: its preview
            // went with it and this upload made none.
            if staged.thumb.is_none() && !blobs.thumb(&blob.sha256).exists() {
                blob.thumb = None;
            }
            blobs.put(&blob.sha256, &staged.data, staged.thumb.as_deref())?;
            let (width, height) = blob.dimensions.unzip();
            let thumb = blob.thumb.as_ref();
            conn.prepare_cached(
                "INSERT INTO blobs (sha256, size, content_type, width, height, thumb_type,
                                    thumb_width, thumb_height, thumb_size, blurhash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                blob.sha256,
                blob.size,
                blob.content_type,
                width,
                height,
                thumb.map(|t| &t.content_type),
                thumb.map(|t| t.width),
                thumb.map(|t| t.height),
                thumb.map(|t| t.size),
                blob.blurhash,
                ts
            ])?;
        }
    }
    conn.prepare_cached(
        "INSERT INTO files (id, sha256, uploader, name, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, blob.sha256, uploader, name, ts])?;
    Ok(FileRecord { id, name, blob })
}

/// Removes files no retained event references — at once for files that were sent (their
/// messages' events are gone), after `unsent_before` for uploads never sent — then blobs no
/// file uses. Returns the number of files and the blobs to delete from disk after commit.
pub(super) fn prune_files(
    conn: &Connection,
    doomed: &Mutex<HashSet<String>>,
    unsent_before: Millis,
    max_files: usize,
) -> Result<(usize, Vec<String>), StoreError> {
    let files = conn
        .prepare_cached(&format!(
            "DELETE FROM files WHERE id IN (
               SELECT id FROM files WHERE
                 NOT EXISTS (SELECT 1 FROM message_files mf JOIN messages m ON m.mid = mf.mid
                             WHERE mf.file_id = files.id AND {HELD})
                 AND (created_at < ?1
                      OR EXISTS (SELECT 1 FROM message_files mf WHERE mf.file_id = files.id))
               LIMIT ?2)"
        ))?
        .execute(params![unsent_before, max_files as i64])?;
    let gone = conn
        .prepare_cached(
            "DELETE FROM blobs
             WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = blobs.sha256)
             RETURNING sha256",
        )?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    doomed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(gone.iter().cloned());
    Ok((files, gone))
}

//! Receiving an upload: the body is streamed to a temporary file while it is hashed and
//! counted, never held whole in memory. Whatever goes wrong — too large, interrupted, stalled,
//! the request dropped — the temporary file is removed ([`TempFile`]'s `Drop`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::FileError;
use super::media::SNIFF_BYTES;

/// A file in the upload dir that is deleted when dropped, unless it was moved away first.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// A name in `dir` no other upload uses.
    pub fn new(dir: &Path, suffix: &str) -> TempFile {
        TempFile {
            path: dir.join(format!("{}.{suffix}", super::new_file_id())),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // After a successful upload the store has moved the file away: nothing to remove.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A complete upload in the temporary dir.
#[derive(Debug)]
pub struct Received {
    /// The bytes.
    pub data: TempFile,
    /// Their SHA-256, hex.
    pub sha256: String,
    /// Their count.
    pub size: u64,
    /// The first bytes, for sniffing.
    pub head: Vec<u8>,
}

/// Streams `body` into a new file in `dir`: at most `limit` bytes, and never a pause longer
/// than `stall` between chunks (a slow-body attack would hold the socket and the file forever).
pub async fn receive<S, E>(
    body: &mut S,
    dir: &Path,
    limit: u64,
    stall: Duration,
) -> Result<Received, FileError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let data = TempFile::new(dir, "part");
    let file = tokio::fs::File::create(data.path())
        .await
        .map_err(FileError::Io)?;
    let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, file);
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    loop {
        let chunk = match tokio::time::timeout(stall, body.next()).await {
            Err(_) => return Err(FileError::Stalled(stall)),
            Ok(None) => break,
            Ok(Some(Err(err))) => return Err(FileError::Interrupted(err.to_string())),
            Ok(Some(Ok(chunk))) => chunk,
        };
        size += chunk.len() as u64;
        if size > limit {
            return Err(FileError::TooLarge { limit });
        }
        let room = SNIFF_BYTES.saturating_sub(head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..room]);
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(FileError::Io)?;
    }
    if size == 0 {
        return Err(FileError::Empty);
    }
    out.flush().await.map_err(FileError::Io)?;
    // A message may carry the file as soon as the upload is answered: the bytes must be on disk.
    out.get_ref().sync_all().await.map_err(FileError::Io)?;
    Ok(Received {
        data,
        sha256: hex::encode(hasher.finalize()),
        size,
        head,
    })
}

/// `body`, failing once more than `cap` bytes came or nothing came for `stall`: for bodies read
/// by a parser (multipart) rather than by [`receive`].
pub fn bounded<S, E>(
    body: S,
    cap: u64,
    stall: Duration,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    E: std::fmt::Display,
{
    futures::stream::unfold(Some((body, 0u64)), move |state| async move {
        let (mut body, seen) = state?;
        let failed = |err: std::io::Error| Some((Err(err), None));
        match tokio::time::timeout(stall, body.next()).await {
            Err(_) => failed(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no bytes for {stall:?}"),
            )),
            Ok(None) => None,
            Ok(Some(Err(err))) => failed(std::io::Error::other(err.to_string())),
            Ok(Some(Ok(chunk))) => {
                let seen = seen + chunk.len() as u64;
                if seen > cap {
                    failed(std::io::Error::other(format!(
                        "the body is over {cap} bytes"
                    )))
                } else {
                    Some((Ok(chunk), Some((body, seen))))
                }
            }
        }
    })
}

/// How long a refused upload's remaining body is read (and thrown away) before answering.
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// How much of it at most.
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;

/// Reads and discards what is left of a refused upload's body (bounded in time and bytes), so
/// the client, still sending, reads the refusal: closing a socket with unread data resets it,
/// and the client would see a reset instead of the answer.
pub async fn drain<S, E>(body: &mut S)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(
        parts: &[&'static [u8]],
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    fn leftovers(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test]
    async fn a_body_is_hashed_counted_and_kept_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let got = receive(
            &mut chunks(&[b"hello ", b"world"]),
            dir.path(),
            100,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(got.size, 11);
        assert_eq!(got.head, b"hello world");
        assert_eq!(
            got.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(std::fs::read(got.data.path()).unwrap(), b"hello world");
        drop(got);
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[tokio::test]
    async fn too_large_interrupted_and_empty_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let stall = Duration::from_secs(5);
        let err = receive(&mut chunks(&[b"0123456789", b"x"]), dir.path(), 10, stall).await;
        assert!(matches!(err, Err(FileError::TooLarge { limit: 10 })));
        let mut broken = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("connection reset")),
        ]);
        let err = receive(&mut broken, dir.path(), 10, stall).await;
        assert!(matches!(err, Err(FileError::Interrupted(_))));
        let err = receive(&mut chunks(&[]), dir.path(), 10, stall).await;
        assert!(matches!(err, Err(FileError::Empty)));
        let mut silent = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let err = receive(&mut silent, dir.path(), 10, Duration::from_millis(20)).await;
        assert!(matches!(err, Err(FileError::Stalled(_))));
        assert_eq!(leftovers(dir.path()), 0);
    }
}

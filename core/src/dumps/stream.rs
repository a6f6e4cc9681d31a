//! Reading a finished dump out of its file in constant memory.
//!
//! A thread of its own reads the file once, front to back, in [`CHUNK_SIZE`] pieces straight into
//! buffers that are then handed on (no second copy), hashes each piece with SHA-256, and passes it
//! through a channel of [`CHUNKS_IN_FLIGHT`] places: at most that many chunks exist at once,
//! whatever the dump's size, and a slow consumer slows the reads down.

use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{DumpError, DumpFile};

/// Bytes read from the file at a time.
pub const CHUNK_SIZE: usize = 1 << 20;

/// Chunks buffered between the reading thread and the consumer.
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// What the reading thread sends.
#[derive(Debug)]
enum Item {
    Chunk(Bytes),
    /// The whole file was read; its SHA-256, lowercase hex.
    End(String),
}

/// The size and hash of a dump that was read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpDigest {
    /// Bytes read (the file's size).
    pub bytes: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// The bytes of a dump file, chunk by chunk. Dropping it stops the reading thread.
#[derive(Debug)]
pub struct DumpStream {
    receiver: mpsc::Receiver<Result<Item, DumpError>>,
    size: u64,
    read: u64,
    digest: Option<DumpDigest>,
}

impl DumpStream {
    /// Starts reading `dump` on a thread of its own.
    pub fn start(dump: DumpFile) -> Result<DumpStream, DumpError> {
        let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let size = dump.size;
        std::thread::Builder::new()
            .name("dump-reader".to_owned())
            .spawn(move || read_file(dump, sender))
            .map_err(|error| {
                DumpError::Internal(format!("cannot start the dump reader: {error}"))
            })?;
        Ok(DumpStream {
            receiver,
            size,
            read: 0,
            digest: None,
        })
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next chunk, or `None` once the whole file was read (then [`DumpStream::digest`] is
    /// set). A file that ends early is an error, never a short success.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, DumpError> {
        if self.digest.is_some() {
            return Ok(None);
        }
        match self.receiver.recv().await {
            Some(Ok(Item::Chunk(chunk))) => {
                self.read += chunk.len() as u64;
                Ok(Some(chunk))
            }
            Some(Ok(Item::End(sha256))) => {
                self.digest = Some(DumpDigest {
                    bytes: self.read,
                    sha256,
                });
                Ok(None)
            }
            Some(Err(error)) => Err(error),
            None => Err(DumpError::Internal(
                "the dump reader stopped before the end of the file".to_owned(),
            )),
        }
    }

    /// Size and hash, once [`DumpStream::next_chunk`] returned `None`.
    pub fn digest(&self) -> Option<&DumpDigest> {
        self.digest.as_ref()
    }
}

/// The reading thread: every byte of the file, once, then the hash.
fn read_file(dump: DumpFile, sender: mpsc::Sender<Result<Item, DumpError>>) {
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    while offset < dump.size {
        let want = CHUNK_SIZE.min(usize::try_from(dump.size - offset).unwrap_or(CHUNK_SIZE));
        let mut buffer = BytesMut::zeroed(want);
        let mut filled = 0;
        while filled < want {
            match dump
                .file
                .read_at(&mut buffer[filled..], offset + filled as u64)
            {
                Ok(0) => {
                    let _ = sender.blocking_send(Err(DumpError::Invalid(format!(
                        "the dump file ended after {} of its {} bytes",
                        offset + filled as u64,
                        dump.size
                    ))));
                    return;
                }
                Ok(read) => filled += read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let _ = sender.blocking_send(Err(DumpError::Invalid(format!(
                        "reading the dump file failed at byte {}: {error}",
                        offset + filled as u64
                    ))));
                    return;
                }
            }
        }
        hasher.update(&buffer);
        offset += want as u64;
        if sender
            .blocking_send(Ok(Item::Chunk(buffer.freeze())))
            .is_err()
        {
            return;
        }
    }
    let hash = hasher.finalize();
    let hex = hash.iter().map(|byte| format!("{byte:02x}")).collect();
    let _ = sender.blocking_send(Ok(Item::End(hex)));
}

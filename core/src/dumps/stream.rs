//! Reading a finished dump out of its file in constant memory.
//!
//! A thread of its own reads the file once, front to back, in [`CHUNK_SIZE`] pieces straight into
//! buffers that are then handed on (no second copy), through a channel of [`CHUNKS_IN_FLIGHT`]
//! places: at most that many chunks exist at once, whatever the dump's size, and a slow consumer
//! slows the reads down. (The pipeline's summary hashes the bytes as they pass.)

use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::{DumpError, DumpFile};

/// Bytes read from the file at a time.
pub const CHUNK_SIZE: usize = 1 << 20;

/// Chunks buffered between the reading thread and the consumer.
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// The bytes of a dump file, chunk by chunk. Dropping it stops the reading thread.
#[derive(Debug)]
pub struct DumpStream {
    receiver: mpsc::Receiver<Result<Bytes, DumpError>>,
    size: u64,
    read: u64,
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
        })
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next chunk, or `None` once every byte of the file was read. A file that ends early is
    /// an error, never a short success.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, DumpError> {
        match self.receiver.recv().await {
            Some(Ok(chunk)) => {
                self.read += chunk.len() as u64;
                Ok(Some(chunk))
            }
            Some(Err(error)) => Err(error),
            None if self.read == self.size => Ok(None),
            None => Err(DumpError::Internal(format!(
                "the dump reader stopped after {} of {} bytes",
                self.read, self.size
            ))),
        }
    }
}

/// The reading thread: every byte of the file, once.
fn read_file(dump: DumpFile, sender: mpsc::Sender<Result<Bytes, DumpError>>) {
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
        offset += want as u64;
        if sender.blocking_send(Ok(buffer.freeze())).is_err() {
            return;
        }
    }
}

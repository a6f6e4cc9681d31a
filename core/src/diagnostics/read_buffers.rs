//! Read buffers for a session's socket that are reused once every chunk cut from them is dropped.
//!
//! A trace is read in 256 KiB pieces that travel on as [`Bytes`] (to the validator thread, to an
//! HTTP body, to an egress upload). Allocating a fresh buffer per read costs a page fault per 4 KiB
//! and cold caches on every copy; a few warm buffers that come back when their last [`Bytes`] is
//! dropped cost neither. The pool is bounded, so memory stays constant whatever the trace size.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Size of one read from the session socket.
pub(crate) const READ_SIZE: usize = 256 * 1024;

/// Buffers kept for reuse; more may be in flight, they are simply not kept when they come back.
const POOLED: usize = 16;

/// Reads shorter than this are copied out, so that a slow trace's small reads do not each hold a
/// whole read buffer while they are queued.
const COPY_BELOW: usize = 16 * 1024;

/// The free buffers of one session.
#[derive(Debug, Default)]
pub(crate) struct ReadBuffers {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl ReadBuffers {
    /// Reads once from `source` into a pooled buffer; `Ok(None)` at the end of the stream.
    pub(crate) async fn read_chunk<R>(&self, source: &mut R) -> std::io::Result<Option<Bytes>>
    where
        R: AsyncRead + Unpin,
    {
        let mut buffer = self.take();
        let read = source.read(&mut buffer).await;
        self.chunk_of(buffer, read)
    }

    /// [`ReadBuffers::read_chunk`] for a blocking `source`, on a thread that may block.
    pub(crate) fn read_chunk_blocking<R>(&self, source: &mut R) -> std::io::Result<Option<Bytes>>
    where
        R: std::io::Read,
    {
        let mut buffer = self.take();
        let read = source.read(&mut buffer);
        self.chunk_of(buffer, read)
    }

    /// The chunk that `read` put at the start of `buffer`.
    fn chunk_of(
        &self,
        buffer: Vec<u8>,
        read: std::io::Result<usize>,
    ) -> std::io::Result<Option<Bytes>> {
        let read = match read {
            Ok(0) => {
                self.give_back(buffer);
                return Ok(None);
            }
            Ok(read) => read,
            Err(error) => {
                self.give_back(buffer);
                return Err(error);
            }
        };
        if read < COPY_BELOW {
            let chunk = Bytes::copy_from_slice(buffer.get(..read).unwrap_or_default());
            self.give_back(buffer);
            return Ok(Some(chunk));
        }
        Ok(Some(Bytes::from_owner(PooledChunk {
            buffer,
            len: read,
            home: Arc::downgrade(&self.free),
        })))
    }

    fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        reused.unwrap_or_else(|| vec![0; READ_SIZE])
    }

    fn give_back(&self, buffer: Vec<u8>) {
        return_to(&self.free, buffer);
    }
}

fn return_to(free: &Mutex<Vec<Vec<u8>>>, buffer: Vec<u8>) {
    if let Ok(mut free) = free.lock()
        && free.len() < POOLED
    {
        free.push(buffer);
    }
}

/// A read buffer holding one chunk; it goes back to its session's pool when dropped (or is freed
/// if the session is gone).
struct PooledChunk {
    buffer: Vec<u8>,
    len: usize,
    home: Weak<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        self.buffer.get(..self.len).unwrap_or_default()
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade() {
            return_to(&home, std::mem::take(&mut self.buffer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_buffer_comes_back_once_its_chunk_is_dropped() {
        let buffers = ReadBuffers::default();
        let data = vec![7u8; READ_SIZE];
        let mut source: &[u8] = &data;
        let chunk = buffers.read_chunk(&mut source).await.unwrap().unwrap();
        assert_eq!(chunk.len(), READ_SIZE);
        assert!(chunk.iter().all(|byte| *byte == 7));
        assert_eq!(buffers.free.lock().unwrap().len(), 0);
        let shared = chunk.slice(10..20);
        drop(chunk);
        assert_eq!(
            buffers.free.lock().unwrap().len(),
            0,
            "a slice still holds it"
        );
        drop(shared);
        assert_eq!(buffers.free.lock().unwrap().len(), 1);
        assert!(buffers.read_chunk(&mut source).await.unwrap().is_none());
        assert_eq!(buffers.free.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn small_reads_are_copied_and_keep_the_buffer() {
        let buffers = ReadBuffers::default();
        let mut source: &[u8] = b"nettrace";
        let chunk = buffers.read_chunk(&mut source).await.unwrap().unwrap();
        assert_eq!(&chunk[..], b"nettrace");
        assert_eq!(buffers.free.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn chunks_outliving_the_pool_are_freed() {
        let buffers = ReadBuffers::default();
        let data = vec![1u8; READ_SIZE];
        let mut source: &[u8] = &data;
        let chunk = buffers.read_chunk(&mut source).await.unwrap().unwrap();
        let pool = Arc::downgrade(&buffers.free);
        drop(buffers);
        assert!(
            pool.upgrade().is_none(),
            "the pool is gone with its session"
        );
        assert_eq!(chunk.len(), READ_SIZE);
        assert!(
            chunk.iter().all(|byte| *byte == 1),
            "the chunk still reads its bytes"
        );
        drop(chunk);
    }
}

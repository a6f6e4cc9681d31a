//! A trace's summary, computed while the trace streams: every event read by the
//! [`NettraceValidator`], and the SHA-256 of the bytes. [`TraceDigester`] does the work on the
//! caller's thread; [`TraceSummarizer`] runs it on a thread of its own.
//!
//! Reading every event and hashing every byte costs far more than moving the bytes (SHA-256 alone
//! runs at about 1.7 GiB/s on one core with SHA extensions), so where the reads and the sink run
//! on async tasks it stays off them, on the summarizer's thread. Chunks are shared (`Bytes`), not
//! copied; the queue is bounded, so a summarizer that falls behind slows the reads rather than
//! growing memory, and it hands its room back in batches (see `chunk_queue`), so that the feeder
//! wakes once per batch.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::DiagnosticsError;
use super::chunk_queue::{ChunkReceiver, ChunkSender, chunk_queue};
use super::nettrace::{NettraceSummary, NettraceValidator};

/// What a whole, well-formed trace contains, and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceDigest {
    /// The validator's summary: blocks, events per provider and event, drops.
    pub nettrace: NettraceSummary,
    /// The SHA-256 of every byte of the trace, in lowercase hex.
    pub sha256: String,
}

/// Validates every event of a trace and hashes its bytes as they pass, on the caller's thread:
/// the work of a [`TraceSummarizer`], for a caller that already runs on a thread of its own.
#[derive(Debug)]
pub struct TraceDigester {
    validator: NettraceValidator,
    hasher: Sha256,
    failure: Option<String>,
}

impl Default for TraceDigester {
    fn default() -> Self {
        TraceDigester {
            validator: NettraceValidator::new(),
            hasher: Sha256::new(),
            failure: None,
        }
    }
}

impl TraceDigester {
    /// Takes the next piece of the stream. Once the stream is found malformed, this and every
    /// later call fail with [`DiagnosticsError::InvalidTrace`].
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), DiagnosticsError> {
        if let Some(reason) = &self.failure {
            return Err(DiagnosticsError::InvalidTrace(reason.clone()));
        }
        if let Err(error) = self.validator.feed(chunk) {
            let reason = error.to_string();
            self.failure = Some(reason.clone());
            return Err(DiagnosticsError::InvalidTrace(reason));
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// Ends the stream. One without its end-of-stream marker is [`DiagnosticsError::Truncated`];
    /// one that breaks the format is [`DiagnosticsError::InvalidTrace`].
    pub fn finish(self) -> Result<TraceDigest, DiagnosticsError> {
        if let Some(reason) = self.failure {
            return Err(DiagnosticsError::InvalidTrace(reason));
        }
        if !self.validator.is_complete() {
            return Err(DiagnosticsError::Truncated {
                bytes: self.validator.bytes_seen(),
                reason: "the stream ended before its end-of-stream marker".to_owned(),
            });
        }
        let nettrace = self
            .validator
            .finish()
            .map_err(|error| DiagnosticsError::InvalidTrace(error.to_string()))?;
        Ok(TraceDigest {
            nettrace,
            sha256: self
                .hasher
                .finalize()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect(),
        })
    }
}

/// Validates every event of a trace and hashes its bytes on a thread of its own.
///
/// Feed it the chunks in order with [`TraceSummarizer::feed`], then [`TraceSummarizer::finish`].
#[derive(Debug)]
pub struct TraceSummarizer {
    chunks: Option<ChunkSender>,
    digest: oneshot::Receiver<Result<TraceDigest, DiagnosticsError>>,
    failure: Arc<OnceLock<String>>,
}

impl TraceSummarizer {
    /// Starts the summarizer's thread.
    pub fn start() -> Result<Self, DiagnosticsError> {
        let (chunks, queue) = chunk_queue();
        let (digest, outcome) = oneshot::channel();
        let failure = Arc::new(OnceLock::new());
        let failed = failure.clone();
        std::thread::Builder::new()
            .name("trace-summary".to_owned())
            .spawn(move || {
                let _ = digest.send(summarize(queue, &failed));
            })
            .map_err(|error| {
                DiagnosticsError::Internal(format!("cannot start the trace summarizer: {error}"))
            })?;
        Ok(TraceSummarizer {
            chunks: Some(chunks),
            digest: outcome,
            failure,
        })
    }

    /// Queues the next chunk; fails once the validator found the stream malformed, or if the
    /// summarizer's thread is gone.
    pub async fn feed(&mut self, chunk: Bytes) -> Result<(), DiagnosticsError> {
        if let Some(reason) = self.failure.get() {
            return Err(DiagnosticsError::InvalidTrace(reason.clone()));
        }
        let sent = match &self.chunks {
            Some(chunks) => chunks.send(chunk).await,
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The thread drains its queue until the end, so it is gone only if it panicked.
            Err(stopped())
        }
    }

    /// Ends the stream and waits for the summary (see [`TraceDigester::finish`]).
    pub async fn finish(mut self) -> Result<TraceDigest, DiagnosticsError> {
        self.chunks = None;
        self.digest.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> DiagnosticsError {
    DiagnosticsError::Internal("the trace summarizer stopped unexpectedly".to_owned())
}

/// The summarizer thread's work: digest every chunk until the queue closes.
fn summarize(
    mut queue: ChunkReceiver,
    failed: &OnceLock<String>,
) -> Result<TraceDigest, DiagnosticsError> {
    let mut digester = TraceDigester::default();
    while let Some(chunk) = queue.blocking_recv() {
        if let Err(error) = digester.feed(&chunk) {
            if let DiagnosticsError::InvalidTrace(reason) = error {
                let _ = failed.set(reason);
            }
            // Keep taking chunks so that the feeder never waits on a full queue.
            while queue.blocking_recv().is_some() {}
            break;
        }
    }
    digester.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::nettrace::tests::sample_v4;

    async fn summarize_in_chunks(bytes: &[u8]) -> Result<TraceDigest, DiagnosticsError> {
        let mut summarizer = TraceSummarizer::start()?;
        for piece in bytes.chunks(7) {
            summarizer.feed(Bytes::copy_from_slice(piece)).await?;
        }
        summarizer.finish().await
    }

    /// Where the first EventBlock's contents start: after its type name, end tag, size and
    /// alignment padding.
    fn first_event_block_contents(bytes: &[u8]) -> usize {
        let name = b"EventBlock";
        let size_at = bytes
            .windows(name.len())
            .position(|window| window == name)
            .expect("an EventBlock")
            + name.len()
            + 1;
        let contents = size_at + 4;
        contents + (4 - contents % 4) % 4
    }

    #[tokio::test]
    async fn a_whole_trace_gives_its_events_and_the_sha256_of_its_bytes() {
        let bytes = sample_v4();
        let digest = summarize_in_chunks(&bytes).await.expect("a whole trace");
        assert_eq!(digest.nettrace.bytes, bytes.len() as u64);
        assert!(digest.nettrace.events > 0);
        let expected: String = Sha256::digest(&bytes)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(digest.sha256, expected);
    }

    #[tokio::test]
    async fn a_trace_cut_short_is_truncated() {
        let bytes = sample_v4();
        let error = summarize_in_chunks(&bytes[..bytes.len() - 1])
            .await
            .expect_err("cut short");
        assert!(
            matches!(error, DiagnosticsError::Truncated { bytes: cut, .. } if cut == bytes.len() as u64 - 1),
            "{error}"
        );
    }

    #[tokio::test]
    async fn malformed_events_win_over_a_later_cut() {
        let mut bytes = sample_v4();
        // The block header's own size field claims more than the whole block holds.
        let contents = first_event_block_contents(&bytes);
        bytes[contents..contents + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        let error = summarize_in_chunks(&bytes[..bytes.len() - 1])
            .await
            .expect_err("malformed");
        assert!(
            matches!(error, DiagnosticsError::InvalidTrace(_)),
            "{error}"
        );
    }
}

//! A trace's summary, computed on a thread of its own while the trace streams: every event read
//! by the [`NettraceValidator`], and the SHA-256 of the bytes.
//!
//! Reading every event and hashing every byte costs far more than moving the bytes (SHA-256 alone
//! runs at about 1.7 GiB/s on one core with SHA extensions), so it stays off the path that reads
//! the runtime's socket and writes the sink. Chunks are shared (`Bytes`), not copied; the queue is
//! bounded, so a summarizer that falls behind slows the reads rather than growing memory.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::DiagnosticsError;
use super::nettrace::{NettraceSummary, NettraceValidator};

/// Chunks queued for the summarizer before the feeder waits for it.
const QUEUE: usize = 8;

/// What a whole, well-formed trace contains, and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceDigest {
    /// The validator's summary: blocks, events per provider and event, drops.
    pub nettrace: NettraceSummary,
    /// The SHA-256 of every byte of the trace, in lowercase hex.
    pub sha256: String,
}

/// How the stream ended, as the summarizer saw it.
#[derive(Debug)]
enum Verdict {
    /// Whole, with its end-of-stream marker.
    Complete(TraceDigest),
    /// Cut short: no end-of-stream marker.
    Incomplete { bytes: u64 },
    /// Not valid nettrace.
    Invalid(String),
}

/// Validates every event of a trace and hashes its bytes on a thread of its own.
///
/// Feed it the chunks in order with [`TraceSummarizer::feed`], then [`TraceSummarizer::finish`].
#[derive(Debug)]
pub struct TraceSummarizer {
    chunks: Option<mpsc::Sender<Bytes>>,
    verdict: oneshot::Receiver<Verdict>,
    failure: Arc<OnceLock<String>>,
}

impl TraceSummarizer {
    /// Starts the summarizer's thread.
    pub fn start() -> Result<Self, DiagnosticsError> {
        let (chunks, queue) = mpsc::channel::<Bytes>(QUEUE);
        let (verdict, outcome) = oneshot::channel();
        let failure = Arc::new(OnceLock::new());
        let failed = failure.clone();
        std::thread::Builder::new()
            .name("trace-summary".to_owned())
            .spawn(move || {
                let _ = verdict.send(summarize(queue, &failed));
            })
            .map_err(|source| DiagnosticsError::Io {
                what: "starting the trace summarizer",
                source,
            })?;
        Ok(TraceSummarizer {
            chunks: Some(chunks),
            verdict: outcome,
            failure,
        })
    }

    /// Queues the next chunk; fails once the validator found the stream malformed.
    pub async fn feed(&mut self, chunk: Bytes) -> Result<(), DiagnosticsError> {
        if let Some(reason) = self.failure.get() {
            return Err(DiagnosticsError::InvalidTrace(reason.clone()));
        }
        if let Some(chunks) = &self.chunks {
            // A send fails only if the thread is gone; `finish` says why.
            let _ = chunks.send(chunk).await;
        }
        Ok(())
    }

    /// Ends the stream and waits for the summary. A stream without its end-of-stream marker is
    /// [`DiagnosticsError::Truncated`]; one that breaks the format is
    /// [`DiagnosticsError::InvalidTrace`].
    pub async fn finish(mut self) -> Result<TraceDigest, DiagnosticsError> {
        self.chunks = None;
        match self.verdict.await {
            Ok(Verdict::Complete(digest)) => Ok(digest),
            Ok(Verdict::Incomplete { bytes }) => Err(DiagnosticsError::Truncated {
                bytes,
                reason: "the stream ended before its end-of-stream marker".to_owned(),
            }),
            Ok(Verdict::Invalid(reason)) => Err(DiagnosticsError::InvalidTrace(reason)),
            Err(_) => Err(DiagnosticsError::InvalidTrace(
                "the trace summarizer stopped unexpectedly".to_owned(),
            )),
        }
    }
}

/// The summarizer thread's work: validate and hash every chunk until the queue closes.
fn summarize(mut queue: mpsc::Receiver<Bytes>, failed: &OnceLock<String>) -> Verdict {
    let mut validator = NettraceValidator::new();
    let mut hasher = Sha256::new();
    while let Some(chunk) = queue.blocking_recv() {
        if let Err(error) = validator.feed(&chunk) {
            let reason = error.to_string();
            let _ = failed.set(reason.clone());
            // Keep taking chunks so that the feeder never waits on a full queue.
            while queue.blocking_recv().is_some() {}
            return Verdict::Invalid(reason);
        }
        hasher.update(&chunk);
    }
    if !validator.is_complete() {
        return Verdict::Incomplete {
            bytes: validator.bytes_seen(),
        };
    }
    match validator.finish() {
        Ok(nettrace) => Verdict::Complete(TraceDigest {
            nettrace,
            sha256: hasher
                .finalize()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect(),
        }),
        Err(error) => Verdict::Invalid(error.to_string()),
    }
}

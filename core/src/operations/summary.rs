//! The summary of a finished artifact, computed while it streams: the size and SHA-256 of every
//! artifact, and for a nettrace stream its events, blocks and drops.
//!
//! Hashing (and validating every event) costs far more than moving the bytes. On the pipeline's
//! task both run on a thread of their own fed through a bounded queue ([`Summarizer`]): a
//! summarizer that falls behind slows the reads down instead of growing memory. A capture pumped
//! on an upload's thread already has a thread of its own, and summarises there ([`InlineSummary`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::source::SummaryKind;
use super::{ErrorCode, OperationError};
use crate::diagnostics::chunk_queue::{ChunkSender, chunk_queue};
use crate::diagnostics::summary::{TraceDigest, TraceDigester, TraceSummarizer};

/// What a finished artifact holds. The event fields are present for traces only.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactSummary {
    /// Bytes in the artifact.
    pub bytes: u64,
    /// Events (traces).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// Blocks of every kind (traces).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u64>,
    /// Events the runtime dropped, estimated from sequence numbers (traces).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_events_estimate: Option<u64>,
    /// Events per provider (traces).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_by_provider: Option<BTreeMap<String, u64>>,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// What the artifact reports besides its bytes, when asked for (a gcdump's heap report).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
}

impl From<TraceDigest> for ArtifactSummary {
    fn from(digest: TraceDigest) -> Self {
        let summary = digest.nettrace;
        ArtifactSummary {
            bytes: summary.bytes,
            events: Some(summary.events),
            blocks: Some(
                summary.event_blocks
                    + summary.metadata_blocks
                    + summary.stack_blocks
                    + summary.sequence_point_blocks,
            ),
            dropped_events_estimate: Some(summary.dropped_events_estimate),
            events_by_provider: Some(summary.events_by_provider),
            sha256: digest.sha256,
            report: None,
        }
    }
}

/// Summarises an artifact as its chunks pass: feed every chunk in order, then `finish`.
#[derive(Debug)]
pub(crate) enum Summarizer {
    /// A nettrace stream.
    Nettrace(TraceSummarizer),
    /// Opaque bytes.
    Bytes(ByteSummarizer),
}

impl Summarizer {
    /// Starts the summarizer `kind` needs, on a thread of its own.
    pub(crate) fn start(kind: SummaryKind) -> Result<Summarizer, OperationError> {
        Ok(match kind {
            SummaryKind::Nettrace => Summarizer::Nettrace(TraceSummarizer::start()?),
            SummaryKind::Bytes => Summarizer::Bytes(ByteSummarizer::start()?),
        })
    }

    /// Queues the next chunk; fails once the artifact is known to be malformed.
    pub(crate) async fn feed(&mut self, chunk: Bytes) -> Result<(), OperationError> {
        match self {
            Summarizer::Nettrace(summarizer) => Ok(summarizer.feed(chunk).await?),
            Summarizer::Bytes(summarizer) => summarizer.feed(chunk).await,
        }
    }

    /// Ends the artifact and returns its summary, or why it is not whole.
    pub(crate) async fn finish(self) -> Result<ArtifactSummary, OperationError> {
        match self {
            Summarizer::Nettrace(summarizer) => Ok(summarizer.finish().await?.into()),
            Summarizer::Bytes(summarizer) => summarizer.finish().await,
        }
    }
}

/// A summary computed on the caller's thread, for a capture whose chunks already pass through a
/// thread of its own (an egress upload's): the same work as a [`Summarizer`], without its thread.
#[derive(Debug)]
pub(crate) enum InlineSummary {
    /// A nettrace stream.
    Nettrace(Box<TraceDigester>),
    /// Opaque bytes.
    Bytes(ByteDigester),
}

impl InlineSummary {
    /// The summary `kind` needs.
    pub(crate) fn new(kind: SummaryKind) -> InlineSummary {
        match kind {
            SummaryKind::Nettrace => InlineSummary::Nettrace(Box::default()),
            SummaryKind::Bytes => InlineSummary::Bytes(ByteDigester::default()),
        }
    }

    /// Takes the next chunk; fails once the artifact is known to be malformed.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<(), OperationError> {
        match self {
            InlineSummary::Nettrace(digester) => Ok(digester.feed(chunk)?),
            InlineSummary::Bytes(digester) => {
                digester.feed(chunk);
                Ok(())
            }
        }
    }

    /// Ends the artifact: its summary, or why it is not whole.
    pub(crate) fn finish(self) -> Result<ArtifactSummary, OperationError> {
        match self {
            InlineSummary::Nettrace(digester) => Ok((*digester).finish()?.into()),
            InlineSummary::Bytes(digester) => Ok(digester.finish()),
        }
    }
}

/// The size and SHA-256 of opaque bytes, fed in order.
#[derive(Debug, Default)]
pub(crate) struct ByteDigester {
    hasher: Sha256,
    bytes: u64,
}

impl ByteDigester {
    fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        self.hasher.update(chunk);
    }

    fn finish(self) -> ArtifactSummary {
        ArtifactSummary {
            bytes: self.bytes,
            events: None,
            blocks: None,
            dropped_events_estimate: None,
            events_by_provider: None,
            sha256: hex(&self.hasher.finalize()),
            report: None,
        }
    }
}

/// Counts and hashes opaque bytes on a thread of its own.
#[derive(Debug)]
pub(crate) struct ByteSummarizer {
    chunks: Option<ChunkSender>,
    summary: oneshot::Receiver<ArtifactSummary>,
}

impl ByteSummarizer {
    fn start() -> Result<ByteSummarizer, OperationError> {
        let (chunks, mut queue) = chunk_queue();
        let (summary, result) = oneshot::channel();
        std::thread::Builder::new()
            .name("artifact-summary".to_owned())
            .spawn(move || {
                let mut digester = ByteDigester::default();
                while let Some(chunk) = queue.blocking_recv() {
                    digester.feed(&chunk);
                }
                let _ = summary.send(digester.finish());
            })
            .map_err(|error| {
                OperationError::new(
                    ErrorCode::InternalError,
                    format!("cannot start the artifact summarizer: {error}"),
                )
            })?;
        Ok(ByteSummarizer {
            chunks: Some(chunks),
            summary: result,
        })
    }

    async fn feed(&mut self, chunk: Bytes) -> Result<(), OperationError> {
        let sent = match &self.chunks {
            Some(chunks) => chunks.send(chunk).await,
            None => false,
        };
        if sent { Ok(()) } else { Err(stopped()) }
    }

    async fn finish(mut self) -> Result<ArtifactSummary, OperationError> {
        self.chunks = None;
        self.summary.await.map_err(|_| stopped())
    }
}

fn stopped() -> OperationError {
    OperationError::new(
        ErrorCode::InternalError,
        "the artifact summarizer stopped unexpectedly",
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opaque_bytes_give_their_size_and_sha256_and_no_event_counts() {
        let mut summarizer = Summarizer::start(SummaryKind::Bytes).unwrap();
        summarizer
            .feed(Bytes::from_static(b"hello "))
            .await
            .unwrap();
        summarizer.feed(Bytes::from_static(b"world")).await.unwrap();
        let summary = summarizer.finish().await.unwrap();
        assert_eq!(summary.bytes, 11);
        assert_eq!(summary.sha256, hex(&Sha256::digest(b"hello world")));
        let json = serde_json::to_value(&summary).unwrap();
        assert!(json.get("events").is_none(), "{json}");
        assert!(json.get("eventsByProvider").is_none(), "{json}");
    }
}

//! Where an artifact's bytes go: a streamed response body, an egress upload or a file.
//!
//! A streamed body is an [`ArtifactStream`] fed through a small bounded channel. The pipeline
//! never blocks on it for long: every send has a deadline (`limits.stream_send_timeout_seconds`,
//! after which the operation fails with `ClientStalled`), an incomplete artifact is ended by
//! dropping the channel (the stream then yields an error, so the server aborts the response
//! instead of ending it cleanly), and a whole one counts as delivered only once the reader took
//! its last chunk and the end of the stream.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{ErrorCode, OperationError, Outcome};
use crate::egress::Upload;

/// Chunks buffered between the capture task and a streamed response.
pub const STREAM_CHANNEL_CHUNKS: usize = 4;

/// What became of a streamed artifact, as its reader saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The reader took every chunk and the end.
    Delivered,
    /// The reader went away first (the client disconnected).
    ReaderGone,
}

/// The reading end of a streamed artifact: a stream of chunks for a response body. It ends
/// cleanly only when the artifact is whole; an artifact cut short ends with an error item.
#[derive(Debug)]
pub struct ArtifactStream {
    chunks: mpsc::Receiver<Bytes>,
    whole: Arc<AtomicBool>,
    delivery: Option<oneshot::Sender<Delivery>>,
}

impl Stream for ArtifactStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.delivery.is_none() {
            return Poll::Ready(None);
        }
        match self.chunks.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(chunk))),
            Poll::Ready(None) => {
                let whole = self.whole.load(Ordering::Acquire);
                let delivery = self.delivery.take();
                if whole {
                    if let Some(delivery) = delivery {
                        let _ = delivery.send(Delivery::Delivered);
                    }
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(std::io::Error::other(
                        "the artifact was cut short; its operation says why",
                    ))))
                }
            }
        }
    }
}

impl Drop for ArtifactStream {
    fn drop(&mut self) {
        if let Some(delivery) = self.delivery.take() {
            let _ = delivery.send(Delivery::ReaderGone);
        }
    }
}

/// The writing end of a streamed artifact.
#[derive(Debug)]
pub struct StreamSender {
    chunks: mpsc::Sender<Bytes>,
    whole: Arc<AtomicBool>,
    delivery: oneshot::Receiver<Delivery>,
    send_timeout: Duration,
}

/// A streamed artifact's two ends: the pipeline writes into the [`StreamSender`], the response
/// reads the [`ArtifactStream`]. Each send waits at most `send_timeout` for the reader.
pub fn stream(send_timeout: Duration) -> (StreamSender, ArtifactStream) {
    let (sender, receiver) = mpsc::channel(STREAM_CHANNEL_CHUNKS);
    let whole = Arc::new(AtomicBool::new(false));
    let (delivered, delivery) = oneshot::channel();
    (
        StreamSender {
            chunks: sender,
            whole: whole.clone(),
            delivery,
            send_timeout,
        },
        ArtifactStream {
            chunks: receiver,
            whole,
            delivery: Some(delivered),
        },
    )
}

impl StreamSender {
    fn stalled(&self) -> Outcome {
        Outcome::Failed(OperationError::new(
            ErrorCode::ClientStalled,
            format!(
                "the client took no bytes of the streamed artifact for {}",
                humantime::format_duration(self.send_timeout)
            ),
        ))
    }
}

fn reader_gone() -> Outcome {
    Outcome::Cancelled("the client disconnected from the streamed artifact".to_owned())
}

/// Where an artifact's bytes go.
#[allow(clippy::large_enum_variant)] // One per operation, moved once into its task.
pub enum Sink {
    /// A streamed response body.
    Stream(StreamSender),
    /// An upload into an egress provider; aborted (so the provider cleans up) unless the
    /// artifact is whole.
    Egress(Upload),
    /// A file (`diagmon trace -o`).
    File {
        /// The open file.
        file: tokio::fs::File,
        /// Its path, reported as the resource location.
        path: PathBuf,
    },
}

impl Sink {
    /// Writes the next chunk.
    pub(crate) async fn write(&mut self, chunk: Bytes) -> Result<(), Outcome> {
        match self {
            Sink::Stream(stream) => {
                match tokio::time::timeout(stream.send_timeout, stream.chunks.send(chunk)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(reader_gone()),
                    Err(_) => Err(stream.stalled()),
                }
            }
            Sink::Egress(upload) => upload
                .write(chunk)
                .await
                .map_err(|error| Outcome::Failed(error.into())),
            Sink::File { file, path } => file
                .write_all(&chunk)
                .await
                .map_err(|error| output_failure(path, &error)),
        }
    }

    /// Resolves when the destination is gone for good (the client of a streamed artifact
    /// disconnected); never for the other sinks.
    pub(crate) async fn gone(&self) {
        match self {
            Sink::Stream(stream) => stream.chunks.closed().await,
            Sink::Egress(_) | Sink::File { .. } => std::future::pending().await,
        }
    }

    /// True when finishing commits the artifact for good (an upload, a file): from then on a
    /// cancel cannot undo it. A streamed artifact can still be cut until its reader took the end.
    pub(crate) fn commits(&self) -> bool {
        !matches!(self, Sink::Stream(_))
    }

    /// Completes the artifact and returns its resource location, where it has one. A streamed
    /// artifact completes once the reader took its end; until then `cancelled` cuts it (the
    /// reader then sees an error instead of the end).
    pub(crate) async fn finish(
        self,
        cancelled: &CancellationToken,
    ) -> Result<Option<String>, Outcome> {
        match self {
            Sink::Stream(stream) => {
                stream.whole.store(true, Ordering::Release);
                let StreamSender {
                    chunks,
                    whole,
                    delivery,
                    send_timeout,
                } = stream;
                drop(chunks);
                let delivered = tokio::select! {
                    biased;
                    delivered = tokio::time::timeout(send_timeout, delivery) => delivered,
                    _ = cancelled.cancelled() => {
                        whole.store(false, Ordering::Release);
                        return Err(Outcome::Cancelled("cancelled by request".to_owned()));
                    }
                };
                match delivered {
                    Ok(Ok(Delivery::Delivered)) => Ok(None),
                    Ok(Ok(Delivery::ReaderGone) | Err(_)) => Err(reader_gone()),
                    Err(_) => {
                        whole.store(false, Ordering::Release);
                        Err(Outcome::Failed(OperationError::new(
                            ErrorCode::ClientStalled,
                            format!(
                                "the client did not take the end of the streamed artifact within {}",
                                humantime::format_duration(send_timeout)
                            ),
                        )))
                    }
                }
            }
            Sink::Egress(upload) => upload
                .finish()
                .await
                .map(Some)
                .map_err(|error| Outcome::Failed(error.into())),
            Sink::File { mut file, path } => {
                let synced = match file.flush().await {
                    Ok(()) => file.sync_all().await,
                    Err(error) => Err(error),
                };
                synced
                    .map(|()| Some(path.display().to_string()))
                    .map_err(|error| output_failure(&path, &error))
            }
        }
    }

    /// Ends an incomplete artifact so that it never looks whole. Never waits on the reader of a
    /// streamed artifact.
    pub(crate) async fn abort(self) {
        match self {
            // Dropping the sender without marking the artifact whole makes the reader's stream
            // end with an error.
            Sink::Stream(stream) => drop(stream),
            Sink::Egress(upload) => upload.abort().await,
            Sink::File { mut file, .. } => {
                let _ = file.flush().await;
            }
        }
    }
}

fn output_failure(path: &std::path::Path, error: &std::io::Error) -> Outcome {
    Outcome::Failed(OperationError::new(
        ErrorCode::OutputError,
        format!("cannot write {}: {error}", path.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_whole_artifact_is_delivered_once_the_reader_takes_the_end() {
        let (sender, mut reader) = stream(Duration::from_secs(5));
        let mut sink = Sink::Stream(sender);
        sink.write(Bytes::from_static(b"abc")).await.unwrap();
        let finish = tokio::spawn(async move { sink.finish(&CancellationToken::new()).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !finish.is_finished(),
            "not delivered before the reader took it"
        );
        assert_eq!(reader.next().await.unwrap().unwrap(), "abc");
        assert!(reader.next().await.is_none());
        assert_eq!(finish.await.unwrap().unwrap(), None);
    }

    #[tokio::test]
    async fn an_aborted_artifact_ends_with_an_error_even_when_the_channel_is_full() {
        let (sender, mut reader) = stream(Duration::from_secs(5));
        let mut sink = Sink::Stream(sender);
        for _ in 0..STREAM_CHANNEL_CHUNKS {
            sink.write(Bytes::from_static(b"x")).await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(1), sink.abort())
            .await
            .expect("abort does not wait for the reader");
        let items: Vec<_> = reader.by_ref().collect().await;
        assert!(items.last().unwrap().is_err());
    }

    #[tokio::test]
    async fn a_reader_that_stops_reading_fails_the_send_after_the_deadline() {
        let (sender, _reader) = stream(Duration::from_millis(50));
        let mut sink = Sink::Stream(sender);
        let mut result = Ok(());
        for _ in 0..=STREAM_CHANNEL_CHUNKS {
            result = sink.write(Bytes::from_static(b"x")).await;
        }
        assert!(
            matches!(result, Err(Outcome::Failed(ref error)) if error.code == ErrorCode::ClientStalled),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_reader_that_goes_away_cancels_and_is_noticed_without_a_write() {
        let (sender, reader) = stream(Duration::from_secs(5));
        let sink = Sink::Stream(sender);
        drop(reader);
        tokio::time::timeout(Duration::from_secs(1), sink.gone())
            .await
            .expect("noticed");
        assert!(matches!(
            sink.finish(&CancellationToken::new()).await,
            Err(Outcome::Cancelled(_))
        ));
    }

    #[tokio::test]
    async fn a_cancel_while_the_end_is_undelivered_cuts_the_stream() {
        let (sender, mut reader) = stream(Duration::from_secs(5));
        let mut sink = Sink::Stream(sender);
        sink.write(Bytes::from_static(b"abc")).await.unwrap();
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        assert!(matches!(
            sink.finish(&cancelled).await,
            Err(Outcome::Cancelled(_))
        ));
        assert!(reader.next().await.unwrap().is_ok());
        assert!(reader.next().await.unwrap().is_err());
    }
}

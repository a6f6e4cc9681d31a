//! One upload: the async face ([`Upload`]) that the capture pipeline drives, and the blocking
//! thread that owns the provider's instance for the upload's life.
//!
//! Why a blocking thread per upload and synchronous bindings, not async ones: filesystem egress
//! measured 0.84–0.92× native with synchronous WASI on a thread of its own, against 0.45–0.69×
//! with async bindings, where every filesystem call hops to another thread
//! (measured with a prototype host). The tokio runtime is never blocked either way: the async side
//! only awaits channels. A runaway guest is stopped by its epoch deadline (it traps); a guest
//! waiting inside a host call, which epochs cannot interrupt, is stopped when the wait reaches the
//! same deadline ([`super::host_waits`]), so the thread ends with the call. The async side still
//! gives up on its own a little after the deadline (for a pump, through a watchdog on the write
//! in progress). Each thread holds one of the provider's `max_instances` permits and is counted in
//! its usage until it ends.
//!
//! A trace is not handed over chunk by chunk: [`Upload::pump`] runs the capture's whole loop
//! (read, summary, write) on this thread, so a chunk crosses no thread at all.
//!
//! A chunk of at least [`DIRECT_WRITE`] bytes (or the provider's chunk size, if that is smaller)
//! goes to the provider as it is, without a copy (split into writes of at most the chunk size, if
//! larger): a session's 256 KiB reads reach the guest's
//! `write` straight from the read buffer, whose only copy is the one into linear memory. Smaller
//! chunks are gathered into writes of the provider's chunk size (many small writes cost more per
//! byte than one copy), and whatever is gathered goes first when a large chunk comes. Up to
//! [`IN_FLIGHT`] writes are queued while the next one is gathered. The thread hands each gathering
//! buffer back once written, so the same few warm buffers are reused instead of fresh ones that
//! fault in page by page. Memory per upload is bounded by three chunks, whatever the artifact's
//! size, and a slow provider makes [`Upload::write`] wait: backpressure reaches the reader.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use super::artifact::Artifact;
use super::error::EgressError;
use super::instance::ProviderInstance;
use super::partials;
use super::provider::LoadedProvider;

/// How much longer than a call's deadline the async side waits before giving up on the thread.
const GRACE: Duration = Duration::from_secs(2);

/// Chunks at least this large are written as they are instead of being gathered: at this size a
/// `write` call's own cost is small beside the copy that gathering would add.
const DIRECT_WRITE: usize = 64 << 10;

/// Chunks handed to the thread and not yet written. Two keep the provider busy: the next chunk
/// is already queued when a write returns, so no thread wake-up sits between two writes (with
/// one, filesystem egress measured 0.56× native at 256 KiB chunks; with two, 0.77×).
const IN_FLIGHT: usize = 2;

enum Request {
    Write(Bytes, oneshot::Sender<Written>),
    Pump(
        Pump,
        Arc<WriteClock>,
        oneshot::Sender<Result<(), EgressError>>,
    ),
    Finish(oneshot::Sender<Result<String, EgressError>>),
}

/// Work that produces an artifact's chunks on the upload's own thread (see [`Upload::pump`]): it
/// hands each chunk, in order, to the writer it is given, stops at the writer's first error, and
/// returns whether its source ended cleanly (only then does what is still gathered get written).
pub type Pump = Box<dyn FnOnce(&mut dyn FnMut(Bytes) -> Result<(), EgressError>) -> bool + Send>;

/// When the upload's thread entered the provider's `write` it is in (`None` between writes), for
/// the async side's watchdog over a pump.
#[derive(Debug, Default)]
struct WriteClock {
    entered: std::sync::Mutex<Option<std::time::Instant>>,
}

impl WriteClock {
    fn set(&self, entered: Option<std::time::Instant>) {
        *self.entered.lock().unwrap_or_else(|p| p.into_inner()) = entered;
    }

    /// How long the thread has been in its current write, if it is in one.
    fn in_write_for(&self) -> Option<Duration> {
        let entered = *self.entered.lock().unwrap_or_else(|p| p.into_inner());
        entered.map(|entered| entered.elapsed())
    }
}

/// The outcome of a write, and the gathering buffer it came in, emptied, for reuse.
struct Written {
    result: Result<(), EgressError>,
    buffer: Option<BytesMut>,
}

/// One artifact on its way into a provider. Drive it with [`Upload::write`], then end it with
/// [`Upload::finish`] or [`Upload::abort`]; dropping it aborts too, without waiting.
pub struct Upload {
    provider: Arc<LoadedProvider>,
    requests: Option<mpsc::Sender<Request>>,
    pending: VecDeque<oneshot::Receiver<Written>>,
    gathering: Gathering,
    failed: Option<EgressError>,
    /// The async side gave up on the thread: it is stuck past a deadline in the provider.
    stuck: bool,
    done: oneshot::Receiver<()>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("provider", &self.provider.name)
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// Starts the upload's thread: instantiate, `configure`, `begin`.
    pub(crate) async fn start(
        provider: Arc<LoadedProvider>,
        artifact: Artifact,
    ) -> Result<Upload, EgressError> {
        let thread = provider.start_thread().await?;
        let (requests, receiver) = mpsc::channel(IN_FLIGHT);
        let (ready_sender, ready) = oneshot::channel();
        let (done_sender, done) = oneshot::channel::<()>();
        let worker_provider = provider.clone();
        tokio::task::spawn_blocking(move || {
            let _done = done_sender;
            let _thread = thread;
            run(worker_provider, artifact, ready_sender, receiver);
        });
        // instantiate + configure + begin, each with the call deadline.
        let wait = provider.limits.call_timeout() * 3 + GRACE;
        match tokio::time::timeout(wait, ready).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => return Err(error),
            Ok(Err(_)) => {
                return Err(EgressError::host(
                    &provider.name,
                    "the provider's thread ended before `begin` returned",
                ));
            }
            Err(_) => {
                return Err(EgressError::DeadlineExceeded {
                    provider: provider.name.clone(),
                    call: "begin",
                    deadline: provider.limits.call_timeout(),
                });
            }
        }
        let chunk_size = provider.limits.chunk_bytes();
        Ok(Upload {
            provider,
            requests: Some(requests),
            pending: VecDeque::with_capacity(IN_FLIGHT),
            gathering: Gathering::new(chunk_size),
            failed: None,
            stuck: false,
            done,
        })
    }

    /// The provider's configured name.
    pub fn provider(&self) -> &str {
        &self.provider.name
    }

    /// Hands the next chunk of the artifact to the provider. Returns once the chunk is buffered
    /// or on its way; an error from the provider may surface on a later call. After an error the
    /// upload is dead: every later call returns that error.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), EgressError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        crate::telemetry::record_egressed(&self.provider.name, chunk.len() as u64);
        for write in self.gathering.push(chunk).into_iter().flatten() {
            self.send(write).await?;
        }
        Ok(())
    }

    /// Runs `pump` on the upload's thread, where each chunk it produces goes into the provider as
    /// [`Upload::write`] would put it (gathered or split the same way), with no hand-off between
    /// threads per chunk. Returns once the thread replied, after `pump` returned and what was
    /// gathered was written: the error of a write that failed (the upload is then dead, as after
    /// a failed [`Upload::write`]). The pump as a whole has no deadline (it lasts as long as its
    /// source), but each write has: should the thread stay in one longer than the write deadline
    /// and a grace period (a provider stuck where the host cannot stop it; checked every
    /// [`GRACE`], so it gives up two to four seconds past the deadline), this returns
    /// [`EgressError::DeadlineExceeded`] without waiting for the thread, as [`Upload::write`]
    /// does.
    pub async fn pump(&mut self, pump: Pump) -> Result<(), EgressError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if let Some(gathered) = self.gathering.finish() {
            self.send(gathered).await?;
        }
        self.wait_pending().await?;
        let clock = Arc::new(WriteClock::default());
        let (reply, mut pumped) = oneshot::channel();
        let sent = match &self.requests {
            Some(requests) => requests
                .send(Request::Pump(pump, clock.clone(), reply))
                .await
                .is_ok(),
            None => false,
        };
        if !sent {
            let error = EgressError::host(&self.provider.name, "the provider's thread ended");
            return Err(self.fail(error));
        }
        let deadline = self.provider.limits.write_timeout();
        let result = loop {
            tokio::select! {
                result = &mut pumped => break result.unwrap_or_else(|_| {
                    Err(EgressError::host(
                        &self.provider.name,
                        "the provider's thread ended during a write",
                    ))
                }),
                _ = tokio::time::sleep(GRACE) => {
                    if clock.in_write_for().is_some_and(|spent| spent > deadline + GRACE) {
                        self.stuck = true;
                        break Err(EgressError::DeadlineExceeded {
                            provider: self.provider.name.clone(),
                            call: "write",
                            deadline,
                        });
                    }
                }
            }
        };
        result.map_err(|error| self.fail(error))
    }

    /// Sends `data` to the thread in pieces of at most the provider's chunk size (splitting
    /// copies nothing), with at most [`IN_FLIGHT`] writes outstanding.
    async fn send(&mut self, data: Bytes) -> Result<(), EgressError> {
        for piece in pieces(data, self.gathering.chunk_size) {
            while self.pending.len() >= IN_FLIGHT {
                self.wait_oldest().await?;
            }
            let (reply, pending) = oneshot::channel();
            let sent = match &self.requests {
                Some(requests) => requests.send(Request::Write(piece, reply)).await.is_ok(),
                None => false,
            };
            if !sent {
                // The thread ends after a failed write: report that write's error.
                let failure = self.failed_write().await.unwrap_or_else(|| {
                    EgressError::host(&self.provider.name, "the provider's thread ended")
                });
                return Err(self.fail(failure));
            }
            self.pending.push_back(pending);
        }
        Ok(())
    }

    /// The error of a write in flight that failed, if one did (the thread has ended: every
    /// reply is there or dropped).
    async fn failed_write(&mut self) -> Option<EgressError> {
        while let Some(pending) = self.pending.pop_front() {
            if let Ok(Written {
                result: Err(error), ..
            }) = pending.await
            {
                return Some(error);
            }
        }
        None
    }

    /// Waits for every write in flight.
    async fn wait_pending(&mut self) -> Result<(), EgressError> {
        while !self.pending.is_empty() {
            self.wait_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest write in flight, if any.
    async fn wait_oldest(&mut self) -> Result<(), EgressError> {
        let Some(pending) = self.pending.pop_front() else {
            return Ok(());
        };
        let deadline = self.provider.limits.write_timeout();
        match tokio::time::timeout(deadline + GRACE, pending).await {
            Ok(Ok(Written { result, buffer })) => {
                if let Some(buffer) = buffer {
                    self.gathering.recycle(buffer);
                }
                result.map_err(|error| self.fail(error))
            }
            Ok(Err(_)) => Err(self.fail(EgressError::host(
                &self.provider.name,
                "the provider's thread ended during a write",
            ))),
            Err(_) => {
                self.stuck = true;
                Err(self.fail(EgressError::DeadlineExceeded {
                    provider: self.provider.name.clone(),
                    call: "write",
                    deadline,
                }))
            }
        }
    }

    fn fail(&mut self, error: EgressError) -> EgressError {
        crate::telemetry::record_egress_failure(&self.provider.name, error.kind());
        self.failed = Some(error.clone());
        self.pending.clear();
        // Closing the channel makes the thread abort the guest's upload and end.
        self.requests = None;
        error
    }

    /// Completes the artifact and returns the location the provider reports.
    pub async fn finish(mut self) -> Result<String, EgressError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if let Some(gathered) = self.gathering.finish() {
            self.send(gathered).await?;
        }
        self.wait_pending().await?;
        let (reply, result) = oneshot::channel();
        let sent = match self.requests.take() {
            Some(requests) => requests.send(Request::Finish(reply)).await.is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.failed_write().await.unwrap_or_else(|| {
                EgressError::host(
                    &self.provider.name,
                    "the provider's thread ended before `finish`",
                )
            }));
        }
        let deadline = self.provider.limits.call_timeout();
        let finished = match tokio::time::timeout(deadline + GRACE, result).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(EgressError::host(
                &self.provider.name,
                "the provider's thread ended during `finish`",
            )),
            Err(_) => Err(EgressError::DeadlineExceeded {
                provider: self.provider.name.clone(),
                call: "finish",
                deadline,
            }),
        };
        if let Err(error) = &finished {
            crate::telemetry::record_egress_failure(&self.provider.name, error.kind());
        }
        finished
    }

    /// Abandons the artifact: the provider's upload is dropped unfinished, so that it removes what
    /// it created. Waits (bounded by the deadlines) until the provider is done, unless this side
    /// already gave up on the thread (stuck past a deadline: it aborts on its own if it ever
    /// returns); never fails.
    pub async fn abort(mut self) {
        self.requests = None;
        if self.stuck {
            // The thread is stuck past its deadline: it aborts on its own if the call ever
            // returns, and waiting for it would only delay the operation's failure.
            return;
        }
        let wait =
            self.provider.limits.write_timeout() + self.provider.limits.call_timeout() + GRACE;
        if tokio::time::timeout(wait, &mut self.done).await.is_err() {
            tracing::warn!(
                provider = %self.provider.name,
                "the provider did not finish aborting within {}",
                humantime::format_duration(wait)
            );
        }
    }
}

/// `data` in pieces of at most `size` bytes, in order, sharing its memory (no copy).
fn pieces(mut data: Bytes, size: usize) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || (!data.is_empty()).then(|| data.split_to(data.len().min(size))))
}

/// Turns the artifact's chunks into the provider's writes, in order: a chunk of at least
/// [`DIRECT_WRITE`] bytes (or the chunk size, if smaller) becomes a write as it is; smaller ones
/// are gathered into buffers of the chunk size.
#[derive(Debug)]
struct Gathering {
    chunk_size: usize,
    /// The write being gathered; its capacity is `chunk_size` (none before the first byte).
    buffer: BytesMut,
    /// What a small chunk had left once it filled the buffer; gathered first by the next call,
    /// so that the next buffer is taken only after the full one was sent (and perhaps one came
    /// back).
    rest: Bytes,
    /// Gathering buffers the thread handed back, ready for reuse.
    spare: Vec<BytesMut>,
}

impl Gathering {
    fn new(chunk_size: usize) -> Self {
        Gathering {
            chunk_size,
            buffer: BytesMut::new(),
            rest: Bytes::new(),
            spare: Vec::with_capacity(IN_FLIGHT),
        }
    }

    /// The writes `chunk` completes, in order: at most two (what was gathered before a large
    /// chunk and the chunk itself, or a gathering buffer the chunk filled).
    fn push(&mut self, chunk: Bytes) -> [Option<Bytes>; 2] {
        let rest = std::mem::take(&mut self.rest);
        if !rest.is_empty() {
            // Less than a chunk size, into an empty buffer: it cannot fill it.
            self.gather(rest);
        }
        if chunk.len() >= DIRECT_WRITE.min(self.chunk_size) {
            return [self.take_gathered(), Some(chunk)];
        }
        [self.gather(chunk), None]
    }

    /// Adds a chunk smaller than the chunk size to the buffer; returns the buffer once full.
    fn gather(&mut self, mut chunk: Bytes) -> Option<Bytes> {
        if self.buffer.capacity() == 0 {
            self.buffer = self
                .spare
                .pop()
                .unwrap_or_else(|| BytesMut::with_capacity(self.chunk_size));
        }
        let room = self.chunk_size.saturating_sub(self.buffer.len());
        if chunk.len() < room {
            self.buffer.extend_from_slice(&chunk);
            return None;
        }
        self.buffer.extend_from_slice(&chunk.split_to(room));
        self.rest = chunk;
        Some(std::mem::take(&mut self.buffer).freeze())
    }

    /// What is gathered and not yet written, if anything.
    fn take_gathered(&mut self) -> Option<Bytes> {
        (!self.buffer.is_empty()).then(|| std::mem::take(&mut self.buffer).freeze())
    }

    /// The last write: everything still gathered.
    fn finish(&mut self) -> Option<Bytes> {
        let rest = std::mem::take(&mut self.rest);
        if !rest.is_empty() {
            self.gather(rest);
        }
        self.take_gathered()
    }

    /// Keeps a gathering buffer the thread handed back, emptied, for reuse: at most
    /// [`IN_FLIGHT`] spares, so with the one being gathered three buffers in all.
    fn recycle(&mut self, buffer: BytesMut) {
        if buffer.capacity() == self.chunk_size && self.spare.len() < IN_FLIGHT {
            self.spare.push(buffer);
        }
    }
}

/// The upload's thread: owns the instance from instantiation to the end.
fn run(
    provider: Arc<LoadedProvider>,
    artifact: Artifact,
    ready: oneshot::Sender<Result<(), EgressError>>,
    mut requests: mpsc::Receiver<Request>,
) {
    let mut instance = match ProviderInstance::new(&provider) {
        Ok(instance) => instance,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    if let Err(error) = instance.configure() {
        let _ = ready.send(Err(error));
        return;
    }
    let upload = match instance.begin(&artifact) {
        Ok(upload) => upload,
        Err(error) => {
            remove_partials(&provider, &artifact);
            let _ = ready.send(Err(error));
            return;
        }
    };
    if ready.send(Ok(())).is_err() {
        // Whoever called `begin` is gone.
        instance.abort(upload);
        remove_partials(&provider, &artifact);
        return;
    }
    while let Some(request) = requests.blocking_recv() {
        match request {
            Request::Write(chunk, reply) => {
                let result = instance.write(upload, &chunk);
                // A write whose memory nothing else holds comes back, emptied, and the upload
                // keeps it if it has the chunk size's capacity (`Gathering::recycle`): its own
                // gathering buffers, and now and then a caller's chunk that happens to; the
                // rest, shared or not from a `BytesMut`, is dropped.
                let buffer = emptied(chunk);
                let failed = result.is_err();
                let _ = reply.send(Written { result, buffer });
                if failed {
                    instance.abort(upload);
                    remove_partials(&provider, &artifact);
                    return;
                }
            }
            Request::Pump(pump, clock, reply) => {
                let mut writer = PumpWriter {
                    instance: &mut instance,
                    upload,
                    provider: &provider.name,
                    clock: &clock,
                    gathering: Gathering::new(provider.limits.chunk_bytes()),
                    failed: None,
                };
                let pumped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    pump(&mut |chunk| writer.write(chunk))
                }));
                let Ok(ended) = pumped else {
                    // The instance may be mid-call: nothing more is called in it.
                    let _ = reply.send(Err(EgressError::host(
                        &provider.name,
                        "the capture's loop panicked on the upload's thread (a bug in diagmon)",
                    )));
                    remove_partials(&provider, &artifact);
                    return;
                };
                let result = writer.finish(ended);
                let failed = result.is_err();
                let _ = reply.send(result);
                if failed {
                    instance.abort(upload);
                    remove_partials(&provider, &artifact);
                    return;
                }
            }
            Request::Finish(reply) => {
                let result = instance.finish(upload);
                if result.is_err() {
                    remove_partials(&provider, &artifact);
                }
                let _ = reply.send(result);
                return;
            }
        }
    }
    instance.abort(upload);
    remove_partials(&provider, &artifact);
}

/// The memory of a chunk that was written, emptied for reuse, if nothing else holds it.
fn emptied(chunk: Bytes) -> Option<BytesMut> {
    chunk.try_into_mut().ok().map(|mut buffer| {
        buffer.clear();
        buffer
    })
}

/// The writer a pump's chunks go through on the upload's thread: gathered and split as
/// [`Upload::write`] does, each write timed for the watchdog, dead after its first error.
struct PumpWriter<'a> {
    instance: &'a mut ProviderInstance,
    upload: wasmtime::component::ResourceAny,
    provider: &'a str,
    clock: &'a WriteClock,
    gathering: Gathering,
    failed: Option<EgressError>,
}

impl PumpWriter<'_> {
    fn write(&mut self, chunk: Bytes) -> Result<(), EgressError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        crate::telemetry::record_egressed(self.provider, chunk.len() as u64);
        let written = (self.gathering.push(chunk).into_iter().flatten())
            .try_for_each(|data| self.write_pieces(data));
        if let Err(error) = &written {
            self.failed = Some(error.clone());
        }
        written
    }

    /// Writes what is still gathered if the pump's source `ended` cleanly; the first error.
    fn finish(mut self, ended: bool) -> Result<(), EgressError> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        match self.gathering.finish().filter(|_| ended) {
            Some(rest) => self.write_pieces(rest),
            None => Ok(()),
        }
    }

    /// Writes `data` in pieces of at most the chunk size, keeping their memory for the next
    /// gathering.
    fn write_pieces(&mut self, data: Bytes) -> Result<(), EgressError> {
        for piece in pieces(data, self.gathering.chunk_size) {
            self.clock.set(Some(std::time::Instant::now()));
            let written = self.instance.write(self.upload, &piece);
            self.clock.set(None);
            written?;
            if let Some(buffer) = emptied(piece) {
                self.gathering.recycle(buffer);
            }
        }
        Ok(())
    }
}

/// An upload that did not complete leaves no partial file: the provider's `abort` should have
/// removed it, but an instance the host stopped runs nothing more, and a provider may fail to
/// clean up; the host removes the upload's partial files from the granted directory itself.
fn remove_partials(provider: &LoadedProvider, artifact: &Artifact) {
    if let Some(directory) = provider.directory_path() {
        partials::remove_for_operation(&provider.name, directory, artifact.operation_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(gathering: &mut Gathering, chunk: Bytes) -> Vec<Bytes> {
        gathering.push(chunk).into_iter().flatten().collect()
    }

    fn filled(len: usize, byte: u8) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    #[test]
    fn the_write_clock_times_only_the_write_in_progress() {
        let clock = WriteClock::default();
        assert_eq!(clock.in_write_for(), None);
        clock.set(Some(std::time::Instant::now()));
        std::thread::sleep(Duration::from_millis(20));
        let spent = clock.in_write_for().expect("in a write");
        assert!(spent >= Duration::from_millis(20), "{spent:?}");
        clock.set(None);
        assert_eq!(clock.in_write_for(), None);
    }

    #[test]
    fn a_large_chunk_is_written_as_it_is_without_a_copy() {
        let mut gathering = Gathering::new(1 << 20);
        let read = filled(256 << 10, 1);
        let out = writes(&mut gathering, read.clone());
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].as_ptr(),
            read.as_ptr(),
            "the same memory, not a copy"
        );
        assert_eq!(out[0].len(), read.len());
        assert!(gathering.finish().is_none());
    }

    #[test]
    fn small_chunks_are_gathered_into_writes_of_the_chunk_size() {
        let mut gathering = Gathering::new(100 << 10);
        let mut out = Vec::new();
        let mut sent = Vec::new();
        for index in 0..7u8 {
            let chunk = filled(40 << 10, index);
            sent.extend_from_slice(&chunk);
            out.extend(writes(&mut gathering, chunk));
        }
        out.extend(gathering.finish());
        let sizes: Vec<usize> = out.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [100 << 10, 100 << 10, 80 << 10]);
        assert_eq!(out.concat(), sent, "the same bytes in the same order");
    }

    #[test]
    fn what_was_gathered_goes_before_a_large_chunk() {
        let mut gathering = Gathering::new(1 << 20);
        let small = filled(1000, 1);
        let large = filled(DIRECT_WRITE, 2);
        assert!(writes(&mut gathering, small.clone()).is_empty());
        let out = writes(&mut gathering, large.clone());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], small);
        assert_eq!(out[1].as_ptr(), large.as_ptr());
        assert!(writes(&mut gathering, filled(10, 3)).is_empty());
        assert_eq!(gathering.finish(), Some(filled(10, 3)));
    }

    #[test]
    fn a_chunk_size_below_the_direct_size_passes_chunks_of_that_size_through() {
        let mut gathering = Gathering::new(4 << 10);
        let chunk = filled(4 << 10, 5);
        let out = writes(&mut gathering, chunk.clone());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn a_buffer_handed_back_is_reused_for_the_next_gathering() {
        let mut gathering = Gathering::new(64 << 10);
        let full = writes(&mut gathering, filled(48 << 10, 1))
            .into_iter()
            .chain(writes(&mut gathering, filled(48 << 10, 2)))
            .next()
            .expect("a full buffer");
        assert_eq!(full.len(), 64 << 10);
        let address = full.as_ptr();
        let mut buffer = full.try_into_mut().expect("the only reference");
        buffer.clear();
        gathering.recycle(buffer);
        // The 32 KiB left of the second chunk go into the buffer that came back.
        let last = gathering.finish().expect("the rest");
        assert_eq!(last.len(), 32 << 10);
        assert_eq!(last.as_ptr(), address);
    }

    #[test]
    fn a_chunk_larger_than_the_chunk_size_is_split_into_writes_of_that_size_without_a_copy() {
        let data = Bytes::from((0..5 * 1024u32).map(|n| n as u8).collect::<Vec<u8>>());
        let written: Vec<Bytes> = pieces(data.clone(), 1024).collect();
        assert_eq!(written.len(), 5);
        for (index, piece) in written.iter().enumerate() {
            assert_eq!(piece.len(), 1024);
            assert_eq!(
                piece.as_ptr(),
                data[index * 1024..].as_ptr(),
                "shares the chunk's memory"
            );
        }
        assert_eq!(written.concat(), data.to_vec());
        let uneven: Vec<usize> = pieces(data.slice(..2500), 1024).map(|p| p.len()).collect();
        assert_eq!(uneven, [1024, 1024, 452]);
        assert_eq!(pieces(Bytes::new(), 1024).count(), 0);
    }
}

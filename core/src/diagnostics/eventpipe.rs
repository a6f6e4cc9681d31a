//! EventPipe sessions: start one with providers, stream its nettrace bytes, stop it gracefully.
//!
//! The session's connection becomes a one-way byte stream after the runtime's OK reply. Reading it
//! is pull-based, so a slow consumer slows the runtime down (and the runtime drops events in its
//! own buffers rather than diagmon buffering them): memory stays constant whatever the trace size.
//! Every chunk also goes through a framing-only [`NettraceValidator`], inline and at next to no
//! cost, which is how a stream that ends without its end-of-stream marker is told apart from a
//! clean end. Reading every event and hashing the bytes is the [`TraceSummarizer`]'s job, on a
//! thread of its own, for the callers that want a summary. A thread that does a capture's whole
//! work itself reads the same session by blocking calls ([`BlockingSession`]).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::nettrace::NettraceValidator;
use super::protocol::{Command, PayloadReader, PayloadWriter};
use super::read_buffers::ReadBuffers;
use super::summary::{TraceDigest, TraceSummarizer};
use super::{DiagnosticsClient, DiagnosticsError};

/// The rundown keyword the runtime uses when rundown is simply "on".
pub const DEFAULT_RUNDOWN_KEYWORD: u64 = 0x8002_0139;

/// One provider to enable in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventProvider {
    /// The provider name, e.g. `Microsoft-Windows-DotNETRuntime`.
    pub name: String,
    /// The keyword mask.
    pub keywords: u64,
    /// The level, 0 (LogAlways) to 5 (Verbose).
    pub level: u8,
    /// Arguments passed to the provider as filter data (`key=value;...`).
    pub arguments: BTreeMap<String, String>,
    /// Per-event filter (needs CollectTracing5, .NET 10).
    pub event_ids: Option<EventIdFilter>,
}

impl EventProvider {
    /// A provider with the given keywords and level and no arguments.
    pub fn new(name: impl Into<String>, keywords: u64, level: u8) -> Self {
        EventProvider {
            name: name.into(),
            keywords,
            level,
            arguments: BTreeMap::new(),
            event_ids: None,
        }
    }

    /// The filter data string: `key=value` pairs joined by `;`, a key or value quoted when it
    /// contains `;` or `=`.
    pub fn filter_data(&self) -> String {
        let quote = |text: &str| {
            if text.contains([';', '=']) {
                format!("\"{text}\"")
            } else {
                text.to_owned()
            }
        };
        self.arguments
            .iter()
            .map(|(key, value)| format!("{}={}", quote(key), quote(value)))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Which events of a provider a CollectTracing5 session delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventIdFilter {
    /// Only these event ids.
    Only(Vec<u32>),
    /// Every event except these ids.
    Except(Vec<u32>),
}

/// Whether and how the runtime emits rundown events when the session stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rundown {
    /// The runtime's default rundown ([`DEFAULT_RUNDOWN_KEYWORD`]).
    On,
    /// No rundown.
    Off,
    /// Rundown with these keywords (needs CollectTracing4, .NET 9).
    Keywords(u64),
}

/// The serialization format of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    /// NetPerf (V3), format 0.
    NetPerf = 0,
    /// NetTrace (V4 and later), format 1.
    NetTrace = 1,
}

/// What to ask of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Providers to enable; at least one.
    pub providers: Vec<EventProvider>,
    /// The runtime-side circular buffer size in MB (must be > 0).
    pub buffer_size_mb: u32,
    /// Rundown at the end of the session.
    pub rundown: Rundown,
    /// Whether the runtime collects stacks (turning it off needs CollectTracing3).
    pub stackwalk: bool,
    /// The stream format.
    pub format: TraceFormat,
}

impl SessionConfig {
    /// A NetTrace session with the default buffer (256 MB), rundown and stacks.
    pub fn new(providers: Vec<EventProvider>) -> Self {
        SessionConfig {
            providers,
            buffer_size_mb: 256,
            rundown: Rundown::On,
            stackwalk: true,
            format: TraceFormat::NetTrace,
        }
    }

    /// The commands that express this request, in the order to try them: the oldest one that can,
    /// then older ones that still can (on an unknown-command answer).
    fn candidate_commands(&self) -> Result<Vec<Command>, DiagnosticsError> {
        let custom_rundown = matches!(self.rundown, Rundown::Keywords(keywords)
            if keywords != DEFAULT_RUNDOWN_KEYWORD && keywords != 0);
        let filters = self.providers.iter().any(|p| p.event_ids.is_some());
        if self.providers.is_empty() {
            return Err(DiagnosticsError::Unsupported(
                "start a session without providers".to_owned(),
            ));
        }
        Ok(if filters {
            vec![Command::CollectTracing5]
        } else if custom_rundown {
            vec![Command::CollectTracing4]
        } else if !self.stackwalk {
            vec![Command::CollectTracing3]
        } else if self.rundown_enabled() {
            vec![Command::CollectTracing2, Command::CollectTracing]
        } else {
            vec![Command::CollectTracing2]
        })
    }

    fn rundown_enabled(&self) -> bool {
        !matches!(self.rundown, Rundown::Off | Rundown::Keywords(0))
    }

    fn rundown_keyword(&self) -> u64 {
        match self.rundown {
            Rundown::On => DEFAULT_RUNDOWN_KEYWORD,
            Rundown::Off => 0,
            Rundown::Keywords(keywords) => keywords,
        }
    }

    /// Encodes the request payload of `command`.
    fn encode(&self, command: Command) -> Vec<u8> {
        let mut writer = PayloadWriter::new();
        if command == Command::CollectTracing5 {
            writer.u32(0); // session type: streaming
        }
        writer.u32(self.buffer_size_mb).u32(self.format as u32);
        match command {
            Command::CollectTracing2 => {
                writer.bool(self.rundown_enabled());
            }
            Command::CollectTracing3 => {
                writer.bool(self.rundown_enabled()).bool(self.stackwalk);
            }
            Command::CollectTracing4 | Command::CollectTracing5 => {
                writer.u64(self.rundown_keyword()).bool(self.stackwalk);
            }
            _ => {}
        }
        writer.u32(self.providers.len() as u32);
        for provider in &self.providers {
            writer
                .u64(provider.keywords)
                .u32(u32::from(provider.level))
                .string(&provider.name)
                .string(&provider.filter_data());
            if command == Command::CollectTracing5 {
                let (enable, ids) = match &provider.event_ids {
                    None => (false, &[][..]),
                    Some(EventIdFilter::Only(ids)) => (true, &ids[..]),
                    Some(EventIdFilter::Except(ids)) => (false, &ids[..]),
                };
                writer.bool(enable).u32(ids.len() as u32);
                for id in ids {
                    writer.u32(*id);
                }
            }
        }
        writer.into_bytes()
    }

    fn feature_of(command: Command) -> &'static str {
        match command {
            Command::CollectTracing5 => "filter events by id (needs CollectTracing5, .NET 10)",
            Command::CollectTracing4 => {
                "use a custom rundown keyword (needs CollectTracing4, .NET 9)"
            }
            Command::CollectTracing3 => "turn stack collection off (needs CollectTracing3, .NET 9)",
            _ => "turn rundown off (needs CollectTracing2, .NET Core 3.1)",
        }
    }
}

impl DiagnosticsClient {
    /// Starts an EventPipe session with the oldest CollectTracing command that expresses
    /// `config`, falling back to older ones when the runtime does not know it.
    pub async fn start_session(
        &self,
        config: &SessionConfig,
    ) -> Result<EventPipeSession, DiagnosticsError> {
        let candidates = config.candidate_commands()?;
        let mut last = None;
        for command in &candidates {
            match self.request(*command, &config.encode(*command)).await {
                Ok((stream, payload)) => {
                    let id = PayloadReader::new(&payload).u64("session id")?;
                    tracing::debug!(session = id, %command, "EventPipe session started");
                    return Ok(EventPipeSession::new(self.clone(), id, *command, stream));
                }
                Err(error) if error.is_unknown_command() => last = Some(*command),
                Err(error) => return Err(error),
            }
        }
        let command = last.unwrap_or(Command::CollectTracing2);
        Err(DiagnosticsError::Unsupported(
            SessionConfig::feature_of(command).to_owned(),
        ))
    }

    /// Asks the runtime to stop session `session_id`; it answers once the session is disabled.
    pub async fn stop_tracing(&self, session_id: u64) -> Result<(), DiagnosticsError> {
        let payload = {
            let mut writer = PayloadWriter::new();
            writer.u64(session_id);
            writer.into_bytes()
        };
        self.request(Command::StopTracing, &payload)
            .await
            .map(|_| ())
    }
}

/// Stops a session gracefully from anywhere: cheap to clone, idempotent.
///
/// Stopping makes the runtime run rundown and write the end of the stream, which it can only do
/// while someone keeps reading the session: await [`StopHandle::stop`] on a different task from
/// the one reading the stream, or the two wait for each other.
///
/// The stop has a deadline, [`super::Timeouts::stop`] after it was first asked for: StopTracing
/// is retried until the runtime accepts it or the deadline passes, and a session whose stream
/// has not ended by then ends as [`DiagnosticsError::Truncated`] (its trace never got its end).
#[derive(Debug, Clone)]
pub struct StopHandle {
    client: DiagnosticsClient,
    session_id: u64,
    requested: watch::Sender<Option<Instant>>,
}

/// The first pause between two StopTracing attempts; it doubles up to [`MAX_STOP_RETRY_DELAY`].
const FIRST_STOP_RETRY_DELAY: Duration = Duration::from_millis(50);

/// The longest pause between two StopTracing attempts.
const MAX_STOP_RETRY_DELAY: Duration = Duration::from_secs(1);

impl StopHandle {
    /// Sends StopTracing and waits for the runtime's answer, retrying a refused or failed
    /// attempt until the stop deadline. Only the first call sends; later ones return at once.
    pub async fn stop(&self) -> Result<(), DiagnosticsError> {
        let now = Instant::now();
        let first = self.requested.send_if_modified(|requested| {
            let first = requested.is_none();
            if first {
                *requested = Some(now);
            }
            first
        });
        if !first {
            return Ok(());
        }
        let after = self.client.timeouts().stop;
        let deadline = now + after;
        let mut delay = FIRST_STOP_RETRY_DELAY;
        let mut attempt = 1u32;
        loop {
            let sent = tokio::time::timeout_at(deadline, self.client.stop_tracing(self.session_id));
            let error = match sent.await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) if error.is_unknown_command() => return Err(error),
                Ok(Err(error)) => error,
                Err(_) => {
                    return Err(DiagnosticsError::Timeout {
                        what: "accept StopTracing",
                        after,
                    });
                }
            };
            if Instant::now() + delay >= deadline {
                return Err(error);
            }
            tracing::warn!(session = self.session_id, attempt, %error, "StopTracing failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_STOP_RETRY_DELAY);
            attempt += 1;
        }
    }

    /// True once a stop was asked for.
    pub fn is_requested(&self) -> bool {
        self.requested.borrow().is_some()
    }
}

/// A running EventPipe session: a stream of nettrace bytes.
///
/// Dropping it closes the connection, which makes the runtime end the session (a cancel); use
/// [`StopHandle::stop`] for a graceful end with rundown.
#[derive(Debug)]
pub struct EventPipeSession {
    stream: UnixStream,
    state: StreamState,
}

/// What a session knows about its stream, however it is read.
#[derive(Debug)]
struct StreamState {
    id: u64,
    command: Command,
    stop: StopHandle,
    stop_requested: watch::Receiver<Option<Instant>>,
    framing: NettraceValidator,
    buffers: ReadBuffers,
    /// How the stream ended, once it has.
    end: Option<End>,
}

/// How a session's stream ended.
#[derive(Debug)]
enum End {
    /// After its end-of-stream marker.
    Clean,
    /// With an error, whose message later reads repeat.
    Failed(String),
}

impl StreamState {
    /// What a read returns once the stream has ended: its clean end again, or its failure.
    fn ended(&self) -> Option<Result<Option<Bytes>, DiagnosticsError>> {
        match &self.end {
            Some(End::Clean) => Some(Ok(None)),
            Some(End::Failed(reason)) => Some(Err(DiagnosticsError::SessionFailed(reason.clone()))),
            None => None,
        }
    }

    /// Remembers how the stream ended, if `next` ends it.
    fn record(&mut self, next: &Result<Option<Bytes>, DiagnosticsError>) {
        match next {
            Ok(Some(_)) => {}
            Ok(None) => self.end = Some(End::Clean),
            Err(error) => self.end = Some(End::Failed(error.to_string())),
        }
    }

    /// When the stream must have ended, once a stop was asked for.
    fn stop_deadline(&self) -> Option<Instant> {
        let requested_at = (*self.stop_requested.borrow())?;
        Some(requested_at + self.stop.client.timeouts().stop)
    }

    /// The error of a stream still running at its stop deadline.
    fn stop_overdue(&self) -> DiagnosticsError {
        DiagnosticsError::Truncated {
            bytes: self.framing.bytes_seen(),
            reason: format!(
                "the runtime did not end the trace within {:?} of the stop request, so it has \
                 no end-of-stream marker",
                self.stop.client.timeouts().stop
            ),
        }
    }

    /// Checks one read from the socket: its end is clean only after the end-of-stream marker,
    /// and its bytes must frame as nettrace.
    fn accept(
        &mut self,
        read: std::io::Result<Option<Bytes>>,
    ) -> Result<Option<Bytes>, DiagnosticsError> {
        let read = read.map_err(|source| DiagnosticsError::Io {
            what: "reading the trace stream",
            source,
        })?;
        let Some(chunk) = read else {
            if self.framing.is_complete() {
                return Ok(None);
            }
            return Err(DiagnosticsError::Truncated {
                bytes: self.framing.bytes_seen(),
                reason: "the runtime closed the stream before its end-of-stream marker \
                         (the process exited abruptly or the connection was cut)"
                    .to_owned(),
            });
        };
        if let Err(error) = self.framing.feed(&chunk) {
            return Err(DiagnosticsError::InvalidTrace(error.to_string()));
        }
        Ok(Some(chunk))
    }
}

impl EventPipeSession {
    fn new(client: DiagnosticsClient, id: u64, command: Command, stream: UnixStream) -> Self {
        let (requested, stop_requested) = watch::channel(None);
        EventPipeSession {
            stream,
            state: StreamState {
                id,
                command,
                stop: StopHandle {
                    client,
                    session_id: id,
                    requested,
                },
                stop_requested,
                framing: NettraceValidator::framing_only(),
                buffers: ReadBuffers::default(),
                end: None,
            },
        }
    }

    /// The runtime's session id.
    pub fn id(&self) -> u64 {
        self.state.id
    }

    /// The CollectTracing command the runtime accepted.
    pub fn command(&self) -> Command {
        self.state.command
    }

    /// A handle that stops this session gracefully.
    pub fn stop_handle(&self) -> StopHandle {
        self.state.stop.clone()
    }

    /// Bytes received so far.
    pub fn bytes_received(&self) -> u64 {
        self.state.framing.bytes_seen()
    }

    /// The next chunk of the trace; `Ok(None)` once the stream ended after its end-of-stream
    /// marker. An end without the marker is [`DiagnosticsError::Truncated`], and so is a stream
    /// still running [`super::Timeouts::stop`] after the stop request (see [`StopHandle`]). Once it has
    /// failed, every later call fails too ([`DiagnosticsError::SessionFailed`]), never reporting
    /// a clean end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, DiagnosticsError> {
        if let Some(ended) = self.state.ended() {
            return ended;
        }
        let next = self.read_next().await;
        self.state.record(&next);
        next
    }

    async fn read_next(&mut self) -> Result<Option<Bytes>, DiagnosticsError> {
        let read = loop {
            if let Some(deadline) = self.state.stop_deadline() {
                let read = self.state.buffers.read_chunk(&mut self.stream);
                match tokio::time::timeout_at(deadline, read).await {
                    Ok(read) => break read,
                    Err(_) => return Err(self.state.stop_overdue()),
                }
            }
            tokio::select! {
                read = self.state.buffers.read_chunk(&mut self.stream) => break read,
                _ = self.state.stop_requested.changed() => {}
            }
        };
        self.state.accept(read)
    }

    /// The same session, read by blocking calls from a thread that may block (see
    /// [`BlockingSession`]).
    pub fn into_blocking(self) -> BlockingSession {
        let stream = self.stream.into_std().and_then(|stream| {
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(BLOCKING_POLL))?;
            Ok(stream)
        });
        BlockingSession {
            stream,
            state: self.state,
        }
    }

    /// Reads the rest of the stream into `sink` and summarises it (see [`TraceSummarizer`]).
    pub async fn copy_to<W>(mut self, sink: &mut W) -> Result<TraceDigest, DiagnosticsError>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;
        let mut summarizer = TraceSummarizer::start()?;
        while let Some(chunk) = self.next_chunk().await? {
            sink.write_all(&chunk)
                .await
                .map_err(|source| DiagnosticsError::Io {
                    what: "writing the trace",
                    source,
                })?;
            summarizer.feed(chunk).await?;
        }
        sink.flush().await.map_err(|source| DiagnosticsError::Io {
            what: "writing the trace",
            source,
        })?;
        summarizer.finish().await
    }
}

/// How long a [`BlockingSession`]'s read waits for bytes before it returns an empty chunk, so
/// that its caller can look for a cancel.
pub const BLOCKING_POLL: Duration = Duration::from_millis(100);

/// An [`EventPipeSession`] read by blocking calls, for a thread that does the rest of a capture's
/// work on each chunk itself (an egress upload's thread): no task hand-off per chunk. The same
/// rules as [`EventPipeSession::next_chunk`] hold; dropping it cancels the session (it shuts the
/// connection down, whatever [`SessionInterrupter`] still holds a handle to it).
#[derive(Debug)]
pub struct BlockingSession {
    /// The socket, or why it could not be made blocking (reported by the first read).
    stream: std::io::Result<std::os::unix::net::UnixStream>,
    state: StreamState,
}

impl Drop for BlockingSession {
    fn drop(&mut self) {
        if let Ok(stream) = &self.stream {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Cuts a [`BlockingSession`]'s connection from another thread: the runtime ends the session
/// (a cancel), and a read waiting on it returns at once.
#[derive(Debug)]
pub struct SessionInterrupter {
    stream: Option<std::os::unix::net::UnixStream>,
}

impl SessionInterrupter {
    /// Shuts the connection down both ways. Idempotent; harmless once the session ended.
    pub fn interrupt(&self) {
        if let Some(stream) = &self.stream {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl BlockingSession {
    /// A handle that cuts this session's connection from another thread.
    pub fn interrupter(&self) -> SessionInterrupter {
        SessionInterrupter {
            stream: self
                .stream
                .as_ref()
                .ok()
                .and_then(|stream| stream.try_clone().ok()),
        }
    }

    /// The next chunk of the trace, as [`EventPipeSession::next_chunk`] gives it; an empty chunk
    /// when no byte came within [`BLOCKING_POLL`] (ask again after looking for a cancel).
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, DiagnosticsError> {
        if let Some(ended) = self.state.ended() {
            return ended;
        }
        let next = self.read_next();
        self.state.record(&next);
        next
    }

    fn read_next(&mut self) -> Result<Option<Bytes>, DiagnosticsError> {
        let stream = match &mut self.stream {
            Ok(stream) => stream,
            Err(error) => {
                return Err(DiagnosticsError::Io {
                    what: "making the trace stream blocking",
                    source: std::io::Error::new(error.kind(), error.to_string()),
                });
            }
        };
        // Bytes already there when the stop deadline passes are still read, for one poll
        // interval at most; a read that waits past the deadline, or any read after that
        // interval, ends the stream (a runtime that streams on after a stop is cut).
        let deadline = self.state.stop_deadline();
        if let Some(deadline) = deadline {
            let now = Instant::now();
            if now >= deadline + BLOCKING_POLL {
                return Err(self.state.stop_overdue());
            }
            let left = deadline.saturating_duration_since(now);
            let wait = left.clamp(Duration::from_millis(1), BLOCKING_POLL);
            if let Err(source) = stream.set_read_timeout(Some(wait)) {
                return Err(DiagnosticsError::Io {
                    what: "reading the trace stream",
                    source,
                });
            }
        }
        let read = self.state.buffers.read_chunk_blocking(stream);
        if let Err(error) = &read
            && matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            )
        {
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(self.state.stop_overdue());
            }
            return Ok(Some(Bytes::new()));
        }
        self.state.accept(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SessionConfig {
        SessionConfig::new(vec![EventProvider::new("P", u64::MAX, 5)])
    }

    #[test]
    fn the_oldest_command_that_expresses_the_request_is_chosen() {
        let choose = |config: SessionConfig| config.candidate_commands().unwrap();
        assert_eq!(
            choose(config()),
            [Command::CollectTracing2, Command::CollectTracing]
        );
        let mut no_rundown = config();
        no_rundown.rundown = Rundown::Off;
        assert_eq!(choose(no_rundown), [Command::CollectTracing2]);
        let mut no_stacks = config();
        no_stacks.stackwalk = false;
        assert_eq!(choose(no_stacks), [Command::CollectTracing3]);
        let mut custom = config();
        custom.rundown = Rundown::Keywords(0x8);
        assert_eq!(choose(custom), [Command::CollectTracing4]);
        let mut filtered = config();
        filtered.providers[0].event_ids = Some(EventIdFilter::Only(vec![1]));
        assert_eq!(choose(filtered), [Command::CollectTracing5]);
    }

    #[test]
    fn collect_tracing2_payload_layout() {
        let mut provider = EventProvider::new("AB", 0x14, 4);
        provider.arguments.insert("k".into(), "v=1".into());
        let mut config = SessionConfig::new(vec![provider]);
        config.buffer_size_mb = 64;
        let bytes = config.encode(Command::CollectTracing2);
        let mut reader = PayloadReader::new(&bytes);
        assert_eq!(reader.u32("buffer").unwrap(), 64);
        assert_eq!(reader.u32("format").unwrap(), 1);
        assert_eq!(bytes[8], 1, "rundown flag is one byte");
        let mut reader = PayloadReader::new(&bytes[9..]);
        assert_eq!(reader.u32("count").unwrap(), 1);
        assert_eq!(reader.u64("keywords").unwrap(), 0x14);
        assert_eq!(reader.u32("level").unwrap(), 4);
        assert_eq!(reader.string("name").unwrap(), "AB");
        assert_eq!(reader.string("filter").unwrap(), "k=\"v=1\"");
        assert_eq!(reader.remaining(), 0);
    }

    #[test]
    fn collect_tracing5_carries_session_type_and_event_filters() {
        let mut config = config();
        config.providers[0].event_ids = Some(EventIdFilter::Except(vec![7, 9]));
        let bytes = config.encode(Command::CollectTracing5);
        let mut reader = PayloadReader::new(&bytes);
        assert_eq!(reader.u32("type").unwrap(), 0);
        assert_eq!(reader.u32("buffer").unwrap(), 256);
        assert_eq!(reader.u32("format").unwrap(), 1);
        assert_eq!(reader.u64("rundown").unwrap(), DEFAULT_RUNDOWN_KEYWORD);
        // stackwalk bool, then the provider array
        let mut reader = PayloadReader::new(&bytes[21..]);
        assert_eq!(reader.u32("count").unwrap(), 1);
        reader.u64("keywords").unwrap();
        reader.u32("level").unwrap();
        reader.string("name").unwrap();
        reader.string("filter").unwrap();
        let rest = &bytes[bytes.len() - 13..];
        assert_eq!(rest[0], 0, "Except = enable false");
        assert_eq!(&rest[1..5], &2u32.to_le_bytes());
    }
}

//! A streaming validator of nettrace (EventPipe) traces.
//!
//! [`NettraceValidator`] is fed a trace's bytes as they arrive, from a live EventPipe session or a
//! file, and checks its structure on the way: the header, every object or block, and every event
//! record inside the event blocks. It keeps in memory only the unit it is parsing (a header, an
//! object header, one block; a block may be at most 64 MiB), so its memory does not grow with the
//! trace. [`NettraceValidator::finish`] then says whether the trace is complete, truncated (the
//! stream stopped early: the target was killed or the connection cut) or malformed, and
//! summarises it in a [`NettraceSummary`]: blocks, events per provider and per event, metadata,
//! stacks, and an estimate of the events the runtime dropped.
//!
//! It reads NetPerf V3, nettrace V4/V5 (FastSerialization objects) and nettrace V6 (plain
//! blocks). It does not decode event payloads: only the metadata definitions it needs to name
//! events. The format notes it follows are `docs/ipc-protocol.md`, section 5.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The largest block a trace may declare. The runtime writes blocks of about 100 KB; the limit
/// only stops a corrupt size from making the validator buffer gigabytes.
const MAX_BLOCK_SIZE: usize = 64 << 20;
/// FastSerialization type names are short identifiers (`EventBlock`); longer ones mean corruption.
const MAX_TYPE_NAME_LEN: usize = 64;
/// How many warnings a summary keeps.
const MAX_WARNINGS: usize = 20;
/// How many metadata definitions are tracked by name (real traces have a few thousand).
const MAX_METADATA_ENTRIES: usize = 100_000;
/// How many capture threads are tracked for dropped-event estimates.
const MAX_TRACKED_THREADS: usize = 1 << 18;
/// How many distinct undefined metadata ids are counted separately.
const MAX_UNKNOWN_METADATA_IDS: usize = 1024;
/// Longest provider or event name kept, in UTF-16 code units or characters.
const MAX_NAME_CHARS: usize = 256;
/// Metadata ids below this are looked up in a dense table; the runtime numbers them from 1.
const DENSE_METADATA_IDS: u32 = 1 << 16;
/// Read size of [`validate_file`].
const READ_CHUNK: usize = 1 << 20;
/// A buffered unit larger than this gives its memory back once parsed.
const KEEP_BUFFER_CAPACITY: usize = 8 << 20;

const MAGIC: &[u8] = b"Nettrace";
const SIGNATURE: &[u8] = b"!FastSerialization.1";

const TAG_NULL_REFERENCE: u8 = 1;
const TAG_BEGIN_OBJECT: u8 = 4;
const TAG_BEGIN_PRIVATE_OBJECT: u8 = 5;
const TAG_END_OBJECT: u8 = 6;

const FLAG_METADATA_ID: u8 = 1;
const FLAG_CAPTURE_THREAD_AND_SEQUENCE: u8 = 2;
const FLAG_THREAD_ID: u8 = 4;
const FLAG_STACK_ID: u8 = 8;
const FLAG_ACTIVITY_ID: u8 = 16;
const FLAG_LABEL_LIST: u8 = 16;
const FLAG_RELATED_ACTIVITY_ID: u8 = 32;
const FLAG_DATA_LENGTH: u8 = 128;

/// The layout of a nettrace stream.
///
/// Serialized as the variant name (`"NetTraceV4"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum NettraceFormat {
    /// NetPerf, version 3: no magic, FastSerialization `BeginObject` tags, metadata and stacks
    /// inline in event blocks (EventPipe format 0).
    NetPerfV3,
    /// Nettrace version 4: `Nettrace` magic, FastSerialization objects, separate metadata, stack
    /// and sequence-point blocks, compressed event headers.
    NetTraceV4,
    /// Version 4 whose metadata carries the optional V5 tags (opcode, V2 parameters). The Trace
    /// object still says 4, so this is only reported once such a tag was seen.
    NetTraceV5,
    /// Nettrace version 6: a small header and plain `size | kind` blocks, no FastSerialization.
    NetTraceV6,
}

impl fmt::Display for NettraceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NettraceFormat::NetPerfV3 => "NetPerf V3",
            NettraceFormat::NetTraceV4 => "nettrace V4",
            NettraceFormat::NetTraceV5 => "nettrace V5",
            NettraceFormat::NetTraceV6 => "nettrace V6",
        })
    }
}

/// What a complete, well-formed trace contains.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NettraceSummary {
    /// The stream's layout.
    pub format: NettraceFormat,
    /// Bytes in the stream, including any after the end-of-stream marker.
    pub bytes: u64,
    /// The traced process's pointer size in bytes, from the Trace object (0 if it gave none).
    pub pointer_size: u32,
    /// The traced process's id, from the Trace object (V6: its `ProcessId` key, if present).
    pub process_id: Option<u64>,
    /// The sample profiler's interval in nanoseconds, from the Trace object (V6: its
    /// `ExpectedCPUSamplingRate` key, if present).
    pub sampling_rate_ns: Option<u32>,
    /// Event blocks in the stream.
    pub event_blocks: u64,
    /// Metadata blocks in the stream (NetPerf has none: its metadata rides in event blocks).
    pub metadata_blocks: u64,
    /// Stack blocks in the stream.
    pub stack_blocks: u64,
    /// Sequence-point blocks in the stream.
    pub sequence_point_blocks: u64,
    /// Events: records of event blocks that are not metadata definitions.
    pub events: u64,
    /// Metadata definitions: one per event type the trace describes.
    pub metadata_records: u64,
    /// Stacks defined by stack blocks.
    pub stacks: u64,
    /// A lower bound on the events the runtime dropped (its buffers were full), from gaps in the
    /// per-thread sequence numbers and from sequence points. Always 0 for NetPerf, which has no
    /// sequence numbers.
    pub dropped_events_estimate: u64,
    /// Events per provider name. Events whose metadata id was never defined count under
    /// `"<unknown>"`.
    pub events_by_provider: BTreeMap<String, u64>,
    /// Events per `"Provider/EventName"`, or `"Provider/#eventId"` for events without a name (the
    /// runtime's own events on .NET Core 3.1). Events with an undefined metadata id count under
    /// `"<unknown>/metadata-id-N"`.
    pub events_by_event: BTreeMap<String, u64>,
    /// Oddities that do not make the trace unreadable, at most 20; when there were more, the last
    /// entry says how many were left out.
    pub warnings: Vec<String>,
}

/// Why a trace is not complete and well-formed.
#[derive(Debug, thiserror::Error)]
pub enum NettraceError {
    /// The stream stopped before its end: it ended inside an object or block, or without the
    /// end-of-stream marker. What arrived is structurally valid as far as it goes.
    #[error("the trace is truncated: the stream ended at byte {offset} {context}")]
    Truncated {
        /// Where the stream ended: the number of bytes it held.
        offset: u64,
        /// Where in the structure it ended, e.g. `inside the EventBlock that starts at byte 96`.
        context: String,
    },
    /// The bytes break the format: this is not nettrace, or a corrupt one.
    #[error("the trace is malformed at byte {offset}: {reason}")]
    Malformed {
        /// The stream offset of the offending byte (or of the structure it belongs to).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The trace file could not be read.
    #[error("cannot read the trace: {0}")]
    Io(#[from] io::Error),
}

impl NettraceError {
    /// True for [`NettraceError::Truncated`]: the trace is incomplete rather than corrupt.
    pub fn is_truncated(&self) -> bool {
        matches!(self, NettraceError::Truncated { .. })
    }

    /// A copy of this error, for returning it again from later calls.
    fn duplicate(&self) -> Self {
        match self {
            NettraceError::Truncated { offset, context } => NettraceError::Truncated {
                offset: *offset,
                context: context.clone(),
            },
            NettraceError::Malformed { offset, reason } => NettraceError::Malformed {
                offset: *offset,
                reason: reason.clone(),
            },
            NettraceError::Io(error) => {
                NettraceError::Io(io::Error::new(error.kind(), error.to_string()))
            }
        }
    }
}

#[cold]
fn malformed(offset: u64, reason: impl Into<String>) -> NettraceError {
    NettraceError::Malformed {
        offset,
        reason: reason.into(),
    }
}

/// Validates a whole nettrace file, reading it in 1 MiB chunks (memory does not grow with the
/// file). Read failures are [`NettraceError::Io`].
pub fn validate_file(path: &Path) -> Result<NettraceSummary, NettraceError> {
    let mut file = File::open(path)?;
    let mut buffer = vec![0; READ_CHUNK];
    let mut validator = NettraceValidator::new();
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        };
        validator.feed(buffer.get(..read).unwrap_or_default())?;
    }
    validator.finish()
}

/// An incremental nettrace validator: feed it bytes as they arrive, then [`finish`] it.
///
/// It never panics on any input, buffers at most one unit (a block of up to 64 MiB), and parses
/// whole units straight from the fed slices when they fit. A structural error is reported by the
/// [`feed`] that completes the unit holding it; a stream that merely stops early is only known
/// to be truncated at [`finish`].
///
/// [`feed`]: NettraceValidator::feed
/// [`finish`]: NettraceValidator::finish
pub struct NettraceValidator {
    /// Whether block contents are parsed, or only the framing around them.
    depth: Depth,
    /// Bytes of block contents still to pass over before the next unit (framing only).
    skip: u64,
    /// What the next unit is.
    step: Step,
    /// The size of the next unit.
    need: usize,
    /// Stream offset of the next unit's first byte.
    unit_start: u64,
    /// Stream offset of the object or block being read (for messages).
    object_start: u64,
    /// The part of the next unit received so far, when it arrived in pieces.
    pending: Vec<u8>,
    bytes_seen: u64,
    /// The first error; every later call returns it again.
    error: Option<NettraceError>,
    format: Option<NettraceFormat>,
    saw_v5_metadata: bool,
    saw_trace: bool,
    /// `minReaderVersion` of the object whose type header was just read.
    type_min_version: i32,
    trailing_bytes: u64,
    end_offset: u64,
    trace: TraceInfo,
    counts: Counts,
    metadata: MetadataTable,
    /// The last metadata id looked up and where it led (`None`: undefined).
    metadata_cache: Option<(u32, Option<usize>)>,
    sequences: SequenceTracker,
    warnings: Warnings,
    /// Aggregated oddities, reported once at the end rather than per occurrence.
    timestamps_outside: Occurrences,
    sequence_regressions: Occurrences,
    warned_stack_size: bool,
    warned_unknown_v6_kinds: Vec<u8>,
    /// Who else sees each record (payload decoders), if anyone.
    observer: Option<RecordObserver>,
}

/// One record of a nettrace stream (V3-V5 layout), handed to a [`RecordObserver`] as it is parsed.
#[derive(Debug, Clone, Copy)]
pub enum NettraceRecord<'a> {
    /// A metadata definition: its payload (`i32 id`, provider, event id, name, fields, tags).
    Metadata(&'a [u8]),
    /// An event: the id of the metadata that describes it, and its payload.
    Event {
        /// The metadata id the event refers to.
        metadata_id: u32,
        /// The event's payload bytes.
        payload: &'a [u8],
    },
}

/// A callback that sees every metadata and event record a full-depth validator parses.
pub type RecordObserver = Box<dyn FnMut(NettraceRecord<'_>) + Send>;

impl Default for NettraceValidator {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for NettraceValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NettraceValidator")
            .field("format", &self.format)
            .field("step", &self.step)
            .field("bytes_seen", &self.bytes_seen)
            .field("events", &self.counts.events)
            .field("complete", &self.is_complete())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl NettraceValidator {
    /// A validator expecting the first byte of a stream; it parses every block and event.
    pub fn new() -> Self {
        Self::with_depth(Depth::Events)
    }

    /// A validator that checks only the framing: the header, the Trace object, every block's
    /// size and end, and the end-of-stream marker. It passes over block contents without reading
    /// or buffering them, so it costs next to nothing per byte, and it still tells a whole trace
    /// from one cut short or with broken framing. Its summary counts blocks and bytes; events,
    /// metadata, stacks, drops and the per-provider maps stay empty.
    pub fn framing_only() -> Self {
        Self::with_depth(Depth::Framing)
    }

    fn with_depth(depth: Depth) -> Self {
        Self {
            depth,
            skip: 0,
            step: Step::Magic,
            need: MAGIC.len(),
            unit_start: 0,
            object_start: 0,
            pending: Vec::new(),
            bytes_seen: 0,
            error: None,
            format: None,
            saw_v5_metadata: false,
            saw_trace: false,
            type_min_version: 0,
            trailing_bytes: 0,
            end_offset: 0,
            trace: TraceInfo::default(),
            counts: Counts::default(),
            metadata: MetadataTable::default(),
            metadata_cache: None,
            sequences: SequenceTracker::default(),
            warnings: Warnings::default(),
            timestamps_outside: Occurrences::default(),
            sequence_regressions: Occurrences::default(),
            warned_stack_size: false,
            warned_unknown_v6_kinds: Vec::new(),
            observer: None,
        }
    }

    /// A full-depth validator that also hands every V3-V5 metadata and event record to
    /// `observer` (V6 records are validated but not handed on).
    pub fn with_observer(observer: RecordObserver) -> Self {
        let mut validator = Self::new();
        validator.observer = Some(observer);
        validator
    }

    /// Feeds the next bytes of the stream.
    ///
    /// Returns [`NettraceError::Malformed`] as soon as a completed unit breaks the format; after
    /// an error, every later call returns the same error. Bytes after the end-of-stream marker
    /// are counted, not parsed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), NettraceError> {
        if let Some(error) = &self.error {
            return Err(error.duplicate());
        }
        self.bytes_seen = self.bytes_seen.saturating_add(bytes.len() as u64);
        let result = self.consume(bytes);
        if let Err(error) = &result {
            self.error = Some(error.duplicate());
            self.pending = Vec::new();
        }
        result
    }

    /// True once the end-of-stream marker has been seen.
    pub fn is_complete(&self) -> bool {
        matches!(self.step, Step::Done)
    }

    /// Bytes fed so far.
    pub fn bytes_seen(&self) -> u64 {
        self.bytes_seen
    }

    /// The stream's layout, once its header has been read. A V4 stream reads as V5 only after
    /// metadata with V5 tags was seen.
    pub fn format(&self) -> Option<NettraceFormat> {
        self.format.map(|format| self.effective_format(format))
    }

    /// Events counted so far.
    pub fn events_seen(&self) -> u64 {
        self.counts.events
    }

    /// Ends the stream and summarises it.
    ///
    /// Succeeds only if the end-of-stream marker was seen. A stream that stopped without it, or
    /// inside an object, is [`NettraceError::Truncated`]; an earlier error is returned again.
    pub fn finish(self) -> Result<NettraceSummary, NettraceError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if !self.is_complete() {
            return Err(NettraceError::Truncated {
                offset: self.bytes_seen,
                context: self.truncation_context(),
            });
        }
        Ok(self.into_summary())
    }

    // ---------------------------------------------------------------------------------------
    // Driving units from fed bytes.

    fn consume(&mut self, mut input: &[u8]) -> Result<(), NettraceError> {
        loop {
            if matches!(self.step, Step::Done) {
                self.trailing_bytes = self.trailing_bytes.saturating_add(input.len() as u64);
                return Ok(());
            }
            if self.skip > 0 {
                let skipped =
                    usize::try_from(self.skip).map_or(input.len(), |skip| skip.min(input.len()));
                input = input.get(skipped..).unwrap_or_default();
                self.skip -= skipped as u64;
                self.advance(skipped);
                if self.skip > 0 {
                    return Ok(());
                }
            }
            let need = self.need;
            if self.pending.is_empty() {
                // Parse straight from the caller's slice when the whole unit is there.
                if let Some((unit, rest)) = input.split_at_checked(need) {
                    self.process(unit)?;
                    self.advance(need);
                    input = rest;
                    continue;
                }
                if !input.is_empty() {
                    self.pending.reserve(need.min(1 << 20));
                    self.pending.extend_from_slice(input);
                }
                return Ok(());
            }
            let missing = need.saturating_sub(self.pending.len());
            let Some((head, rest)) = input.split_at_checked(missing) else {
                self.pending.extend_from_slice(input);
                return Ok(());
            };
            self.pending.extend_from_slice(head);
            let mut unit = std::mem::take(&mut self.pending);
            let result = self.process(&unit);
            if unit.capacity() <= KEEP_BUFFER_CAPACITY {
                unit.clear();
                self.pending = unit;
            }
            result?;
            self.advance(need);
            input = rest;
        }
    }

    fn advance(&mut self, consumed: usize) {
        self.unit_start = self.unit_start.saturating_add(consumed as u64);
    }

    fn expect(&mut self, step: Step, need: usize) {
        self.step = step;
        self.need = need;
    }

    /// Parses one complete unit, which starts at `self.unit_start`, and sets up the next one.
    fn process(&mut self, unit: &[u8]) -> Result<(), NettraceError> {
        let at = self.unit_start;
        match self.step {
            Step::Magic => self.on_magic(unit, at),
            Step::NettraceVersion => self.on_nettrace_version(unit, at),
            Step::Signature { from } => {
                if unit != SIGNATURE.get(from..).unwrap_or_default() {
                    return Err(malformed(
                        at,
                        "expected the `!FastSerialization.1` signature after the header",
                    ));
                }
                self.format.get_or_insert(NettraceFormat::NetTraceV4);
                self.expect(Step::ObjectTag, 1);
                Ok(())
            }
            Step::V6Version => self.on_v6_version(unit, at),
            Step::ObjectTag => self.on_object_tag(unit, at),
            Step::TypeHeader => self.on_type_header(unit, at),
            Step::TypeName => self.on_type_name(unit, at),
            Step::TraceBody => self.on_trace_body(unit, at),
            Step::BlockSize(kind) => self.on_block_size(kind, unit, at),
            Step::BlockBody { kind, padding } => self.on_block_body(kind, padding, unit, at),
            Step::BlockEnd { kind, size } => self.on_block_end(kind, size, unit, at),
            Step::V6BlockHeader => self.on_v6_block_header(unit, at),
            Step::V6BlockBody(kind) => self.on_v6_block_body(kind, unit, at),
            Step::Done => Ok(()),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Stream headers.

    fn on_magic(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
        if unit == MAGIC {
            self.expect(Step::NettraceVersion, 4);
            return Ok(());
        }
        // NetPerf has no magic: it starts with the signature's length (20) and the signature.
        let netperf = unit.split_at_checked(4).is_some_and(|(length, signature)| {
            length == 20u32.to_le_bytes() && SIGNATURE.starts_with(signature)
        });
        if !netperf {
            return Err(malformed(
                at,
                "this is not a nettrace stream: it starts with neither the `Nettrace` magic nor a \
                 FastSerialization header",
            ));
        }
        self.format = Some(NettraceFormat::NetPerfV3);
        let from = unit.len().saturating_sub(4);
        self.expect(
            Step::Signature { from },
            SIGNATURE.len().saturating_sub(from),
        );
        Ok(())
    }

    fn on_nettrace_version(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
        match Reader::new(unit).u32() {
            // V6: a reserved zero where V4/V5 have the FastSerialization signature's length.
            Some(0) => {
                self.expect(Step::V6Version, 8);
                Ok(())
            }
            Some(20) => {
                self.format = Some(NettraceFormat::NetTraceV4);
                self.expect(Step::Signature { from: 0 }, SIGNATURE.len());
                Ok(())
            }
            other => Err(malformed(
                at,
                format!(
                    "after the `Nettrace` magic expected 20 (a FastSerialization header, V4/V5) \
                     or 0 (V6), found {}",
                    other.unwrap_or_default()
                ),
            )),
        }
    }

    fn on_v6_version(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
        let major = Reader::new(unit).u32().unwrap_or_default();
        if major != 6 {
            return Err(malformed(
                at,
                format!(
                    "nettrace major version {major} is not supported; this validator reads \
                     version 6 (and V4/V5 streams, which have no version field here)"
                ),
            ));
        }
        self.format = Some(NettraceFormat::NetTraceV6);
        self.sequences.v6 = true;
        self.expect(Step::V6BlockHeader, 4);
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // FastSerialization objects (NetPerf V3, nettrace V4/V5).

    fn begin_tag(&self) -> u8 {
        if self.format == Some(NettraceFormat::NetPerfV3) {
            TAG_BEGIN_OBJECT
        } else {
            TAG_BEGIN_PRIVATE_OBJECT
        }
    }

    fn on_object_tag(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
        match unit.first().copied() {
            Some(TAG_NULL_REFERENCE) => {
                if !self.saw_trace {
                    return Err(malformed(
                        at,
                        "the end-of-stream marker comes before the Trace object",
                    ));
                }
                self.end_offset = at;
                self.expect(Step::Done, 0);
                Ok(())
            }
            Some(TAG_BEGIN_OBJECT | TAG_BEGIN_PRIVATE_OBJECT) => {
                self.object_start = at;
                // Type tag, NullReference, version, minReaderVersion, name length.
                self.expect(Step::TypeHeader, 14);
                Ok(())
            }
            tag => Err(malformed(
                at,
                format!(
                    "expected an object (tag {}) or the end-of-stream marker (tag 1), found tag {}",
                    self.begin_tag(),
                    tag.unwrap_or_default()
                ),
            )),
        }
    }

    fn on_type_header(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
        let mut r = Reader::new(unit);
        let tag = r.u8().unwrap_or_default();
        if tag != TAG_BEGIN_OBJECT && tag != TAG_BEGIN_PRIVATE_OBJECT {
            return Err(malformed(
                at,
                format!(
                    "expected the object's type header (tag {}), found tag {tag}",
                    self.begin_tag()
                ),
            ));
        }
        let null = r.u8().unwrap_or_default();
        if null != TAG_NULL_REFERENCE {
            return Err(malformed(
                at.saturating_add(1),
                format!(
                    "expected a NullReference tag (1) in the object's type header, found {null}"
                ),
            ));
        }
        let _version = r.i32();
        self.type_min_version = r.i32().unwrap_or_default();
        let name_len = r.i32().unwrap_or_default();
        match usize::try_from(name_len) {
            Ok(len) if len <= MAX_TYPE_NAME_LEN => {
                self.expect(Step::TypeName, len.saturating_add(1));
                Ok(())
            }
            _ => Err(malformed(
                at.saturating_add(10),
                format!(
                    "the object's type name is {name_len} bytes long; type names are at most \
                     {MAX_TYPE_NAME_LEN} bytes"
                ),
            )),
        }
    }

    fn on_type_name(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
        let Some((end, name)) = unit.split_last() else {
            return Err(malformed(at, "internal error: empty type name unit"));
        };
        let end_at = at.saturating_add(name.len() as u64);
        if *end != TAG_END_OBJECT {
            return Err(malformed(
                end_at,
                format!(
                    "expected the end of the type header (tag 6) after its name, found tag {end}"
                ),
            ));
        }
        let Some(kind) = ObjectKind::from_name(name) else {
            return Err(malformed(
                at,
                format!(
                    "unknown object type `{}`; FastSerialization objects have no length, so an \
                     unknown one cannot be skipped",
                    String::from_utf8_lossy(name).escape_debug()
                ),
            ));
        };
        match (self.saw_trace, kind) {
            (false, ObjectKind::Trace) => {
                if self.type_min_version > 4 {
                    let version = self.type_min_version;
                    self.warn(|| {
                        format!(
                            "the Trace object asks for reader version {version}; this validator \
                             knows versions up to 4"
                        )
                    });
                }
                // SYSTEMTIME, syncTimeQPC, qpcFrequency, pointerSize, pid, processorCount,
                // samplingRateNs, then the end-of-object tag.
                self.expect(Step::TraceBody, 49);
                Ok(())
            }
            (false, other) => Err(malformed(
                self.object_start,
                format!("the first object must be `Trace`, found `{}`", other.name()),
            )),
            (true, ObjectKind::Trace) => Err(malformed(
                self.object_start,
                "a second `Trace` object; a stream has exactly one",
            )),
            (true, block) => {
                self.expect(Step::BlockSize(block), 4);
                Ok(())
            }
        }
    }

    fn on_trace_body(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
        let mut r = Reader::new(unit);
        let fields = (|| {
            r.skip(16)?; // SYSTEMTIME
            let _sync_time = r.i64()?;
            let frequency = r.i64()?;
            let pointer_size = r.i32()?;
            let process_id = r.i32()?;
            let _processors = r.i32()?;
            let sampling_rate = r.i32()?;
            let end = r.u8()?;
            Some((frequency, pointer_size, process_id, sampling_rate, end))
        })();
        let Some((frequency, pointer_size, process_id, sampling_rate, end)) = fields else {
            return Err(malformed(at, "internal error: short Trace unit"));
        };
        if end != TAG_END_OBJECT {
            return Err(malformed(
                at.saturating_add(48),
                format!(
                    "expected the end of the Trace object (tag 6) after its 48 bytes, found tag {end}"
                ),
            ));
        }
        self.record_pointer_size(pointer_size);
        if frequency <= 0 {
            self.warn(|| format!("the Trace object's timestamp frequency is {frequency}"));
        }
        self.trace.process_id = Some(u64::from(process_id.cast_unsigned()));
        self.trace.sampling_rate_ns = Some(sampling_rate.cast_unsigned());
        self.saw_trace = true;
        self.expect(Step::ObjectTag, 1);
        Ok(())
    }

    fn record_pointer_size(&mut self, pointer_size: i32) {
        self.trace.pointer_size = pointer_size.cast_unsigned();
        if pointer_size != 4 && pointer_size != 8 {
            self.warn(|| format!("the Trace object gives a pointer size of {pointer_size} bytes"));
        }
    }

    fn on_block_size(
        &mut self,
        kind: ObjectKind,
        unit: &[u8],
        at: u64,
    ) -> Result<(), NettraceError> {
        let size = Reader::new(unit).i32().unwrap_or_default();
        let size = match usize::try_from(size) {
            Ok(size) if size <= MAX_BLOCK_SIZE => size,
            Ok(_) => {
                return Err(malformed(
                    at,
                    format!("block of {size} bytes exceeds the 64 MiB limit"),
                ));
            }
            Err(_) => {
                return Err(malformed(
                    at,
                    format!("the {} declares a negative size ({size})", kind.name()),
                ));
            }
        };
        // The block's contents start at the next 4-byte-aligned stream offset.
        let padding = (4 - (at.wrapping_add(4) % 4)) % 4;
        let padding = padding as usize;
        if self.depth == Depth::Framing && kind != ObjectKind::Trace {
            self.skip = padding.saturating_add(size) as u64;
            self.expect(Step::BlockEnd { kind, size }, 1);
            return Ok(());
        }
        self.expect(
            Step::BlockBody { kind, padding },
            padding.saturating_add(size).saturating_add(1),
        );
        Ok(())
    }

    fn on_block_body(
        &mut self,
        kind: ObjectKind,
        padding: usize,
        unit: &[u8],
        at: u64,
    ) -> Result<(), NettraceError> {
        let size = self.need.saturating_sub(padding).saturating_sub(1);
        let mut r = Reader::new(unit);
        let parts = (|| Some((r.take(padding)?, r.take(size)?, r.u8()?)))();
        let Some((pad, body, end)) = parts else {
            return Err(malformed(at, "internal error: short block unit"));
        };
        let body_start = at.saturating_add(padding as u64);
        if end != TAG_END_OBJECT {
            return Err(malformed(
                body_start.saturating_add(size as u64),
                format!(
                    "the {} that starts at byte {} does not end with the end-of-object tag (6) \
                     after its declared {size} bytes (found {end:#04x}); its size is wrong",
                    kind.name(),
                    self.object_start
                ),
            ));
        }
        if pad.iter().any(|&byte| byte != 0) {
            let object_start = self.object_start;
            self.warn(|| {
                format!(
                    "the alignment padding of the {} at byte {object_start} is not zero",
                    kind.name()
                )
            });
        }
        let block = Block {
            name: kind.name(),
            start: body_start,
            len: body.len(),
        };
        self.counts.count_block(kind);
        match kind {
            ObjectKind::Trace => return Err(malformed(at, "internal error: Trace is not a block")),
            ObjectKind::EventBlock => self.parse_event_block(body, block, Role::Events)?,
            ObjectKind::MetadataBlock => self.parse_event_block(body, block, Role::Metadata)?,
            ObjectKind::StackBlock => self.parse_stack_block(body, block)?,
            ObjectKind::SequencePointBlock => self.parse_sequence_point_block_v4(body, block)?,
        }
        self.expect(Step::ObjectTag, 1);
        Ok(())
    }

    /// Framing only: the end tag after a block whose contents were passed over.
    fn on_block_end(
        &mut self,
        kind: ObjectKind,
        size: usize,
        unit: &[u8],
        at: u64,
    ) -> Result<(), NettraceError> {
        let end = unit.first().copied().unwrap_or_default();
        if end != TAG_END_OBJECT {
            return Err(malformed(
                at,
                format!(
                    "the {} that starts at byte {} does not end with the end-of-object tag (6) \
                     after its declared {size} bytes (found {end:#04x}); its size is wrong",
                    kind.name(),
                    self.object_start
                ),
            ));
        }
        self.counts.count_block(kind);
        self.expect(Step::ObjectTag, 1);
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // V6 blocks.

    fn on_v6_block_header(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
        let header = Reader::new(unit).u32().unwrap_or_default();
        let size = (header & 0x00FF_FFFF) as usize;
        let kind = V6Kind::from_byte((header >> 24) as u8);
        self.object_start = at;
        if !self.saw_trace && kind != V6Kind::Trace {
            return Err(malformed(
                at,
                format!("the first block must be the Trace block (kind 1), found {kind}"),
            ));
        }
        if self.saw_trace && kind == V6Kind::Trace {
            return Err(malformed(
                at,
                "a second Trace block; a stream has exactly one",
            ));
        }
        if self.depth == Depth::Framing && kind.is_contents() {
            self.counts.count_v6_block(kind);
            self.skip = size as u64;
            self.expect(Step::V6BlockHeader, 4);
            return Ok(());
        }
        self.expect(Step::V6BlockBody(kind), size);
        Ok(())
    }

    fn on_v6_block_body(
        &mut self,
        kind: V6Kind,
        body: &[u8],
        at: u64,
    ) -> Result<(), NettraceError> {
        let block = Block {
            name: kind.block_name(),
            start: at,
            len: body.len(),
        };
        self.counts.count_v6_block(kind);
        match kind {
            V6Kind::EndOfStream => {
                if !body.is_empty() {
                    let len = body.len();
                    self.warn(|| {
                        format!("the EndOfStream block carries {len} bytes, which were ignored")
                    });
                }
                self.end_offset = self.object_start;
                self.expect(Step::Done, 0);
                return Ok(());
            }
            V6Kind::Trace => self.parse_v6_trace(body, block)?,
            V6Kind::Event => self.parse_event_block(body, block, Role::Events)?,
            V6Kind::Metadata => self.parse_v6_metadata_block(body, block)?,
            V6Kind::SequencePoint => self.parse_v6_sequence_point_block(body, block)?,
            V6Kind::Stack => self.parse_stack_block(body, block)?,
            V6Kind::Thread => parse_v6_thread_block(body, block)?,
            V6Kind::RemoveThread => self.parse_v6_remove_thread_block(body, block)?,
            V6Kind::LabelList => parse_v6_label_list_block(body, block)?,
            V6Kind::Unknown(byte) => {
                if !self.warned_unknown_v6_kinds.contains(&byte) {
                    self.warned_unknown_v6_kinds.push(byte);
                    let start = self.object_start;
                    self.warn(|| format!("skipped a block of unknown kind {byte} at byte {start}"));
                }
            }
        }
        self.expect(Step::V6BlockHeader, 4);
        Ok(())
    }

    fn parse_v6_trace(&mut self, body: &[u8], block: Block) -> Result<(), NettraceError> {
        let mut r = Reader::new(body);
        let fixed = (|| {
            r.skip(16)?; // SYSTEMTIME
            let _sync_ticks = r.i64()?;
            let frequency = r.i64()?;
            let pointer_size = r.i32()?;
            let pairs = r.i32()?;
            Some((frequency, pointer_size, pairs))
        })();
        let Some((frequency, pointer_size, pairs)) = fixed else {
            return Err(block.overrun(&r, "the Trace block's fixed fields"));
        };
        self.record_pointer_size(pointer_size);
        if frequency <= 0 {
            self.warn(|| format!("the Trace block's tick frequency is {frequency}"));
        }
        let Ok(pairs) = u32::try_from(pairs) else {
            return Err(malformed(
                block.at(r.pos),
                format!("the Trace block declares a negative number of key-value pairs ({pairs})"),
            ));
        };
        for _ in 0..pairs {
            let Some((key, value)) = (|| Some((r.v6_string()?, r.v6_string()?)))() else {
                return Err(block.overrun(&r, "a key-value pair of the Trace block"));
            };
            let value = String::from_utf8_lossy(value);
            match key {
                b"ProcessId" => self.trace.process_id = value.trim().parse().ok(),
                b"ExpectedCPUSamplingRate" => {
                    self.trace.sampling_rate_ns = value.trim().parse().ok();
                }
                _ => {}
            }
        }
        if r.remaining() > 0 {
            let extra = r.remaining();
            self.warn(|| format!("the Trace block has {extra} bytes after its key-value pairs"));
        }
        self.saw_trace = true;
        Ok(())
    }

    fn parse_v6_metadata_block(&mut self, body: &[u8], block: Block) -> Result<(), NettraceError> {
        let mut r = Reader::new(body);
        // The header size does not count its own two bytes.
        let header = (|| {
            let size = r.u16()?;
            r.skip(usize::from(size))
        })();
        if header.is_none() {
            return Err(block.overrun(&r, "the Metadata block's header"));
        }
        while r.remaining() > 0 {
            let row_start = r.pos;
            let Some(row) = (|| {
                let size = r.u16()?;
                r.take(usize::from(size))
            })() else {
                return Err(block.overrun(
                    &r,
                    &format!("the metadata row at byte {}", block.at(row_start)),
                ));
            };
            let mut row = Reader::new(row);
            let fields = (|| {
                let id = row.varu32()?;
                let provider = row.v6_string()?;
                let event_id = row.varu32()?;
                let name = row.v6_string()?;
                Some((id, provider, event_id, name))
            })();
            let Some((id, provider, event_id, name)) = fields else {
                return Err(malformed(
                    block.at(row_start),
                    "the metadata row is too short for its id, provider name, event id and name",
                ));
            };
            self.counts.metadata_records += 1;
            let provider = utf8_name(provider);
            let name = utf8_name(name);
            self.define_metadata(id, provider, event_id, name, block.at(row_start), true);
        }
        Ok(())
    }

    fn parse_v6_sequence_point_block(
        &mut self,
        body: &[u8],
        block: Block,
    ) -> Result<(), NettraceError> {
        let mut r = Reader::new(body);
        let Some((flags, count)) = (|| {
            let _timestamp = r.u64()?;
            Some((r.u32()?, r.u32()?))
        })() else {
            return Err(block.overrun(&r, "the sequence point's header"));
        };
        for _ in 0..count {
            let Some((thread, sequence)) = (|| Some((r.varu64()?, r.varu32()?)))() else {
                return Err(block.overrun(&r, "a thread entry of the sequence point"));
            };
            self.sequences.checkpoint(thread, sequence);
        }
        if r.remaining() > 0 {
            return Err(block.leftover(&r, "the last thread entry"));
        }
        if flags & 1 != 0 {
            self.sequences.clear();
        }
        if flags & 2 != 0 {
            self.metadata.forget_ids();
            self.metadata_cache = None;
        }
        Ok(())
    }

    fn parse_v6_remove_thread_block(
        &mut self,
        body: &[u8],
        block: Block,
    ) -> Result<(), NettraceError> {
        let mut r = Reader::new(body);
        while r.remaining() > 0 {
            let Some((thread, sequence)) = (|| Some((r.varu64()?, r.varu32()?)))() else {
                return Err(block.overrun(&r, "a thread entry"));
            };
            self.sequences.checkpoint(thread, sequence);
            self.sequences.remove(thread);
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Event, metadata, stack and sequence-point blocks.

    fn parse_event_block(
        &mut self,
        body: &[u8],
        block: Block,
        role: Role,
    ) -> Result<(), NettraceError> {
        let format = self.format.unwrap_or(NettraceFormat::NetTraceV4);
        let mut r = Reader::new(body);
        if format == NettraceFormat::NetPerfV3 {
            // NetPerf event blocks have no header; records are uncompressed and carry their
            // stacks; metadata definitions are records with metadata id 0.
            let context = RecordContext {
                role,
                v6: false,
                track_sequence: false,
            };
            return self.parse_uncompressed_records(&mut r, block, context, None, fields_v3);
        }
        let header = (|| {
            let size = r.u16()?;
            let flags = r.u16()?;
            let min = r.i64()?;
            let max = r.i64()?;
            Some((size, flags, min, max))
        })();
        let Some((header_size, flags, min, max)) = header else {
            return Err(block.overrun(&r, "the block header"));
        };
        if header_size < 20 {
            return Err(malformed(
                block.start,
                format!(
                    "the {} header declares {header_size} bytes; it is at least 20",
                    block.name
                ),
            ));
        }
        if r.skip(usize::from(header_size) - 20).is_none() {
            return Err(block.overrun(&r, "the block header"));
        }
        let v6 = format == NettraceFormat::NetTraceV6;
        let context = RecordContext {
            role,
            v6,
            track_sequence: role == Role::Events,
        };
        if flags & 1 != 0 {
            self.parse_compressed_records(&mut r, block, context, min, max)
        } else if v6 {
            self.parse_uncompressed_records(&mut r, block, context, Some((min, max)), fields_v6)
        } else {
            self.parse_uncompressed_records(&mut r, block, context, Some((min, max)), fields_v4)
        }
    }

    /// The hot loop: records with compressed headers, delta-decoded within the block.
    fn parse_compressed_records(
        &mut self,
        r: &mut Reader<'_>,
        block: Block,
        context: RecordContext,
        min: i64,
        max: i64,
    ) -> Result<(), NettraceError> {
        let mut header = HeaderState::default();
        let mut outside = 0u64;
        while r.remaining() > 0 {
            let record = r.pos;
            if read_compressed_header(r, &mut header, context.v6).is_none() {
                return Err(block.overrun(
                    r,
                    &format!(
                        "the header of the event record at byte {}",
                        block.at(record)
                    ),
                ));
            }
            let Some(payload) = r.take(header.payload_size as usize) else {
                return Err(block.overrun(
                    r,
                    &format!(
                        "the {}-byte payload of the event record at byte {}",
                        header.payload_size,
                        block.at(record)
                    ),
                ));
            };
            if header.timestamp < min || header.timestamp > max {
                outside += 1;
            }
            self.on_record(
                context,
                header.metadata_id,
                header.sequence,
                header.capture_thread,
                payload,
                block.at(record),
            );
        }
        self.timestamps_outside.add(outside, block.start);
        Ok(())
    }

    fn parse_uncompressed_records(
        &mut self,
        r: &mut Reader<'_>,
        block: Block,
        context: RecordContext,
        range: Option<(i64, i64)>,
        fields: FieldsFn,
    ) -> Result<(), NettraceError> {
        let mut outside = 0u64;
        while r.remaining() > 0 {
            let record = r.pos;
            let Some(size) = r.u32() else {
                return Err(block.overrun(
                    r,
                    &format!("the size of the event record at byte {}", block.at(record)),
                ));
            };
            let Some(bytes) = r.take(size as usize) else {
                return Err(block.overrun(
                    r,
                    &format!(
                        "the event record at byte {}, which declares {size} bytes,",
                        block.at(record)
                    ),
                ));
            };
            let Some(event) = fields(&mut Reader::new(bytes)) else {
                return Err(malformed(
                    block.at(record),
                    format!(
                        "the event record declares {size} bytes, too few for its header and payload"
                    ),
                ));
            };
            if let Some((min, max)) = range
                && (event.timestamp < min || event.timestamp > max)
            {
                outside += 1;
            }
            self.on_record(
                context,
                event.metadata_id,
                event.sequence,
                event.capture_thread,
                event.payload,
                block.at(record),
            );
        }
        self.timestamps_outside.add(outside, block.start);
        Ok(())
    }

    #[inline]
    fn on_record(
        &mut self,
        context: RecordContext,
        metadata_id: u32,
        sequence: u32,
        capture_thread: u64,
        payload: &[u8],
        at: u64,
    ) {
        if let Some(observer) = self.observer.as_mut()
            && !context.v6
        {
            observer(if context.role == Role::Events && metadata_id != 0 {
                NettraceRecord::Event {
                    metadata_id,
                    payload,
                }
            } else {
                NettraceRecord::Metadata(payload)
            });
        }
        // V6 event blocks hold only events; before V6, id 0 marks a metadata definition.
        if context.role == Role::Events && (metadata_id != 0 || context.v6) {
            self.count_event(metadata_id, at);
            if context.track_sequence
                && let Some(issue) = self.sequences.on_event(capture_thread, sequence)
            {
                self.note_sequence_issue(issue);
            }
            return;
        }
        if metadata_id != 0 {
            self.warn(|| {
                format!(
                    "the MetadataBlock record at byte {at} has metadata id {metadata_id} in its \
                     header; metadata definitions have 0"
                )
            });
        }
        self.define_metadata_fast_serialization(payload, at);
    }

    fn parse_stack_block(&mut self, body: &[u8], block: Block) -> Result<(), NettraceError> {
        let mut r = Reader::new(body);
        let Some((_first_id, count)) = (|| Some((r.u32()?, r.u32()?)))() else {
            return Err(block.overrun(&r, "the stack block's header"));
        };
        let pointer_size = self.trace.pointer_size as usize;
        for _ in 0..count {
            let Some(stack) = (|| {
                let size = r.u32()?;
                r.take(size as usize)
            })() else {
                return Err(block.overrun(&r, "a stack"));
            };
            self.counts.stacks += 1;
            if pointer_size != 0 && stack.len() % pointer_size != 0 && !self.warned_stack_size {
                self.warned_stack_size = true;
                let (len, start) = (stack.len(), block.start);
                self.warn(|| {
                    format!(
                        "a stack in the {} at byte {start} holds {len} bytes, not a whole number \
                         of {pointer_size}-byte addresses",
                        block.name
                    )
                });
            }
        }
        if r.remaining() > 0 {
            return Err(block.leftover(&r, "the last stack"));
        }
        Ok(())
    }

    fn parse_sequence_point_block_v4(
        &mut self,
        body: &[u8],
        block: Block,
    ) -> Result<(), NettraceError> {
        let mut r = Reader::new(body);
        let Some(count) = (|| {
            let _timestamp = r.i64()?;
            r.u32()
        })() else {
            return Err(block.overrun(&r, "the sequence point's header"));
        };
        for _ in 0..count {
            let Some((thread, sequence)) = (|| Some((r.u64()?, r.u32()?)))() else {
                return Err(block.overrun(&r, "a thread entry of the sequence point"));
            };
            self.sequences.checkpoint(thread, sequence);
        }
        if r.remaining() > 0 {
            return Err(block.leftover(&r, "the last thread entry"));
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Metadata and event counting.

    /// A NetPerf/V4/V5 metadata payload: `i32 id`, UTF-16z provider, `i32 eventId`, UTF-16z
    /// name, then keywords, version, level, fields and (V5) tags. Payload problems are warnings:
    /// the record boundaries, which are what structure means here, are already known good.
    fn define_metadata_fast_serialization(&mut self, payload: &[u8], at: u64) {
        self.counts.metadata_records += 1;
        let mut r = Reader::new(payload);
        let Some(id) = r.u32() else {
            self.warn(|| format!("the metadata record at byte {at} is too short to hold its id"));
            return;
        };
        let Some(provider) = r.utf16z() else {
            self.warn(|| {
                format!(
                    "the metadata record at byte {at} (id {id}) has no terminated provider name"
                )
            });
            return;
        };
        let (event_id, name) = match (|| Some((r.u32()?, r.utf16z()?)))() {
            Some(fields) => fields,
            None => {
                self.warn(|| {
                    format!(
                        "the metadata record at byte {at} (id {id}) ends before its event id and name"
                    )
                });
                (0, String::new())
            }
        };
        if !self.saw_v5_metadata && has_v5_tags(&mut r) {
            self.saw_v5_metadata = true;
        }
        self.define_metadata(id, provider, event_id, name, at, false);
    }

    fn define_metadata(
        &mut self,
        id: u32,
        provider: String,
        event_id: u32,
        name: String,
        at: u64,
        redefinition_allowed: bool,
    ) {
        if id == 0 {
            self.warn(|| format!("the metadata record at byte {at} defines the reserved id 0"));
            return;
        }
        self.metadata_cache = None;
        match self.metadata.define(id, provider, event_id, name) {
            Defined::New => {}
            Defined::Replaced => {
                if !redefinition_allowed {
                    self.warn(|| format!("metadata id {id} is defined again at byte {at}"));
                }
            }
            Defined::TableFull => {
                self.warn(|| {
                    format!(
                        "more than {MAX_METADATA_ENTRIES} metadata definitions; later ones (from \
                         byte {at}) are not tracked by name"
                    )
                });
            }
        }
    }

    #[inline]
    fn count_event(&mut self, metadata_id: u32, at: u64) {
        self.counts.events += 1;
        let slot = match self.metadata_cache {
            Some((id, slot)) if id == metadata_id => slot,
            _ => {
                let slot = self.metadata.lookup(metadata_id);
                self.metadata_cache = Some((metadata_id, slot));
                slot
            }
        };
        match slot.and_then(|index| self.metadata.entries.get_mut(index)) {
            Some(entry) => entry.events += 1,
            None => {
                if self.metadata.count_unknown(metadata_id) {
                    self.warn(|| {
                        format!(
                            "the event at byte {at} refers to metadata id {metadata_id}, which no \
                             metadata record defined"
                        )
                    });
                }
            }
        }
    }

    #[cold]
    fn note_sequence_issue(&mut self, issue: SequenceIssue) {
        match issue {
            SequenceIssue::Backwards {
                thread,
                last,
                sequence,
            } => self.sequence_regressions.add_with(1, || {
                format!("on capture thread {thread}: {sequence} after {last}")
            }),
            SequenceIssue::TooManyThreads => self.warn(|| {
                format!(
                    "more than {MAX_TRACKED_THREADS} capture threads; dropped events on later ones \
                     are not estimated"
                )
            }),
        }
    }

    fn warn(&mut self, message: impl FnOnce() -> String) {
        self.warnings.push_with(message);
    }

    // ---------------------------------------------------------------------------------------
    // Results.

    fn effective_format(&self, format: NettraceFormat) -> NettraceFormat {
        if format == NettraceFormat::NetTraceV4 && self.saw_v5_metadata {
            NettraceFormat::NetTraceV5
        } else {
            format
        }
    }

    fn truncation_context(&self) -> String {
        let missing = self.need.saturating_sub(self.pending.len());
        let object = self.object_start;
        match self.step {
            Step::Magic | Step::NettraceVersion | Step::Signature { .. } | Step::V6Version => {
                "inside the stream header".to_owned()
            }
            Step::ObjectTag if !self.saw_trace => "before the Trace object".to_owned(),
            Step::ObjectTag => format!(
                "before the end-of-stream marker (the last complete object ended at byte {})",
                self.unit_start
            ),
            Step::TypeHeader | Step::TypeName => {
                format!("inside the type header of the object that starts at byte {object}")
            }
            Step::TraceBody => format!("inside the Trace object that starts at byte {object}"),
            Step::BlockSize(kind) => format!(
                "inside the header of the {} that starts at byte {object}",
                kind.name()
            ),
            Step::BlockBody { kind, .. } => format!(
                "inside the {} that starts at byte {object} ({missing} more bytes were expected)",
                kind.name()
            ),
            Step::BlockEnd { kind, .. } => format!(
                "inside the {} that starts at byte {object} ({} more bytes were expected)",
                kind.name(),
                self.skip.saturating_add(1)
            ),
            Step::V6BlockHeader if self.skip > 0 => format!(
                "inside the block that starts at byte {object} ({} more bytes were expected)",
                self.skip
            ),
            Step::V6BlockHeader if self.pending.is_empty() => format!(
                "before the EndOfStream block (the last complete block ended at byte {})",
                self.unit_start
            ),
            Step::V6BlockHeader => {
                format!("inside the header of the block at byte {}", self.unit_start)
            }
            Step::V6BlockBody(kind) => format!(
                "inside the {} block that starts at byte {object} ({missing} more bytes were expected)",
                kind.block_name()
            ),
            Step::Done => String::new(),
        }
    }

    fn into_summary(mut self) -> NettraceSummary {
        let mut aggregated = Vec::new();
        if self.trailing_bytes > 0 {
            aggregated.push(format!(
                "{} trailing bytes after the end-of-stream marker at byte {} were ignored",
                self.trailing_bytes, self.end_offset
            ));
        }
        if let Some(first) = self.sequence_regressions.first.take() {
            aggregated.push(format!(
                "sequence numbers went backwards {} times (first {first}); a reused thread id? \
                 These are not counted as dropped events",
                self.sequence_regressions.count
            ));
        }
        if let Some(first) = self.timestamps_outside.first.take() {
            aggregated.push(format!(
                "{} events have timestamps outside their block's [min, max] range (first in the \
                 block whose contents start at byte {first})",
                self.timestamps_outside.count
            ));
        }

        let mut events_by_provider = BTreeMap::new();
        let mut events_by_event = BTreeMap::new();
        for entry in &self.metadata.entries {
            if entry.events > 0 {
                *events_by_provider
                    .entry(entry.provider.clone())
                    .or_insert(0) += entry.events;
                *events_by_event.entry(entry.event_key.clone()).or_insert(0) += entry.events;
            }
        }
        let unknown = self
            .metadata
            .unknown
            .iter()
            .map(|(id, count)| (format!("metadata-id-{id}"), *count))
            .chain(
                (self.metadata.unknown_other > 0)
                    .then(|| ("metadata-id-other".to_owned(), self.metadata.unknown_other)),
            );
        for (key, count) in unknown {
            *events_by_provider
                .entry("<unknown>".to_owned())
                .or_insert(0) += count;
            *events_by_event
                .entry(format!("<unknown>/{key}"))
                .or_insert(0) += count;
        }

        let format = self.format.map_or(NettraceFormat::NetTraceV4, |format| {
            self.effective_format(format)
        });
        NettraceSummary {
            format,
            bytes: self.bytes_seen,
            pointer_size: self.trace.pointer_size,
            process_id: self.trace.process_id,
            sampling_rate_ns: self.trace.sampling_rate_ns,
            event_blocks: self.counts.event_blocks,
            metadata_blocks: self.counts.metadata_blocks,
            stack_blocks: self.counts.stack_blocks,
            sequence_point_blocks: self.counts.sequence_point_blocks,
            events: self.counts.events,
            metadata_records: self.counts.metadata_records,
            stacks: self.counts.stacks,
            dropped_events_estimate: self.sequences.dropped,
            events_by_provider,
            events_by_event,
            warnings: self.warnings.finish(aggregated),
        }
    }
}

// -------------------------------------------------------------------------------------------
// Parser state.

/// How deep a validator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// Every block's contents, every event.
    Events,
    /// Only the framing around blocks.
    Framing,
}

/// The unit the validator expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The first 8 bytes: `Nettrace`, or NetPerf's signature length and the signature's start.
    Magic,
    /// After `Nettrace`: 20 (FastSerialization, V4/V5) or 0 (V6).
    NettraceVersion,
    /// The rest of `!FastSerialization.1`, from this byte of it.
    Signature { from: usize },
    /// V6 major and minor version.
    V6Version,
    /// A begin-object tag or the end-of-stream marker.
    ObjectTag,
    /// The type header up to the type name.
    TypeHeader,
    /// The type name and the type's end tag.
    TypeName,
    /// The Trace object's 48 bytes and end tag.
    TraceBody,
    /// A block object's `i32 blockSize`.
    BlockSize(ObjectKind),
    /// Padding, the block's contents and its end tag.
    BlockBody { kind: ObjectKind, padding: usize },
    /// Framing only: the end tag of a block of `size` bytes whose contents were passed over.
    BlockEnd { kind: ObjectKind, size: usize },
    /// A V6 block's `size | kind` header.
    V6BlockHeader,
    /// A V6 block's contents.
    V6BlockBody(V6Kind),
    /// The end-of-stream marker was seen.
    Done,
}

/// The FastSerialization object types a nettrace stream may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    Trace,
    EventBlock,
    MetadataBlock,
    StackBlock,
    SequencePointBlock,
}

impl ObjectKind {
    fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"Trace" => ObjectKind::Trace,
            b"EventBlock" => ObjectKind::EventBlock,
            b"MetadataBlock" => ObjectKind::MetadataBlock,
            b"StackBlock" => ObjectKind::StackBlock,
            b"SPBlock" => ObjectKind::SequencePointBlock,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            ObjectKind::Trace => "Trace",
            ObjectKind::EventBlock => "EventBlock",
            ObjectKind::MetadataBlock => "MetadataBlock",
            ObjectKind::StackBlock => "StackBlock",
            ObjectKind::SequencePointBlock => "SPBlock",
        }
    }
}

/// V6 block kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V6Kind {
    EndOfStream,
    Trace,
    Event,
    Metadata,
    SequencePoint,
    Stack,
    Thread,
    RemoveThread,
    LabelList,
    Unknown(u8),
}

impl V6Kind {
    /// True for the blocks a framing-only validator passes over: all but Trace and EndOfStream.
    fn is_contents(self) -> bool {
        !matches!(self, V6Kind::Trace | V6Kind::EndOfStream)
    }

    fn from_byte(byte: u8) -> Self {
        match byte {
            0 => V6Kind::EndOfStream,
            1 => V6Kind::Trace,
            2 => V6Kind::Event,
            3 => V6Kind::Metadata,
            4 => V6Kind::SequencePoint,
            5 => V6Kind::Stack,
            6 => V6Kind::Thread,
            7 => V6Kind::RemoveThread,
            8 => V6Kind::LabelList,
            other => V6Kind::Unknown(other),
        }
    }

    fn block_name(self) -> &'static str {
        match self {
            V6Kind::EndOfStream => "EndOfStream",
            V6Kind::Trace => "Trace",
            V6Kind::Event => "Event",
            V6Kind::Metadata => "Metadata",
            V6Kind::SequencePoint => "SequencePoint",
            V6Kind::Stack => "Stack",
            V6Kind::Thread => "Thread",
            V6Kind::RemoveThread => "RemoveThread",
            V6Kind::LabelList => "LabelList",
            V6Kind::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for V6Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            V6Kind::Unknown(byte) => write!(f, "a block of unknown kind {byte}"),
            other => write!(f, "a {} block", other.block_name()),
        }
    }
}

#[derive(Debug, Default)]
struct TraceInfo {
    pointer_size: u32,
    process_id: Option<u64>,
    sampling_rate_ns: Option<u32>,
}

#[derive(Debug, Default)]
struct Counts {
    event_blocks: u64,
    metadata_blocks: u64,
    stack_blocks: u64,
    sequence_point_blocks: u64,
    events: u64,
    metadata_records: u64,
    stacks: u64,
}

impl Counts {
    fn count_block(&mut self, kind: ObjectKind) {
        match kind {
            ObjectKind::Trace => {}
            ObjectKind::EventBlock => self.event_blocks += 1,
            ObjectKind::MetadataBlock => self.metadata_blocks += 1,
            ObjectKind::StackBlock => self.stack_blocks += 1,
            ObjectKind::SequencePointBlock => self.sequence_point_blocks += 1,
        }
    }

    fn count_v6_block(&mut self, kind: V6Kind) {
        match kind {
            V6Kind::Event => self.event_blocks += 1,
            V6Kind::Metadata => self.metadata_blocks += 1,
            V6Kind::SequencePoint => self.sequence_point_blocks += 1,
            V6Kind::Stack => self.stack_blocks += 1,
            _ => {}
        }
    }
}

/// Where a block's contents are, for error messages.
#[derive(Debug, Clone, Copy)]
struct Block {
    name: &'static str,
    /// Stream offset of the contents' first byte.
    start: u64,
    len: usize,
}

impl Block {
    fn at(&self, pos: usize) -> u64 {
        self.start.saturating_add(pos as u64)
    }

    /// `what` could not be read: it runs past the block, or holds an overlong integer.
    #[cold]
    fn overrun(&self, r: &Reader<'_>, what: &str) -> NettraceError {
        let offset = self.at(r.pos);
        if r.bad_varint {
            malformed(
                offset,
                format!(
                    "{what} in the {} block holds a variable-length integer too large for its type",
                    self.name
                ),
            )
        } else {
            malformed(
                offset,
                format!(
                    "{what} runs past the end of the {} block ({} bytes of contents starting at \
                     byte {}); the block size is wrong or the block is corrupt",
                    self.name, self.len, self.start
                ),
            )
        }
    }

    /// Bytes remain after the last item the block declares.
    #[cold]
    fn leftover(&self, r: &Reader<'_>, after: &str) -> NettraceError {
        malformed(
            self.at(r.pos),
            format!(
                "{} unexpected bytes follow {after} in the {} block ({} bytes of contents \
                 starting at byte {}); the block size does not match its contents",
                r.remaining(),
                self.name,
                self.len,
                self.start
            ),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// An event block: records with a metadata id are events.
    Events,
    /// A V4 metadata block: every record defines metadata.
    Metadata,
}

#[derive(Debug, Clone, Copy)]
struct RecordContext {
    role: Role,
    v6: bool,
    track_sequence: bool,
}

/// The fields of the previous compressed header, which the next one is delta-decoded against.
#[derive(Debug, Default)]
struct HeaderState {
    metadata_id: u32,
    sequence: u32,
    capture_thread: u64,
    timestamp: i64,
    payload_size: u32,
}

#[inline(always)]
fn read_compressed_header(r: &mut Reader<'_>, h: &mut HeaderState, v6: bool) -> Option<()> {
    let flags = r.u8()?;
    if flags & FLAG_METADATA_ID != 0 {
        h.metadata_id = r.varu32()?;
    }
    if flags & FLAG_CAPTURE_THREAD_AND_SEQUENCE != 0 {
        let delta = r.varu32()?;
        h.sequence = h.sequence.wrapping_add(delta).wrapping_add(1);
        h.capture_thread = r.varu64()?;
        r.varu32()?; // processor number
    } else if h.metadata_id != 0 {
        h.sequence = h.sequence.wrapping_add(1);
    }
    if flags & FLAG_THREAD_ID != 0 {
        r.varu64()?;
    }
    if flags & FLAG_STACK_ID != 0 {
        r.varu32()?;
    }
    h.timestamp = h.timestamp.wrapping_add(r.varu64()?.cast_signed());
    if v6 {
        if flags & FLAG_LABEL_LIST != 0 {
            r.varu32()?;
        }
    } else {
        if flags & FLAG_ACTIVITY_ID != 0 {
            r.skip(16)?;
        }
        if flags & FLAG_RELATED_ACTIVITY_ID != 0 {
            r.skip(16)?;
        }
    }
    if flags & FLAG_DATA_LENGTH != 0 {
        h.payload_size = r.varu32()?;
    }
    Some(())
}

/// The fields of an uncompressed record that matter here.
struct Fields<'a> {
    metadata_id: u32,
    sequence: u32,
    capture_thread: u64,
    timestamp: i64,
    payload: &'a [u8],
}

type FieldsFn = for<'a> fn(&mut Reader<'a>) -> Option<Fields<'a>>;

/// A NetPerf record (after its size): metadata id, thread id, timestamp, activity ids, payload,
/// stack.
fn fields_v3<'a>(e: &mut Reader<'a>) -> Option<Fields<'a>> {
    let metadata_id = e.u32()? & 0x7FFF_FFFF;
    e.skip(4)?; // thread id
    let timestamp = e.i64()?;
    e.skip(32)?; // activity id, related activity id
    let size = e.u32()?;
    let payload = e.take(size as usize)?;
    let stack = e.u32()?;
    e.skip(stack as usize)?;
    Some(Fields {
        metadata_id,
        sequence: 0,
        capture_thread: 0,
        timestamp,
        payload,
    })
}

/// An uncompressed V4 record (after its size).
fn fields_v4<'a>(e: &mut Reader<'a>) -> Option<Fields<'a>> {
    let metadata_id = e.u32()? & 0x7FFF_FFFF;
    let sequence = e.u32()?;
    e.skip(8)?; // thread id
    let capture_thread = e.u64()?;
    e.skip(8)?; // processor number, stack id
    let timestamp = e.i64()?;
    e.skip(32)?; // activity id, related activity id
    let size = e.u32()?;
    let payload = e.take(size as usize)?;
    Some(Fields {
        metadata_id,
        sequence,
        capture_thread,
        timestamp,
        payload,
    })
}

/// An uncompressed V6 record (after its size).
fn fields_v6<'a>(e: &mut Reader<'a>) -> Option<Fields<'a>> {
    let metadata_id = e.u32()? & 0x7FFF_FFFF;
    let sequence = e.u32()?;
    e.skip(8)?; // thread index
    let capture_thread = e.u64()?;
    e.skip(8)?; // processor number, stack id
    let timestamp = e.i64()?;
    e.skip(4)?; // label list id
    let size = e.u32()?;
    let payload = e.take(size as usize)?;
    Some(Fields {
        metadata_id,
        sequence,
        capture_thread,
        timestamp,
        payload,
    })
}

/// Whether what follows a V4 metadata record's name (keywords, version, level, fields) ends with
/// V5 tags (`u32 length, u8 kind`, kind 1 = opcode, 2 = V2 parameters).
fn has_v5_tags(r: &mut Reader<'_>) -> bool {
    (|| {
        r.skip(16)?; // keywords, version, level
        let fields = r.i32()?;
        skip_v1_fields(r, fields, 0)?;
        let mut tags = 0;
        while r.remaining() > 0 {
            let length = r.u32()?;
            let kind = r.u8()?;
            r.skip(length as usize)?;
            if kind != 1 && kind != 2 {
                return None;
            }
            tags += 1;
        }
        Some(tags > 0)
    })()
    .unwrap_or(false)
}

/// Skips a V1 field list: `count` × (`i32 typeCode` [nested list for Object (1)], UTF-16z name).
fn skip_v1_fields(r: &mut Reader<'_>, count: i32, depth: u32) -> Option<()> {
    if count < 0 || depth > 8 {
        return None;
    }
    for _ in 0..count {
        let type_code = r.i32()?;
        if type_code == 1 {
            let nested = r.i32()?;
            skip_v1_fields(r, nested, depth + 1)?;
        }
        r.skip_utf16z()?;
    }
    Some(())
}

fn parse_v6_thread_block(body: &[u8], block: Block) -> Result<(), NettraceError> {
    let mut r = Reader::new(body);
    while r.remaining() > 0 {
        let row = (|| {
            let size = r.u16()?;
            r.take(usize::from(size))
        })();
        match row {
            Some(row) if Reader::new(row).varu64().is_some() => {}
            Some(_) => {
                return Err(malformed(
                    block.at(r.pos),
                    "a thread row is too short for its index",
                ));
            }
            None => return Err(block.overrun(&r, "a thread row")),
        }
    }
    Ok(())
}

fn parse_v6_label_list_block(body: &[u8], block: Block) -> Result<(), NettraceError> {
    let mut r = Reader::new(body);
    let Some((_first, count)) = (|| Some((r.u32()?, r.u32()?)))() else {
        return Err(block.overrun(&r, "the label list block's header"));
    };
    for _ in 0..count {
        loop {
            let label_at = r.pos;
            let Some(kind) = r.u8() else {
                return Err(block.overrun(&r, "a label list"));
            };
            let read = match kind & 0x7F {
                1..=3 => r.skip(16),
                4 | 8 => r.skip(8),
                5 => r.v6_string().and_then(|_| r.v6_string()).map(|_| ()),
                6 => r.v6_string().and_then(|_| r.varu64()).map(|_| ()),
                7 | 9 | 10 => r.skip(1),
                unknown => {
                    return Err(malformed(
                        block.at(label_at),
                        format!("unknown label kind {unknown}"),
                    ));
                }
            };
            if read.is_none() {
                return Err(block.overrun(&r, "a label"));
            }
            if kind & 0x80 != 0 {
                break;
            }
        }
    }
    if r.remaining() > 0 {
        return Err(block.leftover(&r, "the last label list"));
    }
    Ok(())
}

fn utf8_name(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(MAX_NAME_CHARS)
        .collect()
}

// -------------------------------------------------------------------------------------------
// Metadata table.

#[derive(Debug)]
struct MetadataEntry {
    provider: String,
    /// `Provider/EventName`, or `Provider/#eventId` without a name.
    event_key: String,
    events: u64,
}

enum Defined {
    New,
    Replaced,
    TableFull,
}

#[derive(Debug, Default)]
struct MetadataTable {
    /// Every definition seen, in order, with the events attributed to it.
    entries: Vec<MetadataEntry>,
    /// Metadata id → entry index + 1 (0: undefined), for small ids.
    dense: Vec<u32>,
    /// Metadata id → entry index, for the rest.
    sparse: HashMap<u32, usize>,
    /// Events per undefined metadata id.
    unknown: BTreeMap<u32, u64>,
    /// Events on undefined ids beyond [`MAX_UNKNOWN_METADATA_IDS`].
    unknown_other: u64,
}

impl MetadataTable {
    fn lookup(&self, id: u32) -> Option<usize> {
        if id < DENSE_METADATA_IDS {
            match self.dense.get(id as usize).copied() {
                Some(slot) if slot != 0 => Some(slot as usize - 1),
                _ => None,
            }
        } else {
            self.sparse.get(&id).copied()
        }
    }

    fn define(&mut self, id: u32, provider: String, event_id: u32, name: String) -> Defined {
        if self.entries.len() >= MAX_METADATA_ENTRIES {
            return Defined::TableFull;
        }
        let replaced = self.lookup(id).is_some();
        let event_key = if name.is_empty() {
            format!("{provider}/#{event_id}")
        } else {
            format!("{provider}/{name}")
        };
        let index = self.entries.len();
        self.entries.push(MetadataEntry {
            provider,
            event_key,
            events: 0,
        });
        if id < DENSE_METADATA_IDS {
            let slot = id as usize;
            if self.dense.len() <= slot {
                self.dense.resize(slot + 1, 0);
            }
            if let Some(entry) = self.dense.get_mut(slot) {
                *entry = u32::try_from(index + 1).unwrap_or(0);
            }
        } else {
            self.sparse.insert(id, index);
        }
        if replaced {
            Defined::Replaced
        } else {
            Defined::New
        }
    }

    /// V6 sequence point flag 2: ids may be reused from now on. Counts stay with their entries.
    fn forget_ids(&mut self) {
        self.dense.clear();
        self.sparse.clear();
    }

    /// Counts an event on an undefined id; true the first time this id is seen.
    fn count_unknown(&mut self, id: u32) -> bool {
        if let Some(count) = self.unknown.get_mut(&id) {
            *count += 1;
            false
        } else if self.unknown.len() < MAX_UNKNOWN_METADATA_IDS {
            self.unknown.insert(id, 1);
            true
        } else {
            self.unknown_other += 1;
            false
        }
    }
}

// -------------------------------------------------------------------------------------------
// Dropped-event estimate.

enum SequenceIssue {
    Backwards {
        thread: u64,
        last: u32,
        sequence: u32,
    },
    TooManyThreads,
}

/// Per capture thread, the last sequence number known to have been attempted.
///
/// Gaps between consecutive events of a thread, and sequence points above the last number seen,
/// are dropped events (the estimate TraceEvent makes). Sequence numbers wrap at 2^32. Before V6,
/// a thread whose last number is 0 is taken to be a reused thread id and its gap is ignored.
#[derive(Debug, Default)]
struct SequenceTracker {
    last: HashMap<u64, u32>,
    /// The current thread and its last number; newer than its entry in `last`.
    current: Option<(u64, u32)>,
    dropped: u64,
    /// V6 thread indexes are never reused, so a last number of 0 is not special there.
    v6: bool,
    overflowed: bool,
}

impl SequenceTracker {
    #[inline]
    fn on_event(&mut self, thread: u64, sequence: u32) -> Option<SequenceIssue> {
        if let Some((current, last)) = self.current.as_mut()
            && *current == thread
        {
            let previous = *last;
            *last = sequence;
            if sequence == previous.wrapping_add(1) {
                return None;
            }
            return self.gap(thread, previous, sequence);
        }
        self.switch_to(thread, sequence)
    }

    #[cold]
    fn switch_to(&mut self, thread: u64, sequence: u32) -> Option<SequenceIssue> {
        self.write_back();
        match self.last.get(&thread).copied() {
            Some(previous) => {
                self.current = Some((thread, sequence));
                if sequence == previous.wrapping_add(1) {
                    None
                } else {
                    self.gap(thread, previous, sequence)
                }
            }
            None if self.last.len() >= MAX_TRACKED_THREADS => {
                if self.overflowed {
                    None
                } else {
                    self.overflowed = true;
                    Some(SequenceIssue::TooManyThreads)
                }
            }
            // A thread's first event: nothing before it is known.
            None => {
                self.last.insert(thread, sequence);
                self.current = Some((thread, sequence));
                None
            }
        }
    }

    fn gap(&mut self, thread: u64, previous: u32, sequence: u32) -> Option<SequenceIssue> {
        if previous == 0 && !self.v6 {
            return None;
        }
        let missing = sequence
            .wrapping_sub(previous)
            .wrapping_sub(1)
            .cast_signed();
        if missing > 0 {
            self.dropped = self.dropped.saturating_add(missing.unsigned_abs().into());
            None
        } else if missing < 0 {
            Some(SequenceIssue::Backwards {
                thread,
                last: previous,
                sequence,
            })
        } else {
            None
        }
    }

    fn write_back(&mut self) {
        if let Some((thread, last)) = self.current.take() {
            // The thread's slot was taken when it became current, so this never grows the map.
            self.last.insert(thread, last);
        }
    }

    /// A sequence point or RemoveThread entry: the thread has attempted at least `sequence`.
    fn checkpoint(&mut self, thread: u64, sequence: u32) {
        self.write_back();
        match self.last.get_mut(&thread) {
            Some(last) => {
                let previous = *last;
                // 0 after a known thread's events: a new thread reusing the id (before V6).
                if (previous == 0 || sequence == 0) && !self.v6 {
                    *last = sequence;
                    return;
                }
                let missing = sequence.wrapping_sub(previous).cast_signed();
                if missing > 0 {
                    self.dropped = self.dropped.saturating_add(missing.unsigned_abs().into());
                    *last = sequence;
                }
            }
            None => {
                if self.last.len() < MAX_TRACKED_THREADS {
                    self.last.insert(thread, sequence);
                }
            }
        }
    }

    fn remove(&mut self, thread: u64) {
        self.write_back();
        self.last.remove(&thread);
    }

    fn clear(&mut self) {
        self.current = None;
        self.last.clear();
    }
}

// -------------------------------------------------------------------------------------------
// Warnings.

#[derive(Debug, Default)]
struct Warnings {
    list: Vec<String>,
    suppressed: u64,
}

impl Warnings {
    fn push_with(&mut self, message: impl FnOnce() -> String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(message());
        } else {
            self.suppressed += 1;
        }
    }

    /// The warnings to report: `first` (aggregates), then the rest, capped at [`MAX_WARNINGS`].
    fn finish(self, first: Vec<String>) -> Vec<String> {
        let mut all = first;
        all.extend(self.list);
        let total = all.len() as u64 + self.suppressed;
        if total > MAX_WARNINGS as u64 {
            all.truncate(MAX_WARNINGS - 1);
            let left_out = total - all.len() as u64;
            all.push(format!("{left_out} more warnings were left out"));
        }
        all
    }
}

/// An oddity counted over the whole stream and reported once, with its first occurrence.
#[derive(Debug, Default)]
struct Occurrences {
    count: u64,
    first: Option<String>,
}

impl Occurrences {
    fn add(&mut self, count: u64, block_start: u64) {
        self.add_with(count, || block_start.to_string());
    }

    fn add_with(&mut self, count: u64, first: impl FnOnce() -> String) {
        if count == 0 {
            return;
        }
        self.count = self.count.saturating_add(count);
        if self.first.is_none() {
            self.first = Some(first());
        }
    }
}

// -------------------------------------------------------------------------------------------
// A bounds-checked little-endian reader.

/// Reads little-endian values from a slice. Every read returns `None` instead of going out of
/// bounds, and leaves the position unchanged when it fails.
#[derive(Debug)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// A variable-length integer was too long for its type (rather than cut off).
    bad_varint: bool,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            bad_varint: false,
        }
    }

    #[inline]
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    #[inline]
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    #[inline]
    fn u8(&mut self) -> Option<u8> {
        let byte = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(byte)
    }

    #[inline]
    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    #[inline]
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    #[inline]
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    #[inline]
    fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_le_bytes)
    }

    #[inline]
    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    /// LEB128: 7 bits a byte, least significant first, high bit set on all but the last.
    #[inline]
    fn varu64(&mut self) -> Option<u64> {
        let first = *self.buf.get(self.pos)?;
        if first < 0x80 {
            self.pos += 1;
            return Some(u64::from(first));
        }
        self.varu64_long()
    }

    fn varu64_long(&mut self) -> Option<u64> {
        let mut value = 0u64;
        let mut shift = 0u32;
        let mut pos = self.pos;
        loop {
            let byte = *self.buf.get(pos)?;
            pos += 1;
            if shift == 63 && byte > 1 {
                self.bad_varint = true;
                return None;
            }
            value |= u64::from(byte & 0x7F) << shift;
            if byte < 0x80 {
                self.pos = pos;
                return Some(value);
            }
            shift += 7;
        }
    }

    #[inline]
    fn varu32(&mut self) -> Option<u32> {
        let start = self.pos;
        let value = self.varu64()?;
        match u32::try_from(value) {
            Ok(value) => Some(value),
            Err(_) => {
                self.pos = start;
                self.bad_varint = true;
                None
            }
        }
    }

    /// A V6 string: `varuint32` length, then that many UTF-8 bytes.
    fn v6_string(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        let length = self.varu32()?;
        let bytes = self.take(length as usize);
        if bytes.is_none() {
            self.pos = start;
        }
        bytes
    }

    /// A NUL-terminated UTF-16LE string, keeping at most [`MAX_NAME_CHARS`] code units.
    fn utf16z(&mut self) -> Option<String> {
        let rest = self.buf.get(self.pos..)?;
        let mut units = Vec::new();
        for (index, pair) in rest.chunks_exact(2).enumerate() {
            let &[low, high] = pair else { return None };
            let unit = u16::from_le_bytes([low, high]);
            if unit == 0 {
                self.pos = self.pos.checked_add((index + 1) * 2)?;
                return Some(String::from_utf16_lossy(&units));
            }
            if units.len() < MAX_NAME_CHARS {
                units.push(unit);
            }
        }
        None
    }

    fn skip_utf16z(&mut self) -> Option<()> {
        let rest = self.buf.get(self.pos..)?;
        let index = rest.chunks_exact(2).position(|pair| pair == [0, 0])?;
        self.pos = self.pos.checked_add((index + 1) * 2)?;
        Some(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // ---------------------------------------------------------------------------------------
    // A small writer of synthetic traces, encoding the way the runtime does.

    fn var(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    fn utf16z(text: &str) -> Vec<u8> {
        text.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    /// Writes FastSerialization streams: NetPerf V3 (`begin` 4) or nettrace V4 (`begin` 5).
    struct FsWriter {
        out: Vec<u8>,
        begin: u8,
        pad: u8,
    }

    impl FsWriter {
        fn nettrace() -> Self {
            let mut out = MAGIC.to_vec();
            out.extend(20u32.to_le_bytes());
            out.extend(SIGNATURE);
            Self {
                out,
                begin: 5,
                pad: 0,
            }
        }

        fn netperf() -> Self {
            let mut out = 20u32.to_le_bytes().to_vec();
            out.extend(SIGNATURE);
            Self {
                out,
                begin: 4,
                pad: 0,
            }
        }

        fn type_header(&mut self, name: &str, version: i32, min_version: i32) {
            self.out
                .extend([self.begin, self.begin, TAG_NULL_REFERENCE]);
            self.out.extend(version.to_le_bytes());
            self.out.extend(min_version.to_le_bytes());
            self.out.extend((name.len() as i32).to_le_bytes());
            self.out.extend(name.as_bytes());
            self.out.push(TAG_END_OBJECT);
        }

        fn trace(&mut self, pid: i32, sampling_rate: i32) -> &mut Self {
            if self.begin == TAG_BEGIN_OBJECT {
                self.type_header("Trace", 3, 0);
            } else {
                self.type_header("Trace", 4, 4);
            }
            for field in [2026i16, 11, 4, 26, 12, 0, 0, 0] {
                self.out.extend(field.to_le_bytes());
            }
            self.out.extend(1_000i64.to_le_bytes());
            self.out.extend(1_000_000_000i64.to_le_bytes());
            for field in [8, pid, 4, sampling_rate] {
                self.out.extend(field.to_le_bytes());
            }
            self.out.push(TAG_END_OBJECT);
            self
        }

        fn block(&mut self, name: &str, body: &[u8]) -> &mut Self {
            self.block_declaring(name, body.len() as i32, body)
        }

        fn block_declaring(&mut self, name: &str, declared: i32, body: &[u8]) -> &mut Self {
            if self.begin == TAG_BEGIN_OBJECT {
                self.type_header(name, 1, 0);
            } else {
                self.type_header(name, 2, 2);
            }
            self.out.extend(declared.to_le_bytes());
            while !self.out.len().is_multiple_of(4) {
                self.out.push(self.pad);
            }
            self.out.extend(body);
            self.out.push(TAG_END_OBJECT);
            self
        }

        fn end(&mut self) -> Vec<u8> {
            self.out.push(TAG_NULL_REFERENCE);
            std::mem::take(&mut self.out)
        }
    }

    #[derive(Clone, Default)]
    struct Event {
        metadata_id: u32,
        sequence: u32,
        thread: u64,
        capture_thread: u64,
        processor: u32,
        stack: u32,
        timestamp: i64,
        activity: [u8; 16],
        payload: Vec<u8>,
    }

    fn event(
        metadata_id: u32,
        sequence: u32,
        capture_thread: u64,
        timestamp: i64,
        len: usize,
    ) -> Event {
        Event {
            metadata_id,
            sequence,
            thread: capture_thread,
            capture_thread,
            processor: 1,
            stack: 1,
            timestamp,
            activity: [0; 16],
            payload: vec![0x5A; len],
        }
    }

    fn metadata_payload(
        id: u32,
        provider: &str,
        event_id: u32,
        name: &str,
        opcode: Option<u8>,
    ) -> Vec<u8> {
        let mut out = id.to_le_bytes().to_vec();
        out.extend(utf16z(provider));
        out.extend(event_id.to_le_bytes());
        out.extend(utf16z(name));
        out.extend(0x10i64.to_le_bytes()); // keywords
        out.extend(1u32.to_le_bytes()); // version
        out.extend(4u32.to_le_bytes()); // level
        out.extend(1u32.to_le_bytes()); // one field
        out.extend(9u32.to_le_bytes()); // Int32
        out.extend(utf16z("Count"));
        if let Some(opcode) = opcode {
            out.extend(1u32.to_le_bytes());
            out.push(1);
            out.push(opcode);
        }
        out
    }

    fn metadata(id: u32, provider: &str, event_id: u32, name: &str) -> Event {
        Event {
            timestamp: 5,
            payload: metadata_payload(id, provider, event_id, name, None),
            ..Event::default()
        }
    }

    fn block_header(min: i64, max: i64, flags: u16) -> Vec<u8> {
        let mut out = 20u16.to_le_bytes().to_vec();
        out.extend(flags.to_le_bytes());
        out.extend(min.to_le_bytes());
        out.extend(max.to_le_bytes());
        out
    }

    fn time_range(events: &[Event]) -> (i64, i64) {
        let min = events.iter().map(|e| e.timestamp).min().unwrap_or(0);
        let max = events.iter().map(|e| e.timestamp).max().unwrap_or(0);
        (min, max)
    }

    /// An event or metadata block with compressed headers, as the runtime writes it.
    fn event_block(events: &[Event], v6: bool) -> Vec<u8> {
        let (min, max) = time_range(events);
        let mut out = block_header(min, max, 1);
        let mut last = Event::default();
        for e in events {
            let mut flags = 0u8;
            let mut header = Vec::new();
            if e.metadata_id != last.metadata_id {
                var(&mut header, e.metadata_id.into());
                flags |= FLAG_METADATA_ID;
            }
            if last.sequence.wrapping_add(u32::from(e.metadata_id != 0)) != e.sequence
                || last.capture_thread != e.capture_thread
                || last.processor != e.processor
            {
                var(
                    &mut header,
                    e.sequence
                        .wrapping_sub(last.sequence)
                        .wrapping_sub(1)
                        .into(),
                );
                var(&mut header, e.capture_thread);
                var(&mut header, e.processor.into());
                flags |= FLAG_CAPTURE_THREAD_AND_SEQUENCE;
            }
            if e.thread != last.thread {
                var(&mut header, e.thread);
                flags |= FLAG_THREAD_ID;
            }
            if e.stack != last.stack {
                var(&mut header, e.stack.into());
                flags |= FLAG_STACK_ID;
            }
            var(&mut header, e.timestamp.wrapping_sub(last.timestamp) as u64);
            if !v6 && e.activity != last.activity {
                header.extend(e.activity);
                flags |= FLAG_ACTIVITY_ID;
            }
            if e.payload.len() != last.payload.len() {
                var(&mut header, e.payload.len() as u64);
                flags |= FLAG_DATA_LENGTH;
            }
            out.push(flags);
            out.extend(header);
            out.extend(&e.payload);
            last = e.clone();
        }
        out
    }

    /// An event block with uncompressed V4 records.
    fn uncompressed_event_block(events: &[Event]) -> Vec<u8> {
        let (min, max) = time_range(events);
        let mut out = block_header(min, max, 0);
        for e in events {
            let mut record = e.metadata_id.to_le_bytes().to_vec();
            record.extend(e.sequence.to_le_bytes());
            record.extend(e.thread.to_le_bytes());
            record.extend(e.capture_thread.to_le_bytes());
            record.extend(e.processor.to_le_bytes());
            record.extend(e.stack.to_le_bytes());
            record.extend(e.timestamp.to_le_bytes());
            record.extend([0; 32]);
            record.extend((e.payload.len() as u32).to_le_bytes());
            record.extend(&e.payload);
            while !record.len().is_multiple_of(4) {
                record.push(0);
            }
            out.extend((record.len() as u32).to_le_bytes());
            out.extend(record);
        }
        out
    }

    fn stack_block(first: u32, stacks: &[&[u8]]) -> Vec<u8> {
        let mut out = first.to_le_bytes().to_vec();
        out.extend((stacks.len() as u32).to_le_bytes());
        for stack in stacks {
            out.extend((stack.len() as u32).to_le_bytes());
            out.extend(*stack);
        }
        out
    }

    fn sequence_point_block(timestamp: i64, threads: &[(u64, u32)]) -> Vec<u8> {
        let mut out = timestamp.to_le_bytes().to_vec();
        out.extend((threads.len() as u32).to_le_bytes());
        for (thread, sequence) in threads {
            out.extend(thread.to_le_bytes());
            out.extend(sequence.to_le_bytes());
        }
        out
    }

    const RUNTIME: &str = "Microsoft-Windows-DotNETRuntime";

    /// A V4 trace: Trace, MetadataBlock (2 definitions), StackBlock (2 stacks), EventBlock (5
    /// events on 2 threads), SPBlock, end tag.
    pub(crate) fn sample_v4() -> Vec<u8> {
        sample_v4_with(&mut FsWriter::nettrace())
    }

    fn sample_v4_with(writer: &mut FsWriter) -> Vec<u8> {
        writer
            .trace(1234, 1_000_000)
            .block(
                "MetadataBlock",
                &event_block(
                    &[
                        metadata(1, RUNTIME, 80, ""),
                        metadata(2, "MyEventSource", 1, "Hello"),
                    ],
                    false,
                ),
            )
            .block("StackBlock", &stack_block(1, &[&[0xAA; 16], &[0xBB; 8]]))
            .block(
                "EventBlock",
                &event_block(
                    &[
                        event(1, 1, 100, 10, 8),
                        event(1, 2, 100, 11, 8),
                        event(2, 3, 100, 12, 3),
                        event(2, 1, 200, 13, 0),
                        event(1, 2, 200, 14, 5),
                    ],
                    false,
                ),
            )
            .block("SPBlock", &sequence_point_block(20, &[(100, 3), (200, 2)]))
            .end()
    }

    fn v3_record(metadata_id: u32, timestamp: i64, payload: &[u8], stack: &[u8]) -> Vec<u8> {
        let mut record = metadata_id.to_le_bytes().to_vec();
        record.extend(7u32.to_le_bytes()); // thread id
        record.extend(timestamp.to_le_bytes());
        record.extend([0; 32]);
        record.extend((payload.len() as u32).to_le_bytes());
        record.extend(payload);
        record.extend((stack.len() as u32).to_le_bytes());
        record.extend(stack);
        while !record.len().is_multiple_of(4) {
            record.push(0);
        }
        let mut out = (record.len() as u32).to_le_bytes().to_vec();
        out.extend(record);
        out
    }

    fn sample_v3() -> Vec<u8> {
        let mut body = v3_record(0, 1, &metadata_payload(1, "Prov", 5, "Evt", None), &[]);
        body.extend(v3_record(1, 2, &[1, 2, 3], &[0xCC; 16]));
        body.extend(v3_record(1, 3, &[], &[]));
        FsWriter::netperf()
            .trace(99, 0)
            .block("EventBlock", &body)
            .end()
    }

    fn v6_header() -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for field in [0u32, 6, 0] {
            out.extend(field.to_le_bytes());
        }
        out
    }

    fn v6_block(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
        out.extend(((body.len() as u32) | (u32::from(kind) << 24)).to_le_bytes());
        out.extend(body);
    }

    fn v6_string(out: &mut Vec<u8>, text: &str) {
        var(out, text.len() as u64);
        out.extend(text.as_bytes());
    }

    fn v6_trace_body(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = vec![0; 16];
        out.extend(1_000i64.to_le_bytes());
        out.extend(1_000_000_000i64.to_le_bytes());
        out.extend(8i32.to_le_bytes());
        out.extend((pairs.len() as i32).to_le_bytes());
        for (key, value) in pairs {
            v6_string(&mut out, key);
            v6_string(&mut out, value);
        }
        out
    }

    fn v6_metadata_row(out: &mut Vec<u8>, id: u32, provider: &str, event_id: u32, name: &str) {
        let mut row = Vec::new();
        var(&mut row, id.into());
        v6_string(&mut row, provider);
        var(&mut row, event_id.into());
        v6_string(&mut row, name);
        row.extend(0u16.to_le_bytes()); // no fields
        row.extend(0u16.to_le_bytes()); // no optional metadata
        out.extend((row.len() as u16).to_le_bytes());
        out.extend(row);
    }

    fn sample_v6() -> Vec<u8> {
        let mut out = v6_header();
        v6_block(
            &mut out,
            1,
            &v6_trace_body(&[
                ("ProcessId", "4321"),
                ("ExpectedCPUSamplingRate", "1000000"),
            ]),
        );
        let mut metadata = 0u16.to_le_bytes().to_vec();
        v6_metadata_row(&mut metadata, 1, "Provider-A", 10, "Started");
        v6_metadata_row(&mut metadata, 2, "Provider-B", 11, "");
        v6_block(&mut out, 3, &metadata);
        let mut threads = Vec::new();
        let mut row = Vec::new();
        var(&mut row, 1);
        row.push(3); // OS thread id
        var(&mut row, 777);
        threads.extend((row.len() as u16).to_le_bytes());
        threads.extend(row);
        v6_block(&mut out, 6, &threads);
        let mut labels = 1u32.to_le_bytes().to_vec();
        labels.extend(2u32.to_le_bytes());
        labels.push(0x81);
        labels.extend([7; 16]);
        labels.push(5);
        v6_string(&mut labels, "key");
        v6_string(&mut labels, "value");
        labels.push(0x89);
        labels.push(4);
        v6_block(&mut out, 8, &labels);
        v6_block(&mut out, 5, &stack_block(1, &[&[0xAA; 8]]));
        v6_block(
            &mut out,
            2,
            &event_block(
                &[
                    event(1, 1, 1, 10, 4),
                    event(1, 2, 1, 11, 4),
                    event(2, 1, 2, 12, 0),
                ],
                true,
            ),
        );
        v6_block(&mut out, 42, &[1, 2, 3]); // unknown kinds are skipped
        let mut sequence_point = 30u64.to_le_bytes().to_vec();
        sequence_point.extend(0u32.to_le_bytes());
        sequence_point.extend(1u32.to_le_bytes());
        var(&mut sequence_point, 1);
        var(&mut sequence_point, 2);
        v6_block(&mut out, 4, &sequence_point);
        let mut remove = Vec::new();
        var(&mut remove, 2);
        var(&mut remove, 4); // thread 2 attempted 4 events; 1 was seen
        v6_block(&mut out, 7, &remove);
        v6_block(&mut out, 0, &[]);
        out
    }

    // ---------------------------------------------------------------------------------------
    // Helpers.

    fn validate(bytes: &[u8]) -> Result<NettraceSummary, NettraceError> {
        let mut validator = NettraceValidator::new();
        validator.feed(bytes)?;
        validator.finish()
    }

    fn validate_in_chunks(bytes: &[u8], chunk: usize) -> Result<NettraceSummary, NettraceError> {
        let mut validator = NettraceValidator::new();
        for piece in bytes.chunks(chunk) {
            validator.feed(piece)?;
        }
        validator.finish()
    }

    fn malformed_reason(result: Result<NettraceSummary, NettraceError>) -> String {
        match result {
            Err(NettraceError::Malformed { reason, .. }) => reason,
            other => panic!("expected a malformed trace, got {other:?}"),
        }
    }

    fn outcome(result: &Result<NettraceSummary, NettraceError>) -> String {
        match result {
            Ok(summary) => serde_json::to_string(summary).expect("summaries serialize"),
            Err(error) => error.to_string(),
        }
    }

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    // ---------------------------------------------------------------------------------------
    // Tests.

    #[test]
    fn a_v4_trace_is_summarised() {
        let bytes = sample_v4();
        let summary = validate(&bytes).expect("the sample is valid");
        assert_eq!(summary.format, NettraceFormat::NetTraceV4);
        assert_eq!(summary.bytes, bytes.len() as u64);
        assert_eq!(summary.pointer_size, 8);
        assert_eq!(summary.process_id, Some(1234));
        assert_eq!(summary.sampling_rate_ns, Some(1_000_000));
        assert_eq!(
            (
                summary.event_blocks,
                summary.metadata_blocks,
                summary.stack_blocks,
                summary.sequence_point_blocks
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(summary.events, 5);
        assert_eq!(summary.metadata_records, 2);
        assert_eq!(summary.stacks, 2);
        assert_eq!(summary.dropped_events_estimate, 0);
        assert_eq!(
            summary.events_by_provider,
            counts(&[(RUNTIME, 3), ("MyEventSource", 2)])
        );
        assert_eq!(
            summary.events_by_event,
            counts(&[
                ("Microsoft-Windows-DotNETRuntime/#80", 3),
                ("MyEventSource/Hello", 2)
            ])
        );
        assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    }

    #[test]
    fn the_summary_serializes_in_camel_case() {
        let summary = validate(&sample_v4()).expect("the sample is valid");
        let json = serde_json::to_value(&summary).expect("summaries serialize");
        assert_eq!(json["format"], "NetTraceV4");
        assert_eq!(json["droppedEventsEstimate"], 0);
        assert_eq!(json["eventsByProvider"]["MyEventSource"], 2);
        assert_eq!(json["processId"], 1234);
    }

    #[test]
    fn feeding_in_any_chunk_size_gives_the_same_summary() {
        let bytes = sample_v4();
        let whole = validate(&bytes).expect("the sample is valid");
        for chunk in [1, 2, 3, 5, 7, 13, 64, 4096] {
            let summary = validate_in_chunks(&bytes, chunk).expect("the sample is valid");
            assert_eq!(summary, whole, "chunks of {chunk} bytes");
        }
    }

    #[test]
    fn progress_is_visible_while_feeding() {
        let bytes = sample_v4();
        let mut validator = NettraceValidator::new();
        assert_eq!(validator.format(), None);
        let (head, tail) = bytes.split_at(bytes.len() - 1);
        validator.feed(head).expect("valid so far");
        assert_eq!(validator.format(), Some(NettraceFormat::NetTraceV4));
        assert_eq!(validator.events_seen(), 5);
        assert_eq!(validator.bytes_seen(), head.len() as u64);
        assert!(!validator.is_complete());
        validator.feed(tail).expect("valid");
        assert!(validator.is_complete());
    }

    #[test]
    fn every_strict_prefix_is_truncated() {
        for bytes in [sample_v4(), sample_v3(), sample_v6()] {
            for end in 0..bytes.len() {
                let result = validate(&bytes[..end]);
                assert!(
                    matches!(&result, Err(error) if error.is_truncated()),
                    "prefix of {end} bytes: {result:?}"
                );
            }
            validate(&bytes).expect("the whole stream is valid");
        }
    }

    fn framing_in_chunks(bytes: &[u8], chunk: usize) -> Result<NettraceSummary, NettraceError> {
        let mut validator = NettraceValidator::framing_only();
        for piece in bytes.chunks(chunk) {
            validator.feed(piece)?;
        }
        validator.finish()
    }

    #[test]
    fn framing_only_counts_the_same_blocks_in_any_chunk_size() {
        for bytes in [sample_v4(), sample_v3(), sample_v6()] {
            let full = validate(&bytes).expect("the sample is valid");
            for chunk in [1, 3, 7, 64, 4096, bytes.len()] {
                let framing = framing_in_chunks(&bytes, chunk).expect("the framing is valid");
                assert_eq!(framing.format, full.format);
                assert_eq!(framing.bytes, full.bytes);
                assert_eq!(framing.event_blocks, full.event_blocks, "chunks of {chunk}");
                assert_eq!(framing.metadata_blocks, full.metadata_blocks);
                assert_eq!(framing.stack_blocks, full.stack_blocks);
                assert_eq!(framing.sequence_point_blocks, full.sequence_point_blocks);
                assert_eq!(framing.events, 0, "block contents are not read");
                assert!(framing.events_by_provider.is_empty());
            }
        }
    }

    #[test]
    fn framing_only_finds_every_strict_prefix_truncated() {
        for bytes in [sample_v4(), sample_v3(), sample_v6()] {
            for end in 0..bytes.len() {
                for chunk in [1, 4096] {
                    let result = framing_in_chunks(&bytes[..end], chunk);
                    assert!(
                        matches!(&result, Err(error) if error.is_truncated()),
                        "prefix of {end} bytes in chunks of {chunk}: {result:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn framing_only_rejects_a_block_whose_size_is_wrong() {
        let bytes = sample_v4();
        let full = validate(&bytes).expect("valid");
        assert!(full.event_blocks > 0);
        // The first EventBlock's size field follows its type name and end tag.
        let name = b"EventBlock";
        let at = bytes
            .windows(name.len())
            .position(|window| window == name)
            .expect("an EventBlock")
            + name.len()
            + 1;
        let mut corrupt = bytes.clone();
        let size = i32::from_le_bytes(corrupt[at..at + 4].try_into().unwrap());
        corrupt[at..at + 4].copy_from_slice(&(size - 1).to_le_bytes());
        let reason = match framing_in_chunks(&corrupt, 4096) {
            Err(NettraceError::Malformed { reason, .. }) => reason,
            other => panic!("expected a malformed trace, got {other:?}"),
        };
        assert!(
            reason.contains("does not end with the end-of-object tag"),
            "{reason}"
        );
    }

    #[test]
    fn a_stream_without_its_end_tag_is_truncated() {
        let mut bytes = sample_v4();
        bytes.pop();
        let error = validate(&bytes).expect_err("no end tag");
        assert!(error.is_truncated());
        assert_eq!(
            error.to_string(),
            format!(
                "the trace is truncated: the stream ended at byte {0} before the end-of-stream \
                 marker (the last complete object ended at byte {0})",
                bytes.len()
            )
        );
    }

    #[test]
    fn a_stream_cut_inside_a_block_says_where() {
        let bytes = sample_v4();
        let cut = bytes.len() - 90;
        for error in [
            validate(&bytes[..cut]).expect_err("cut short"),
            framing_in_chunks(&bytes[..cut], 4096).expect_err("cut short"),
        ] {
            let message = error.to_string();
            assert!(error.is_truncated());
            assert!(
                message.contains(&format!(
                    "ended at byte {cut} inside the EventBlock that starts at byte"
                )),
                "{message}"
            );
            assert!(message.contains("more bytes were expected"), "{message}");
        }
    }

    #[test]
    fn an_empty_stream_is_truncated() {
        let error = validate(&[]).expect_err("nothing");
        assert_eq!(
            error.to_string(),
            "the trace is truncated: the stream ended at byte 0 inside the stream header"
        );
    }

    #[test]
    fn a_stream_that_is_not_nettrace_is_malformed() {
        let reason = malformed_reason(validate(b"GIF89a\0\0\0\0\0\0"));
        assert!(reason.contains("not a nettrace stream"), "{reason}");
        let reason = malformed_reason(validate(b"Nettrace\x07\0\0\0"));
        assert!(reason.contains("found 7"), "{reason}");
        let reason = malformed_reason(validate(b"Nettrace\x14\0\0\0!FastSerialization.2"));
        assert!(reason.contains("!FastSerialization.1"), "{reason}");
    }

    #[test]
    fn an_unexpected_tag_is_malformed() {
        let mut bytes = sample_v4();
        *bytes.last_mut().unwrap() = 7;
        let error = validate(&bytes).expect_err("bad tag");
        assert!(
            matches!(error, NettraceError::Malformed { offset, .. } if offset == bytes.len() as u64 - 1)
        );
        assert!(
            error.to_string().contains(
                "expected an object (tag 5) or the end-of-stream marker (tag 1), found tag 7"
            ),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_object_type_is_malformed() {
        let mut writer = FsWriter::nettrace();
        writer.trace(1, 0).block("BogusBlock", &[0; 8]);
        let reason = malformed_reason(validate(&writer.end()));
        assert!(
            reason.contains("unknown object type `BogusBlock`"),
            "{reason}"
        );
    }

    #[test]
    fn an_overlong_type_name_is_malformed() {
        let mut writer = FsWriter::nettrace();
        writer.trace(1, 0).block(&"A".repeat(65), &[0; 8]);
        let reason = malformed_reason(validate(&writer.end()));
        assert!(reason.contains("65 bytes long"), "{reason}");
    }

    #[test]
    fn the_first_object_must_be_the_trace() {
        let mut writer = FsWriter::nettrace();
        writer.block("SPBlock", &sequence_point_block(1, &[]));
        let reason = malformed_reason(validate(&writer.end()));
        assert!(
            reason.contains("the first object must be `Trace`"),
            "{reason}"
        );
    }

    #[test]
    fn a_block_over_64_mib_is_malformed_as_soon_as_its_size_is_read() {
        let mut writer = FsWriter::nettrace();
        writer
            .trace(1, 0)
            .block_declaring("EventBlock", (64 << 20) + 1, &[]);
        let mut validator = NettraceValidator::new();
        let error = validator.feed(&writer.out).expect_err("oversized");
        assert!(
            error
                .to_string()
                .contains("block of 67108865 bytes exceeds the 64 MiB limit"),
            "{error}"
        );
    }

    #[test]
    fn a_block_size_that_is_too_small_is_malformed() {
        let body = event_block(&[event(1, 1, 1, 1, 4)], false);
        let mut writer = FsWriter::nettrace();
        writer
            .trace(1, 0)
            .block_declaring("EventBlock", body.len() as i32 - 1, &body);
        let reason = malformed_reason(validate(&writer.end()));
        assert!(
            reason.contains("does not end with the end-of-object tag"),
            "{reason}"
        );
    }

    #[test]
    fn bytes_left_after_a_blocks_contents_are_malformed() {
        let mut body = sequence_point_block(1, &[(1, 1)]);
        body.extend([0; 4]);
        let mut writer = FsWriter::nettrace();
        writer.trace(1, 0).block("SPBlock", &body);
        let reason = malformed_reason(validate(&writer.end()));
        assert!(
            reason.contains("4 unexpected bytes follow the last thread entry"),
            "{reason}"
        );
    }

    #[test]
    fn an_event_that_overruns_its_block_is_malformed() {
        let mut body = event_block(&[event(1, 1, 1, 1, 4), event(1, 2, 1, 2, 40)], false);
        body.truncate(body.len() - 10);
        let mut writer = FsWriter::nettrace();
        writer.trace(1, 0).block("EventBlock", &body);
        let reason = malformed_reason(validate(&writer.end()));
        assert!(
            reason.contains("40-byte payload of the event record"),
            "{reason}"
        );
        assert!(
            reason.contains("runs past the end of the EventBlock block"),
            "{reason}"
        );
    }

    #[test]
    fn an_overlong_varint_is_malformed() {
        let mut body = block_header(0, 10, 1);
        body.push(FLAG_METADATA_ID);
        body.extend([0xFF, 0xFF, 0xFF, 0xFF, 0x7F]); // 2^35 - 1 does not fit a u32
        body.extend([0, 0]);
        let mut writer = FsWriter::nettrace();
        writer.trace(1, 0).block("EventBlock", &body);
        let reason = malformed_reason(validate(&writer.end()));
        assert!(
            reason.contains("variable-length integer too large"),
            "{reason}"
        );
    }

    #[test]
    fn errors_are_sticky() {
        let mut validator = NettraceValidator::new();
        let first = validator
            .feed(b"not a trace at all")
            .expect_err("malformed");
        let again = validator.feed(&sample_v4()).expect_err("still malformed");
        assert_eq!(first.to_string(), again.to_string());
        let last = validator.finish().expect_err("still malformed");
        assert_eq!(first.to_string(), last.to_string());
    }

    #[test]
    fn a_netperf_v3_trace_is_summarised() {
        let summary = validate(&sample_v3()).expect("valid NetPerf");
        assert_eq!(summary.format, NettraceFormat::NetPerfV3);
        assert_eq!(summary.process_id, Some(99));
        assert_eq!(summary.sampling_rate_ns, Some(0));
        assert_eq!(summary.event_blocks, 1);
        assert_eq!(summary.metadata_blocks, 0);
        assert_eq!(summary.metadata_records, 1);
        assert_eq!(summary.events, 2);
        assert_eq!(summary.events_by_event, counts(&[("Prov/Evt", 2)]));
        assert_eq!(summary.dropped_events_estimate, 0);
        assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    }

    #[test]
    fn a_minimal_v6_trace_is_complete() {
        let mut bytes = v6_header();
        v6_block(&mut bytes, 1, &v6_trace_body(&[]));
        v6_block(&mut bytes, 0, &[]);
        let summary = validate(&bytes).expect("valid V6");
        assert_eq!(summary.format, NettraceFormat::NetTraceV6);
        assert_eq!(summary.pointer_size, 8);
        assert_eq!(summary.process_id, None);
        assert_eq!(summary.events, 0);
        assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    }

    #[test]
    fn a_v6_trace_with_events_is_summarised() {
        let summary = validate(&sample_v6()).expect("valid V6");
        assert_eq!(summary.format, NettraceFormat::NetTraceV6);
        assert_eq!(summary.process_id, Some(4321));
        assert_eq!(summary.sampling_rate_ns, Some(1_000_000));
        assert_eq!(summary.events, 3);
        assert_eq!(summary.metadata_records, 2);
        assert_eq!(summary.stacks, 1);
        assert_eq!(
            (
                summary.event_blocks,
                summary.metadata_blocks,
                summary.stack_blocks,
                summary.sequence_point_blocks
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(
            summary.events_by_event,
            counts(&[("Provider-A/Started", 2), ("Provider-B/#11", 1)])
        );
        // Thread 1: the sequence point says 2 were attempted, 2 seen. Thread 2: 4 attempted, 1 seen.
        assert_eq!(summary.dropped_events_estimate, 3);
        assert_eq!(
            summary.warnings,
            ["skipped a block of unknown kind 42 at byte 295"]
        );
    }

    #[test]
    fn v6_streams_must_start_with_the_trace_block_and_a_known_major_version() {
        let mut bytes = v6_header();
        v6_block(&mut bytes, 2, &[]);
        let reason = malformed_reason(validate(&bytes));
        assert!(
            reason.contains("the first block must be the Trace block"),
            "{reason}"
        );

        let mut bytes = MAGIC.to_vec();
        for field in [0u32, 7, 0] {
            bytes.extend(field.to_le_bytes());
        }
        let reason = malformed_reason(validate(&bytes));
        assert!(reason.contains("major version 7"), "{reason}");
    }

    #[test]
    fn sequence_gaps_and_sequence_points_estimate_dropped_events() {
        let bytes = FsWriter::nettrace()
            .trace(1, 0)
            .block(
                "MetadataBlock",
                &event_block(&[metadata(1, "P", 1, "E")], false),
            )
            .block(
                "EventBlock",
                &event_block(
                    &[
                        event(1, 1, 100, 1, 4),
                        event(1, 2, 100, 2, 4),
                        event(1, 5, 100, 3, 4), // 3 and 4 were dropped
                        event(1, 7, 200, 4, 4), // a thread's first event: nothing known before it
                        event(1, 8, 200, 5, 4),
                    ],
                    false,
                ),
            )
            // Thread 100 attempted up to 9 (4 more dropped), thread 200 none, thread 300 is new.
            .block(
                "SPBlock",
                &sequence_point_block(10, &[(100, 9), (200, 8), (300, 50)]),
            )
            .block(
                "EventBlock",
                &event_block(&[event(1, 10, 100, 11, 4), event(1, 52, 300, 12, 4)], false),
            )
            .end();
        let summary = validate(&bytes).expect("valid");
        assert_eq!(summary.events, 7);
        assert_eq!(summary.dropped_events_estimate, 2 + 4 + 1);
        assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    }

    #[test]
    fn a_sequence_point_at_zero_restarts_a_reused_thread() {
        let bytes = FsWriter::nettrace()
            .trace(1, 0)
            .block(
                "MetadataBlock",
                &event_block(&[metadata(1, "P", 1, "E")], false),
            )
            .block(
                "EventBlock",
                &event_block(&[event(1, 1, 100, 1, 4), event(1, 2, 100, 2, 4)], false),
            )
            .block("SPBlock", &sequence_point_block(10, &[(100, 0)]))
            .block(
                "EventBlock",
                &event_block(&[event(1, 1, 100, 11, 4), event(1, 2, 100, 12, 4)], false),
            )
            .end();
        let summary = validate(&bytes).expect("valid");
        assert_eq!(summary.events, 4);
        assert_eq!(summary.dropped_events_estimate, 0);
        assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    }

    #[test]
    fn v6_sequence_points_can_flush_threads_and_metadata() {
        let mut bytes = v6_header();
        v6_block(&mut bytes, 1, &v6_trace_body(&[]));
        let mut metadata = 0u16.to_le_bytes().to_vec();
        v6_metadata_row(&mut metadata, 1, "Old", 1, "A");
        v6_block(&mut bytes, 3, &metadata);
        v6_block(
            &mut bytes,
            2,
            &event_block(&[event(1, 1, 5, 1, 0), event(1, 2, 5, 2, 0)], true),
        );
        let mut sequence_point = 3u64.to_le_bytes().to_vec();
        sequence_point.extend(3u32.to_le_bytes()); // flush threads and metadata
        sequence_point.extend(1u32.to_le_bytes());
        var(&mut sequence_point, 5);
        var(&mut sequence_point, 4); // 2 more attempted on thread 5
        v6_block(&mut bytes, 4, &sequence_point);
        let mut metadata = 0u16.to_le_bytes().to_vec();
        v6_metadata_row(&mut metadata, 1, "New", 2, "B");
        v6_block(&mut bytes, 3, &metadata);
        // Thread index 5 starts over after the flush: no gap against its old numbers.
        v6_block(&mut bytes, 2, &event_block(&[event(1, 1, 5, 4, 0)], true));
        v6_block(&mut bytes, 0, &[]);
        let summary = validate(&bytes).expect("valid");
        assert_eq!(
            summary.events_by_event,
            counts(&[("Old/A", 2), ("New/B", 1)])
        );
        assert_eq!(summary.dropped_events_estimate, 2);
        assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    }

    #[test]
    fn sequence_numbers_wrap_at_2_32() {
        let bytes = FsWriter::nettrace()
            .trace(1, 0)
            .block(
                "MetadataBlock",
                &event_block(&[metadata(1, "P", 1, "E")], false),
            )
            .block(
                "EventBlock",
                &event_block(
                    &[
                        event(1, u32::MAX - 1, 100, 1, 4),
                        event(1, u32::MAX, 100, 2, 4),
                        event(1, 0, 100, 3, 4),
                        event(1, 1, 100, 4, 4),
                        event(1, 3, 100, 5, 4),
                    ],
                    false,
                ),
            )
            .end();
        let summary = validate(&bytes).expect("valid");
        assert_eq!(summary.dropped_events_estimate, 1);
    }

    #[test]
    fn sequence_numbers_going_backwards_are_one_warning() {
        let events: Vec<Event> = [5, 6, 2, 3, 1]
            .into_iter()
            .enumerate()
            .map(|(i, sequence)| event(1, sequence, 100, i as i64, 0))
            .collect();
        let bytes = FsWriter::nettrace()
            .trace(1, 0)
            .block(
                "MetadataBlock",
                &event_block(&[metadata(1, "P", 1, "E")], false),
            )
            .block("EventBlock", &event_block(&events, false))
            .end();
        let summary = validate(&bytes).expect("valid");
        assert_eq!(summary.dropped_events_estimate, 0);
        assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);
        assert!(
            summary.warnings[0].starts_with(
                "sequence numbers went backwards 2 times (first on capture thread 100: 2 after 6)"
            ),
            "{:?}",
            summary.warnings
        );
    }

    #[test]
    fn trailing_bytes_are_a_warning() {
        let mut bytes = sample_v4();
        let end = bytes.len() - 1;
        bytes.extend([0xDE, 0xAD, 0xBE]);
        let summary = validate(&bytes).expect("trailing bytes are tolerated");
        assert_eq!(summary.bytes, bytes.len() as u64);
        assert_eq!(
            summary.warnings,
            [format!(
                "3 trailing bytes after the end-of-stream marker at byte {end} were ignored"
            )]
        );
    }

    #[test]
    fn nonzero_padding_is_a_warning() {
        let mut writer = FsWriter::nettrace();
        writer.pad = 0xFF;
        let summary = validate(&sample_v4_with(&mut writer)).expect("padding is tolerated");
        assert!(!summary.warnings.is_empty());
        assert!(
            summary.warnings.iter().all(|w| w.contains("padding")),
            "{:?}",
            summary.warnings
        );
    }

    #[test]
    fn events_with_undefined_metadata_count_as_unknown() {
        let bytes = FsWriter::nettrace()
            .trace(1, 0)
            .block(
                "EventBlock",
                &event_block(&[event(7, 1, 1, 1, 0), event(7, 2, 1, 2, 0)], false),
            )
            .end();
        let summary = validate(&bytes).expect("valid");
        assert_eq!(summary.events_by_provider, counts(&[("<unknown>", 2)]));
        assert_eq!(
            summary.events_by_event,
            counts(&[("<unknown>/metadata-id-7", 2)])
        );
        assert_eq!(summary.warnings.len(), 1);
        assert!(
            summary.warnings[0].contains("metadata id 7"),
            "{:?}",
            summary.warnings
        );
    }

    #[test]
    fn warnings_are_capped_at_20() {
        let events: Vec<Event> = (0..30)
            .map(|i| event(100 + i, i + 1, 1, i.into(), 0))
            .collect();
        let bytes = FsWriter::nettrace()
            .trace(1, 0)
            .block("EventBlock", &event_block(&events, false))
            .end();
        let summary = validate(&bytes).expect("valid");
        assert_eq!(summary.events, 30);
        assert_eq!(summary.warnings.len(), MAX_WARNINGS);
        assert_eq!(summary.warnings[19], "11 more warnings were left out");
    }

    #[test]
    fn v5_metadata_tags_are_detected() {
        let v5 = Event {
            timestamp: 5,
            payload: metadata_payload(1, "P", 1, "E", Some(10)),
            ..Event::default()
        };
        let bytes = FsWriter::nettrace()
            .trace(1, 0)
            .block("MetadataBlock", &event_block(&[v5], false))
            .end();
        let summary = validate(&bytes).expect("valid");
        assert_eq!(summary.format, NettraceFormat::NetTraceV5);
        assert_eq!(summary.metadata_records, 1);
    }

    #[test]
    fn uncompressed_v4_event_blocks_are_read() {
        let bytes = FsWriter::nettrace()
            .trace(1, 0)
            .block(
                "MetadataBlock",
                &event_block(&[metadata(3, "P", 1, "E")], false),
            )
            .block(
                "EventBlock",
                &uncompressed_event_block(&[
                    event(3, 1, 9, 1, 5),
                    event(3, 4, 9, 2, 0),
                    event(3, 5, 9, 3, 12),
                ]),
            )
            .end();
        let summary = validate(&bytes).expect("valid");
        assert_eq!(summary.events, 3);
        assert_eq!(summary.dropped_events_estimate, 2);
        assert_eq!(summary.events_by_event, counts(&[("P/E", 3)]));
    }

    #[test]
    fn timestamps_outside_the_block_range_are_one_warning() {
        let mut body = event_block(&[event(1, 1, 1, 10, 0), event(1, 2, 1, 20, 0)], false);
        body.splice(4..20, block_header(12, 15, 1)[4..].iter().copied());
        let bytes = FsWriter::nettrace()
            .trace(1, 0)
            .block(
                "MetadataBlock",
                &event_block(&[metadata(1, "P", 1, "E")], false),
            )
            .block("EventBlock", &body)
            .end();
        let summary = validate(&bytes).expect("valid");
        assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);
        assert!(
            summary.warnings[0].starts_with("2 events have timestamps outside"),
            "{:?}",
            summary.warnings
        );
    }

    #[test]
    fn validate_file_reads_a_whole_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("trace.nettrace");
        std::fs::write(&path, sample_v4()).expect("write");
        let summary = validate_file(&path).expect("valid");
        assert_eq!(summary.events, 5);

        let mut cut = sample_v4();
        cut.pop();
        std::fs::write(&path, &cut).expect("write");
        assert!(validate_file(&path).expect_err("truncated").is_truncated());
    }

    #[test]
    fn validate_file_reports_io_errors() {
        let error = validate_file(Path::new("/nonexistent/trace.nettrace")).expect_err("missing");
        assert!(matches!(error, NettraceError::Io(_)), "{error:?}");
        assert!(!error.is_truncated());
    }

    /// xorshift64: deterministic pseudo-random numbers for the fuzz tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn validate_in_random_chunks(
        bytes: &[u8],
        rng: &mut Rng,
    ) -> Result<NettraceSummary, NettraceError> {
        let mut validator = NettraceValidator::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (piece, tail) =
                rest.split_at(rng.below(17).min(rest.len()) + usize::from(rest.len() > 17));
            validator.feed(piece)?;
            rest = tail;
        }
        validator.finish()
    }

    /// Whole-stream and piecewise feeding must agree, and nothing may panic.
    fn check_consistent(bytes: &[u8], rng: &mut Rng) {
        let whole = validate(bytes);
        let pieces = validate_in_random_chunks(bytes, rng);
        assert_eq!(outcome(&whole), outcome(&pieces), "input {bytes:02x?}");
    }

    #[test]
    fn corrupted_traces_never_panic_and_feed_consistently() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for sample in [sample_v4(), sample_v3(), sample_v6()] {
            for index in 0..sample.len() {
                for bit in 0..8 {
                    let mut bytes = sample.clone();
                    bytes[index] ^= 1 << bit;
                    check_consistent(&bytes, &mut rng);
                }
                let mut bytes = sample.clone();
                bytes[index] = rng.next() as u8;
                check_consistent(&bytes, &mut rng);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_and_feed_consistently() {
        let mut rng = Rng(42);
        let headers = [
            Vec::new(),
            FsWriter::nettrace().out,
            FsWriter::netperf().out,
            v6_header(),
            {
                let mut w = FsWriter::nettrace();
                w.trace(1, 0);
                w.out
            },
        ];
        for round in 0..3000 {
            let mut bytes = headers[round % headers.len()].clone();
            let len = rng.below(400);
            bytes.extend((0..len).map(|_| rng.next() as u8));
            check_consistent(&bytes, &mut rng);
        }
    }

    /// Builds about `target` bytes of realistic V4 trace: ~100 KB event blocks of compressed
    /// events from 4 threads in runs of 8, sequence points every 10 blocks.
    fn synthetic_trace(target: usize, payload: usize) -> (Vec<u8>, u64) {
        let mut writer = FsWriter::nettrace();
        writer.trace(1, 1_000_000).block(
            "MetadataBlock",
            &event_block(
                &[
                    metadata(1, RUNTIME, 80, ""),
                    metadata(2, "MyEventSource", 1, "Hello"),
                ],
                false,
            ),
        );
        let mut sequences = [0u32; 4];
        let mut timestamp = 1_000i64;
        let mut events = 0u64;
        let mut blocks = 0;
        while writer.out.len() < target {
            let mut batch = Vec::new();
            let mut size = 0;
            while size < 100_000 {
                let thread = (batch.len() / 8) % 4;
                sequences[thread] += 1;
                timestamp += 37;
                let mut e = event(
                    1 + (batch.len() % 2) as u32,
                    sequences[thread],
                    1000 + thread as u64,
                    timestamp,
                    payload,
                );
                e.stack = (batch.len() % 5) as u32;
                size += payload + 6;
                batch.push(e);
            }
            events += batch.len() as u64;
            writer.block("EventBlock", &event_block(&batch, false));
            blocks += 1;
            if blocks % 10 == 0 {
                let threads: Vec<(u64, u32)> =
                    (0..4).map(|t| (1000 + t as u64, sequences[t])).collect();
                writer.block("SPBlock", &sequence_point_block(timestamp, &threads));
            }
        }
        (writer.end(), events)
    }

    #[test]
    #[ignore = "a benchmark: cargo test -p diagmon --release --lib nettrace -- --ignored --nocapture"]
    fn throughput() {
        for payload in [48, 8] {
            let (bytes, events) = synthetic_trace(100 << 20, payload);
            let start = std::time::Instant::now();
            let mut validator = NettraceValidator::new();
            for chunk in bytes.chunks(64 << 10) {
                validator.feed(chunk).expect("valid");
            }
            let summary = validator.finish().expect("valid");
            let elapsed = start.elapsed().as_secs_f64();
            assert_eq!(summary.events, events);
            assert_eq!(summary.dropped_events_estimate, 0);
            assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
            println!(
                "{payload}-byte payloads: {:.0} MB in {elapsed:.3} s = {:.0} MB/s, {:.1} M events/s",
                bytes.len() as f64 / 1e6,
                bytes.len() as f64 / 1e6 / elapsed,
                events as f64 / 1e6 / elapsed
            );
        }
    }
}

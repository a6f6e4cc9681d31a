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
//! events. The format notes it follows are in `docs/nettrace.md`.
//!
//! The parts: [`framing`] (stream headers, objects, block boundaries), [`blocks`] (block
//! contents), [`records`] (event headers), [`metadata`], [`sequence`] (dropped-event estimate),
//! [`warnings`], [`finish`] (the verdict and summary), [`state`] and [`reader`].

mod blocks;
mod finish;
mod framing;
mod metadata;
mod reader;
mod records;
mod sequence;
mod state;
#[cfg(test)]
pub(crate) mod tests;
mod warnings;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use blocks::{parse_v6_label_list_block, parse_v6_thread_block};
use metadata::MetadataTable;
use reader::Reader;
use records::*;
use sequence::{SequenceIssue, SequenceTracker};
use state::*;
use warnings::{Occurrences, Warnings};

/// The largest block a trace may declare. The runtime writes blocks of about 100 KB; the limit
/// only stops a corrupt size from making the validator buffer gigabytes.
const MAX_BLOCK_SIZE: usize = 64 << 20;
/// FastSerialization type names are short identifiers (`EventBlock`); longer ones mean corruption.
const MAX_TYPE_NAME_LEN: usize = 64;
/// The first object of a .NET Core 2.0 NetPerf stream (format versions 1 and 2), which has no
/// `Trace` object and is not read.
const NETPERF_V2_ENTRY: &[u8] = b"Microsoft.DotNet.Runtime.EventPipeFile";
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
}

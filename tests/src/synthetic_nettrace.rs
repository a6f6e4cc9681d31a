//! A fast writer of synthetic but valid nettrace (V4, "format 1") streams.
//!
//! This is a test oracle, written from the protocol notes (`docs/nettrace.md`) and independent
//! of diagmon's own parser. A stream is:
//!
//! ```text
//! "Nettrace"  i32 20  "!FastSerialization.1"
//! Trace object            (tag 5, type object, 48-byte body, tag 6)
//! MetadataBlock           (declares the synthetic events)
//! EventBlock*             (compressed headers, per-thread sequence numbers)
//! [MetadataBlock + EventBlock*]   rundown, optional
//! SPBlock                 (sequence point: last sequence number per capture thread)
//! 0x01                    (NullReference tag = end of stream)
//! ```
//!
//! Every block object is `tag 5, type object (tag 5, tag 1, i32 version 2, i32 min version 2,
//! i32 name length, name, tag 6), i32 blockSize, zero padding to a 4-byte-aligned absolute stream
//! offset, blockSize bytes, tag 6`. The writer tracks the absolute offset itself, so the pieces it
//! returns must be sent **in order, with nothing in between**.
//!
//! Events are generated from precomputed record templates: a block is a series of "runs" of up to
//! 32 events of one kind on one capture thread; the first record of a run carries the full
//! compressed header (metadata id, sequence delta, thread ids, payload size) and the rest of the
//! run is one `memcpy` of identical continuation records (flags `0x40` = sorted, a constant
//! timestamp delta and the payload). That keeps generation far cheaper than sending the bytes.

use std::time::{SystemTime, UNIX_EPOCH};

/// The 8-byte magic at the start of a nettrace stream.
pub const NETTRACE_MAGIC: &[u8; 8] = b"Nettrace";
/// The FastSerialization signature that follows the magic (after its i32 length, 20).
pub const FAST_SERIALIZATION_SIGNATURE: &[u8; 20] = b"!FastSerialization.1";
/// QPC frequency written in the Trace object (nanoseconds, as on Linux).
pub const QPC_FREQUENCY: i64 = 1_000_000_000;
/// Sync time (QPC) of synthetic traces; event timestamps start just after it.
pub const SYNC_TIME_QPC: u64 = 1_000_000_000_000;
/// Timestamp increment between consecutive synthetic events (1 µs at 1 GHz).
pub const TIMESTAMP_STEP: u64 = 1_000;

/// Metadata id of `Diagmon-Synthetic/Tick` (event id 1).
pub const TICK_METADATA_ID: u32 = 1;
/// Metadata id of the `Microsoft-Windows-DotNETRuntime` event id 1 (GCStart-like, empty name as
/// the 3.1 runtime writes for native events).
pub const GC_METADATA_ID: u32 = 2;
/// Metadata id of the `Microsoft-Windows-DotNETRuntimeRundown` event id 144 (MethodDCEnd-like),
/// declared in a second MetadataBlock written with the first rundown block.
pub const RUNDOWN_METADATA_ID: u32 = 3;

/// Provider name of the synthetic Tick event.
pub const SYNTHETIC_PROVIDER: &str = "Diagmon-Synthetic";
/// Provider name of the runtime-like event.
pub const RUNTIME_PROVIDER: &str = "Microsoft-Windows-DotNETRuntime";
/// Provider name of the rundown-like event.
pub const RUNDOWN_PROVIDER: &str = "Microsoft-Windows-DotNETRuntimeRundown";

/// Number of ordinary capture threads events are spread over.
pub const CAPTURE_THREADS: usize = 4;

const TAG_NULL_REFERENCE: u8 = 1;
const TAG_BEGIN_PRIVATE_OBJECT: u8 = 5;
const TAG_END_OBJECT: u8 = 6;
const BLOCK_HEADER_SIZE: u16 = 20;
const FLAG_COMPRESSED_HEADERS: u16 = 1;
const RUN_LEN: usize = 32;
/// Upper bound of a run head record without its payload: flags + 5 varints (≤ 10 bytes each).
const HEAD_OVERHEAD_MAX: usize = 1 + 5 + 5 + 10 + 5 + 10 + 10 + 5;

// Compressed header flags (§5.1).
const F_METADATA_ID: u8 = 1;
const F_CAPTURE_THREAD_AND_SEQUENCE: u8 = 2;
const F_THREAD_ID: u8 = 4;
const F_SORTED: u8 = 64;
const F_PAYLOAD_SIZE: u8 = 128;

// System.TypeCode values used in field descriptions.
const TYPE_UINT16: i32 = 8;
const TYPE_UINT32: i32 = 10;
const TYPE_UINT64: i32 = 12;
const TYPE_STRING: i32 = 18;

/// One event type: its metadata id and precomputed continuation records.
struct EventKind {
    metadata_id: u32,
    payload: Vec<u8>,
    /// `RUN_LEN - 1` identical continuation records back to back.
    tail: Vec<u8>,
    /// Length of one continuation record.
    record_len: usize,
}

impl EventKind {
    fn new(metadata_id: u32, payload: Vec<u8>) -> Self {
        let mut record = vec![F_SORTED];
        put_varu64(&mut record, TIMESTAMP_STEP);
        record.extend_from_slice(&payload);
        let tail = record.repeat(RUN_LEN - 1);
        EventKind {
            metadata_id,
            payload,
            tail,
            record_len: record.len(),
        }
    }
}

/// A capture thread: its id, processor and last sequence number attempted.
#[derive(Clone, Copy)]
struct ThreadState {
    id: u64,
    processor: u32,
    seq: u32,
}

/// Decoder-visible state of the previous record in the current block (zeroed per block).
#[derive(Default)]
struct BlockState {
    metadata_id: u32,
    seq: u32,
    capture_thread: u64,
    processor: u32,
    thread: u64,
    ts: u64,
    payload_size: u32,
}

/// Static description of an event for a MetadataBlock.
struct MetadataDef {
    id: u32,
    provider: &'static str,
    event_id: i32,
    name: &'static str,
    keywords: i64,
    version: i32,
    level: i32,
    fields: &'static [(i32, &'static str)],
}

const TICK_DEF: MetadataDef = MetadataDef {
    id: TICK_METADATA_ID,
    provider: SYNTHETIC_PROVIDER,
    event_id: 1,
    name: "Tick",
    keywords: 0x1,
    version: 0,
    level: 4,
    fields: &[(TYPE_STRING, "Message")],
};

const GC_DEF: MetadataDef = MetadataDef {
    id: GC_METADATA_ID,
    provider: RUNTIME_PROVIDER,
    event_id: 1,
    name: "",
    keywords: 0x1,
    version: 2,
    level: 4,
    fields: &[
        (TYPE_UINT32, "Count"),
        (TYPE_UINT32, "Depth"),
        (TYPE_UINT32, "Reason"),
        (TYPE_UINT32, "Type"),
        (TYPE_UINT16, "ClrInstanceID"),
    ],
};

const RUNDOWN_DEF: MetadataDef = MetadataDef {
    id: RUNDOWN_METADATA_ID,
    provider: RUNDOWN_PROVIDER,
    event_id: 144,
    name: "",
    keywords: 0x30,
    version: 1,
    level: 4,
    fields: &[
        (TYPE_UINT64, "MethodID"),
        (TYPE_UINT64, "ModuleID"),
        (TYPE_UINT64, "MethodStartAddress"),
        (TYPE_UINT32, "MethodSize"),
        (TYPE_UINT32, "MethodToken"),
        (TYPE_UINT32, "MethodFlags"),
        (TYPE_UINT16, "ClrInstanceID"),
    ],
};

const KIND_TICK: usize = 0;
const KIND_GC: usize = 1;
const KIND_RUNDOWN: usize = 2;

/// Generates one synthetic nettrace V4 stream in pieces.
///
/// Call [`header`](Self::header) once, then any number of [`event_block`](Self::event_block),
/// [`rundown_block`](Self::rundown_block) and [`sequence_point`](Self::sequence_point), then
/// [`end`](Self::end). The `write_*` variants append to a caller-owned buffer instead of
/// allocating. Padding is computed from the number of bytes this writer has produced so far, so
/// every piece must be sent in the order produced and nothing else may be interleaved.
pub struct SyntheticTrace {
    pid: u32,
    /// Absolute stream offset of the next byte this writer produces.
    offset: u64,
    /// Timestamp of the last event written.
    ts: u64,
    /// `CAPTURE_THREADS` ordinary threads, then the rundown thread.
    threads: Vec<ThreadState>,
    kinds: [EventKind; 3],
    run_counter: u64,
    rundown_metadata_written: bool,
    events_written: u64,
    events_dropped: u64,
    pending_drop: u32,
}

impl SyntheticTrace {
    /// A writer for a trace of process `pid` (events of about 95 bytes on average).
    pub fn new(pid: u32) -> Self {
        Self::with_event_bytes(pid, None)
    }

    /// A writer for a trace of process `pid` whose ordinary events average about `event_bytes`
    /// bytes each (compressed header included): the Tick message is lengthened or shortened to
    /// get there, the GC-like events keep their fixed payload. `None`: the default message.
    pub fn with_event_bytes(pid: u32, event_bytes: Option<usize>) -> Self {
        let mut gc_payload = Vec::new();
        for v in [7u32, 0, 1, 0] {
            gc_payload.extend_from_slice(&v.to_le_bytes());
        }
        gc_payload.extend_from_slice(&0u16.to_le_bytes());
        let message = match event_bytes {
            None => "Synthetic tick event from the diagmon simulated runtime".to_owned(),
            Some(bytes) => {
                // One event in 4 is GC-like (its continuation record: flags, timestamp step,
                // payload); the 3 Tick events make up the rest of the average. A continuation
                // record is 1 flag byte + the timestamp varint + the payload.
                let record_overhead = 1 + varu64_len(TIMESTAMP_STEP);
                let gc_record = record_overhead + gc_payload.len();
                let tick_record = (4 * bytes).saturating_sub(gc_record) / 3;
                // UTF-16 with a 2-byte terminator.
                let chars = tick_record.saturating_sub(record_overhead + 2) / 2;
                "Synthetic tick event from the diagmon simulated runtime. "
                    .chars()
                    .cycle()
                    .take(chars.max(1))
                    .collect()
            }
        };
        let mut tick_payload = Vec::new();
        put_utf16z(&mut tick_payload, &message);
        let mut rundown_payload = Vec::new();
        for v in [0x7f00_1234_5678u64, 0x7f00_0000_1000, 0x7f00_8765_4320] {
            rundown_payload.extend_from_slice(&v.to_le_bytes());
        }
        for v in [0x120u32, 0x0600_0001, 0] {
            rundown_payload.extend_from_slice(&v.to_le_bytes());
        }
        rundown_payload.extend_from_slice(&0u16.to_le_bytes());

        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let mut threads: Vec<ThreadState> = (0..CAPTURE_THREADS)
            .map(|i| ThreadState {
                id: u64::from(pid) + 1 + i as u64,
                processor: i as u32 % cpus,
                seq: 0,
            })
            .collect();
        threads.push(ThreadState {
            id: u64::from(pid),
            processor: 0,
            seq: 0,
        });
        SyntheticTrace {
            pid,
            offset: 0,
            ts: SYNC_TIME_QPC,
            threads,
            kinds: [
                EventKind::new(TICK_METADATA_ID, tick_payload),
                EventKind::new(GC_METADATA_ID, gc_payload),
                EventKind::new(RUNDOWN_METADATA_ID, rundown_payload),
            ],
            run_counter: 0,
            rundown_metadata_written: false,
            events_written: 0,
            events_dropped: 0,
            pending_drop: 0,
        }
    }

    /// Stream header, Trace object and one MetadataBlock declaring `Diagmon-Synthetic/Tick`
    /// (metadata id 1) and a `Microsoft-Windows-DotNETRuntime` event (id 2).
    pub fn header(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        self.write_header(&mut out);
        out
    }

    /// Appends what [`header`](Self::header) returns to `out`.
    pub fn write_header(&mut self, out: &mut Vec<u8>) {
        let base = out.len();
        out.extend_from_slice(NETTRACE_MAGIC);
        out.extend_from_slice(&20i32.to_le_bytes());
        out.extend_from_slice(FAST_SERIALIZATION_SIGNATURE);
        // Trace object.
        out.push(TAG_BEGIN_PRIVATE_OBJECT);
        write_type_object(out, "Trace", 4, 4);
        for v in system_time_now() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(SYNC_TIME_QPC as i64).to_le_bytes());
        out.extend_from_slice(&QPC_FREQUENCY.to_le_bytes());
        out.extend_from_slice(&8i32.to_le_bytes());
        out.extend_from_slice(&(self.pid as i32).to_le_bytes());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
        out.extend_from_slice(&cpus.to_le_bytes());
        out.extend_from_slice(&1_000_000i32.to_le_bytes());
        out.push(TAG_END_OBJECT);
        self.write_metadata_block(out, base, &[&TICK_DEF, &GC_DEF]);
        self.offset += (out.len() - base) as u64;
    }

    /// One EventBlock whose payload is about `target_bytes` long (at least one event), with
    /// sequence numbers continuing per capture thread. Returns the whole block object.
    pub fn event_block(&mut self, target_bytes: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(target_bytes + 256);
        self.write_event_block(&mut out, target_bytes);
        out
    }

    /// Appends what [`event_block`](Self::event_block) returns to `out`.
    pub fn write_event_block(&mut self, out: &mut Vec<u8>, target_bytes: usize) {
        let base = out.len();
        self.write_block(out, base, "EventBlock", |s, out| {
            s.event_block_body(out, target_bytes, false)
        });
        self.offset += (out.len() - base) as u64;
    }

    /// A rundown-like EventBlock of about `target_bytes` (MethodDCEnd-like events of
    /// `Microsoft-Windows-DotNETRuntimeRundown` on the main thread), preceded the first time by a
    /// MetadataBlock declaring that event (metadata id 3).
    pub fn rundown_block(&mut self, target_bytes: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(target_bytes + 512);
        self.write_rundown_block(&mut out, target_bytes);
        out
    }

    /// Appends what [`rundown_block`](Self::rundown_block) returns to `out`.
    pub fn write_rundown_block(&mut self, out: &mut Vec<u8>, target_bytes: usize) {
        let base = out.len();
        if !self.rundown_metadata_written {
            self.rundown_metadata_written = true;
            self.write_metadata_block(out, base, &[&RUNDOWN_DEF]);
        }
        self.write_block(out, base, "EventBlock", |s, out| {
            s.event_block_body(out, target_bytes, true)
        });
        self.offset += (out.len() - base) as u64;
    }

    /// A sequence point block (SPBlock) listing every capture thread that has attempted events
    /// with its last sequence number.
    pub fn sequence_point(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_sequence_point(&mut out);
        out
    }

    /// Appends what [`sequence_point`](Self::sequence_point) returns to `out`.
    pub fn write_sequence_point(&mut self, out: &mut Vec<u8>) {
        let base = out.len();
        self.write_block(out, base, "SPBlock", |s, out| {
            out.extend_from_slice(&(s.ts as i64).to_le_bytes());
            let used: Vec<ThreadState> = s.threads.iter().copied().filter(|t| t.seq != 0).collect();
            out.extend_from_slice(&(used.len() as u32).to_le_bytes());
            for t in used {
                out.extend_from_slice(&t.id.to_le_bytes());
                out.extend_from_slice(&t.seq.to_le_bytes());
            }
        });
        self.offset += (out.len() - base) as u64;
    }

    /// A final sequence point block followed by the end-of-stream marker (NullReference tag 1),
    /// so the stream ends `… 06 01`.
    pub fn end(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_end(&mut out);
        out
    }

    /// Appends what [`end`](Self::end) returns to `out`.
    pub fn write_end(&mut self, out: &mut Vec<u8>) {
        self.write_sequence_point(out);
        out.push(TAG_NULL_REFERENCE);
        self.offset += 1;
    }

    /// Makes the next run of events skip `n` sequence numbers on its thread, as if the runtime had
    /// dropped `n` events (full buffers). Counted by [`events_dropped`](Self::events_dropped).
    pub fn simulate_dropped_events(&mut self, n: u32) {
        self.pending_drop = self.pending_drop.saturating_add(n);
    }

    /// Number of events (metadata id ≠ 0) written so far.
    pub fn events_written(&self) -> u64 {
        self.events_written
    }

    /// Number of sequence numbers skipped through
    /// [`simulate_dropped_events`](Self::simulate_dropped_events) and already applied.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Total number of bytes produced so far (the absolute offset of the next byte).
    pub fn stream_offset(&self) -> u64 {
        self.offset
    }

    /// Last sequence number of each capture thread that has written events: `(thread id, seq)`.
    pub fn thread_sequences(&self) -> Vec<(u64, u32)> {
        self.threads
            .iter()
            .filter(|t| t.seq != 0)
            .map(|t| (t.id, t.seq))
            .collect()
    }

    /// Appends a MetadataBlock holding `records`, each a whole V4 metadata payload (id, provider,
    /// event id, name, keywords, version, level, fields), for events of the caller's own making.
    pub fn write_metadata_records(&mut self, out: &mut Vec<u8>, records: &[Vec<u8>]) {
        let base = out.len();
        self.write_block(out, base, "MetadataBlock", |s, out| {
            write_block_header(out, s.ts, s.ts);
            for record in records {
                out.push(F_PAYLOAD_SIZE);
                put_varu64(out, 0);
                put_varu64(out, record.len() as u64);
                out.extend_from_slice(record);
            }
        });
        self.offset += (out.len() - base) as u64;
    }

    /// Appends an EventBlock with one event per `(metadata id, payload)`, on the first capture
    /// thread with its sequence numbers continuing.
    pub fn write_events(&mut self, out: &mut Vec<u8>, events: &[(u32, Vec<u8>)]) {
        let base = out.len();
        self.write_block(out, base, "EventBlock", |s, out| {
            let start = out.len();
            write_block_header(out, 0, 0);
            let first_ts = s.ts + TIMESTAMP_STEP;
            let mut state = BlockState::default();
            for (metadata_id, payload) in events {
                let kind = EventKind::new(*metadata_id, payload.clone());
                write_run(out, &kind, &mut s.threads[0], &mut state, &mut s.ts, 0, 1);
                s.events_written += 1;
            }
            let header_ts = start + 4;
            out[header_ts..header_ts + 8].copy_from_slice(&(first_ts as i64).to_le_bytes());
            out[header_ts + 8..header_ts + 16].copy_from_slice(&(s.ts as i64).to_le_bytes());
        });
        self.offset += (out.len() - base) as u64;
    }

    /// Writes a block object `name` whose body `body` produces; `base` is where this writer's
    /// current piece started in `out` (so absolute offsets are `self.offset + (pos - base)`).
    fn write_block(
        &mut self,
        out: &mut Vec<u8>,
        base: usize,
        name: &str,
        body: impl FnOnce(&mut Self, &mut Vec<u8>),
    ) {
        out.push(TAG_BEGIN_PRIVATE_OBJECT);
        write_type_object(out, name, 2, 2);
        let size_pos = out.len();
        out.extend_from_slice(&[0; 4]);
        let absolute = self.offset + (out.len() - base) as u64;
        let padding = ((4 - absolute % 4) % 4) as usize;
        out.extend(std::iter::repeat_n(0u8, padding));
        let start = out.len();
        body(self, out);
        let size = (out.len() - start) as i32;
        out[size_pos..size_pos + 4].copy_from_slice(&size.to_le_bytes());
        out.push(TAG_END_OBJECT);
    }

    fn write_metadata_block(&mut self, out: &mut Vec<u8>, base: usize, defs: &[&MetadataDef]) {
        self.write_block(out, base, "MetadataBlock", |s, out| {
            write_block_header(out, s.ts, s.ts);
            let mut last_size = 0u32;
            let mut last_ts = 0u64;
            let mut payload = Vec::with_capacity(256);
            for def in defs {
                payload.clear();
                def.encode(&mut payload);
                let size = payload.len() as u32;
                let mut flags = 0u8;
                if size != last_size {
                    flags |= F_PAYLOAD_SIZE;
                }
                out.push(flags);
                put_varu64(out, s.ts - last_ts);
                if flags & F_PAYLOAD_SIZE != 0 {
                    put_varu64(out, u64::from(size));
                }
                out.extend_from_slice(&payload);
                last_size = size;
                last_ts = s.ts;
            }
        });
    }

    /// Block header and runs of events until about `target` payload bytes.
    fn event_block_body(&mut self, out: &mut Vec<u8>, target: usize, rundown: bool) {
        let start = out.len();
        write_block_header(out, 0, 0);
        let first_ts = self.ts + TIMESTAMP_STEP;
        let mut state = BlockState::default();
        let mut wrote_any = false;
        loop {
            let (kind_index, thread_index) = if rundown {
                (KIND_RUNDOWN, CAPTURE_THREADS)
            } else {
                let run = self.run_counter;
                let kind = if run % 4 == 3 { KIND_GC } else { KIND_TICK };
                (kind, (run % CAPTURE_THREADS as u64) as usize)
            };
            let kind = &self.kinds[kind_index];
            let head_max = HEAD_OVERHEAD_MAX + kind.payload.len();
            let remaining = target.saturating_sub(out.len() - start);
            let n = if remaining >= head_max + (RUN_LEN - 1) * kind.record_len {
                RUN_LEN
            } else if remaining > head_max {
                1 + (remaining - head_max) / kind.record_len
            } else if !wrote_any {
                1
            } else {
                break;
            };
            let drop = std::mem::take(&mut self.pending_drop);
            self.events_dropped += u64::from(drop);
            write_run(
                out,
                kind,
                &mut self.threads[thread_index],
                &mut state,
                &mut self.ts,
                drop,
                n,
            );
            self.events_written += n as u64;
            wrote_any = true;
            if !rundown {
                self.run_counter += 1;
            }
            if n < RUN_LEN {
                break;
            }
        }
        let header_ts = start + 4;
        out[header_ts..header_ts + 8].copy_from_slice(&(first_ts as i64).to_le_bytes());
        out[header_ts + 8..header_ts + 16].copy_from_slice(&(self.ts as i64).to_le_bytes());
    }
}

/// Writes `n` events of `kind` on `thread`: one full compressed header, then continuation records.
fn write_run(
    out: &mut Vec<u8>,
    kind: &EventKind,
    thread: &mut ThreadState,
    state: &mut BlockState,
    ts: &mut u64,
    dropped: u32,
    n: usize,
) {
    let seq = thread.seq.wrapping_add(1).wrapping_add(dropped);
    let event_ts = *ts + TIMESTAMP_STEP;
    let payload_size = kind.payload.len() as u32;
    let mut flags = F_SORTED;
    if kind.metadata_id != state.metadata_id {
        flags |= F_METADATA_ID;
    }
    let expected_seq = state.seq.wrapping_add(u32::from(kind.metadata_id != 0));
    if seq != expected_seq
        || thread.id != state.capture_thread
        || thread.processor != state.processor
    {
        flags |= F_CAPTURE_THREAD_AND_SEQUENCE;
    }
    if thread.id != state.thread {
        flags |= F_THREAD_ID;
    }
    if payload_size != state.payload_size {
        flags |= F_PAYLOAD_SIZE;
    }
    out.push(flags);
    if flags & F_METADATA_ID != 0 {
        put_varu64(out, u64::from(kind.metadata_id));
    }
    if flags & F_CAPTURE_THREAD_AND_SEQUENCE != 0 {
        put_varu64(out, u64::from(seq.wrapping_sub(state.seq).wrapping_sub(1)));
        put_varu64(out, thread.id);
        put_varu64(out, u64::from(thread.processor));
    }
    if flags & F_THREAD_ID != 0 {
        put_varu64(out, thread.id);
    }
    put_varu64(out, event_ts - state.ts);
    if flags & F_PAYLOAD_SIZE != 0 {
        put_varu64(out, u64::from(payload_size));
    }
    out.extend_from_slice(&kind.payload);
    out.extend_from_slice(&kind.tail[..(n - 1) * kind.record_len]);

    let last_seq = seq.wrapping_add(n as u32 - 1);
    let last_ts = event_ts + (n as u64 - 1) * TIMESTAMP_STEP;
    *state = BlockState {
        metadata_id: kind.metadata_id,
        seq: last_seq,
        capture_thread: thread.id,
        processor: thread.processor,
        thread: thread.id,
        ts: last_ts,
        payload_size,
    };
    thread.seq = last_seq;
    *ts = last_ts;
}

impl MetadataDef {
    /// V4 metadata payload: id, provider, event id, name, keywords, version, level, fields.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.id as i32).to_le_bytes());
        put_utf16z(out, self.provider);
        out.extend_from_slice(&self.event_id.to_le_bytes());
        put_utf16z(out, self.name);
        out.extend_from_slice(&self.keywords.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.level.to_le_bytes());
        out.extend_from_slice(&(self.fields.len() as i32).to_le_bytes());
        for (type_code, name) in self.fields {
            out.extend_from_slice(&type_code.to_le_bytes());
            put_utf16z(out, name);
        }
    }
}

/// Type object of a FastSerialization object: tag 5, tag 1, version, min version, name, tag 6.
fn write_type_object(out: &mut Vec<u8>, name: &str, version: i32, min_version: i32) {
    out.push(TAG_BEGIN_PRIVATE_OBJECT);
    out.push(TAG_NULL_REFERENCE);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&min_version.to_le_bytes());
    out.extend_from_slice(&(name.len() as i32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(TAG_END_OBJECT);
}

/// Event/metadata block header: size 20, flags 1 (compressed), min and max timestamps.
fn write_block_header(out: &mut Vec<u8>, min_ts: u64, max_ts: u64) {
    out.extend_from_slice(&BLOCK_HEADER_SIZE.to_le_bytes());
    out.extend_from_slice(&FLAG_COMPRESSED_HEADERS.to_le_bytes());
    out.extend_from_slice(&(min_ts as i64).to_le_bytes());
    out.extend_from_slice(&(max_ts as i64).to_le_bytes());
}

/// LEB128 unsigned varint.
#[inline]
fn put_varu64(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// How many bytes [`put_varu64`] writes for `value`.
fn varu64_len(value: u64) -> usize {
    let mut out = Vec::new();
    put_varu64(&mut out, value);
    out.len()
}

/// UTF-16LE string with a NUL terminator.
fn put_utf16z(out: &mut Vec<u8>, s: &str) {
    for unit in s.encode_utf16() {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out.extend_from_slice(&[0, 0]);
}

/// The current UTC time as a Windows SYSTEMTIME: year, month, dayOfWeek, day, hour, minute,
/// second, milliseconds.
fn system_time_now() -> [i16; 8] {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since_epoch.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let day_of_week = (days + 4).rem_euclid(7);
    [
        year as i16,
        month as i16,
        day_of_week as i16,
        day as i16,
        (rem / 3600) as i16,
        (rem % 3600 / 60) as i16,
        (rem % 60) as i16,
        since_epoch.subsec_millis() as i16,
    ]
}

/// A complete, valid synthetic nettrace stream of about `total_bytes` (never less than the header
/// plus one event block and the end), ending with the end-of-stream marker.
pub fn synthetic_trace_bytes(total_bytes: u64) -> Vec<u8> {
    const END_RESERVE: u64 = 256;
    const MAX_BLOCK: u64 = 64 * 1024;
    let mut trace = SyntheticTrace::new(std::process::id());
    let capacity = usize::try_from(total_bytes)
        .unwrap_or(usize::MAX)
        .min(1 << 30);
    let mut out = Vec::with_capacity(capacity + 1024);
    trace.write_header(&mut out);
    loop {
        let remaining = total_bytes.saturating_sub(out.len() as u64 + END_RESERVE);
        trace.write_event_block(&mut out, remaining.min(MAX_BLOCK) as usize);
        if remaining <= MAX_BLOCK {
            break;
        }
    }
    trace.write_end(&mut out);
    out
}

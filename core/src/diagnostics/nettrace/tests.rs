//! Tests of the validator on synthetic traces written the way the runtime writes them.

use super::*;

// ---------------------------------------------------------------------------------------
// A small writer of synthetic traces, encoding the way the runtime does.

pub(super) fn var(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(super) fn utf16z(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Writes FastSerialization streams: NetPerf V3 (`begin` 4) or nettrace V4 (`begin` 5).
pub(super) struct FsWriter {
    pub(super) out: Vec<u8>,
    pub(super) begin: u8,
    pub(super) pad: u8,
}

impl FsWriter {
    pub(super) fn nettrace() -> Self {
        let mut out = MAGIC.to_vec();
        out.extend(20u32.to_le_bytes());
        out.extend(SIGNATURE);
        Self {
            out,
            begin: 5,
            pad: 0,
        }
    }

    pub(super) fn netperf() -> Self {
        let mut out = 20u32.to_le_bytes().to_vec();
        out.extend(SIGNATURE);
        Self {
            out,
            begin: 4,
            pad: 0,
        }
    }

    pub(super) fn type_header(&mut self, name: &str, version: i32, min_version: i32) {
        self.out
            .extend([self.begin, self.begin, TAG_NULL_REFERENCE]);
        self.out.extend(version.to_le_bytes());
        self.out.extend(min_version.to_le_bytes());
        self.out.extend((name.len() as i32).to_le_bytes());
        self.out.extend(name.as_bytes());
        self.out.push(TAG_END_OBJECT);
    }

    pub(super) fn trace(&mut self, pid: i32, sampling_rate: i32) -> &mut Self {
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

    pub(super) fn block(&mut self, name: &str, body: &[u8]) -> &mut Self {
        self.block_declaring(name, body.len() as i32, body)
    }

    pub(super) fn block_declaring(&mut self, name: &str, declared: i32, body: &[u8]) -> &mut Self {
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

    pub(super) fn end(&mut self) -> Vec<u8> {
        self.out.push(TAG_NULL_REFERENCE);
        std::mem::take(&mut self.out)
    }
}

#[derive(Clone, Default)]
pub(super) struct Event {
    pub(super) metadata_id: u32,
    pub(super) sequence: u32,
    pub(super) thread: u64,
    pub(super) capture_thread: u64,
    pub(super) processor: u32,
    pub(super) stack: u32,
    pub(super) timestamp: i64,
    pub(super) activity: [u8; 16],
    pub(super) payload: Vec<u8>,
}

pub(super) fn event(
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

pub(super) fn metadata_payload(
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

pub(super) fn metadata(id: u32, provider: &str, event_id: u32, name: &str) -> Event {
    Event {
        timestamp: 5,
        payload: metadata_payload(id, provider, event_id, name, None),
        ..Event::default()
    }
}

pub(super) fn block_header(min: i64, max: i64, flags: u16) -> Vec<u8> {
    let mut out = 20u16.to_le_bytes().to_vec();
    out.extend(flags.to_le_bytes());
    out.extend(min.to_le_bytes());
    out.extend(max.to_le_bytes());
    out
}

pub(super) fn time_range(events: &[Event]) -> (i64, i64) {
    let min = events.iter().map(|e| e.timestamp).min().unwrap_or(0);
    let max = events.iter().map(|e| e.timestamp).max().unwrap_or(0);
    (min, max)
}

/// An event or metadata block with compressed headers, as the runtime writes it.
pub(super) fn event_block(events: &[Event], v6: bool) -> Vec<u8> {
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
pub(super) fn uncompressed_event_block(events: &[Event]) -> Vec<u8> {
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

pub(super) fn stack_block(first: u32, stacks: &[&[u8]]) -> Vec<u8> {
    let mut out = first.to_le_bytes().to_vec();
    out.extend((stacks.len() as u32).to_le_bytes());
    for stack in stacks {
        out.extend((stack.len() as u32).to_le_bytes());
        out.extend(*stack);
    }
    out
}

pub(super) fn sequence_point_block(timestamp: i64, threads: &[(u64, u32)]) -> Vec<u8> {
    let mut out = timestamp.to_le_bytes().to_vec();
    out.extend((threads.len() as u32).to_le_bytes());
    for (thread, sequence) in threads {
        out.extend(thread.to_le_bytes());
        out.extend(sequence.to_le_bytes());
    }
    out
}

pub(super) const RUNTIME: &str = "Microsoft-Windows-DotNETRuntime";

/// A V4 trace: Trace, MetadataBlock (2 definitions), StackBlock (2 stacks), EventBlock (5
/// events on 2 threads), SPBlock, end tag.
pub(crate) fn sample_v4() -> Vec<u8> {
    sample_v4_with(&mut FsWriter::nettrace())
}

pub(super) fn sample_v4_with(writer: &mut FsWriter) -> Vec<u8> {
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

pub(super) fn v3_record(metadata_id: u32, timestamp: i64, payload: &[u8], stack: &[u8]) -> Vec<u8> {
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

pub(super) fn sample_v3() -> Vec<u8> {
    let mut body = v3_record(0, 1, &metadata_payload(1, "Prov", 5, "Evt", None), &[]);
    body.extend(v3_record(1, 2, &[1, 2, 3], &[0xCC; 16]));
    body.extend(v3_record(1, 3, &[], &[]));
    FsWriter::netperf()
        .trace(99, 0)
        .block("EventBlock", &body)
        .end()
}

pub(super) fn v6_header() -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for field in [0u32, 6, 0] {
        out.extend(field.to_le_bytes());
    }
    out
}

pub(super) fn v6_block(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.extend(((body.len() as u32) | (u32::from(kind) << 24)).to_le_bytes());
    out.extend(body);
}

pub(super) fn v6_string(out: &mut Vec<u8>, text: &str) {
    var(out, text.len() as u64);
    out.extend(text.as_bytes());
}

pub(super) fn v6_trace_body(pairs: &[(&str, &str)]) -> Vec<u8> {
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

pub(super) fn v6_metadata_row(
    out: &mut Vec<u8>,
    id: u32,
    provider: &str,
    event_id: u32,
    name: &str,
) {
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

pub(super) fn sample_v6() -> Vec<u8> {
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

pub(super) fn validate(bytes: &[u8]) -> Result<NettraceSummary, NettraceError> {
    let mut validator = NettraceValidator::new();
    validator.feed(bytes)?;
    validator.finish()
}

pub(super) fn validate_in_chunks(
    bytes: &[u8],
    chunk: usize,
) -> Result<NettraceSummary, NettraceError> {
    let mut validator = NettraceValidator::new();
    for piece in bytes.chunks(chunk) {
        validator.feed(piece)?;
    }
    validator.finish()
}

pub(super) fn malformed_reason(result: Result<NettraceSummary, NettraceError>) -> String {
    match result {
        Err(NettraceError::Malformed { reason, .. }) => reason,
        other => panic!("expected a malformed trace, got {other:?}"),
    }
}

pub(super) fn outcome(result: &Result<NettraceSummary, NettraceError>) -> String {
    match result {
        Ok(summary) => serde_json::to_string(summary).expect("summaries serialize"),
        Err(error) => error.to_string(),
    }
}

pub(super) fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

// ---------------------------------------------------------------------------------------
// Tests of the whole validator.

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
pub(super) struct Rng(u64);

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

pub(super) fn validate_in_random_chunks(
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
pub(super) fn check_consistent(bytes: &[u8], rng: &mut Rng) {
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

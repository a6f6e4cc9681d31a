//! The framing of a nettrace stream: the validator is driven one unit at a time (a header, an
//! object header, a whole block), and this part reads the stream headers, the FastSerialization
//! objects around the blocks (NetPerf V3, nettrace V4/V5) and the V6 block headers. A
//! framing-only validator stops here and passes over block contents.

use super::*;

impl NettraceValidator {
    pub(super) fn consume(&mut self, mut input: &[u8]) -> Result<(), NettraceError> {
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

    pub(super) fn advance(&mut self, consumed: usize) {
        self.unit_start = self.unit_start.saturating_add(consumed as u64);
    }

    pub(super) fn expect(&mut self, step: Step, need: usize) {
        self.step = step;
        self.need = need;
    }

    /// Parses one complete unit, which starts at `self.unit_start`, and sets up the next one.
    pub(super) fn process(&mut self, unit: &[u8]) -> Result<(), NettraceError> {
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

    pub(super) fn on_magic(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
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

    pub(super) fn on_nettrace_version(
        &mut self,
        unit: &[u8],
        at: u64,
    ) -> Result<(), NettraceError> {
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

    pub(super) fn on_v6_version(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
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

    pub(super) fn begin_tag(&self) -> u8 {
        if self.format == Some(NettraceFormat::NetPerfV3) {
            TAG_BEGIN_OBJECT
        } else {
            TAG_BEGIN_PRIVATE_OBJECT
        }
    }

    pub(super) fn on_object_tag(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
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

    pub(super) fn on_type_header(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
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

    pub(super) fn on_type_name(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
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
            if name == NETPERF_V2_ENTRY && !self.saw_trace {
                return Err(malformed(
                    at,
                    "`Microsoft.DotNet.Runtime.EventPipeFile` opens the NetPerf format of .NET Core \
                     2.0 (versions 1 and 2), which this validator does not read; it reads NetPerf \
                     V3 (.NET Core 2.1 and 2.2) and nettrace V4 to V6 (.NET Core 3.0 and later)",
                ));
            }
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

    pub(super) fn on_trace_body(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
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

    pub(super) fn record_pointer_size(&mut self, pointer_size: i32) {
        self.trace.pointer_size = pointer_size.cast_unsigned();
        if pointer_size != 4 && pointer_size != 8 {
            self.warn(|| format!("the Trace object gives a pointer size of {pointer_size} bytes"));
        }
    }

    pub(super) fn on_block_size(
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

    pub(super) fn on_block_body(
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
    pub(super) fn on_block_end(
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

    pub(super) fn on_v6_block_header(&mut self, unit: &[u8], at: u64) -> Result<(), NettraceError> {
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

    pub(super) fn on_v6_block_body(
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;

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
    fn a_dotnet_core_2_0_netperf_file_is_named_as_unsupported() {
        let mut writer = FsWriter::netperf();
        writer.type_header("Microsoft.DotNet.Runtime.EventPipeFile", 2, 0);
        let reason = malformed_reason(validate(&writer.out));
        assert!(
            reason.contains("NetPerf format of .NET Core 2.0"),
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
}

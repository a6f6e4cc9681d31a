//! The contents of blocks: event records, metadata, stacks, sequence points, and the V6 trace,
//! thread and label-list blocks.

use super::*;

impl NettraceValidator {
    pub(super) fn parse_v6_trace(
        &mut self,
        body: &[u8],
        block: Block,
    ) -> Result<(), NettraceError> {
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

    pub(super) fn parse_v6_metadata_block(
        &mut self,
        body: &[u8],
        block: Block,
    ) -> Result<(), NettraceError> {
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

    pub(super) fn parse_v6_sequence_point_block(
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

    pub(super) fn parse_v6_remove_thread_block(
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

    pub(super) fn parse_event_block(
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
    pub(super) fn parse_compressed_records(
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

    pub(super) fn parse_uncompressed_records(
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

    #[inline(always)]
    pub(super) fn on_record(
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

    pub(super) fn parse_stack_block(
        &mut self,
        body: &[u8],
        block: Block,
    ) -> Result<(), NettraceError> {
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

    pub(super) fn parse_sequence_point_block_v4(
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
}

pub(super) fn parse_v6_thread_block(body: &[u8], block: Block) -> Result<(), NettraceError> {
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

pub(super) fn parse_v6_label_list_block(body: &[u8], block: Block) -> Result<(), NettraceError> {
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

pub(super) fn utf8_name(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(MAX_NAME_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;

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
}

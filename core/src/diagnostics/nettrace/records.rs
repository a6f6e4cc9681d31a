//! Event records: compressed and uncompressed headers (NetPerf V3, nettrace V4-V6) and the
//! metadata payload's optional parts.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// An event block: records with a metadata id are events.
    Events,
    /// A V4 metadata block: every record defines metadata.
    Metadata,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct RecordContext {
    pub(super) role: Role,
    pub(super) v6: bool,
    pub(super) track_sequence: bool,
}

/// The fields of the previous compressed header, which the next one is delta-decoded against.
#[derive(Debug, Default)]
pub(super) struct HeaderState {
    pub(super) metadata_id: u32,
    pub(super) sequence: u32,
    pub(super) capture_thread: u64,
    pub(super) timestamp: i64,
    pub(super) payload_size: u32,
}

#[inline(always)]
pub(super) fn read_compressed_header(
    r: &mut Reader<'_>,
    h: &mut HeaderState,
    v6: bool,
) -> Option<()> {
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
pub(super) struct Fields<'a> {
    pub(super) metadata_id: u32,
    pub(super) sequence: u32,
    pub(super) capture_thread: u64,
    pub(super) timestamp: i64,
    pub(super) payload: &'a [u8],
}

pub(super) type FieldsFn = for<'a> fn(&mut Reader<'a>) -> Option<Fields<'a>>;

/// A NetPerf record (after its size): metadata id, thread id, timestamp, activity ids, payload,
/// stack.
pub(super) fn fields_v3<'a>(e: &mut Reader<'a>) -> Option<Fields<'a>> {
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
pub(super) fn fields_v4<'a>(e: &mut Reader<'a>) -> Option<Fields<'a>> {
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
pub(super) fn fields_v6<'a>(e: &mut Reader<'a>) -> Option<Fields<'a>> {
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
pub(super) fn has_v5_tags(r: &mut Reader<'_>) -> bool {
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
pub(super) fn skip_v1_fields(r: &mut Reader<'_>, count: i32, depth: u32) -> Option<()> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;

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
}

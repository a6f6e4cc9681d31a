//! The verdict on a whole stream: complete, truncated (and where) or malformed, and the summary.

use super::*;

impl NettraceValidator {
    pub(super) fn effective_format(&self, format: NettraceFormat) -> NettraceFormat {
        if format == NettraceFormat::NetTraceV4 && self.saw_v5_metadata {
            NettraceFormat::NetTraceV5
        } else {
            format
        }
    }

    pub(super) fn truncation_context(&self) -> String {
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

    pub(super) fn into_summary(mut self) -> NettraceSummary {
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

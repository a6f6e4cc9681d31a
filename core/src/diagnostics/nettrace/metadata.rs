//! Metadata definitions and counting events by the provider and event they name.

use super::*;

impl NettraceValidator {
    /// A NetPerf/V4/V5 metadata payload: `i32 id`, UTF-16z provider, `i32 eventId`, UTF-16z
    /// name, then keywords, version, level, fields and (V5) tags. Payload problems are warnings:
    /// the record boundaries, which are what structure means here, are already known good.
    pub(super) fn define_metadata_fast_serialization(&mut self, payload: &[u8], at: u64) {
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

    pub(super) fn define_metadata(
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
    pub(super) fn count_event(&mut self, metadata_id: u32, at: u64) {
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
    pub(super) fn note_sequence_issue(&mut self, issue: SequenceIssue) {
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

    pub(super) fn warn(&mut self, message: impl FnOnce() -> String) {
        self.warnings.push_with(message);
    }
}

#[derive(Debug)]
pub(super) struct MetadataEntry {
    pub(super) provider: String,
    /// `Provider/EventName`, or `Provider/#eventId` without a name.
    pub(super) event_key: String,
    pub(super) events: u64,
}

pub(super) enum Defined {
    New,
    Replaced,
    TableFull,
}

#[derive(Debug, Default)]
pub(super) struct MetadataTable {
    /// Every definition seen, in order, with the events attributed to it.
    pub(super) entries: Vec<MetadataEntry>,
    /// Metadata id → entry index + 1 (0: undefined), for small ids.
    pub(super) dense: Vec<u32>,
    /// Metadata id → entry index, for the rest.
    pub(super) sparse: HashMap<u32, usize>,
    /// Events per undefined metadata id.
    pub(super) unknown: BTreeMap<u32, u64>,
    /// Events on undefined ids beyond [`MAX_UNKNOWN_METADATA_IDS`].
    pub(super) unknown_other: u64,
}

impl MetadataTable {
    pub(super) fn lookup(&self, id: u32) -> Option<usize> {
        if id < DENSE_METADATA_IDS {
            match self.dense.get(id as usize).copied() {
                Some(slot) if slot != 0 => Some(slot as usize - 1),
                _ => None,
            }
        } else {
            self.sparse.get(&id).copied()
        }
    }

    pub(super) fn define(
        &mut self,
        id: u32,
        provider: String,
        event_id: u32,
        name: String,
    ) -> Defined {
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
    pub(super) fn forget_ids(&mut self) {
        self.dense.clear();
        self.sparse.clear();
    }

    /// Counts an event on an undefined id; true the first time this id is seen.
    pub(super) fn count_unknown(&mut self, id: u32) -> bool {
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

#[cfg(test)]
mod tests {
    use super::super::tests::*;

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
}

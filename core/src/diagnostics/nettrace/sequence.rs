//! The dropped-event estimate from per-thread sequence numbers and sequence points.

use super::*;

pub(super) enum SequenceIssue {
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
pub(super) struct SequenceTracker {
    pub(super) last: HashMap<u64, u32>,
    /// The current thread and its last number; newer than its entry in `last`.
    pub(super) current: Option<(u64, u32)>,
    pub(super) dropped: u64,
    /// V6 thread indexes are never reused, so a last number of 0 is not special there.
    pub(super) v6: bool,
    pub(super) overflowed: bool,
}

impl SequenceTracker {
    #[inline]
    pub(super) fn on_event(&mut self, thread: u64, sequence: u32) -> Option<SequenceIssue> {
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
    pub(super) fn switch_to(&mut self, thread: u64, sequence: u32) -> Option<SequenceIssue> {
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

    pub(super) fn gap(
        &mut self,
        thread: u64,
        previous: u32,
        sequence: u32,
    ) -> Option<SequenceIssue> {
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

    pub(super) fn write_back(&mut self) {
        if let Some((thread, last)) = self.current.take() {
            // The thread's slot was taken when it became current, so this never grows the map.
            self.last.insert(thread, last);
        }
    }

    /// A sequence point or RemoveThread entry: the thread has attempted at least `sequence`.
    pub(super) fn checkpoint(&mut self, thread: u64, sequence: u32) {
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

    pub(super) fn remove(&mut self, thread: u64) {
        self.write_back();
        self.last.remove(&thread);
    }

    pub(super) fn clear(&mut self) {
        self.current = None;
        self.last.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;

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
}

//! Warnings: oddities that do not make a trace malformed, capped and counted.

use super::*;

#[derive(Debug, Default)]
pub(super) struct Warnings {
    pub(super) list: Vec<String>,
    pub(super) suppressed: u64,
}

impl Warnings {
    pub(super) fn push_with(&mut self, message: impl FnOnce() -> String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(message());
        } else {
            self.suppressed += 1;
        }
    }

    /// The warnings to report: `first` (aggregates), then the rest, capped at [`MAX_WARNINGS`].
    pub(super) fn finish(self, first: Vec<String>) -> Vec<String> {
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
pub(super) struct Occurrences {
    pub(super) count: u64,
    pub(super) first: Option<String>,
}

impl Occurrences {
    pub(super) fn add(&mut self, count: u64, block_start: u64) {
        self.add_with(count, || block_start.to_string());
    }

    pub(super) fn add_with(&mut self, count: u64, first: impl FnOnce() -> String) {
        if count == 0 {
            return;
        }
        self.count = self.count.saturating_add(count);
        if self.first.is_none() {
            self.first = Some(first());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;

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
}

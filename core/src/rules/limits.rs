//! A rule's limits on one process: how many times its actions may run (in all, or in a sliding
//! window) and how long the rule lasts. Time is given, never read, so the rules are testable.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::config::Limits;

/// What to do when the trigger fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Run the actions.
    Run,
    /// The action count was reached in the sliding window: wait this long.
    Throttled(Duration),
    /// The rule is over (its action count without a window, or its duration).
    Finished,
}

/// The counts and clocks of one rule on one process.
#[derive(Debug, Clone)]
pub struct LimitTracker {
    limits: Limits,
    started: Instant,
    /// When the actions started, newest last (only those in the window when there is one).
    occurrences: VecDeque<Instant>,
    lifetime: u32,
}

impl LimitTracker {
    /// A rule that started at `started`.
    pub fn new(limits: Limits, started: Instant) -> Self {
        LimitTracker {
            limits,
            started,
            occurrences: VecDeque::new(),
            lifetime: 0,
        }
    }

    /// The limits it applies.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// When the rule ends by its duration, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        // A duration too long for the clock never ends the rule.
        self.limits
            .rule_duration
            .and_then(|d| self.started.checked_add(d))
    }

    fn forget_old(&mut self, now: Instant) {
        if let Some(window) = self.limits.action_count_sliding_window_duration {
            while self
                .occurrences
                .front()
                .is_some_and(|at| now.saturating_duration_since(*at) >= window)
            {
                self.occurrences.pop_front();
            }
        }
    }

    /// Whether the rule is over at `now`.
    pub fn is_finished(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|deadline| now >= deadline)
            || (self.limits.action_count_sliding_window_duration.is_none()
                && self.lifetime >= self.limits.action_count)
    }

    /// Decides about a trigger firing at `now`; [`Admission::Run`] counts an occurrence.
    pub fn admit(&mut self, now: Instant) -> Admission {
        if self.is_finished(now) {
            return Admission::Finished;
        }
        self.forget_old(now);
        if let Some(countdown) = self.throttled_for(now) {
            return Admission::Throttled(countdown);
        }
        self.occurrences.push_back(now);
        self.lifetime += 1;
        Admission::Run
    }

    /// How long until the sliding window allows another run, when it does not now.
    pub fn throttled_for(&self, now: Instant) -> Option<Duration> {
        let window = self.limits.action_count_sliding_window_duration?;
        let in_window: Vec<&Instant> = self
            .occurrences
            .iter()
            .filter(|at| now.saturating_duration_since(**at) < window)
            .collect();
        if in_window.len() < self.limits.action_count as usize {
            return None;
        }
        // The run that must leave the window for the count to drop below the limit.
        let index = in_window.len() - self.limits.action_count as usize;
        Some((*in_window[index] + window).saturating_duration_since(now))
    }

    /// How many times the actions ran.
    pub fn lifetime_occurrences(&self) -> u32 {
        self.lifetime
    }

    /// How many times the actions ran in the sliding window (in all, without one).
    pub fn window_occurrences(&self, now: Instant) -> u32 {
        match self.limits.action_count_sliding_window_duration {
            Some(window) => self
                .occurrences
                .iter()
                .filter(|at| now.saturating_duration_since(**at) < window)
                .count() as u32,
            None => self.lifetime,
        }
    }

    /// How long until the rule finishes by its duration.
    pub fn finished_countdown(&self, now: Instant) -> Option<Duration> {
        self.deadline()
            .map(|deadline| deadline.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(count: u32, window: Option<u64>, duration: Option<u64>) -> Limits {
        Limits {
            action_count: count,
            action_count_sliding_window_duration: window.map(Duration::from_secs),
            rule_duration: duration.map(Duration::from_secs),
        }
    }

    #[test]
    fn without_a_window_the_count_finishes_the_rule() {
        let start = Instant::now();
        let mut tracker = LimitTracker::new(limits(2, None, None), start);
        assert_eq!(tracker.admit(start), Admission::Run);
        assert!(!tracker.is_finished(start));
        assert_eq!(tracker.admit(start), Admission::Run);
        assert!(tracker.is_finished(start));
        assert_eq!(tracker.admit(start), Admission::Finished);
        assert_eq!(tracker.lifetime_occurrences(), 2);
    }

    #[test]
    fn a_window_throttles_until_the_oldest_run_leaves_it() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut tracker = LimitTracker::new(limits(2, Some(10), None), start);
        assert_eq!(tracker.admit(at(0)), Admission::Run);
        assert_eq!(tracker.admit(at(4)), Admission::Run);
        assert_eq!(
            tracker.admit(at(5)),
            Admission::Throttled(Duration::from_secs(5))
        );
        assert_eq!(tracker.window_occurrences(at(5)), 2);
        assert_eq!(tracker.admit(at(10)), Admission::Run);
        assert_eq!(tracker.window_occurrences(at(10)), 2);
        assert_eq!(tracker.lifetime_occurrences(), 3);
        assert!(!tracker.is_finished(at(1000)));
    }

    #[test]
    fn a_rule_duration_beyond_the_clock_never_ends_the_rule() {
        let start = Instant::now();
        let tracker = LimitTracker::new(
            Limits {
                rule_duration: Some(Duration::MAX),
                ..Limits::default()
            },
            start,
        );
        assert_eq!(tracker.deadline(), None);
        assert!(!tracker.is_finished(start));
    }

    #[test]
    fn the_rule_duration_finishes_the_rule() {
        let start = Instant::now();
        let mut tracker = LimitTracker::new(limits(5, None, Some(3)), start);
        assert_eq!(
            tracker.finished_countdown(start),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            tracker.admit(start + Duration::from_secs(2)),
            Admission::Run
        );
        assert_eq!(
            tracker.admit(start + Duration::from_secs(3)),
            Admission::Finished
        );
    }
}

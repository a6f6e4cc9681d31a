//! The state of one rule on one process, as `/collectionrules` shows it (dotnet-monitor's
//! `CollectionRuleDescription` and `CollectionRuleDetailedDescription`).

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::config::{Rule, format_timespan};
use super::limits::LimitTracker;

/// dotnet-monitor's rule states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum RuleState {
    /// Waiting for its trigger.
    Running,
    /// Running its actions.
    ActionExecuting,
    /// The action count was reached in the sliding window; the trigger is ignored for now.
    Throttled,
    /// Over: it will not trigger again on this process.
    Finished,
}

/// Why a rule finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// `limits.action_count` runs without a sliding window.
    ActionCount,
    /// `limits.rule_duration` passed.
    RuleDuration,
    /// A Startup trigger runs once.
    Startup,
}

/// `GET /collectionrules`: a rule's state on a process.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleDescription {
    /// The state.
    pub state: RuleState,
    /// Why it is in that state.
    pub state_reason: String,
}

/// `GET /collectionrules/{name}`: the state with its counters.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleDetailedDescription {
    /// The state.
    pub state: RuleState,
    /// Why it is in that state.
    pub state_reason: String,
    /// How many times the actions ran on the process.
    pub lifetime_occurrences: u32,
    /// How many times they ran in the current sliding window (in all, without one).
    pub sliding_window_occurrences: u32,
    /// `limits.action_count`.
    pub action_count_limit: u32,
    /// `limits.action_count_sliding_window_duration`, as a TimeSpan.
    pub action_count_sliding_window_duration_limit: Option<String>,
    /// How long until the sliding window allows another run, while throttled.
    pub sliding_window_duration_countdown: Option<String>,
    /// How long until `limits.rule_duration` finishes the rule.
    pub rule_finished_countdown: Option<String>,
    /// The last action-list failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What changes while a rule runs on a process.
#[derive(Debug)]
struct Progress {
    tracker: LimitTracker,
    executing: bool,
    finished: Option<FinishReason>,
    last_error: Option<String>,
}

/// One rule on one process: its counts and state.
#[derive(Debug)]
pub struct RuleRun {
    rule: Rule,
    progress: Mutex<Progress>,
    /// True once the rule is under way: its trigger is watching, or (Startup) its actions have
    /// started. A runtime waiting in listen mode is resumed after that.
    started: tokio::sync::watch::Sender<bool>,
}

impl RuleRun {
    /// `rule` starting now.
    pub fn new(rule: Rule) -> Self {
        let tracker = LimitTracker::new(rule.limits, Instant::now());
        RuleRun {
            rule,
            progress: Mutex::new(Progress {
                tracker,
                executing: false,
                finished: None,
                last_error: None,
            }),
            started: tokio::sync::watch::channel(false).0,
        }
    }

    /// The rule is under way (see [`RuleRun::wait_started`]).
    pub fn mark_started(&self) {
        self.started.send_replace(true);
    }

    /// Waits until the rule is under way: its trigger watches, or (Startup) its actions started.
    pub async fn wait_started(&self) {
        let mut started = self.started.subscribe();
        let _ = started.wait_for(|started| *started).await;
    }

    /// The rule.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The trigger fired at `now`: whether the actions may run (then they are executing).
    pub fn admit(&self, now: Instant) -> super::limits::Admission {
        let mut progress = self.lock();
        let admission = progress.tracker.admit(now);
        match admission {
            super::limits::Admission::Run => progress.executing = true,
            super::limits::Admission::Finished => {
                let reason = self.finish_reason(&progress.tracker, now);
                progress.finished.get_or_insert(reason);
            }
            super::limits::Admission::Throttled(_) => {}
        }
        admission
    }

    fn finish_reason(&self, tracker: &LimitTracker, now: Instant) -> FinishReason {
        if tracker.deadline().is_some_and(|deadline| now >= deadline) {
            FinishReason::RuleDuration
        } else {
            FinishReason::ActionCount
        }
    }

    /// The actions ended (`error`: why they failed). Returns true when the rule is now over.
    pub fn actions_ended(&self, error: Option<String>) -> bool {
        let mut progress = self.lock();
        progress.executing = false;
        if error.is_some() {
            progress.last_error = error;
        }
        let now = Instant::now();
        if progress.tracker.is_finished(now) {
            let reason = self.finish_reason(&progress.tracker, now);
            progress.finished.get_or_insert(reason);
        }
        progress.finished.is_some()
    }

    /// The rule is over for `reason`.
    pub fn finish(&self, reason: FinishReason) {
        self.lock().finished.get_or_insert(reason);
    }

    /// When `limits.rule_duration` ends the rule.
    pub fn deadline(&self) -> Option<Instant> {
        self.lock().tracker.deadline()
    }

    /// The current state and why.
    pub fn describe(&self) -> RuleDescription {
        let detailed = self.describe_detailed();
        RuleDescription {
            state: detailed.state,
            state_reason: detailed.state_reason,
        }
    }

    /// The current state with its counters.
    pub fn describe_detailed(&self) -> RuleDetailedDescription {
        let now = Instant::now();
        let progress = self.lock();
        let tracker = &progress.tracker;
        let finished = progress.finished.clone().or_else(|| {
            (!progress.executing && tracker.is_finished(now))
                .then(|| self.finish_reason(tracker, now))
        });
        let throttled = tracker.throttled_for(now);
        let (state, reason) = match (&finished, progress.executing, throttled) {
            (Some(reason), _, _) => (
                RuleState::Finished,
                match reason {
                    FinishReason::ActionCount => {
                        "The collection rule will no longer trigger because the ActionCount was reached."
                    }
                    FinishReason::RuleDuration => {
                        "The collection rule will no longer trigger because the RuleDuration limit was reached."
                    }
                    FinishReason::Startup => {
                        "The collection rule will no longer trigger because the Startup trigger only executes once."
                    }
                },
            ),
            (None, true, _) => (
                RuleState::ActionExecuting,
                "This collection rule has had its triggering conditions satisfied and is currently executing its action list.",
            ),
            (None, false, Some(_)) => (
                RuleState::Throttled,
                "This collection rule is temporarily throttled because the ActionCountLimit has been reached within the ActionCountSlidingWindowDuration.",
            ),
            (None, false, None) => (
                RuleState::Running,
                "This collection rule is active and waiting for its triggering conditions to be satisfied.",
            ),
        };
        let limits = tracker.limits();
        RuleDetailedDescription {
            state,
            state_reason: reason.to_owned(),
            lifetime_occurrences: tracker.lifetime_occurrences(),
            sliding_window_occurrences: tracker.window_occurrences(now),
            action_count_limit: limits.action_count,
            action_count_sliding_window_duration_limit: limits
                .action_count_sliding_window_duration
                .map(format_timespan),
            sliding_window_duration_countdown: (state == RuleState::Throttled)
                .then_some(throttled)
                .flatten()
                .map(format_timespan),
            rule_finished_countdown: (state != RuleState::Finished)
                .then(|| tracker.finished_countdown(now))
                .flatten()
                .map(format_timespan),
            last_error: progress.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::{Limits, Trigger};
    use super::super::limits::Admission;
    use super::*;
    use std::time::Duration;

    fn rule(limits: Limits) -> Rule {
        Rule {
            name: "r".into(),
            filters: Vec::new(),
            trigger: Trigger::Startup,
            actions: Vec::new(),
            limits,
        }
    }

    #[test]
    fn states_follow_the_runs_and_the_limits() {
        let run = RuleRun::new(rule(Limits {
            action_count: 1,
            ..Limits::default()
        }));
        let described = run.describe_detailed();
        assert_eq!(described.state, RuleState::Running);
        assert_eq!(described.action_count_limit, 1);
        assert_eq!(described.rule_finished_countdown, None);
        assert_eq!(run.admit(Instant::now()), Admission::Run);
        assert_eq!(run.describe().state, RuleState::ActionExecuting);
        assert!(run.actions_ended(Some("action `a`: it broke".into())));
        let described = run.describe_detailed();
        assert_eq!(described.state, RuleState::Finished);
        assert!(described.state_reason.contains("ActionCount"));
        assert_eq!(described.lifetime_occurrences, 1);
        assert_eq!(
            described.last_error.as_deref(),
            Some("action `a`: it broke")
        );
    }

    #[test]
    fn a_full_window_is_throttled_with_a_countdown() {
        let run = RuleRun::new(rule(Limits {
            action_count: 1,
            action_count_sliding_window_duration: Some(Duration::from_secs(3600)),
            rule_duration: Some(Duration::from_secs(7200)),
        }));
        assert_eq!(run.admit(Instant::now()), Admission::Run);
        assert!(!run.actions_ended(None));
        let described = run.describe_detailed();
        assert_eq!(described.state, RuleState::Throttled);
        assert_eq!(
            described
                .action_count_sliding_window_duration_limit
                .as_deref(),
            Some("01:00:00")
        );
        assert!(described.sliding_window_duration_countdown.is_some());
        assert!(described.rule_finished_countdown.is_some());
        assert!(matches!(run.admit(Instant::now()), Admission::Throttled(_)));
        run.finish(FinishReason::Startup);
        let described = run.describe_detailed();
        assert_eq!(described.state, RuleState::Finished);
        assert!(described.state_reason.contains("Startup"));
        assert_eq!(described.rule_finished_countdown, None);
    }
}

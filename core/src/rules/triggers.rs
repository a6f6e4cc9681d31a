//! Counter triggers: where a rule's counter reports come from, and when they fire.
//!
//! A counter trigger reads the reports of the background counter sessions of
//! [`crate::metrics::MetricsService`] when those collect its provider for the process (one
//! session per process, whatever the number of rules), and otherwise runs a counter session of
//! its own at the same interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::config::CounterTrigger;
use crate::metrics::MetricsService;
use crate::metrics::counters::{self, CounterRequest, CounterSample};
use crate::processes::{ProcessDirectory, ProcessRecord};

/// Whether a counter stayed in range for the trigger's whole window.
#[derive(Debug, Clone)]
pub struct CounterWindow {
    trigger: CounterTrigger,
    /// The first report of the current run of in-range reports.
    since: Option<Instant>,
}

impl CounterWindow {
    /// A window with nothing seen.
    pub fn new(trigger: CounterTrigger) -> Self {
        CounterWindow {
            trigger,
            since: None,
        }
    }

    /// Takes a report of `value` at `at`; true when the counter has been in range from a report
    /// at least `sliding_window_duration` before this one until this one. The window then starts
    /// over. A report out of range starts it over too.
    pub fn observe(&mut self, value: f64, at: Instant) -> bool {
        if !self.trigger.in_range(value) {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(at);
        if at.saturating_duration_since(since) >= self.trigger.sliding_window_duration {
            self.since = None;
            return true;
        }
        false
    }

    /// Forgets the reports seen: after the trigger fired (whether the actions ran or the limits
    /// throttled them), and when its feed reopens.
    pub fn reset(&mut self) {
        self.since = None;
    }
}

/// Whether `sample` is a report of the trigger's counter.
pub fn is_reported(trigger: &CounterTrigger, sample: &CounterSample) -> bool {
    sample.provider.eq_ignore_ascii_case(&trigger.provider_name)
        && sample.name == trigger.counter_name
}

/// The values of the trigger's counter on `process`, as they are reported. The channel closes
/// when the feed breaks (the process went away, or the session failed: the error is logged);
/// the feed stops with `stop`.
pub fn counter_feed(
    metrics: &Arc<MetricsService>,
    processes: &ProcessDirectory,
    process: &ProcessRecord,
    trigger: &CounterTrigger,
    stop: CancellationToken,
) -> mpsc::Receiver<f64> {
    let (sender, receiver) = mpsc::channel(64);
    let trigger = trigger.clone();
    if metrics.collects(process, &trigger.provider_name, trigger.meter) {
        let mut reports = metrics.subscribe();
        let uid = process.uid;
        tokio::spawn(async move {
            loop {
                let report = tokio::select! {
                    _ = stop.cancelled() => return,
                    report = reports.recv() => report,
                };
                match report {
                    Ok((from, sample)) if from == uid && is_reported(&trigger, &sample) => {
                        if sender.send(sample.value).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    } else {
        let client = processes.client(process);
        let pid = process.pid;
        let request = CounterRequest {
            providers: if trigger.meter {
                Vec::new()
            } else {
                vec![trigger.provider_name.clone()]
            },
            meters: if trigger.meter {
                vec![trigger.provider_name.clone()]
            } else {
                Vec::new()
            },
            interval: metrics.interval(),
        };
        tokio::spawn(async move {
            let outcome = counters::watch_counters(&client, &request, &stop, |sample| {
                if is_reported(&trigger, &sample) {
                    // A full channel means the rule is busy running its actions: drop the report.
                    let _ = sender.try_send(sample.value);
                }
            })
            .await;
            if let Err(error) = outcome {
                tracing::warn!(pid, %error, "the counter session of a collection rule trigger failed");
            }
        });
    }
    receiver
}

/// How long a rule whose counter feed broke waits before it opens another.
pub const FEED_RETRY: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(above: Option<f64>, below: Option<f64>, window: u64) -> CounterTrigger {
        CounterTrigger {
            type_name: "EventCounter",
            provider_name: "P".into(),
            counter_name: "c".into(),
            meter: false,
            greater_than: above,
            less_than: below,
            sliding_window_duration: Duration::from_secs(window),
        }
    }

    #[test]
    fn fires_only_after_a_whole_window_in_range() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut window = CounterWindow::new(trigger(Some(40.0), None, 2));
        assert!(!window.observe(42.5, at(0)));
        assert!(!window.observe(42.5, at(1)));
        assert!(window.observe(42.5, at(2)));
        // It starts over after firing.
        assert!(!window.observe(42.5, at(3)));
        assert!(!window.observe(42.5, at(4)));
        // A value out of range starts it over too.
        assert!(!window.observe(39.0, at(5)));
        assert!(!window.observe(42.5, at(6)));
        assert!(!window.observe(42.5, at(7)));
        assert!(window.observe(42.5, at(8)));
    }

    #[test]
    fn ranges_are_strict_and_combine() {
        let start = Instant::now();
        let mut window = CounterWindow::new(trigger(Some(10.0), Some(20.0), 1));
        for value in [10.0, 20.0, 25.0, 5.0] {
            assert!(!window.observe(value, start));
            assert!(!window.observe(value, start + Duration::from_secs(5)));
        }
        assert!(!window.observe(15.0, start));
        assert!(window.observe(15.0, start + Duration::from_secs(1)));
    }
}

//! Metrics: the counters of every observed process (diagmon's own metrics are in
//! [`crate::telemetry`]).
//!
//! [`MetricsService`] keeps one background counter session per observed process (all processes
//! by default; `[metrics] include`/`exclude` filter them), started and stopped as processes come
//! and go. Each counter's latest report is kept per process and served by `GET /metrics` in the
//! Prometheus text format (or OpenMetrics), labelled with the process's `pid`, `process_name`
//! and `runtime_uid`. A process whose session cannot start or breaks is logged and counted
//! (`diagmon_metrics_session_failures_total`), retried a few intervals later, and never affects
//! the others.
//!
//! - [`counters`]: counter sessions and the counter reports in their events;
//! - [`console`]: `diagmon counters`, a live view in the terminal;
//! - [`live`]: `/livemetrics`: counter reports as a json-seq stream;
//! - [`prometheus`]: names, units and the text format.

pub mod console;
pub mod counters;
pub mod live;
pub mod prometheus;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{MetricsConfig, ProcessFilter};
use crate::diagnostics::DiagnosticsError;
use crate::processes::{ProcessDirectory, ProcessRecord, filter_matches};
use counters::{CounterKind, CounterRequest, CounterSample};

/// How many intervals a process whose session failed waits before the next attempt.
const RETRY_INTERVALS: u32 = 3;
/// The longest wait between two looks at the process list.
const MAX_DISCOVERY_PERIOD: Duration = Duration::from_secs(5);

/// The background counter sessions and the latest value of every counter they reported.
#[derive(Debug)]
pub struct MetricsService {
    config: MetricsConfig,
    /// Per runtime uid: the process and its series.
    store: Mutex<BTreeMap<Uuid, ProcessSeries>>,
    /// Every counter report, with the runtime uid it came from, for whoever else needs it
    /// (collection-rule triggers share the sessions this way).
    samples: broadcast::Sender<(Uuid, CounterSample)>,
}

/// Counter reports kept for a slow subscriber before it misses some.
const SAMPLE_BACKLOG: usize = 1024;

/// The series of one process.
#[derive(Debug)]
struct ProcessSeries {
    pid: u64,
    name: String,
    uid: Uuid,
    /// Per (provider, counter, meter tags).
    series: BTreeMap<(String, String, String), Series>,
}

/// One counter's latest state.
#[derive(Debug)]
struct Series {
    display_name: String,
    unit: String,
    kind: CounterKind,
    /// The latest mean (gauges) or the sum of every increment reported (counters).
    value: f64,
}

impl MetricsService {
    /// A service for `config` with nothing observed yet.
    pub fn new(config: MetricsConfig) -> Arc<Self> {
        Arc::new(MetricsService {
            config,
            store: Mutex::new(BTreeMap::new()),
            samples: broadcast::channel(SAMPLE_BACKLOG).0,
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &MetricsConfig {
        &self.config
    }

    /// The reporting interval.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.config.interval_seconds))
    }

    /// Every counter report of the background sessions from now on, with its runtime uid.
    pub fn subscribe(&self) -> broadcast::Receiver<(Uuid, CounterSample)> {
        self.samples.subscribe()
    }

    /// Whether the background sessions collect `provider` (an EventSource, or a meter when
    /// `meter`) of `process`: then [`MetricsService::subscribe`] delivers its reports.
    pub fn collects(&self, process: &ProcessRecord, provider: &str, meter: bool) -> bool {
        let list = if meter {
            &self.config.meters
        } else {
            &self.config.providers
        };
        self.config.enabled
            && self.observes(process)
            && list.iter().any(|name| name.eq_ignore_ascii_case(provider))
    }

    /// Starts observing the processes of `processes` until `stop` is cancelled (then every
    /// session is closed). Does nothing when metrics are disabled.
    pub fn spawn(self: &Arc<Self>, processes: ProcessDirectory, stop: CancellationToken) {
        if !self.config.enabled {
            return;
        }
        tokio::spawn(Arc::clone(self).observe(processes, stop));
    }

    async fn observe(self: Arc<Self>, processes: ProcessDirectory, stop: CancellationToken) {
        let request = CounterRequest {
            providers: self.config.providers.clone(),
            meters: self.config.meters.clone(),
            interval: self.interval(),
        };
        let period = self.interval().min(MAX_DISCOVERY_PERIOD);
        let mut running: HashMap<Uuid, (CancellationToken, JoinHandle<()>)> = HashMap::new();
        let mut retry_after: HashMap<Uuid, Instant> = HashMap::new();
        loop {
            let listed: Vec<ProcessRecord> = processes
                .list()
                .await
                .into_iter()
                .filter(|process| self.observes(process))
                .collect();
            running.retain(|uid, (token, task)| {
                let present = listed.iter().any(|process| process.uid == *uid);
                if !present {
                    token.cancel();
                }
                present && !task.is_finished()
            });
            let now = Instant::now();
            retry_after.retain(|_, after| *after > now);
            for process in listed {
                if running.contains_key(&process.uid) || retry_after.contains_key(&process.uid) {
                    continue;
                }
                let token = stop.child_token();
                let task = tokio::spawn(Arc::clone(&self).watch(
                    processes.clone(),
                    process.clone(),
                    request.clone(),
                    token.clone(),
                ));
                running.insert(process.uid, (token, task));
                // A session that ends early is retried after a pause, not at once.
                retry_after.insert(process.uid, now + self.interval() * RETRY_INTERVALS);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
        }
        for (_, (token, task)) in running {
            token.cancel();
            let _ = task.await;
        }
    }

    /// Whether `process` passes the include and exclude filters.
    fn observes(&self, process: &ProcessRecord) -> bool {
        let all = |filters: &[ProcessFilter]| filters.iter().all(|f| filter_matches(f, process));
        (self.config.include.is_empty() || all(&self.config.include))
            && (self.config.exclude.is_empty() || !all(&self.config.exclude))
    }

    /// One process's session, from start to end; its series go when it ends.
    async fn watch(
        self: Arc<Self>,
        processes: ProcessDirectory,
        process: ProcessRecord,
        request: CounterRequest,
        stop: CancellationToken,
    ) {
        let client = processes.client(&process);
        if let Ok(mut store) = self.store.lock() {
            store.insert(
                process.uid,
                ProcessSeries {
                    pid: process.pid,
                    name: process.name.clone(),
                    uid: process.uid,
                    series: BTreeMap::new(),
                },
            );
        }
        crate::telemetry::record_session_change(1);
        tracing::info!(pid = process.pid, name = %process.name, "counter session started");
        let outcome = counters::watch_counters(&client, &request, &stop, |sample| {
            if self.samples.receiver_count() > 0 {
                let _ = self.samples.send((process.uid, sample.clone()));
            }
            self.record(process.uid, sample)
        })
        .await;
        crate::telemetry::record_session_change(-1);
        if let Ok(mut store) = self.store.lock() {
            store.remove(&process.uid);
        }
        match outcome {
            Ok(stats) => tracing::info!(
                pid = process.pid,
                samples = stats.samples,
                malformed = stats.malformed,
                "counter session ended"
            ),
            Err(error) => {
                crate::telemetry::record_session_failure(failure_reason(&error));
                tracing::warn!(pid = process.pid, name = %process.name, %error, "counter session failed");
            }
        }
    }

    fn record(&self, uid: Uuid, sample: CounterSample) {
        let Ok(mut store) = self.store.lock() else {
            return;
        };
        let Some(process) = store.get_mut(&uid) else {
            return;
        };
        let key = (sample.provider, sample.name, sample.tags);
        let series = process.series.entry(key).or_insert_with(|| Series {
            display_name: sample.display_name.clone(),
            unit: sample.unit.clone(),
            kind: sample.kind,
            value: 0.0,
        });
        series.display_name = sample.display_name;
        series.unit = sample.unit;
        if series.kind != sample.kind {
            series.kind = sample.kind;
            series.value = 0.0;
        }
        match sample.kind {
            CounterKind::Metric => series.value = sample.value,
            CounterKind::Rate => series.value += sample.value,
        }
    }

    /// The pids of the processes observed now.
    pub fn observed_pids(&self) -> Vec<u64> {
        self.store
            .lock()
            .map(|store| store.values().map(|process| process.pid).collect())
            .unwrap_or_default()
    }

    /// Every observed counter, as families of the text format.
    pub fn render_counters(&self, openmetrics: bool, out: &mut String) {
        let mut families: BTreeMap<String, prometheus::Family> = BTreeMap::new();
        if let Ok(store) = self.store.lock() {
            for process in store.values() {
                let process_labels = format!(
                    "pid=\"{}\",process_name=\"{}\",runtime_uid=\"{}\"",
                    process.pid,
                    prometheus::escape_label(&process.name),
                    process.uid
                );
                for ((provider, counter, tags), series) in &process.series {
                    let name = prometheus::metric_name(provider, counter, &series.unit);
                    let family = families.entry(name).or_insert_with(|| prometheus::Family {
                        help: series.display_name.clone(),
                        kind: series.kind,
                        samples: Vec::new(),
                    });
                    if family.kind != series.kind {
                        continue;
                    }
                    family.samples.push(prometheus::Sample {
                        labels: with_tags(&process_labels, tags),
                        value: prometheus::base_value(series.value, &series.unit),
                    });
                }
            }
        }
        prometheus::render(&families, openmetrics, out);
    }
}

/// The process labels plus meter tags (`k=v,k=v`) as labels.
fn with_tags(process_labels: &str, tags: &str) -> String {
    let mut labels = process_labels.to_owned();
    for tag in tags.split(',').filter(|tag| !tag.is_empty()) {
        if let Some((key, value)) = tag.split_once('=') {
            let key: String = key
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            labels.push_str(&format!(",{key}=\"{}\"", prometheus::escape_label(value)));
        }
    }
    labels
}

/// A short, bounded label for why a session failed.
fn failure_reason(error: &DiagnosticsError) -> &'static str {
    match error {
        DiagnosticsError::Connect { .. }
        | DiagnosticsError::RuntimeGone(_)
        | DiagnosticsError::ImpostorPeer { .. } => "connect",
        DiagnosticsError::Timeout { .. } => "timeout",
        DiagnosticsError::Io { .. } => "io",
        DiagnosticsError::Truncated { .. } => "truncated",
        DiagnosticsError::InvalidTrace(_) => "invalid_trace",
        DiagnosticsError::Protocol(_) => "protocol",
        DiagnosticsError::Runtime { .. } | DiagnosticsError::Unsupported(_) => "refused",
        DiagnosticsError::SessionFailed(_) | DiagnosticsError::Internal(_) => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn sample(name: &str, kind: CounterKind, value: f64, unit: &str) -> CounterSample {
        CounterSample {
            provider: "System.Runtime".into(),
            name: name.into(),
            display_name: format!("{name} display"),
            unit: unit.into(),
            kind,
            value,
            tags: String::new(),
            timestamp: SystemTime::now(),
        }
    }

    #[test]
    fn gauges_keep_the_latest_value_and_counters_add_up() {
        let service = MetricsService::new(MetricsConfig::default());
        let uid = Uuid::from_u128(7);
        service.store.lock().unwrap().insert(
            uid,
            ProcessSeries {
                pid: 42,
                name: "my\"app".into(),
                uid,
                series: BTreeMap::new(),
            },
        );
        service.record(uid, sample("cpu-usage", CounterKind::Metric, 10.0, "%"));
        service.record(uid, sample("cpu-usage", CounterKind::Metric, 20.0, "%"));
        service.record(uid, sample("alloc-rate", CounterKind::Rate, 5.0, "B"));
        service.record(uid, sample("alloc-rate", CounterKind::Rate, 7.0, "B"));
        let mut text = String::new();
        service.render_counters(false, &mut text);
        let labels = format!("pid=\"42\",process_name=\"my\\\"app\",runtime_uid=\"{uid}\"");
        assert!(
            text.contains(&format!("systemruntime_cpu_usage_ratio{{{labels}}} 20\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "systemruntime_alloc_rate_bytes_total{{{labels}}} 12\n"
            )),
            "{text}"
        );
        assert!(text.contains("# TYPE systemruntime_cpu_usage_ratio gauge"));
        assert!(text.contains("# TYPE systemruntime_alloc_rate_bytes_total counter"));
    }

    #[test]
    fn include_and_exclude_filters_choose_processes() {
        use crate::config::{MatchType, ProcessFilterKey};
        let filter = |value: &str| ProcessFilter {
            key: ProcessFilterKey::ProcessName,
            value: value.into(),
            match_type: MatchType::Exact,
        };
        let process = ProcessRecord {
            pid: 1,
            uid: Uuid::nil(),
            name: "dotnet".into(),
            command_line: "dotnet app.dll".into(),
            operating_system: None,
            process_architecture: None,
            managed_entry_point_assembly_name: None,
            clr_product_version: None,
            supports_process_commands: false,
            endpoint: crate::diagnostics::Endpoint::Socket("/nonexistent".into()),
        };
        let with = |include: Vec<ProcessFilter>, exclude: Vec<ProcessFilter>| {
            MetricsService::new(MetricsConfig {
                include,
                exclude,
                ..MetricsConfig::default()
            })
            .observes(&process)
        };
        assert!(with(vec![], vec![]));
        assert!(with(vec![filter("dotnet")], vec![]));
        assert!(!with(vec![filter("other")], vec![]));
        assert!(!with(vec![], vec![filter("DOTNET")]));
    }
}

//! diagmon's own metrics, served on `/metrics` beside the processes' counters: requests by
//! route and status and their latency, operations by kind and state, bytes captured and
//! egressed, egress failures, active counter sessions and their failures, malformed counter
//! events, plugin instantiation time, and the process's own memory and CPU.
//!
//! They live in one process-wide [`prometheus_client`] registry, so that any module can record
//! into them without being handed a handle.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// A label set: names and values.
type Labels = Vec<(&'static str, String)>;
/// Histograms with the latency buckets, by label set.
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// The instruments and the registry that serves them.
struct Telemetry {
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_duration: HistogramFamily,
    operations: Family<Labels, Counter>,
    bytes_captured: Family<Labels, Counter>,
    bytes_egressed: Family<Labels, Counter>,
    egress_failures: Family<Labels, Counter>,
    plugin_instantiation: HistogramFamily,
    sessions: Gauge,
    session_failures: Family<Labels, Counter>,
    malformed: Counter,
    resident_memory: Gauge,
    cpu_seconds: Gauge<f64, AtomicU64>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        let mut registry = Registry::with_prefix("diagmon");
        let requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        let request_duration = Family::new_with_constructor(latency_histogram as fn() -> _);
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request (to the response head), by route",
            Unit::Seconds,
            request_duration.clone(),
        );
        let operations = Family::default();
        registry.register(
            "operations",
            "Operations that reached a state, by kind and state",
            operations.clone(),
        );
        let bytes_captured = Family::default();
        registry.register_with_unit(
            "captured",
            "Artifact bytes read from runtimes, by kind",
            Unit::Bytes,
            bytes_captured.clone(),
        );
        let bytes_egressed = Family::default();
        registry.register_with_unit(
            "egressed",
            "Artifact bytes handed to egress providers, by provider",
            Unit::Bytes,
            bytes_egressed.clone(),
        );
        let egress_failures = Family::default();
        registry.register(
            "egress_failures",
            "Egress uploads that failed, by provider and kind of failure",
            egress_failures.clone(),
        );
        let plugin_instantiation = Family::new_with_constructor(latency_histogram as fn() -> _);
        registry.register_with_unit(
            "plugin_instantiation",
            "Time to instantiate an egress component, by provider",
            Unit::Seconds,
            plugin_instantiation.clone(),
        );
        let sessions = Gauge::default();
        registry.register(
            "metrics_sessions",
            "Background counter sessions running",
            sessions.clone(),
        );
        let session_failures = Family::default();
        registry.register(
            "metrics_session_failures",
            "Background counter sessions that could not start or broke, by reason",
            session_failures.clone(),
        );
        let malformed = Counter::default();
        registry.register(
            "metrics_malformed_events",
            "Counter events that could not be decoded and were skipped",
            malformed.clone(),
        );
        let resident_memory = Gauge::default();
        registry.register_with_unit(
            "process_resident_memory",
            "diagmon's resident memory",
            Unit::Bytes,
            resident_memory.clone(),
        );
        let cpu_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "process_cpu",
            "CPU time diagmon used (user + system)",
            Unit::Seconds,
            cpu_seconds.clone(),
        );
        Telemetry {
            registry,
            requests,
            request_duration,
            operations,
            bytes_captured,
            bytes_egressed,
            egress_failures,
            plugin_instantiation,
            sessions,
            session_failures,
            malformed,
            resident_memory,
            cpu_seconds,
        }
    })
}

/// Counts an answered request and its latency. `route` is the route's pattern (`/trace`), never
/// the raw path, so that the label set stays small.
pub fn record_request(route: &str, status: u16, seconds: f64) {
    let t = telemetry();
    t.requests
        .get_or_create(&vec![
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ])
        .inc();
    t.request_duration
        .get_or_create(&vec![("route", route.to_owned())])
        .observe(seconds);
}

/// Counts an operation reaching `state` (`Running`, `Succeeded`, `Failed`, ...).
pub fn record_operation(kind: &str, state: &str) {
    telemetry()
        .operations
        .get_or_create(&vec![
            ("kind", kind.to_owned()),
            ("state", state.to_owned()),
        ])
        .inc();
}

/// Counts artifact bytes read from a runtime.
pub fn record_captured(kind: &str, bytes: u64) {
    telemetry()
        .bytes_captured
        .get_or_create(&vec![("kind", kind.to_owned())])
        .inc_by(bytes);
}

/// Counts artifact bytes handed to an egress provider.
pub fn record_egressed(provider: &str, bytes: u64) {
    telemetry()
        .bytes_egressed
        .get_or_create(&vec![("provider", provider.to_owned())])
        .inc_by(bytes);
}

/// Counts a failed egress upload.
pub fn record_egress_failure(provider: &str, kind: &str) {
    telemetry()
        .egress_failures
        .get_or_create(&vec![
            ("provider", provider.to_owned()),
            ("kind", kind.to_owned()),
        ])
        .inc();
}

/// Records how long an egress component took to instantiate.
pub fn record_plugin_instantiation(provider: &str, seconds: f64) {
    telemetry()
        .plugin_instantiation
        .get_or_create(&vec![("provider", provider.to_owned())])
        .observe(seconds);
}

/// A background counter session started (+1) or ended (-1).
pub fn record_session_change(delta: i64) {
    telemetry().sessions.inc_by(delta);
}

/// Counts a background counter session that could not start or broke.
pub fn record_session_failure(reason: &str) {
    telemetry()
        .session_failures
        .get_or_create(&vec![("reason", reason.to_owned())])
        .inc();
}

/// Counts counter events that could not be decoded.
pub fn record_malformed(events: u64) {
    telemetry().malformed.inc_by(events);
}

/// How many malformed counter events were skipped so far.
pub fn malformed_events() -> u64 {
    telemetry().malformed.get()
}

/// Appends the metrics, read now, in the Prometheus text format or OpenMetrics (without the
/// final `# EOF`, which the caller writes after everything else).
pub fn render(openmetrics: bool, out: &mut String) {
    let t = telemetry();
    if let Some((resident_bytes, cpu_seconds)) = self_usage() {
        t.resident_memory
            .set(i64::try_from(resident_bytes).unwrap_or(i64::MAX));
        t.cpu_seconds.set(cpu_seconds);
    }
    let result = if openmetrics {
        prometheus_client::encoding::text::encode_registry(out, &t.registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(out, &t.registry)
    };
    if let Err(error) = result {
        tracing::warn!(%error, "cannot encode diagmon's own metrics");
    }
}

/// This process's resident bytes and CPU seconds (user + system), from `/proc/self`.
fn self_usage() -> Option<(u64, f64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_ascii_whitespace();
    let user: u64 = fields.nth(11)?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let (page_size, ticks) = unsafe {
        (
            libc::sysconf(libc::_SC_PAGESIZE),
            libc::sysconf(libc::_SC_CLK_TCK),
        )
    };
    let page_size = u64::try_from(page_size).ok()?;
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    Some((
        resident_pages * page_size,
        (user + system) as f64 / ticks as f64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_metrics_render_in_both_formats() {
        record_request("/trace", 200, 0.004);
        record_malformed(0);
        let mut text = String::new();
        render(false, &mut text);
        assert!(
            text.contains("diagmon_http_requests_total{route=\"/trace\",status=\"200\"}"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE diagmon_process_resident_memory_bytes gauge"),
            "{text}"
        );
        let mut open = String::new();
        render(true, &mut open);
        assert!(
            open.contains("# TYPE diagmon_http_requests counter"),
            "{open}"
        );
        assert!(!open.contains("# EOF"), "{open}");
        assert!(self_usage().is_some_and(|(rss, _)| rss > 0));
    }
}

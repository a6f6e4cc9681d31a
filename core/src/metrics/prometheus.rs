//! Prometheus text exposition of counters: names and units as dotnet-monitor writes them, so
//! that dashboards built for it carry over, plus `pid`, `process_name` and `runtime_uid` labels.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::counters::CounterKind;

/// The content type of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metric name of a counter: the provider lower-cased without the characters Prometheus
/// names cannot hold, `_`, the counter name with those characters turned into `_`, and the unit
/// as a suffix (`%` → `ratio`, `MB` and `B` → `bytes`, `count` and none → nothing):
/// `System.Runtime` + `cpu-usage` + `%` → `systemruntime_cpu_usage_ratio`.
pub fn metric_name(provider: &str, counter: &str, unit: &str) -> String {
    let mut name = String::with_capacity(provider.len() + counter.len() + unit.len() + 2);
    let mut any = false;
    for (index, c) in provider.chars().enumerate() {
        if valid_name_char(c, index == 0) {
            name.push(c.to_ascii_lowercase());
            any = true;
        }
    }
    if !any {
        name.push_str("unknown");
    }
    name.push('_');
    push_sanitized(&mut name, counter);
    let suffix = base_unit(unit);
    if !suffix.is_empty() {
        name.push('_');
        push_sanitized(&mut name, suffix);
    }
    name
}

/// The unit suffix of a display unit.
fn base_unit(unit: &str) -> &str {
    match unit {
        "" => "",
        u if u.eq_ignore_ascii_case("count") => "",
        "%" => "ratio",
        u if u.eq_ignore_ascii_case("B") || u.eq_ignore_ascii_case("MB") => "bytes",
        other => other,
    }
}

/// The value as dotnet-monitor writes it: `MB` → bytes (× 1,000,000: the runtime's `MB`
/// counters divide bytes by 1,000,000, not 2^20); every other value as the counter gives it,
/// percentages included (`_ratio` series hold 0 to 100, as in dashboards built for
/// dotnet-monitor).
pub fn base_value(value: f64, unit: &str) -> f64 {
    if unit.eq_ignore_ascii_case("MB") {
        value * 1_000_000.0
    } else {
        value
    }
}

fn valid_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

fn push_sanitized(out: &mut String, text: &str) {
    for c in text.chars() {
        out.push(if valid_name_char(c, false) { c } else { '_' });
    }
}

/// Escapes a label value (`\`, `"` and newlines).
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
    out
}

/// Escapes HELP text (`\` and newlines).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// One series of a family: its labels (already rendered, `k="v",...`) and value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// `pid="1",process_name="x",runtime_uid="..."` and any meter tags.
    pub labels: String,
    /// The value, in the base unit.
    pub value: f64,
}

/// A metric family: one name, one type, many series.
#[derive(Debug, Clone)]
pub struct Family {
    /// The HELP text.
    pub help: String,
    /// Gauge (a point-in-time value) or counter (a running total).
    pub kind: CounterKind,
    /// Its series.
    pub samples: Vec<Sample>,
}

/// Writes families in the Prometheus text format or OpenMetrics. Counters' samples get the
/// `_total` suffix; the family is named with it in the Prometheus format and without it in
/// OpenMetrics, as each format wants (and as `prometheus-client` writes diagmon's own).
pub fn render(families: &BTreeMap<String, Family>, openmetrics: bool, out: &mut String) {
    for (name, family) in families {
        let (kind, sample_name) = match family.kind {
            CounterKind::Metric => ("gauge", name.clone()),
            CounterKind::Rate => ("counter", format!("{name}_total")),
        };
        let family_name = if openmetrics { name } else { &sample_name };
        let _ = writeln!(out, "# HELP {family_name} {}", escape_help(&family.help));
        let _ = writeln!(out, "# TYPE {family_name} {kind}");
        for sample in &family.samples {
            let _ = writeln!(
                out,
                "{sample_name}{{{}}} {}",
                sample.labels,
                format_value(sample.value)
            );
        }
    }
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dotnet_monitor() {
        assert_eq!(
            metric_name("System.Runtime", "cpu-usage", "%"),
            "systemruntime_cpu_usage_ratio"
        );
        assert_eq!(
            metric_name("System.Runtime", "working-set", "MB"),
            "systemruntime_working_set_bytes"
        );
        assert_eq!(
            metric_name("System.Runtime", "gen-0-gc-count", "count"),
            "systemruntime_gen_0_gc_count"
        );
        assert_eq!(
            metric_name("Microsoft.AspNetCore.Hosting", "requests-per-second", ""),
            "microsoftaspnetcorehosting_requests_per_second"
        );
        assert_eq!(metric_name("!@#", "x", ""), "unknown_x");
        assert_eq!(base_value(2.0, "MB"), 2_000_000.0);
        assert_eq!(base_value(50.0, "%"), 50.0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn counters_get_total_samples() {
        let mut families = BTreeMap::new();
        families.insert(
            "p_requests".to_owned(),
            Family {
                help: "Requests".into(),
                kind: CounterKind::Rate,
                samples: vec![Sample {
                    labels: "pid=\"1\"".into(),
                    value: 7.0,
                }],
            },
        );
        let mut out = String::new();
        render(&families, false, &mut out);
        assert_eq!(
            out,
            "# HELP p_requests_total Requests\n# TYPE p_requests_total counter\np_requests_total{pid=\"1\"} 7\n"
        );
        let mut open = String::new();
        render(&families, true, &mut open);
        assert_eq!(
            open,
            "# HELP p_requests Requests\n# TYPE p_requests counter\np_requests_total{pid=\"1\"} 7\n"
        );
    }
}

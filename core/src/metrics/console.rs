//! `diagmon counters`: a live view of one process's counters in the terminal, like
//! `dotnet-counters monitor`. On a terminal the table is redrawn in place every interval; into a
//! pipe or file, every report is one plain line (`timestamp provider counter value unit`).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::counters::{CounterKind, CounterReader, CounterRequest, CounterSample};
use crate::diagnostics::{DiagnosticsClient, DiagnosticsError};

/// How the view is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewMode {
    /// Redraw a table in place (ANSI: cursor home, clear screen).
    Terminal,
    /// One line per report.
    Lines,
}

/// Watches `client`'s counters until `stop` is cancelled, the process ends or `out` can no longer
/// be written (its reader went away), writing the view to `out`. `title` heads the table.
pub async fn watch(
    client: &DiagnosticsClient,
    request: &CounterRequest,
    stop: &CancellationToken,
    mode: ViewMode,
    title: &str,
    out: &mut (impl Write + Send),
) -> Result<(), DiagnosticsError> {
    let mut session = client.start_session(&request.session_config()).await?;
    let mut reader = CounterReader::new();
    let mut latest: BTreeMap<(String, String), CounterSample> = BTreeMap::new();
    if mode == ViewMode::Terminal {
        let _ = write!(
            out,
            "\x1b[H\x1b[2J{title}\n\nWaiting for the first counters...\n"
        );
        let _ = out.flush();
    }
    loop {
        let chunk = tokio::select! {
            chunk = session.next_chunk() => chunk?,
            _ = stop.cancelled() => return Ok(()),
        };
        let Some(chunk) = chunk else {
            return Ok(());
        };
        let samples = reader.feed(&chunk)?;
        if samples.is_empty() {
            continue;
        }
        let written = match mode {
            ViewMode::Lines => samples
                .iter()
                .try_for_each(|sample| writeln!(out, "{}", line(sample))),
            ViewMode::Terminal => {
                for sample in samples {
                    latest.insert((sample.provider.clone(), sample.name.clone()), sample);
                }
                write!(
                    out,
                    "\x1b[H\x1b[2J{}",
                    table(title, request.interval, &latest)
                )
            }
        };
        // The reader went away (`diagmon counters | head`): nobody is watching any more.
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
}

/// One report as a line: `timestamp provider counter value unit`.
pub fn line(sample: &CounterSample) -> String {
    format!(
        "{} {} {} {} {}",
        humantime::format_rfc3339_millis(sample.timestamp),
        sample.provider,
        sample.name,
        sample.value,
        unit_label(sample, Duration::ZERO)
    )
    .trim_end()
    .to_owned()
}

/// The whole table: providers as headings, one counter per row.
pub fn table(
    title: &str,
    interval: Duration,
    latest: &BTreeMap<(String, String), CounterSample>,
) -> String {
    let mut text = format!("{title}\n\n");
    let width = latest
        .values()
        .map(|sample| sample.display_name.chars().count() + unit_label(sample, interval).len() + 3)
        .max()
        .unwrap_or(0);
    let mut provider = "";
    for ((name, _), sample) in latest {
        if name != provider {
            text.push_str(&format!("[{name}]\n"));
            provider = name;
        }
        let label = match unit_label(sample, interval) {
            unit if unit.is_empty() => sample.display_name.clone(),
            unit => format!("{} ({unit})", sample.display_name),
        };
        text.push_str(&format!(
            "    {label:<width$} {:>16}\n",
            format_number(sample.value)
        ));
    }
    text
}

fn unit_label(sample: &CounterSample, interval: Duration) -> String {
    match (sample.kind, interval.is_zero()) {
        (CounterKind::Rate, false) => {
            let unit = if sample.unit.is_empty() {
                "Count"
            } else {
                &sample.unit
            };
            format!("{unit} / {} sec", interval.as_secs())
        }
        _ => sample.unit.clone(),
    }
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn sample(
        provider: &str,
        name: &str,
        kind: CounterKind,
        value: f64,
        unit: &str,
    ) -> CounterSample {
        CounterSample {
            provider: provider.into(),
            name: name.into(),
            display_name: format!("{name} shown"),
            unit: unit.into(),
            kind,
            value,
            tags: String::new(),
            timestamp: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_table_groups_counters_by_provider() {
        let mut latest = BTreeMap::new();
        for s in [
            sample("A", "x", CounterKind::Metric, 42.5, "ms"),
            sample("A", "y", CounterKind::Rate, 7.0, ""),
            sample("B", "z", CounterKind::Metric, 12.0, "MB"),
        ] {
            latest.insert((s.provider.clone(), s.name.clone()), s);
        }
        let text = table("Process 1", Duration::from_secs(1), &latest);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Process 1");
        assert_eq!(lines[2], "[A]");
        assert!(
            lines[3].starts_with("    x shown (ms)") && lines[3].ends_with("42.500"),
            "{text}"
        );
        assert!(
            lines[4].contains("y shown (Count / 1 sec)") && lines[4].ends_with(" 7"),
            "{text}"
        );
        assert_eq!(lines[5], "[B]");
        assert!(lines[6].ends_with(" 12"), "{text}");
    }

    #[test]
    fn lines_hold_time_provider_counter_value_unit() {
        assert_eq!(
            line(&sample("P", "c", CounterKind::Metric, 42.5, "ms")),
            "1970-01-01T00:00:00.000Z P c 42.5 ms"
        );
        assert_eq!(
            line(&sample("P", "c", CounterKind::Rate, 7.0, "")),
            "1970-01-01T00:00:00.000Z P c 7"
        );
    }
}

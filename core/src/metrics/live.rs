//! Live metrics: a counter session on one process whose reports become an
//! `application/json-seq` stream of `Metric` objects, as dotnet-monitor's `/livemetrics` writes
//! them (`\x1E` + JSON + `\n` per record).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::counters::{CounterKind, CounterReader, CounterRequest, CounterSample};
use crate::diagnostics::{DiagnosticsClient, DiagnosticsError, EventPipeSession, StopHandle};
use crate::egress::ArtifactKind;
use crate::operations::source::{ArtifactSource, ArtifactSpec, GracefulStop, SummaryKind};
use crate::operations::{ErrorCode, OperationError};
use crate::processes::ProcessRecord;

/// What a live-metrics request asks for: providers and meters, each with the counters to keep
/// (an empty set keeps all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMetricsSpec {
    /// EventCounter providers and the counters wanted of each.
    pub providers: BTreeMap<String, BTreeSet<String>>,
    /// Meters and the instruments wanted of each.
    pub meters: BTreeMap<String, BTreeSet<String>>,
    /// The reporting interval.
    pub interval: Duration,
}

impl LiveMetricsSpec {
    /// The default providers (dotnet-monitor's), all their counters.
    pub fn defaults(interval: Duration) -> Self {
        LiveMetricsSpec {
            providers: crate::config::DEFAULT_METRICS_PROVIDERS
                .iter()
                .map(|name| ((*name).to_owned(), BTreeSet::new()))
                .collect(),
            meters: BTreeMap::new(),
            interval,
        }
    }

    /// Reads an `EventMetricsConfiguration` body (property names case-insensitive):
    /// `includeDefaultProviders` (default true), `providers: [{providerName, counterNames}]`,
    /// `meters: [{meterName, instrumentNames}]`. Errors are `(field, message)` pairs.
    pub fn from_json(body: &Value, interval: Duration) -> Result<Self, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let Some(object) = body.as_object() else {
            return Err(vec![(
                "body".to_owned(),
                "The request body must be a JSON object.".to_owned(),
            )]);
        };
        let include_defaults = match property(object, "includeDefaultProviders") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => {
                errors.push((
                    "includeDefaultProviders".to_owned(),
                    "Must be true or false.".to_owned(),
                ));
                true
            }
        };
        let mut spec = if include_defaults {
            Self::defaults(interval)
        } else {
            LiveMetricsSpec {
                providers: BTreeMap::new(),
                meters: BTreeMap::new(),
                interval,
            }
        };
        for (list, name_key, items_key, target) in [
            (
                "providers",
                "providerName",
                "counterNames",
                &mut spec.providers,
            ),
            ("meters", "meterName", "instrumentNames", &mut spec.meters),
        ] {
            match property(object, list) {
                None | Some(Value::Null) => {}
                Some(Value::Array(entries)) => {
                    for (index, entry) in entries.iter().enumerate() {
                        let field = |key: &str| format!("{list}[{index}].{key}");
                        let Some(entry) = entry.as_object() else {
                            errors.push((format!("{list}[{index}]"), "Must be an object.".into()));
                            continue;
                        };
                        let name = match property(entry, name_key) {
                            Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
                            _ => {
                                errors.push((field(name_key), "A name is required.".into()));
                                continue;
                            }
                        };
                        let wanted = match property(entry, items_key) {
                            None | Some(Value::Null) => BTreeSet::new(),
                            Some(Value::Array(names)) => {
                                let mut wanted = BTreeSet::new();
                                for (at, item) in names.iter().enumerate() {
                                    match item.as_str() {
                                        Some(text) if !text.is_empty() => {
                                            wanted.insert(text.to_owned());
                                        }
                                        _ => errors.push((
                                            format!("{}[{at}]", field(items_key)),
                                            "Must be a non-empty string.".into(),
                                        )),
                                    }
                                }
                                wanted
                            }
                            Some(_) => {
                                errors
                                    .push((field(items_key), "Must be an array of names.".into()));
                                continue;
                            }
                        };
                        target.insert(name, wanted);
                    }
                }
                Some(_) => errors.push((list.to_owned(), "Must be an array.".into())),
            }
        }
        if errors.is_empty() && spec.providers.is_empty() && spec.meters.is_empty() {
            errors.push((
                "providers".to_owned(),
                "Name at least one provider or meter, or include the default providers.".into(),
            ));
        }
        if errors.is_empty() {
            Ok(spec)
        } else {
            Err(errors)
        }
    }

    /// The counter session this spec needs.
    pub fn request(&self) -> CounterRequest {
        CounterRequest {
            providers: self.providers.keys().cloned().collect(),
            meters: self.meters.keys().cloned().collect(),
            interval: self.interval,
        }
    }

    /// Whether a report is one the request asked for.
    pub fn wants(&self, sample: &CounterSample) -> bool {
        let wanted = self
            .providers
            .get(&sample.provider)
            .or_else(|| self.meters.get(&sample.provider));
        wanted.is_some_and(|names| names.is_empty() || names.contains(&sample.name))
    }
}

/// The value of `name` in a JSON object, compared case-insensitively.
fn property<'a>(object: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// One record of the stream: dotnet-monitor's `Metric`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Metric<'a> {
    timestamp: String,
    name: &'a str,
    display_name: &'a str,
    provider: &'a str,
    unit: &'a str,
    counter_type: CounterKind,
    tags: &'a str,
    value: f64,
}

/// A sample as one json-seq record. A non-finite value has no JSON number form: such a sample
/// is left out rather than written as `null`.
pub fn json_seq_record(sample: &CounterSample, out: &mut Vec<u8>) {
    if !sample.value.is_finite() {
        return;
    }
    let metric = Metric {
        timestamp: humantime::format_rfc3339_micros(sample.timestamp).to_string(),
        name: &sample.name,
        display_name: &sample.display_name,
        provider: &sample.provider,
        unit: &sample.unit,
        counter_type: sample.kind,
        tags: &sample.tags,
        value: sample.value,
    };
    if let Ok(json) = serde_json::to_vec(&metric) {
        out.push(0x1E);
        out.extend(json);
        out.push(b'\n');
    }
}

/// A running live-metrics capture: its chunks are json-seq records.
#[derive(Debug)]
pub struct LiveMetrics {
    session: EventPipeSession,
    reader: CounterReader,
    spec: LiveMetricsSpec,
}

impl LiveMetrics {
    /// Starts the counter session on `client`.
    pub async fn start(
        client: &DiagnosticsClient,
        spec: LiveMetricsSpec,
    ) -> Result<Self, DiagnosticsError> {
        let session = client
            .start_session(&spec.request().session_config())
            .await?;
        Ok(LiveMetrics {
            session,
            reader: CounterReader::new(),
            spec,
        })
    }

    /// The next records (at least one); `Ok(None)` once the session ended cleanly.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, DiagnosticsError> {
        loop {
            let Some(chunk) = self.session.next_chunk().await? else {
                return Ok(None);
            };
            let mut out = Vec::new();
            for sample in self.reader.feed(&chunk)? {
                if self.spec.wants(&sample) {
                    json_seq_record(&sample, &mut out);
                }
            }
            if !out.is_empty() {
                return Ok(Some(Bytes::from(out)));
            }
        }
    }

    /// Ends the session gracefully from another task (the stream then ends cleanly).
    pub fn stop_handle(&self) -> StopHandle {
        self.session.stop_handle()
    }
}

impl ArtifactSpec for LiveMetricsSpec {
    type Source = LiveMetrics;

    fn kind(&self) -> ArtifactKind {
        ArtifactKind::Metrics
    }

    async fn open(
        self,
        client: DiagnosticsClient,
        process: &ProcessRecord,
    ) -> Result<LiveMetrics, OperationError> {
        LiveMetrics::start(&client, self).await.map_err(|error| {
            OperationError::new(
                ErrorCode::RuntimeError,
                format!(
                    "Cannot start live metrics of process {}: {error}",
                    process.pid
                ),
            )
        })
    }
}

impl ArtifactSource for LiveMetrics {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, OperationError> {
        LiveMetrics::next_chunk(self)
            .await
            .map_err(OperationError::from)
    }

    fn graceful_stop(&self) -> Option<std::sync::Arc<dyn GracefulStop>> {
        Some(std::sync::Arc::new(self.stop_handle()))
    }

    fn summary_kind(&self) -> SummaryKind {
        SummaryKind::Bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::SystemTime;

    #[test]
    fn body_names_providers_counters_and_meters() {
        let body = json!({"IncludeDefaultProviders": false,
            "providers": [{"providerName": "My-Source", "counterNames": ["a", "b"]}],
            "Meters": [{"MeterName": "M"}]});
        let spec = LiveMetricsSpec::from_json(&body, Duration::from_secs(1)).unwrap();
        assert_eq!(spec.providers["My-Source"].len(), 2);
        assert!(spec.meters["M"].is_empty());
        assert_eq!(spec.request().providers, vec!["My-Source".to_owned()]);
        let defaults = LiveMetricsSpec::from_json(&json!({}), Duration::from_secs(1)).unwrap();
        assert!(defaults.providers.contains_key("System.Runtime"));
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let errors = LiveMetricsSpec::from_json(
            &json!({"providers": [{"counterNames": [1]}], "meters": "x"}),
            Duration::from_secs(1),
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|(field, _)| field.as_str()).collect();
        assert_eq!(fields, ["providers[0].providerName", "meters"]);
        let errors = LiveMetricsSpec::from_json(
            &json!({"includeDefaultProviders": false}),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(errors[0].0, "providers");
    }

    #[test]
    fn records_are_json_seq_metrics() {
        let sample = CounterSample {
            provider: "P".into(),
            name: "n".into(),
            display_name: "N".into(),
            unit: "MB".into(),
            kind: CounterKind::Rate,
            value: 7.0,
            tags: String::new(),
            timestamp: SystemTime::UNIX_EPOCH,
        };
        let mut out = Vec::new();
        json_seq_record(&sample, &mut out);
        assert_eq!(out[0], 0x1E);
        assert_eq!(out.last(), Some(&b'\n'));
        let metric: Value = serde_json::from_slice(&out[1..]).unwrap();
        assert_eq!(
            metric,
            json!({"timestamp": "1970-01-01T00:00:00.000000Z", "name": "n", "displayName": "N",
                   "provider": "P", "unit": "MB", "counterType": "Rate", "tags": "", "value": 7.0})
        );
        let mut nan = sample.clone();
        nan.value = f64::NAN;
        let mut out = Vec::new();
        json_seq_record(&nan, &mut out);
        assert!(out.is_empty());
    }
}

//! Counter sessions: an EventPipe session whose providers report counters every interval, and
//! the counter values read from its events.
//!
//! EventCounters (every .NET version) arrive as `EventCounters` events whose `Payload` object
//! holds one counter's report. Meters (`System.Diagnostics.Metrics`, .NET 6+) arrive as
//! `GaugeValuePublished`, `CounterRateValuePublished` and `UpDownCounterRateValuePublished`
//! events of the `System.Diagnostics.Metrics` provider. Both become [`CounterSample`]s.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::diagnostics::eventpipe::Rundown;
use crate::diagnostics::nettrace::NettraceValidator;
use crate::diagnostics::payload::{DecodedEvent, EventDecoder, Value};
use crate::diagnostics::{DiagnosticsClient, DiagnosticsError, EventProvider, SessionConfig};

/// The provider that publishes meters.
pub const METERS_PROVIDER: &str = "System.Diagnostics.Metrics";
/// Keyword of the meters provider that turns on the published values (TimeSeriesValues).
const METERS_KEYWORD_VALUES: u64 = 0x2;
/// EventPipe level Informational.
const LEVEL_INFORMATIONAL: u8 = 4;
/// Runtime-side buffer of a counter session: counters write a few events per interval.
const COUNTER_BUFFER_MB: u32 = 4;

/// How a counter's value is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CounterKind {
    /// A value at a point in time (EventCounter mean, PollingCounter, gauge).
    Metric,
    /// What was added during the interval (IncrementingEventCounter, meter counter).
    Rate,
}

/// One counter's report for one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterSample {
    /// The provider (EventSource or meter) name.
    pub provider: String,
    /// The counter (or instrument) name.
    pub name: String,
    /// Its display name (the name when it has none).
    pub display_name: String,
    /// Its display units (`%`, `MB`, `B`, ...), possibly empty.
    pub unit: String,
    /// Point-in-time or per-interval.
    pub kind: CounterKind,
    /// The mean over the interval, or what was added during it.
    pub value: f64,
    /// Meter tags (`key=value,...`), empty for EventCounters.
    pub tags: String,
    /// When diagmon read it.
    pub timestamp: SystemTime,
}

/// Why an event that should hold a counter report does not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a counter event without {0}")]
pub struct MalformedCounter(pub &'static str);

/// The counter report an event holds: `Ok(None)` for events that are not counter reports.
pub fn counter_from_event(
    event: &DecodedEvent<'_>,
) -> Result<Option<CounterSample>, MalformedCounter> {
    let metadata = event.metadata;
    if metadata.name == "EventCounters" {
        let payload = event
            .payload
            .field("Payload")
            .ok_or(MalformedCounter("a Payload object"))?;
        let text = |field: &'static str| payload.field(field).and_then(Value::as_str);
        let name = text("Name").ok_or(MalformedCounter("a Name"))?;
        let (kind, value) = match text("CounterType") {
            Some("Sum") => (CounterKind::Rate, payload.field("Increment")),
            _ => (CounterKind::Metric, payload.field("Mean")),
        };
        let value = value
            .and_then(Value::as_f64)
            .ok_or(MalformedCounter("a numeric Mean or Increment"))?;
        // An EventCounter that nobody wrote to during the interval reports a mean of 0 over 0
        // measurements: that is no news, not a value of 0.
        if kind == CounterKind::Metric
            && payload.field("Count").and_then(Value::as_f64) == Some(0.0)
        {
            return Ok(None);
        }
        let display_name = text("DisplayName")
            .filter(|d| !d.is_empty())
            .unwrap_or(name);
        return Ok(Some(CounterSample {
            provider: metadata.provider.clone(),
            name: name.to_owned(),
            display_name: display_name.to_owned(),
            unit: text("DisplayUnits").unwrap_or_default().to_owned(),
            kind,
            value,
            tags: String::new(),
            timestamp: SystemTime::now(),
        }));
    }
    if metadata.provider != METERS_PROVIDER {
        return Ok(None);
    }
    let (kind, value_field) = match metadata.name.as_str() {
        "GaugeValuePublished" => (CounterKind::Metric, "lastValue"),
        "CounterRateValuePublished" | "UpDownCounterRateValuePublished" => {
            (CounterKind::Rate, "rate")
        }
        _ => return Ok(None),
    };
    let payload = &event.payload;
    let text = |field: &'static str| payload.field(field).and_then(Value::as_str);
    let meter = text("meterName").ok_or(MalformedCounter("a meterName"))?;
    let instrument = text("instrumentName").ok_or(MalformedCounter("an instrumentName"))?;
    // Meters publish numbers as invariant-culture text; an empty one means "no value yet".
    let value = match text(value_field) {
        Some("") => return Ok(None),
        Some(number) => number
            .parse::<f64>()
            .map_err(|_| MalformedCounter("a numeric value"))?,
        None => return Err(MalformedCounter("a value")),
    };
    Ok(Some(CounterSample {
        provider: meter.to_owned(),
        name: instrument.to_owned(),
        display_name: instrument.to_owned(),
        unit: text("unit").unwrap_or_default().to_owned(),
        kind,
        value,
        tags: text("tags").unwrap_or_default().to_owned(),
        timestamp: SystemTime::now(),
    }))
}

/// What a counter session asks the runtime for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRequest {
    /// EventCounter providers.
    pub providers: Vec<String>,
    /// Meter names (`System.Diagnostics.Metrics`, .NET 6+); empty for none.
    pub meters: Vec<String>,
    /// The reporting interval.
    pub interval: Duration,
}

impl CounterRequest {
    /// The EventPipe session: each provider at Informational, keywords 0, with
    /// `EventCounterIntervalSec`; meters through `System.Diagnostics.Metrics`; no rundown.
    pub fn session_config(&self) -> SessionConfig {
        let seconds = self.interval.as_secs().max(1).to_string();
        let mut providers: Vec<EventProvider> = self
            .providers
            .iter()
            .map(|name| {
                let mut provider = EventProvider::new(name.clone(), 0, LEVEL_INFORMATIONAL);
                provider
                    .arguments
                    .insert("EventCounterIntervalSec".to_owned(), seconds.clone());
                provider
            })
            .collect();
        if !self.meters.is_empty() {
            let mut provider =
                EventProvider::new(METERS_PROVIDER, METERS_KEYWORD_VALUES, LEVEL_INFORMATIONAL);
            let arguments = [
                ("SessionId", uuid::Uuid::new_v4().to_string()),
                ("Metrics", self.meters.join(",")),
                ("RefreshInterval", seconds),
                ("MaxTimeSeries", "1000".to_owned()),
                ("MaxHistograms", "20".to_owned()),
            ];
            for (key, value) in arguments {
                provider.arguments.insert(key.to_owned(), value);
            }
            providers.push(provider);
        }
        let mut config = SessionConfig::new(providers);
        config.buffer_size_mb = COUNTER_BUFFER_MB;
        config.rundown = Rundown::Off;
        config
    }
}

/// What a counter session saw that it could not use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Counter reports delivered.
    pub samples: u64,
    /// Events that could not be decoded, or counter events without a usable value.
    pub malformed: u64,
}

/// Reads counter reports out of a session's nettrace stream: the stream's bytes go in, counter
/// samples come out. Events that cannot be decoded, and counter events without a usable value,
/// are skipped and counted (`diagmon_metrics_malformed_events_total`), never fatal.
pub struct CounterReader {
    validator: NettraceValidator,
    found: Arc<Mutex<Found>>,
    stats: SessionStats,
}

impl std::fmt::Debug for CounterReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterReader")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Default for CounterReader {
    fn default() -> Self {
        Self::new()
    }
}

impl CounterReader {
    /// A reader expecting the first byte of a stream.
    pub fn new() -> Self {
        let found: Arc<Mutex<Found>> = Arc::default();
        let validator = NettraceValidator::with_observer(Box::new({
            let found = Arc::clone(&found);
            let mut decoder = EventDecoder::new();
            move |record| {
                let outcome = decoder
                    .on_record(record)
                    .map_err(|error| error.to_string())
                    .and_then(|event| match event {
                        Some(event) => {
                            counter_from_event(&event).map_err(|error| error.to_string())
                        }
                        None => Ok(None),
                    });
                let Ok(mut found) = found.lock() else {
                    return;
                };
                match outcome {
                    Ok(Some(sample)) => found.samples.push(sample),
                    Ok(None) => {}
                    Err(reason) => {
                        found.malformed += 1;
                        tracing::debug!(%reason, "skipping a malformed counter event");
                    }
                }
            }
        }));
        CounterReader {
            validator,
            found,
            stats: SessionStats::default(),
        }
    }

    /// Takes the next bytes of the stream; returns the counter reports they completed. A stream
    /// that breaks the nettrace format is an error (its counters cannot be trusted from there).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<CounterSample>, DiagnosticsError> {
        self.validator
            .feed(chunk)
            .map_err(|error| DiagnosticsError::InvalidTrace(error.to_string()))?;
        let (samples, malformed) = match self.found.lock() {
            Ok(mut found) => (
                std::mem::take(&mut found.samples),
                std::mem::take(&mut found.malformed),
            ),
            Err(_) => (Vec::new(), 0),
        };
        self.stats.malformed += malformed;
        self.stats.samples += samples.len() as u64;
        if malformed > 0 {
            crate::telemetry::record_malformed(malformed);
        }
        Ok(samples)
    }

    /// What was read so far.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }
}

/// Runs a counter session on `client` until `stop` is cancelled or the stream ends, calling
/// `on_sample` with every counter report. `Ok` on a stop or a clean end of the stream; `Err` if
/// the session could not start or broke.
pub async fn watch_counters(
    client: &DiagnosticsClient,
    request: &CounterRequest,
    stop: &CancellationToken,
    mut on_sample: impl FnMut(CounterSample) + Send,
) -> Result<SessionStats, DiagnosticsError> {
    let mut session = client.start_session(&request.session_config()).await?;
    let mut reader = CounterReader::new();
    loop {
        let chunk = tokio::select! {
            chunk = session.next_chunk() => chunk?,
            _ = stop.cancelled() => return Ok(reader.stats().clone()),
        };
        let Some(chunk) = chunk else {
            return Ok(reader.stats().clone());
        };
        for sample in reader.feed(&chunk)? {
            on_sample(sample);
        }
    }
}

/// Counter reports and malformed events found since the last chunk.
#[derive(Debug, Default)]
struct Found {
    samples: Vec<CounterSample>,
    malformed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::payload::EventMetadata;
    use crate::diagnostics::payload::encode::*;

    #[test]
    fn event_counters_give_mean_and_sum_samples() {
        let metadata = EventMetadata::parse(&event_counters_metadata(1, "System.Runtime")).unwrap();
        let payload = metadata
            .decode(&mean_counter("cpu-usage", 3.0, "%"))
            .unwrap();
        let sample = counter_from_event(&DecodedEvent {
            metadata: &metadata,
            payload,
        })
        .unwrap()
        .unwrap();
        assert_eq!(sample.provider, "System.Runtime");
        assert_eq!(sample.name, "cpu-usage");
        assert_eq!(sample.kind, CounterKind::Metric);
        assert_eq!(sample.value, 3.0);
        assert_eq!(sample.unit, "%");
    }

    #[test]
    fn a_mean_over_no_measurements_is_no_sample() {
        let metadata = EventMetadata::parse(&event_counters_metadata(1, "P")).unwrap();
        let mut payload = metadata.decode(&mean_counter("x", 0.0, "")).unwrap();
        if let Value::Object(fields) = &mut payload
            && let Some((_, Value::Object(inner))) = fields.first_mut()
            && let Some((_, Value::Object(counter))) = inner.first_mut()
            && let Some((_, count)) = counter.iter_mut().find(|(name, _)| name == "Count")
        {
            *count = Value::Int(0);
        }
        let event = DecodedEvent {
            metadata: &metadata,
            payload,
        };
        assert_eq!(counter_from_event(&event), Ok(None));
    }

    #[test]
    fn a_counter_event_without_a_name_is_malformed() {
        let metadata = EventMetadata::parse(&event_counters_metadata(1, "P")).unwrap();
        let mut payload = metadata.decode(&mean_counter("x", 1.0, "")).unwrap();
        if let Value::Object(fields) = &mut payload
            && let Some((_, Value::Object(inner))) = fields.first_mut()
            && let Some((_, Value::Object(counter))) = inner.first_mut()
        {
            counter.retain(|(name, _)| name != "Name");
        }
        assert_eq!(
            counter_from_event(&DecodedEvent {
                metadata: &metadata,
                payload
            }),
            Err(MalformedCounter("a Name"))
        );
    }

    #[test]
    fn sessions_ask_for_counters_at_the_interval_without_rundown() {
        let request = CounterRequest {
            providers: vec!["System.Runtime".into()],
            meters: vec!["MyMeter".into()],
            interval: Duration::from_secs(2),
        };
        let config = request.session_config();
        assert_eq!(config.rundown, Rundown::Off);
        assert_eq!(
            config.providers[0].filter_data(),
            "EventCounterIntervalSec=2"
        );
        assert_eq!(config.providers[0].keywords, 0);
        assert_eq!(config.providers[1].name, METERS_PROVIDER);
        assert_eq!(config.providers[1].arguments["Metrics"], "MyMeter");
        assert_eq!(config.providers[1].arguments["RefreshInterval"], "2");
    }
}

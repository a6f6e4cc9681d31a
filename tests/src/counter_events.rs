//! Counter events as a .NET runtime writes them, for the simulated runtime: EventSource
//! `EventCounters` events (a self-describing event whose metadata nests the counter's fields in a
//! `Payload` object) and the `System.Diagnostics.Metrics` events of .NET 6+ meters (manifest
//! events whose values are invariant-culture strings).

use std::time::Duration;

use crate::simulated_runtime::CollectRequest;

/// The meters provider.
pub const METERS_PROVIDER: &str = "System.Diagnostics.Metrics";
/// What every simulated EventCounter provider reports: a mean counter...
pub const GAUGE: (&str, &str, f64, &str) = ("sim-gauge", "Simulated gauge", 5.0, "MB");
/// ... and an incrementing one (increment per interval).
pub const RATE: (&str, &str, f64) = ("sim-rate", "Simulated rate", 3.0);
/// What every simulated meter reports: a gauge (instrument, last value, unit)...
pub const METER_GAUGE: (&str, &str, &str) = ("queue-length", "17", "items");
/// ... and a counter rate (instrument, rate, tags).
pub const METER_RATE: (&str, &str, &str) = ("requests", "4", "route=/a");

const TYPE_OBJECT: u32 = 1;
const TYPE_INT32: u32 = 9;
const TYPE_SINGLE: u32 = 13;
const TYPE_DOUBLE: u32 = 14;
const TYPE_STRING: u32 = 18;

fn utf16z(out: &mut Vec<u8>, text: &str) {
    for unit in text.encode_utf16() {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out.extend_from_slice(&[0, 0]);
}

/// A V4 metadata payload with a V1 field list already encoded (`count` fields).
fn metadata(
    id: u32,
    provider: &str,
    event_id: u32,
    name: &str,
    count: u32,
    fields: &[u8],
) -> Vec<u8> {
    let mut out = id.to_le_bytes().to_vec();
    utf16z(&mut out, provider);
    out.extend_from_slice(&event_id.to_le_bytes());
    utf16z(&mut out, name);
    out.extend_from_slice(&0i64.to_le_bytes()); // keywords
    out.extend_from_slice(&0i32.to_le_bytes()); // version
    out.extend_from_slice(&4i32.to_le_bytes()); // level: Informational
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(fields);
    out
}

fn scalars(fields: &[(u32, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (code, name) in fields {
        out.extend_from_slice(&code.to_le_bytes());
        utf16z(&mut out, name);
    }
    out
}

/// `EventCounters` metadata: one unnamed top-level object holding the object `Payload` with the
/// counter's fields, as the runtime generates it for `EventSource.Write("EventCounters", ...)`.
fn event_counters(id: u32, provider: &str, payload_fields: &[(u32, &str)]) -> Vec<u8> {
    let inner = scalars(payload_fields);
    let mut payload = TYPE_OBJECT.to_le_bytes().to_vec();
    payload.extend_from_slice(&(payload_fields.len() as u32).to_le_bytes());
    payload.extend_from_slice(&inner);
    utf16z(&mut payload, "Payload");
    let mut wrapper = TYPE_OBJECT.to_le_bytes().to_vec();
    wrapper.extend_from_slice(&1u32.to_le_bytes());
    wrapper.extend_from_slice(&payload);
    utf16z(&mut wrapper, "");
    metadata(id, provider, 0, "EventCounters", 1, &wrapper)
}

const MEAN_FIELDS: &[(u32, &str)] = &[
    (TYPE_STRING, "Name"),
    (TYPE_STRING, "DisplayName"),
    (TYPE_DOUBLE, "Mean"),
    (TYPE_DOUBLE, "StandardDeviation"),
    (TYPE_INT32, "Count"),
    (TYPE_DOUBLE, "Min"),
    (TYPE_DOUBLE, "Max"),
    (TYPE_SINGLE, "IntervalSec"),
    (TYPE_STRING, "Series"),
    (TYPE_STRING, "CounterType"),
    (TYPE_STRING, "Metadata"),
    (TYPE_STRING, "DisplayUnits"),
];

const SUM_FIELDS: &[(u32, &str)] = &[
    (TYPE_STRING, "Name"),
    (TYPE_STRING, "DisplayName"),
    (TYPE_STRING, "DisplayRateTimeScale"),
    (TYPE_DOUBLE, "Increment"),
    (TYPE_SINGLE, "IntervalSec"),
    (TYPE_STRING, "Metadata"),
    (TYPE_STRING, "Series"),
    (TYPE_STRING, "CounterType"),
    (TYPE_STRING, "DisplayUnits"),
];

fn mean_payload(name: &str, display: &str, mean: f64, units: &str, interval: f32) -> Vec<u8> {
    let mut out = Vec::new();
    utf16z(&mut out, name);
    utf16z(&mut out, display);
    out.extend_from_slice(&mean.to_le_bytes());
    out.extend_from_slice(&0f64.to_le_bytes());
    out.extend_from_slice(&1i32.to_le_bytes());
    out.extend_from_slice(&mean.to_le_bytes());
    out.extend_from_slice(&mean.to_le_bytes());
    out.extend_from_slice(&interval.to_le_bytes());
    utf16z(
        &mut out,
        &format!("Interval={}", (interval * 1000.0) as u32),
    );
    utf16z(&mut out, "Mean");
    utf16z(&mut out, "");
    utf16z(&mut out, units);
    out
}

fn sum_payload(name: &str, display: &str, increment: f64, interval: f32) -> Vec<u8> {
    let mut out = Vec::new();
    utf16z(&mut out, name);
    utf16z(&mut out, display);
    utf16z(&mut out, "00:00:01");
    out.extend_from_slice(&increment.to_le_bytes());
    out.extend_from_slice(&interval.to_le_bytes());
    utf16z(&mut out, "");
    utf16z(
        &mut out,
        &format!("Interval={}", (interval * 1000.0) as u32),
    );
    utf16z(&mut out, "Sum");
    utf16z(&mut out, "");
    out
}

/// Manifest metadata of a meters event with string fields.
fn meter_event(id: u32, event_id: u32, name: &str, value_field: &str) -> Vec<u8> {
    let fields = scalars(&[
        (TYPE_STRING, "sessionId"),
        (TYPE_STRING, "meterName"),
        (TYPE_STRING, "meterVersion"),
        (TYPE_STRING, "instrumentName"),
        (TYPE_STRING, "unit"),
        (TYPE_STRING, "tags"),
        (TYPE_STRING, value_field),
    ]);
    metadata(id, METERS_PROVIDER, event_id, name, 7, &fields)
}

fn meter_payload(values: [&str; 7]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        utf16z(&mut out, value);
    }
    out
}

/// The counter events a session asked for by `request` produces: the metadata records sent once,
/// the events sent every interval, and the interval.
#[derive(Debug, Clone)]
pub struct CounterScript {
    /// Metadata payloads, sent at the start of the stream.
    pub metadata: Vec<Vec<u8>>,
    /// `(metadata id, payload)` sent every interval.
    pub events: Vec<(u32, Vec<u8>)>,
    /// The reporting interval the request asked for (1 s if it named none).
    pub interval: Duration,
}

/// The argument `key` of a provider's filter data (`k=v;k=v`).
fn argument<'a>(filter_data: Option<&'a str>, key: &str) -> Option<&'a str> {
    filter_data?
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim_matches('"'))
}

impl CounterScript {
    /// What a runtime reports for `request`: every provider with `EventCounterIntervalSec` gets
    /// [`GAUGE`] and [`RATE`]; every meter named in the meters provider's `Metrics` gets
    /// [`METER_GAUGE`] and [`METER_RATE`]. With `malformed`, each interval also carries an
    /// `EventCounters` event cut short and an event of undefined metadata.
    pub fn for_request(request: &CollectRequest, malformed: bool) -> Self {
        let mut script = CounterScript {
            metadata: Vec::new(),
            events: Vec::new(),
            interval: Duration::from_secs(1),
        };
        let mut next_id = 100u32;
        for provider in &request.providers {
            let filter = provider.filter_data.as_deref();
            if provider.name == METERS_PROVIDER {
                let Some(meters) = argument(filter, "Metrics") else {
                    continue;
                };
                if let Some(seconds) =
                    argument(filter, "RefreshInterval").and_then(|s| s.parse().ok())
                {
                    script.interval = Duration::from_secs(seconds);
                }
                let session = argument(filter, "SessionId").unwrap_or_default().to_owned();
                let (gauge, rate) = (next_id, next_id + 1);
                next_id += 2;
                script
                    .metadata
                    .push(meter_event(gauge, 5, "GaugeValuePublished", "lastValue"));
                script
                    .metadata
                    .push(meter_event(rate, 4, "CounterRateValuePublished", "rate"));
                for meter in meters.split(',').filter(|m| !m.is_empty()) {
                    let (instrument, value, unit) = METER_GAUGE;
                    script.events.push((
                        gauge,
                        meter_payload([&session, meter, "1.0", instrument, unit, "", value]),
                    ));
                    let (instrument, value, tags) = METER_RATE;
                    script.events.push((
                        rate,
                        meter_payload([&session, meter, "1.0", instrument, "", tags, value]),
                    ));
                }
                continue;
            }
            let Some(seconds) =
                argument(filter, "EventCounterIntervalSec").and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            script.interval = Duration::from_secs(seconds.max(1));
            let (mean, sum) = (next_id, next_id + 1);
            next_id += 2;
            script
                .metadata
                .push(event_counters(mean, &provider.name, MEAN_FIELDS));
            script
                .metadata
                .push(event_counters(sum, &provider.name, SUM_FIELDS));
            let interval = seconds as f32;
            let (name, display, value, units) = GAUGE;
            let gauge = mean_payload(name, display, value, units, interval);
            let (name, display, increment) = RATE;
            script.events.push((mean, gauge.clone()));
            script
                .events
                .push((sum, sum_payload(name, display, increment, interval)));
            if malformed {
                script.events.push((mean, gauge[..10].to_vec()));
                script.events.push((9999, vec![1, 2, 3]));
            }
        }
        script
    }
}

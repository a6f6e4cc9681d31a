//! ASP.NET Core request events as a .NET 5+ runtime writes them, for the simulated runtime.
//!
//! ASP.NET Core's hosting layer starts and stops the `Microsoft.AspNetCore.Hosting.HttpRequestIn`
//! activity on its `Microsoft.AspNetCore` DiagnosticListener for every request. The
//! `Microsoft-Diagnostics-DiagnosticSource` EventSource forwards them to a session that enabled
//! it with its Events keyword (0x2) and `FilterAndPayloadSpecs` lines such as
//! `Microsoft.AspNetCore/Microsoft.AspNetCore.Hosting.HttpRequestIn.Start@Activity1Start:-Request.Path;ActivityId=*Activity.Id`:
//! the start becomes an `Activity1Start` event (id 4, opcode Start), the stop an `Activity1Stop`
//! event (id 5, opcode Stop), each with the fields `SourceName` (string), `EventName` (string)
//! and `Arguments` (an array of `{Key, Value}` string objects: one per transform of the spec
//! line, named by its `Name=` or else the last segment of its property path).
//!
//! Because `Arguments` is an array, the metadata record has an empty V1 field list, an opcode
//! tag (kind 1) and a `V2Params` tag (kind 2) with the fields; an array in a payload is a `u16`
//! element count, then the elements.

use std::time::Duration;

use crate::simulated_runtime::CollectRequest;

/// The EventSource that forwards DiagnosticSource events.
pub const DIAGNOSTIC_SOURCE: &str = "Microsoft-Diagnostics-DiagnosticSource";
/// The DiagnosticListener of the hosting layer.
pub const ASPNETCORE_SOURCE: &str = "Microsoft.AspNetCore";
/// The hosting activity's start event name.
pub const REQUEST_START: &str = "Microsoft.AspNetCore.Hosting.HttpRequestIn.Start";
/// The hosting activity's stop event name.
pub const REQUEST_STOP: &str = "Microsoft.AspNetCore.Hosting.HttpRequestIn.Stop";
/// The DiagnosticSource EventSource's Events keyword.
const KEYWORD_EVENTS: u64 = 0x2;
/// Metadata ids of the two events (clear of the synthetic trace's and the counters').
const START_METADATA_ID: u32 = 200;
const STOP_METADATA_ID: u32 = 201;

const TYPE_OBJECT: u32 = 1;
const TYPE_STRING: u32 = 18;
const TYPE_ARRAY: u32 = 19;
/// V5 metadata tags.
const TAG_OPCODE: u8 = 1;
const TAG_V2_PARAMS: u8 = 2;
/// .NET ticks per second.
const TICKS_PER_SECOND: u128 = 10_000_000;

/// One request the simulated application serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulatedRequest {
    /// When it starts, after the session started.
    pub at: Duration,
    /// `Request.Path`.
    pub path: String,
    /// `Response.StatusCode`.
    pub status: u16,
    /// How long it takes; `None`: it never finishes (a hung request: no stop event).
    pub duration: Option<Duration>,
}

impl SimulatedRequest {
    /// A request of `path` starting `at_ms` after the session started, answered `status` after
    /// `duration_ms`.
    pub fn new(at_ms: u64, path: &str, status: u16, duration_ms: u64) -> Self {
        SimulatedRequest {
            at: Duration::from_millis(at_ms),
            path: path.into(),
            status,
            duration: Some(Duration::from_millis(duration_ms)),
        }
    }

    /// A request that starts and never finishes.
    pub fn hung(at_ms: u64, path: &str) -> Self {
        SimulatedRequest {
            at: Duration::from_millis(at_ms),
            path: path.into(),
            status: 0,
            duration: None,
        }
    }
}

/// The request events one session gets: metadata once, then `(when, metadata id, payload)` in
/// time order.
#[derive(Clone, Debug, Default)]
pub struct RequestScript {
    /// Metadata payloads, sent with the first events.
    pub metadata: Vec<Vec<u8>>,
    /// The events, by time since the session started.
    pub timeline: Vec<(Duration, u32, Vec<u8>)>,
}

/// A spec line's transforms: `(output name, property path)`.
type Transforms = Vec<(String, String)>;

impl RequestScript {
    /// The events of `requests` for a session asked for by `request`: none (and no metadata)
    /// without requests, or unless the session enables the DiagnosticSource EventSource with
    /// the Events keyword and spec lines for the hosting activity's start or stop (each event
    /// carries its line's transforms).
    pub fn for_request(request: &CollectRequest, requests: &[SimulatedRequest]) -> Self {
        let mut script = RequestScript::default();
        if requests.is_empty() {
            return script;
        }
        let Some(provider) = request.providers.iter().find(|p| {
            p.name.eq_ignore_ascii_case(DIAGNOSTIC_SOURCE) && p.keywords & KEYWORD_EVENTS != 0
        }) else {
            return script;
        };
        let specs = filter_argument(provider.filter_data.as_deref(), "FilterAndPayloadSpecs")
            .unwrap_or_default();
        let start = spec_transforms(&specs, REQUEST_START, "Activity1Start");
        let stop = spec_transforms(&specs, REQUEST_STOP, "Activity1Stop");
        if start.is_some() {
            script
                .metadata
                .push(activity_metadata(START_METADATA_ID, 4, "Activity1Start", 1));
        }
        if stop.is_some() {
            script
                .metadata
                .push(activity_metadata(STOP_METADATA_ID, 5, "Activity1Stop", 2));
        }
        for (index, simulated) in requests.iter().enumerate() {
            if let Some(transforms) = &start {
                let payload = activity_payload(REQUEST_START, transforms, simulated, index);
                script
                    .timeline
                    .push((simulated.at, START_METADATA_ID, payload));
            }
            if let (Some(transforms), Some(duration)) = (&stop, simulated.duration) {
                let payload = activity_payload(REQUEST_STOP, transforms, simulated, index);
                script
                    .timeline
                    .push((simulated.at + duration, STOP_METADATA_ID, payload));
            }
        }
        script.timeline.sort_by_key(|(at, _, _)| *at);
        script
    }
}

/// The value of `key` in filter data `k=v;k="v;with;separators"`.
fn filter_argument(filter_data: Option<&str>, key: &str) -> Option<String> {
    let mut rest = filter_data?;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                let next = quoted[end + 1..]
                    .strip_prefix(';')
                    .unwrap_or(&quoted[end + 1..]);
                (&quoted[..end], next)
            }
            None => after.split_once(';').unwrap_or((after, "")),
        };
        if name.trim_matches('"').eq_ignore_ascii_case(key) {
            return Some(value.to_owned());
        }
        rest = next;
    }
    None
}

/// The transforms of the spec line `ASPNETCORE_SOURCE/event@activity:...`, if there is one.
fn spec_transforms(specs: &str, event: &str, activity: &str) -> Option<Transforms> {
    let head = format!("{ASPNETCORE_SOURCE}/{event}@{activity}:");
    let line = specs
        .split(['\r', '\n'])
        .find_map(|line| line.trim().strip_prefix(&head))?;
    Some(
        line.trim_start_matches('-')
            .split(';')
            .filter(|t| !t.is_empty())
            .map(|transform| match transform.split_once('=') {
                Some((name, path)) => (name.to_owned(), path.trim_start_matches('*').to_owned()),
                None => (
                    transform.rsplit('.').next().unwrap_or(transform).to_owned(),
                    transform.to_owned(),
                ),
            })
            .collect(),
    )
}

fn utf16z(out: &mut Vec<u8>, text: &str) {
    for unit in text.encode_utf16() {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out.extend_from_slice(&[0, 0]);
}

/// One V2 field description: `u32` size (itself included), UTF-16z name, type.
fn v2_field(name: &str, ty: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    utf16z(&mut body, name);
    body.extend_from_slice(ty);
    let mut out = ((body.len() + 4) as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn tag(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(body);
}

/// The V5 metadata of `Activity1Start`/`Activity1Stop`.
fn activity_metadata(id: u32, event_id: u32, name: &str, opcode: u8) -> Vec<u8> {
    let mut out = id.to_le_bytes().to_vec();
    utf16z(&mut out, DIAGNOSTIC_SOURCE);
    out.extend_from_slice(&event_id.to_le_bytes());
    utf16z(&mut out, name);
    out.extend_from_slice(&(KEYWORD_EVENTS as i64).to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // version
    out.extend_from_slice(&4i32.to_le_bytes()); // level: Informational
    out.extend_from_slice(&0u32.to_le_bytes()); // no V1 fields
    tag(&mut out, TAG_OPCODE, &[opcode]);
    let string = TYPE_STRING.to_le_bytes();
    let mut pair = TYPE_OBJECT.to_le_bytes().to_vec();
    pair.extend_from_slice(&2u32.to_le_bytes());
    pair.extend_from_slice(&v2_field("Key", &string));
    pair.extend_from_slice(&v2_field("Value", &string));
    let mut arguments = TYPE_ARRAY.to_le_bytes().to_vec();
    arguments.extend_from_slice(&pair);
    let mut params = 3u32.to_le_bytes().to_vec();
    params.extend_from_slice(&v2_field("SourceName", &string));
    params.extend_from_slice(&v2_field("EventName", &string));
    params.extend_from_slice(&v2_field("Arguments", &arguments));
    tag(&mut out, TAG_V2_PARAMS, &params);
    out
}

/// The value of property `path` of the activity or its HTTP context.
fn property(path: &str, request: &SimulatedRequest, index: usize) -> String {
    let trace_id = format!("{:032x}", 0x5eed_0000_u128 + index as u128);
    let span_id = format!("{:016x}", 0xa11c_e000_u64 + index as u64);
    match path {
        "Request.Path" => request.path.clone(),
        "Request.Method" => "GET".into(),
        "Request.Scheme" => "http".into(),
        "Request.Host" => "localhost:5000".into(),
        "Response.StatusCode" => request.status.to_string(),
        "Activity.Id" => format!("00-{trace_id}-{span_id}-00"),
        "Activity.TraceId" => trace_id,
        "Activity.SpanId" => span_id,
        "Activity.IdFormat" => "W3C".into(),
        "Activity.Duration.Ticks" => request
            .duration
            .map(|d| (d.as_nanos() * TICKS_PER_SECOND / 1_000_000_000).to_string())
            .unwrap_or_else(|| "0".into()),
        "Activity.StartTimeUtc.Ticks" => {
            (638_000_000_000_000_000u64 + request.at.as_millis() as u64 * 10_000).to_string()
        }
        _ => String::new(),
    }
}

fn activity_payload(
    event: &str,
    transforms: &Transforms,
    request: &SimulatedRequest,
    index: usize,
) -> Vec<u8> {
    let mut out = Vec::new();
    utf16z(&mut out, ASPNETCORE_SOURCE);
    utf16z(&mut out, event);
    out.extend_from_slice(&(transforms.len() as u16).to_le_bytes());
    for (name, path) in transforms {
        utf16z(&mut out, name);
        utf16z(&mut out, &property(path, request, index));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_filter_arguments_keep_their_separators() {
        let data = "A=1;FilterAndPayloadSpecs=\"x/y@Activity1Start:-a;b=*c\";B=2";
        assert_eq!(
            filter_argument(Some(data), "FilterAndPayloadSpecs").as_deref(),
            Some("x/y@Activity1Start:-a;b=*c")
        );
        assert_eq!(filter_argument(Some(data), "B").as_deref(), Some("2"));
        assert_eq!(
            spec_transforms(
                "Microsoft.AspNetCore/Microsoft.AspNetCore.Hosting.HttpRequestIn.Stop@Activity1Stop:-Request.Path;ActivityDuration=*Activity.Duration.Ticks",
                REQUEST_STOP,
                "Activity1Stop"
            ),
            Some(vec![
                ("Path".to_owned(), "Request.Path".to_owned()),
                (
                    "ActivityDuration".to_owned(),
                    "Activity.Duration.Ticks".to_owned()
                ),
            ])
        );
    }
}

//! `POST /trace` and `GET /trace`: capture an EventPipe trace, streamed in the response or sent to
//! an egress provider.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa::ToSchema;

use super::params::{DestinationQuery, DurationQuery, ProcessQuery, QueryParams};
use super::problem::{Problem, Validation};
use super::{AppState, RequestOrigin};
use crate::diagnostics::eventpipe::Rundown;
use crate::diagnostics::{EventProvider, SessionConfig};
use crate::operations::{Destination, ErrorCode, StartError, StartRequest, Started, TraceSpec};
use crate::processes::ProcessSelector;
use crate::profiles;

/// Bounds of `bufferSizeInMB`.
const BUFFER_SIZE_MB: std::ops::RangeInclusive<u64> = 1..=1024;

/// `POST /trace`: a trace of the providers in the body (`EventProvidersConfiguration`).
#[utoipa::path(post, path = "/trace", params(
        ProcessQuery,
        DurationQuery,
        DestinationQuery,
    ),
    request_body(content = EventProvidersConfiguration, content_type = "application/json"),
    responses(
        (status = 200, description = "The trace, streamed (nettrace)", content_type = "application/octet-stream"),
        (status = 202, description = "Accepted; the trace goes to the egress provider (see Location)"),
        (status = 400, description = "Invalid request", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit reached", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn post_trace(
    State(app): State<AppState>,
    origin: RequestOrigin,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            // The unread rest of the body is still on the connection: close it, so that the
            // client does not send its next request after those bytes.
            let mut response =
                Problem::new(rejection.status(), rejection.body_text()).into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Ok(response);
        }
    };
    let params = QueryParams::parse(query.as_deref());
    let mut validation = Validation::default();
    let request = TraceRequest::from_params(&params, &mut validation);
    let config = if body.is_empty() {
        validation.error("body", "A non-empty request body is required.");
        None
    } else {
        check_json_content_type(&headers)?;
        session_config_from_body(&body, &mut validation)
    };
    let (request, config) = validation.finish((request, config))?;
    match config {
        Some(config) => start_trace(app, origin, request, config).await,
        None => Err(Problem::bad_request("the request body is invalid")),
    }
}

/// `GET /trace?profile=...`: a trace of predefined profiles.
#[utoipa::path(get, path = "/trace", params(
        ("profile" = Option<String>, Query, description = "Comma list of Cpu, Http, Logs, Metrics, GcCollect (default Cpu,Http,Metrics,GcCollect)"),
        ProcessQuery,
        DurationQuery,
        DestinationQuery,
    ),
    responses(
        (status = 200, description = "The trace, streamed (nettrace)", content_type = "application/octet-stream"),
        (status = 202, description = "Accepted; the trace goes to the egress provider (see Location)"),
        (status = 400, description = "Invalid request", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit reached", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_trace(
    State(app): State<AppState>,
    origin: RequestOrigin,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let params = QueryParams::parse(query.as_deref());
    let mut validation = Validation::default();
    let request = TraceRequest::from_params(&params, &mut validation);
    let config =
        match profiles::session_config(params.get("profile").unwrap_or(profiles::DEFAULT_PROFILES))
        {
            Ok(config) => config,
            Err(message) => {
                validation.error("profile", message);
                SessionConfig::new(Vec::new())
            }
        };
    let (request, config) = validation.finish((request, config))?;
    start_trace(app, origin, request, config).await
}

/// The query parameters every trace request shares.
struct TraceRequest {
    selector: ProcessSelector,
    duration: Option<Duration>,
    destination: Destination,
    tags: BTreeSet<String>,
}

impl TraceRequest {
    fn from_params(params: &QueryParams, validation: &mut Validation) -> Self {
        TraceRequest {
            selector: params.process_selector(validation),
            duration: params.duration(validation),
            destination: params.destination(),
            tags: params.tags(),
        }
    }
}

/// Starts the trace through the operations' one entry point and answers: the streamed body
/// (200), or 202 for an egressed trace; both with `Location`.
async fn start_trace(
    app: AppState,
    origin: RequestOrigin,
    request: TraceRequest,
    config: SessionConfig,
) -> Result<Response, Problem> {
    check_location_base(&origin)?;
    let started = super::operations::service(&app)
        .start(StartRequest {
            artifact: TraceSpec::new(config),
            target: request.selector,
            destination: request.destination,
            tags: request.tags,
            duration: request.duration,
        })
        .await
        .map_err(start_problem)?;
    started_response(&origin, started)
}

/// Refuses, before anything starts, a request whose Host header cannot form its operation's
/// `Location` (operation ids are plain ASCII: if the prefix makes a header value, every
/// `Location` does).
pub(super) fn check_location_base(origin: &RequestOrigin) -> Result<(), Problem> {
    HeaderValue::from_str(&origin.url("/operations/"))
        .map(|_| ())
        .map_err(|_| Problem::bad_request("The request's Host header cannot form a Location URL."))
}

/// The answer to a started artifact: its streamed body (200, with its file name), or 202 when it
/// goes to an egress provider; both with the operation's `Location`.
pub(super) fn started_response(
    origin: &RequestOrigin,
    started: Started,
) -> Result<Response, Problem> {
    let location =
        HeaderValue::from_str(&origin.url(&format!("/operations/{}", started.operation.id())))
            .map_err(|_| {
                Problem::bad_request("The request's Host header cannot form a Location URL.")
            })?;
    let mut response = match started.stream {
        None => StatusCode::ACCEPTED.into_response(),
        Some(stream) => {
            let mut response = Body::from_stream(stream).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(started.content_type),
            );
            let disposition = format!("attachment; filename={}", started.file_name);
            if let Ok(value) = HeaderValue::from_str(&disposition) {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
    };
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// The problem that answers an artifact that did not start.
pub(super) fn start_problem(error: StartError) -> Problem {
    match error {
        StartError::UnknownEgressProvider(_) => Problem::field("egressProvider", error.to_string()),
        StartError::RateLimited(_) => Problem::rate_limited(),
        StartError::Failed(failure)
            if matches!(
                failure.code,
                ErrorCode::DumpInProgress | ErrorCode::GcDumpInProgress
            ) =>
        {
            Problem::new(StatusCode::TOO_MANY_REQUESTS, failure.message)
        }
        StartError::Process(_) | StartError::Failed(_) => Problem::bad_request(error.to_string()),
    }
}

/// Accepts application/json, text/json and application/*+json (415 otherwise).
fn check_json_content_type(headers: &HeaderMap) -> Result<(), Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let accepted = essence == "application/json"
        || essence == "text/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if accepted {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type `{content_type}` is not supported; send application/json, text/json or application/*+json"
            ),
        ))
    }
}

/// The value of `name` in a JSON object, compared case-insensitively.
fn property<'a>(object: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// Parses and checks an `EventProvidersConfiguration` body, recording every error by field.
fn session_config_from_body(body: &[u8], validation: &mut Validation) -> Option<SessionConfig> {
    let document: Value = match serde_json::from_slice(body) {
        Ok(document) => document,
        Err(error) => {
            validation.error(
                "body",
                format!("The request body is not valid JSON: {error}"),
            );
            return None;
        }
    };
    let Some(object) = document.as_object() else {
        validation.error("body", "The request body must be a JSON object.");
        return None;
    };
    let providers = match property(object, "providers") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| provider_from_json(index, item, validation))
            .collect(),
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            validation.error("providers", "At least one provider is required.");
            Vec::new()
        }
        Some(_) => {
            validation.error("providers", "Must be an array of providers.");
            Vec::new()
        }
    };
    let mut config = SessionConfig::new(providers);
    match property(object, "requestRundown") {
        None | Some(Value::Null) | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => config.rundown = Rundown::Off,
        Some(_) => validation.error("requestRundown", "Must be true or false."),
    }
    match property(object, "bufferSizeInMB") {
        None | Some(Value::Null) => {}
        Some(value) => match value.as_u64().filter(|size| BUFFER_SIZE_MB.contains(size)) {
            Some(size) => config.buffer_size_mb = size as u32,
            None => validation.error(
                "bufferSizeInMB",
                format!("{value} is out of range: use a whole number from 1 to 1024."),
            ),
        },
    }
    Some(config)
}

fn provider_from_json(
    index: usize,
    item: &Value,
    validation: &mut Validation,
) -> Option<EventProvider> {
    let field = |name: &str| format!("providers[{index}].{name}");
    let Some(object) = item.as_object() else {
        validation.error(format!("providers[{index}]"), "Must be an object.");
        return None;
    };
    let name = match property(object, "name") {
        Some(Value::String(name)) if !name.trim().is_empty() => Some(name.clone()),
        _ => {
            validation.error(field("name"), "A provider name is required.");
            None
        }
    };
    let keywords = match property(object, "keywords") {
        None | Some(Value::Null) => Some(profiles::DEFAULT_KEYWORDS),
        Some(Value::String(text)) => match profiles::parse_keywords(text) {
            Ok(keywords) => Some(keywords),
            Err(error) => {
                validation.error(field("keywords"), error.to_string());
                None
            }
        },
        Some(other) => {
            validation.error(
                field("keywords"),
                format!("Must be a string such as \"0x1F\" or \"-1\", not {other}."),
            );
            None
        }
    };
    let level = match property(object, "eventLevel") {
        None | Some(Value::Null) => Some(profiles::DEFAULT_LEVEL),
        Some(Value::String(text)) => profiles::parse_level(text).ok(),
        Some(Value::Number(number)) => profiles::parse_level(&number.to_string()).ok(),
        Some(_) => None,
    };
    if level.is_none() {
        validation.error(
            field("eventLevel"),
            format!(
                "Must be one of {} (or 0 to 5).",
                profiles::LEVELS.join(", ")
            ),
        );
    }
    let mut arguments = BTreeMap::new();
    match property(object, "arguments") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                match value {
                    Value::String(value) => {
                        arguments.insert(key.clone(), value.clone());
                    }
                    _ => validation.error(
                        field(&format!("arguments.{key}")),
                        "Argument values must be strings.",
                    ),
                }
            }
        }
        Some(_) => validation.error(field("arguments"), "Must be an object of strings."),
    }
    let mut provider = EventProvider::new(name?, keywords?, level?);
    provider.arguments = arguments;
    Some(provider)
}

// The OpenAPI description of the trace routes' inputs (`super::openapi` lists them).

/// `POST /trace`'s body (dotnet-monitor's EventProvidersConfiguration). Property names are
/// matched case-insensitively.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the JSON the handler validates by hand, field by field.
pub struct EventProvidersConfiguration {
    /// At least one provider.
    providers: Vec<EventProviderConfiguration>,
    /// Rundown at the end of the trace (default true).
    request_rundown: Option<bool>,
    /// The runtime's buffer, 1 to 1024 MB (default 256).
    #[schema(rename = "bufferSizeInMB", minimum = 1, maximum = 1024)]
    buffer_size_in_mb: Option<u32>,
}

/// One provider of `POST /trace`.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the JSON the handler validates by hand, field by field.
pub struct EventProviderConfiguration {
    /// The provider name.
    name: String,
    /// Keywords as a string: decimal (may be "-1") or 0x hexadecimal; default all bits.
    keywords: Option<String>,
    /// LogAlways, Critical, Error, Warning, Informational, Verbose (or 0-5); default Verbose.
    event_level: Option<String>,
    /// Arguments passed to the provider as filter data.
    arguments: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_properties_are_case_insensitive_with_defaults() {
        let body =
            br#"{"Providers":[{"Name":"P","EventLevel":"informational"}],"RequestRundown":false}"#;
        let mut validation = Validation::default();
        let config = session_config_from_body(body, &mut validation).unwrap();
        validation.finish(()).unwrap();
        assert_eq!(config.providers[0].keywords, u64::MAX);
        assert_eq!(config.providers[0].level, 4);
        assert_eq!(config.rundown, Rundown::Off);
        assert_eq!(config.buffer_size_mb, 256);
    }
}

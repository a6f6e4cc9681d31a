//! `POST /trace` and `GET /trace`: capture an EventPipe trace, streamed in the response or sent to
//! an egress provider.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::params::QueryParams;
use super::problem::{Problem, Validation};
use super::{AppState, RequestOrigin};
use crate::diagnostics::eventpipe::Rundown;
use crate::diagnostics::{EventProvider, SessionConfig};
use crate::egress::Artifact;
use crate::operations::capture::{Sink, capture_trace};
use crate::operations::{Operation, OperationError, OperationProcess, Outcome};
use crate::processes::{ProcessSelector, resolve};
use crate::profiles;

/// Event level names, by value.
const LEVELS: [&str; 6] = [
    "LogAlways",
    "Critical",
    "Error",
    "Warning",
    "Informational",
    "Verbose",
];

/// Bounds of `bufferSizeInMB`.
const BUFFER_SIZE_MB: std::ops::RangeInclusive<u64> = 1..=1024;

/// `POST /trace`: a trace of the providers in the body (`EventProvidersConfiguration`).
#[utoipa::path(post, path = "/trace", params(
        super::openapi::TraceQuery,
    ),
    request_body(content = super::openapi::EventProvidersConfiguration, content_type = "application/json"),
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
        super::openapi::TraceQuery,
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
    egress_provider: Option<String>,
    tags: BTreeSet<String>,
}

impl TraceRequest {
    fn from_params(params: &QueryParams, validation: &mut Validation) -> Self {
        TraceRequest {
            selector: params.process_selector(validation),
            duration: params.duration(validation),
            egress_provider: params
                .get("egressProvider")
                .filter(|name| !name.is_empty())
                .map(str::to_owned),
            tags: params.tags(),
        }
    }
}

/// Validates, resolves the process, takes a concurrency slot, starts the session and hands it to
/// the capture pipeline.
async fn start_trace(
    app: AppState,
    origin: RequestOrigin,
    request: TraceRequest,
    config: SessionConfig,
) -> Result<Response, Problem> {
    if let Some(provider) = &request.egress_provider
        && !app.egress.has_provider(provider)
    {
        return Err(Problem::field(
            "egressProvider",
            format!(
                "Egress provider `{provider}` does not exist; configure it under [egress.providers.{provider}]."
            ),
        ));
    }
    let processes = app.processes.list().await;
    let process = resolve(&processes, &request.selector, &app.config.default_process)
        .map_err(|error| Problem::bad_request(error.to_string()))?;
    let permit = app
        .operations
        .try_reserve_trace()
        .ok_or_else(Problem::rate_limited)?;
    let operation = app.operations.register(
        OperationProcess::from(process),
        request.egress_provider.clone(),
        request.tags,
    );
    let Ok(location) =
        HeaderValue::from_str(&origin.url(&format!("/operations/{}", operation.id())))
    else {
        let message = "The request's Host header cannot form a Location URL.".to_owned();
        return Err(fail(&operation, "BadRequest", message));
    };
    let session = match app.processes.client(process).start_session(&config).await {
        Ok(session) => session,
        Err(error) => {
            let message = format!("Cannot start a trace of process {}: {error}", process.pid);
            return Err(fail(&operation, "RuntimeError", message));
        }
    };
    let started_at = SystemTime::now();
    match request.egress_provider {
        Some(provider) => {
            let artifact = Artifact::trace(
                process.pid,
                process.uid,
                process.name.clone(),
                operation.id(),
                operation.tags().iter().cloned().collect(),
                started_at,
            );
            let upload = match app.egress.begin(&provider, artifact).await {
                Ok(upload) => upload,
                Err(error) => return Err(fail(&operation, error.kind(), error.to_string())),
            };
            tokio::spawn(capture_trace(
                operation,
                session,
                Sink::Egress(upload),
                request.duration,
                permit,
            ));
            let mut response = StatusCode::ACCEPTED.into_response();
            response.headers_mut().insert(header::LOCATION, location);
            Ok(response)
        }
        None => {
            let (sink, mut receiver) = Sink::http();
            tokio::spawn(capture_trace(
                operation,
                session,
                sink,
                request.duration,
                permit,
            ));
            let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
            let mut response = Body::from_stream(stream).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            let file_name = Artifact::trace_file_name(started_at, process.pid);
            if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename={file_name}")) {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            headers.insert(header::LOCATION, location);
            Ok(response)
        }
    }
}

/// Records a failure to start on the operation, and answers 400 with the same message.
fn fail(operation: &Operation, code: &str, message: String) -> Problem {
    operation.finish(Outcome::Failed(OperationError {
        code: code.to_owned(),
        message: message.clone(),
    }));
    Problem::bad_request(message)
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
        None | Some(Value::Null) => Some(u64::MAX),
        Some(Value::String(text)) => match parse_keywords(text) {
            Some(keywords) => Some(keywords),
            None => {
                validation.error(
                    field("keywords"),
                    format!("`{text}` is not a decimal or 0x-prefixed hexadecimal 64-bit number."),
                );
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
        None | Some(Value::Null) => Some(5),
        Some(Value::String(text)) => LEVELS
            .iter()
            .position(|level| level.eq_ignore_ascii_case(text))
            .or_else(|| text.parse::<usize>().ok().filter(|level| *level <= 5)),
        Some(Value::Number(number)) => number
            .as_u64()
            .filter(|level| *level <= 5)
            .map(|level| level as usize),
        Some(_) => None,
    };
    if level.is_none() {
        validation.error(
            field("eventLevel"),
            format!("Must be one of {} (or 0 to 5).", LEVELS.join(", ")),
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
    let mut provider = EventProvider::new(name?, keywords?, level? as u8);
    provider.arguments = arguments;
    Some(provider)
}

/// Decimal (signed 64-bit, so "-1" is all bits) or `0x` hexadecimal (64-bit).
fn parse_keywords(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text
            .parse::<i64>()
            .map(|value| value as u64)
            .or_else(|_| text.parse::<u64>())
            .ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_decimal_or_hex_strings() {
        assert_eq!(parse_keywords("-1"), Some(u64::MAX));
        assert_eq!(
            parse_keywords("0x14C14FCCBD"),
            Some(profiles::RUNTIME_DEFAULT_KEYWORDS)
        );
        assert_eq!(parse_keywords("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_keywords("0xZZ"), None);
        assert_eq!(parse_keywords(""), None);
    }

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

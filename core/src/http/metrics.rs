//! `GET /metrics`: the counters of every observed process and diagmon's own metrics, in the
//! Prometheus text format (or OpenMetrics when the `Accept` header asks for it); and the
//! middleware that counts every request for those own metrics.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::Digest;

use super::params::QueryParams;
use super::problem::{Problem, Validation};
use super::{AppState, RequestOrigin};
use crate::metrics::live::{self, LiveMetrics, LiveMetricsSpec};
use crate::metrics::{own, prometheus};
use crate::operations::{Operation, OperationError, OperationProcess, Outcome, TraceSummary};
use crate::processes::{ProcessSelector, resolve};

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4, or OpenMetrics 1.0 when `Accept` asks for application/openmetrics-text", content_type = "text/plain"),
        (status = 400, description = "Metrics are disabled", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_metrics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    if !app.metrics.config().enabled {
        return Err(Problem::bad_request(
            "Metrics are disabled: set `[metrics] enabled = true`.",
        ));
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    let mut body = String::new();
    app.metrics.render_counters(openmetrics, &mut body);
    own::render(openmetrics, &mut body);
    let content_type = if openmetrics {
        body.push_str("# EOF\n");
        prometheus::OPENMETRICS_CONTENT_TYPE
    } else {
        prometheus::TEXT_CONTENT_TYPE
    };
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response())
}

/// Counts the request by route pattern and status, and times it to the response head.
pub async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    own::record_request(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The query parameters of `/livemetrics`.
struct LiveMetricsQuery {
    selector: ProcessSelector,
    duration: Option<Duration>,
    egress_provider: Option<String>,
    tags: std::collections::BTreeSet<String>,
}

impl LiveMetricsQuery {
    fn parse(query: Option<&str>, validation: &mut Validation) -> Self {
        let params = QueryParams::parse(query);
        LiveMetricsQuery {
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

/// `GET /livemetrics`: the default providers' counters as a json-seq stream.
#[utoipa::path(get, path = "/livemetrics",
    params(
        ("pid" = Option<u64>, Query, description = "Process id"),
        ("uid" = Option<String>, Query, description = "Runtime instance id"),
        ("name" = Option<String>, Query, description = "Process name"),
        ("durationSeconds" = Option<i64>, Query, description = "Seconds to collect (default 30; -1 until stopped)"),
        ("tags" = Option<String>, Query, description = "Comma-separated operation tags"),
    ),
    responses(
        (status = 200, description = "Metric objects, streamed", content_type = "application/json-seq"),
        (status = 400, description = "Invalid request", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_livemetrics(
    State(app): State<AppState>,
    origin: RequestOrigin,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let mut validation = Validation::default();
    let request = LiveMetricsQuery::parse(query.as_deref(), &mut validation);
    let request = validation.finish(request)?;
    let spec = LiveMetricsSpec::defaults(app.metrics.interval());
    start_livemetrics(app, origin, request, spec).await
}

/// `POST /livemetrics`: the counters an `EventMetricsConfiguration` body names.
#[utoipa::path(post, path = "/livemetrics",
    params(
        ("pid" = Option<u64>, Query, description = "Process id"),
        ("uid" = Option<String>, Query, description = "Runtime instance id"),
        ("name" = Option<String>, Query, description = "Process name"),
        ("durationSeconds" = Option<i64>, Query, description = "Seconds to collect (default 30; -1 until stopped)"),
        ("tags" = Option<String>, Query, description = "Comma-separated operation tags"),
    ),
    request_body(content = String, description = "EventMetricsConfiguration: {includeDefaultProviders, providers: [{providerName, counterNames}], meters: [{meterName, instrumentNames}]}", content_type = "application/json"),
    responses(
        (status = 200, description = "Metric objects, streamed", content_type = "application/json-seq"),
        (status = 400, description = "Invalid request", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn post_livemetrics(
    State(app): State<AppState>,
    origin: RequestOrigin,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, Problem> {
    let mut validation = Validation::default();
    let request = LiveMetricsQuery::parse(query.as_deref(), &mut validation);
    let spec = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(document) => match LiveMetricsSpec::from_json(&document, app.metrics.interval()) {
            Ok(spec) => Some(spec),
            Err(errors) => {
                for (field, message) in errors {
                    validation.error(field, message);
                }
                None
            }
        },
        Err(error) => {
            validation.error(
                "body",
                format!("The request body is not valid JSON: {error}"),
            );
            None
        }
    };
    let (request, spec) = validation.finish((request, spec))?;
    let spec = spec.ok_or_else(|| Problem::bad_request("the request body is invalid"))?;
    start_livemetrics(app, origin, request, spec).await
}

/// Resolves the process, registers the operation, starts the session and streams its records.
async fn start_livemetrics(
    app: AppState,
    origin: RequestOrigin,
    request: LiveMetricsQuery,
    spec: LiveMetricsSpec,
) -> Result<Response, Problem> {
    if request.egress_provider.is_some() {
        return Err(Problem::field(
            "egressProvider",
            "Live metrics are streamed in the response only; egress of live metrics is not available.",
        ));
    }
    let processes = app.processes.list().await;
    let process = resolve(&processes, &request.selector, &app.config.default_process)
        .map_err(|error| Problem::bad_request(error.to_string()))?;
    let operation = app
        .operations
        .register(OperationProcess::from(process), None, request.tags);
    let Ok(location) =
        HeaderValue::from_str(&origin.url(&format!("/operations/{}", operation.id())))
    else {
        return Err(fail(
            &operation,
            "BadRequest",
            "The request's Host header cannot form a Location URL.".to_owned(),
        ));
    };
    let live = match LiveMetrics::start(&app.processes.client(process), spec).await {
        Ok(live) => live,
        Err(error) => {
            let message = format!(
                "Cannot start live metrics of process {}: {error}",
                process.pid
            );
            return Err(fail(&operation, "RuntimeError", message));
        }
    };
    operation.mark_running(live.stop_handle());
    let (sender, mut receiver) = tokio::sync::mpsc::channel(16);
    tokio::spawn(stream_livemetrics(
        operation,
        live,
        request.duration,
        sender,
    ));
    let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(live::CONTENT_TYPE),
    );
    let file_name = format!(
        "{}_{}.metrics.json",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(['-', ':'], "")
            .replace('T', "_")
            .trim_end_matches('Z'),
        process.pid
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename={file_name}")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::LOCATION, location);
    Ok(response)
}

/// Sends the records until the duration ends, a stop ends the session, the client goes away or
/// the operation is cancelled; then records how it ended.
async fn stream_livemetrics(
    operation: std::sync::Arc<Operation>,
    mut live: LiveMetrics,
    duration: Option<Duration>,
    sender: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let deadline = async {
        match duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut hasher = sha2::Sha256::new();
    let mut bytes = 0u64;
    let outcome = loop {
        let chunk = tokio::select! {
            chunk = live.next_chunk() => chunk,
            _ = &mut deadline => break Ok(()),
            _ = operation.cancellation().cancelled() => return,
        };
        match chunk {
            Ok(Some(chunk)) => {
                hasher.update(&chunk);
                bytes += chunk.len() as u64;
                operation.add_bytes(chunk.len() as u64);
                if sender.send(Ok(chunk)).await.is_err() {
                    operation.finish(Outcome::Cancelled("the client went away".to_owned()));
                    return;
                }
            }
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    match outcome {
        Ok(()) => operation.finish(Outcome::Succeeded {
            resource_location: None,
            summary: TraceSummary {
                bytes,
                events: 0,
                blocks: 0,
                dropped_events_estimate: 0,
                events_by_provider: Default::default(),
                sha256: hasher
                    .finalize()
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect(),
            },
        }),
        Err(error) => {
            // Abort the body (no final chunk), so the client sees a cut-short stream.
            let _ = sender
                .send(Err(std::io::Error::other(error.to_string())))
                .await;
            operation.finish(Outcome::Failed(OperationError {
                code: "RuntimeError".to_owned(),
                message: format!("Live metrics ended early: {error}"),
            }));
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

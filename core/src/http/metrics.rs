//! `GET /metrics`: the counters of every observed process and diagmon's own metrics, in the
//! Prometheus text format (or OpenMetrics when the `Accept` header asks for it); and the
//! middleware that counts every request for those own metrics.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{MatchedPath, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::params::{DestinationQuery, DurationQuery, ProcessQuery, QueryParams};
use super::problem::{Problem, Validation};
use super::{AppState, RequestOrigin};
use crate::metrics::live::LiveMetricsSpec;
use crate::metrics::prometheus;
use crate::operations::{Destination, StartRequest};
use crate::processes::ProcessSelector;
use crate::telemetry as own;

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
///
/// It runs outside the routing (so that refused and unknown requests are counted too); the
/// route pattern comes back on the response, put there by [`mark_route`].
pub async fn count_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    own::record_request(
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Copies the matched route pattern onto the response, for [`count_requests`].
pub async fn mark_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// The query parameters of `/livemetrics`.
struct LiveMetricsQuery {
    selector: ProcessSelector,
    duration: Option<Duration>,
    destination: Destination,
    tags: std::collections::BTreeSet<String>,
}

impl LiveMetricsQuery {
    fn parse(query: Option<&str>, validation: &mut Validation) -> Self {
        let params = QueryParams::parse(query);
        LiveMetricsQuery {
            selector: params.process_selector(validation),
            duration: params.duration(validation),
            destination: params.destination(),
            tags: params.tags(),
        }
    }
}

/// `GET /livemetrics`: the default providers' counters as a json-seq stream.
#[utoipa::path(get, path = "/livemetrics",
    params(
        ProcessQuery,
        DurationQuery,
        DestinationQuery,
    ),
    responses(
        (status = 200, description = "Metric objects, streamed", content_type = "application/json-seq"),
        (status = 202, description = "Accepted; the metrics go to the egress provider (see Location)"),
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
        ProcessQuery,
        DurationQuery,
        DestinationQuery,
    ),
    request_body(content = String, description = "EventMetricsConfiguration: {includeDefaultProviders, providers: [{providerName, counterNames}], meters: [{meterName, instrumentNames}]}", content_type = "application/json"),
    responses(
        (status = 200, description = "Metric objects, streamed", content_type = "application/json-seq"),
        (status = 202, description = "Accepted; the metrics go to the egress provider (see Location)"),
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

/// Starts the live-metrics artifact through the capture pipeline: streamed in the response, or
/// sent to the egress provider.
async fn start_livemetrics(
    app: AppState,
    origin: RequestOrigin,
    request: LiveMetricsQuery,
    spec: LiveMetricsSpec,
) -> Result<Response, Problem> {
    super::trace::check_location_base(&origin)?;
    let started = super::operations::service(&app)
        .start(StartRequest {
            artifact: spec,
            target: request.selector,
            destination: request.destination,
            tags: request.tags,
            duration: request.duration,
        })
        .await
        .map_err(super::trace::start_problem)?;
    super::trace::started_response(&origin, started)
}

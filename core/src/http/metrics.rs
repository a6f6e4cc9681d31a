//! `GET /metrics`: the counters of every observed process and diagmon's own metrics, in the
//! Prometheus text format (or OpenMetrics when the `Accept` header asks for it); and the
//! middleware that counts every request for those own metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::problem::Problem;
use crate::metrics::{own, prometheus};

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

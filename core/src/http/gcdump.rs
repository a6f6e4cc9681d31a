//! `GET /gcdump`: a heap snapshot (`.gcdump`), streamed in the response or sent to an egress
//! provider, through the operations' one entry point ([`GcDumpSpec`]).

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::params::{DestinationQuery, ProcessQuery, QueryParams};
use super::problem::{Problem, Validation};
use super::trace::{start_problem, started_response};
use super::{AppState, RequestOrigin};
use crate::gcdump::{DEFAULT_TIMEOUT, GcDumpSpec, MAX_TIMEOUT};
use crate::operations::{ArtifactKind, StartError, StartRequest};

/// `GET /gcdump`: the runtime walks its heap in an induced, blocking gen-2 GC; diagmon turns the
/// walk into a `.gcdump` file and streams it (200) or sends it to the egress provider (202).
#[utoipa::path(get, path = "/gcdump", params(
        ProcessQuery,
        DestinationQuery,
        ("timeoutSeconds" = Option<f64>, Query, description = "Deadline of the whole snapshot in seconds (default 30, at most 3600); past it the operation fails"),
        ("report" = Option<bool>, Query, description = "Put the heap report (objects and bytes per type) in the operation's summary"),
    ),
    responses(
        (status = 200, description = "The .gcdump file, streamed, named {yyyyMMdd_HHmmss_fff}_{pid}.gcdump", content_type = "application/octet-stream"),
        (status = 202, description = "Accepted; the file goes to the egress provider (see Location)"),
        (status = 400, description = "Invalid request", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "A gcdump of this process (or the gcdump limit) is already running", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_gcdump(
    State(app): State<AppState>,
    origin: RequestOrigin,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let params = QueryParams::parse(query.as_deref());
    let mut validation = Validation::default();
    let target = params.process_selector(&mut validation);
    let timeout = timeout(&params, &mut validation);
    let report = params.flag("report", &mut validation);
    let destination = params.destination();
    let tags = params.tags();
    validation.finish(())?;
    super::trace::check_location_base(&origin)?;
    let started = super::operations::service(&app)
        .start(StartRequest {
            artifact: GcDumpSpec { timeout, report },
            target,
            destination,
            tags,
            duration: None,
        })
        .await
        .map_err(|error| match error {
            StartError::RateLimited(ArtifactKind::GcDump) => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "A gcdump is already running and limits.max_concurrent_gcdumps ({}) allows no more; each gcdump induces a full blocking GC of its process: try again when it is done.",
                    app.config.limits.max_concurrent_gcdumps
                ),
            ),
            other => start_problem(other),
        })?;
    started_response(&origin, started)
}

/// `timeoutSeconds`: a positive number of seconds, at most [`MAX_TIMEOUT`].
fn timeout(params: &QueryParams, validation: &mut Validation) -> Duration {
    let Some(text) = params.get("timeoutSeconds").filter(|text| !text.is_empty()) else {
        return DEFAULT_TIMEOUT;
    };
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= MAX_TIMEOUT.as_secs_f64() => {
            Duration::from_secs_f64(seconds)
        }
        _ => {
            validation.error(
                "timeoutSeconds",
                format!(
                    "`{text}` is not a number of seconds above 0 and at most {}",
                    MAX_TIMEOUT.as_secs()
                ),
            );
            DEFAULT_TIMEOUT
        }
    }
}

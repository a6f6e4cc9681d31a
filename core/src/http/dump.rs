//! `GET /dump`: a process dump, streamed in the response or sent to an egress provider, through
//! the operations' one entry point ([`DumpSpec`]).

use axum::extract::{RawQuery, State};
use axum::response::Response;

use super::params::{DestinationQuery, ProcessQuery, QueryParams};
use super::problem::{Problem, Validation};
use super::trace::{start_problem, started_response};
use super::{AppState, RequestOrigin};
use crate::diagnostics::dump::{DumpType, UnknownDumpType};
use crate::dumps::DumpSpec;
use crate::operations::StartRequest;

/// `GET /dump?type=`: the runtime writes the dump into the dump folder; diagmon streams it (200)
/// or sends it to the egress provider (202), then deletes it.
#[utoipa::path(get, path = "/dump", params(
        ProcessQuery,
        ("type" = Option<String>, Query, description = "Mini, Full, WithHeap (default) or Triage, case-insensitive"),
        DestinationQuery,
    ),
    responses(
        (status = 200, description = "The dump, streamed: an ELF core file named core_{yyyyMMdd_HHmmss_fff}", content_type = "application/octet-stream"),
        (status = 202, description = "Accepted; the dump goes to the egress provider (see Location)"),
        (status = 400, description = "Invalid request, or the dump cannot be written (the detail says what to do)", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit reached, or a dump of this process is still being written", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_dump(
    State(app): State<AppState>,
    origin: RequestOrigin,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let params = QueryParams::parse(query.as_deref());
    let mut validation = Validation::default();
    let target = params.process_selector(&mut validation);
    let dump_type = match params.get("type").filter(|text| !text.is_empty()) {
        None => DumpType::default(),
        Some(text) => text.parse().unwrap_or_else(|error: UnknownDumpType| {
            validation.error("type", error.to_string());
            DumpType::default()
        }),
    };
    let destination = params.destination();
    let tags = params.tags();
    validation.finish(())?;
    super::trace::check_location_base(&origin)?;
    let started = super::operations::service(&app)
        .start(StartRequest {
            artifact: DumpSpec {
                folder: app.dumps.clone(),
                dump_type,
            },
            target,
            destination,
            tags,
            duration: None,
        })
        .await
        .map_err(start_problem)?;
    started_response(&origin, started)
}

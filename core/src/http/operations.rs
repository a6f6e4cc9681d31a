//! `GET /operations`, `GET /operations/{id}` and `DELETE /operations/{id}[?stop=true]`.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::AppState;
use super::params::QueryParams;
use super::problem::{Problem, Validation};
use crate::operations::{Operation, OperationFilter, OperationState, OperationStatus, Operations};

/// `GET /operations?pid=&uid=&name=&tags=`.
#[utoipa::path(get, path = "/operations", params(
        ("pid" = Option<u64>, Query, description = "Process id"),
        ("uid" = Option<uuid::Uuid>, Query, description = "Runtime instance uid"),
        ("name" = Option<String>, Query, description = "Process name"),
        ("tags" = Option<String>, Query, description = "Operations carrying all these comma-separated tags"),
), responses((status = 200, body = Vec<OperationStatus>)))]
pub async fn list_operations(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<OperationStatus>>, Problem> {
    let params = QueryParams::parse(query.as_deref());
    let mut validation = Validation::default();
    let filter = OperationFilter {
        process: params.process_selector(&mut validation),
        tags: params.tags(),
    };
    validation.finish(())?;
    Ok(Json(
        app.operations
            .list(&filter)
            .iter()
            .map(|op| op.status())
            .collect(),
    ))
}

/// `GET /operations/{id}`: 201 once Succeeded (as dotnet-monitor answers), else 200.
#[utoipa::path(get, path = "/operations/{id}", params(("id" = uuid::Uuid, Path, description = "Operation id")), responses((status = 200, body = OperationStatus), (status = 201, description = "Succeeded", body = OperationStatus), (status = 400, description = "Operation not found", body = Problem, content_type = "application/problem+json")))]
pub async fn get_operation(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let status = find(&app, &id)?.status();
    let code = if status.status == OperationState::Succeeded {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(status)).into_response())
}

/// `DELETE /operations/{id}`: cancel (200); with `stop=true`, a graceful stop (202).
#[utoipa::path(delete, path = "/operations/{id}", params(("id" = uuid::Uuid, Path, description = "Operation id"), ("stop" = Option<bool>, Query, description = "Stop gracefully instead of cancelling")), responses((status = 200, description = "Cancelled"), (status = 202, description = "Stopping"), (status = 400, description = "Not found, or not running", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_operation(
    State(app): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, Problem> {
    let params = QueryParams::parse(query.as_deref());
    let mut validation = Validation::default();
    let stop = params.flag("stop", &mut validation);
    validation.finish(())?;
    let operation = find(&app, &id)?;
    if stop {
        operation
            .request_stop()
            .map(|()| StatusCode::ACCEPTED)
            .map_err(|error| Problem::bad_request(error.to_string()))
    } else {
        operation
            .cancel()
            .map(|()| StatusCode::OK)
            .map_err(|error| Problem::bad_request(error.to_string()))
    }
}

/// The operations service over the application's registry, processes and egress providers.
pub(super) fn service(app: &AppState) -> Operations {
    Operations::new(
        app.operations.clone(),
        app.processes.clone(),
        app.egress.clone(),
        &app.config,
    )
}

fn find(app: &AppState, id: &str) -> Result<std::sync::Arc<Operation>, Problem> {
    let id: Uuid = id
        .parse()
        .map_err(|_| Problem::field("operationId", format!("`{id}` is not a GUID")))?;
    app.operations
        .get(id)
        .ok_or_else(|| Problem::bad_request("Operation not found."))
}

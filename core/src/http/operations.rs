//! `GET /operations`, `GET /operations/{id}` and `DELETE /operations/{id}[?stop=true]`.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::AppState;
use super::params::QueryParams;
use super::problem::{Problem, Validation};
use crate::operations::{Operation, OperationFilter, OperationState, OperationStatus};

/// `GET /operations?pid=&uid=&name=&tags=`.
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

fn find(app: &AppState, id: &str) -> Result<std::sync::Arc<Operation>, Problem> {
    let id: Uuid = id
        .parse()
        .map_err(|_| Problem::field("operationId", format!("`{id}` is not a GUID")))?;
    app.operations
        .get(id)
        .ok_or_else(|| Problem::bad_request("Operation not found."))
}

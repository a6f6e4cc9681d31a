//! `GET /processes`, `GET /process` and `GET /env`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Serialize;
use uuid::Uuid;

use super::AppState;
use super::params::{ProcessQuery, QueryParams};
use super::problem::{Problem, Validation};
use crate::processes::{ProcessRecord, ProcessSelector, resolve};

/// An entry of `GET /processes`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessIdentifier {
    pid: u64,
    uid: Uuid,
    name: String,
    is_default: bool,
}

/// `GET /process`: dotnet-monitor's ProcessInfo; unknown values are `"unknown"`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessDescription {
    pid: u64,
    uid: Uuid,
    name: String,
    command_line: String,
    operating_system: String,
    process_architecture: String,
    managed_entry_point_assembly_name: String,
    /// The runtime's product version, as the runtime reports it (.NET 5+; `"unknown"` before).
    runtime_version: String,
}

/// `GET /processes`: every process diagmon can see, never an error for none.
#[utoipa::path(get, path = "/processes", responses((status = 200, body = Vec<ProcessIdentifier>)))]
pub async fn list_processes(State(app): State<AppState>) -> Json<Vec<ProcessIdentifier>> {
    let processes = app.processes.list().await;
    let default = resolve(
        &processes,
        &ProcessSelector::default(),
        &app.config.default_process,
    )
    .ok()
    .map(|process| process.uid);
    Json(
        processes
            .iter()
            .map(|process| ProcessIdentifier {
                pid: process.pid,
                uid: process.uid,
                name: process.name.clone(),
                is_default: Some(process.uid) == default,
            })
            .collect(),
    )
}

/// `GET /process?pid=&uid=&name=`.
#[utoipa::path(get, path = "/process", params(
        ProcessQuery,
), responses((status = 200, body = ProcessDescription), (status = 400, description = "No single process matches, or invalid input", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn get_process(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<ProcessDescription>, Problem> {
    let process = select(&app, query.as_deref()).await?;
    let unknown = |value: Option<String>| value.unwrap_or_else(|| "unknown".to_owned());
    Ok(Json(ProcessDescription {
        pid: process.pid,
        uid: process.uid,
        name: process.name,
        command_line: process.command_line,
        operating_system: unknown(process.operating_system),
        process_architecture: unknown(process.process_architecture),
        managed_entry_point_assembly_name: unknown(process.managed_entry_point_assembly_name),
        runtime_version: unknown(process.clr_product_version),
    }))
}

/// `GET /env?pid=&uid=&name=`: the process's environment variables.
#[utoipa::path(get, path = "/env", params(
        ProcessQuery,
), responses((status = 200, body = BTreeMap<String, String>), (status = 400, description = "No single process matches, or invalid input", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn get_environment(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<BTreeMap<String, String>>, Problem> {
    let process = select(&app, query.as_deref()).await?;
    if !process.supports_process_commands {
        return Err(Problem::bad_request(format!(
            "Process {} runs a runtime without the ProcessEnvironment command (.NET Core 3.1); its environment cannot be read. .NET 5 or later is needed.",
            process.pid
        )));
    }
    app.processes
        .client(&process)
        .process_environment()
        .await
        .map(Json)
        .map_err(|error| {
            Problem::bad_request(format!(
                "Cannot read the environment of process {}: {error}",
                process.pid
            ))
        })
}

/// Resolves the process a request's `pid`, `uid` and `name` address.
async fn select(app: &AppState, query: Option<&str>) -> Result<ProcessRecord, Problem> {
    let params = QueryParams::parse(query);
    let mut validation = Validation::default();
    let selector = params.process_selector(&mut validation);
    validation.finish(())?;
    let processes = app.processes.list().await;
    resolve(&processes, &selector, &app.config.default_process)
        .cloned()
        .map_err(|error| Problem::bad_request(error.to_string()))
}

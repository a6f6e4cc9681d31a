//! `GET /collectionrules` and `GET /collectionrules/{name}`: the collection rules that apply to
//! a process and their states (dotnet-monitor's `Running`, `ActionExecuting`, `Throttled`,
//! `Finished`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;

use super::AppState;
use super::params::{ProcessQuery, QueryParams};
use super::problem::{Problem, Validation};
use crate::processes::{ProcessRecord, resolve};
use crate::rules::state::{RuleDescription, RuleDetailedDescription};

/// `GET /collectionrules?pid=&uid=&name=`: every rule that applies to the process, by name.
#[utoipa::path(get, path = "/collectionrules", params(
        ProcessQuery,
), responses((status = 200, body = BTreeMap<String, RuleDescription>), (status = 400, description = "No single process matches, or invalid input", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn list_collection_rules(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<BTreeMap<String, RuleDescription>>, Problem> {
    let process = select(&app, query.as_deref()).await?;
    Ok(Json(app.rules.describe(process.uid)))
}

/// `GET /collectionrules/{name}?pid=&uid=&name=`: one rule's state and counters on the process.
#[utoipa::path(get, path = "/collectionrules/{collectionRuleName}", params(
        ("collectionRuleName" = String, Path, description = "The rule's name"),
        ProcessQuery,
), responses((status = 200, body = RuleDetailedDescription), (status = 400, description = "No single process matches, or invalid input", body = super::problem::Problem, content_type = "application/problem+json"), (status = 404, description = "No such rule applies to the process", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn get_collection_rule(
    State(app): State<AppState>,
    Path(rule): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<RuleDetailedDescription>, Problem> {
    let process = select(&app, query.as_deref()).await?;
    app.rules
        .describe_rule(process.uid, &rule)
        .map(Json)
        .ok_or_else(|| {
            let known = app.rules.config();
            let detail = if known.rules.contains_key(&rule) {
                format!(
                    "The collection rule `{rule}` does not apply to process {} (its filters do not match, or it was just configured).",
                    process.pid
                )
            } else {
                format!("There is no collection rule `{rule}`; configure it under [collection_rules.{rule}].")
            };
            Problem::new(StatusCode::NOT_FOUND, detail)
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

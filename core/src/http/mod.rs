//! The HTTP API: dotnet-monitor's routes, parameters and JSON shapes, served with axum.
//!
//! Handlers live in one module per resource ([`trace`], [`processes`], [`operations`]); every
//! error leaves as [`problem::Problem`] (`application/problem+json`). [`guard`] screens every
//! request before routing (Host, Origin, API key, shutdown). Serving the router on sockets is
//! [`crate::server`]'s job.

pub mod collection_rules;
pub mod dump;
pub mod egress_providers;
pub mod gcdump;
pub mod guard;
pub mod metrics;
pub mod openapi;
pub mod operations;
pub mod params;
pub mod problem;
pub mod processes;
pub mod trace;
pub mod ui;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::{Config, Scheme};
use crate::egress::EgressHost;
use crate::operations::OperationRegistry;
use crate::processes::{Discovery, ProcessDirectory};

pub use guard::Screen;
use problem::Problem;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// The runtimes diagmon can see.
    pub processes: ProcessDirectory,
    /// All operations.
    pub operations: Arc<OperationRegistry>,
    /// The loaded egress providers.
    pub egress: EgressHost,
    /// The folder the runtime writes dumps into.
    pub dumps: Arc<crate::dumps::DumpFolder>,
    /// The background counter sessions behind `/metrics`.
    pub metrics: Arc<crate::metrics::MetricsService>,
    /// The collection rules and their states.
    pub rules: Arc<crate::rules::RulesService>,
}

/// The scheme of the listener a request came in on; the server attaches it to every request.
#[derive(Debug, Clone, Copy)]
pub struct ListenerScheme(pub Scheme);

/// The scheme and host a request came in on, to build absolute URLs (the `Location` header).
#[derive(Debug, Clone)]
pub struct RequestOrigin {
    scheme: &'static str,
    host: String,
}

impl RequestOrigin {
    /// The absolute URL of `path` on this origin.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.host, path)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestOrigin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let scheme = parts
            .extensions
            .get::<ListenerScheme>()
            .map_or("http", |scheme| scheme.0.as_str());
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .ok_or_else(|| Problem::bad_request("The request has no Host header."))?;
        Ok(RequestOrigin { scheme, host })
    }
}

/// `GET /info`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct MonitorInfo {
    version: &'static str,
    runtime_version: Option<String>,
    diagnostic_port_mode: &'static str,
    diagnostic_port_name: Option<String>,
    capabilities: Vec<Capability>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Capability {
    name: &'static str,
    enabled: bool,
}

/// `GET /info`.
#[utoipa::path(get, path = "/info", responses((status = 200, body = MonitorInfo)))]
async fn info(axum::extract::State(app): axum::extract::State<AppState>) -> Json<MonitorInfo> {
    let (mode, name) = match app.processes.discovery() {
        Discovery::Connect { .. } => ("Connect", None),
        Discovery::Listen(port) => ("Listen", Some(port.path().display().to_string())),
    };
    Json(MonitorInfo {
        version: env!("CARGO_PKG_VERSION"),
        runtime_version: None,
        diagnostic_port_mode: mode,
        diagnostic_port_name: name,
        // dotnet-monitor's capabilities (9.1+), each with whether diagmon has it here, then
        // diagmon's own.
        capabilities: [
            ("exceptions", false),
            ("parameters", false),
            ("call_stacks", false),
            ("metrics", app.config.metrics.enabled),
            ("http_egress", true),
            ("trace", true),
            ("egress", !app.config.egress.providers.is_empty()),
        ]
        .into_iter()
        .map(|(name, enabled)| Capability { name, enabled })
        .collect(),
    })
}

async fn health() -> &'static str {
    "ok"
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "No such route.")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "This route does not accept that method.",
    )
}

/// What a `[metrics] urls` listener serves: `/metrics` alone (and `/healthz`), behind the same
/// screen as the API, so that `[metrics] require_auth` and the Host checks hold there too.
pub fn metrics_router(state: AppState, screen: Screen) -> Router {
    let screen = screen.with_public_metrics(!state.config.metrics.require_auth);
    let routes = Router::new()
        .route("/metrics", get(metrics::get_metrics))
        .route("/healthz", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(metrics::mark_route))
        .with_state(state);
    screened(routes, screen)
}

/// Wraps `routes` in the layers every listener has: the screen before routing, request
/// counting and tracing.
fn screened(routes: Router, screen: Screen) -> Router {
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn_with_state(screen, guard::screen))
        .layer(axum::middleware::from_fn(metrics::count_requests))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
}

/// The API routes and the web console's static files ([`ui`]), with [`guard::screen`] around
/// the routing itself: it runs before a route is chosen, so answers for unknown routes and
/// methods (404, 405 with `Allow`) are only given to requests that passed it.
pub fn router(state: AppState, screen: Screen) -> Router {
    let body_limit = state.config.limits.max_request_body_bytes;
    // `/metrics` needs no API key unless `[metrics] require_auth` (dotnet-monitor: never).
    let screen = screen.with_public_metrics(!state.config.metrics.require_auth);
    let routes = Router::new()
        .route("/metrics", get(metrics::get_metrics))
        .route("/processes", get(processes::list_processes))
        .route("/process", get(processes::get_process))
        .route("/env", get(processes::get_environment))
        .route("/trace", get(trace::get_trace).post(trace::post_trace))
        .route("/dump", get(dump::get_dump))
        .route("/gcdump", get(gcdump::get_gcdump))
        .route(
            "/livemetrics",
            get(metrics::get_livemetrics).post(metrics::post_livemetrics),
        )
        .route(
            "/collectionrules",
            get(collection_rules::list_collection_rules),
        )
        .route(
            "/collectionrules/{name}",
            get(collection_rules::get_collection_rule),
        )
        .route("/operations", get(operations::list_operations))
        .route(
            "/operations/{id}",
            get(operations::get_operation).delete(operations::delete_operation),
        )
        .route("/info", get(info))
        .route("/egress", get(egress_providers::list_egress_providers))
        .route("/healthz", get(health))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(metrics::mark_route))
        .with_state(state);
    screened(routes, screen)
}

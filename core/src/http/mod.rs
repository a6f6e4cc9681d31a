//! The HTTP API: dotnet-monitor's routes, parameters and JSON shapes, served with axum.
//!
//! Handlers live in one module per resource ([`trace`], [`processes`], [`operations`]); every
//! error leaves as [`problem::Problem`] (`application/problem+json`).

pub mod egress_providers;
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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::Config;
use crate::egress::EgressHost;
use crate::operations::OperationRegistry;
use crate::processes::{Discovery, ProcessDirectory};

use problem::Problem;

/// How long a shutdown waits for running operations to finish after asking them to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

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
    /// The background counter sessions behind `/metrics`.
    pub metrics: Arc<crate::metrics::MetricsService>,
}

/// The scheme a listener serves, attached to its requests.
#[derive(Debug, Clone, Copy)]
struct ListenerScheme(&'static str);

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
            .map_or("http", |scheme| scheme.0);
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
        capabilities: vec![
            Capability {
                name: "trace",
                enabled: true,
            },
            Capability {
                name: "egress",
                enabled: !app.config.egress.providers.is_empty(),
            },
        ],
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

/// The API routes, with `authenticate` wrapped around every route except `/healthz`,
/// `/openapi.json` and the web console's static files ([`ui`]).
pub fn router(state: AppState, authenticate: crate::auth::Authenticator) -> Router {
    let body_limit = state.config.limits.max_request_body_bytes;
    // `/metrics` needs no API key unless `[metrics] require_auth` (dotnet-monitor: never).
    let metrics_route = get(metrics::get_metrics);
    let (authenticated_metrics, open_metrics) = if state.config.metrics.require_auth {
        (
            Router::new().route("/metrics", metrics_route),
            Router::new(),
        )
    } else {
        (
            Router::new(),
            Router::new().route("/metrics", metrics_route),
        )
    };
    Router::new()
        .merge(authenticated_metrics)
        .route("/processes", get(processes::list_processes))
        .route("/process", get(processes::get_process))
        .route("/env", get(processes::get_environment))
        .route("/trace", get(trace::get_trace).post(trace::post_trace))
        .route(
            "/livemetrics",
            get(metrics::get_livemetrics).post(metrics::post_livemetrics),
        )
        .route("/operations", get(operations::list_operations))
        .route(
            "/operations/{id}",
            get(operations::get_operation).delete(operations::delete_operation),
        )
        .route("/info", get(info))
        .route("/egress", get(egress_providers::list_egress_providers))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            authenticate,
            crate::auth::require_auth,
        ))
        .route("/healthz", get(health))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(open_metrics)
        .merge(ui::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(metrics::count_requests))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}

/// Runs the server on every configured URL until `shutdown` resolves; then asks running
/// operations to stop gracefully (so their artifacts are complete), waits for them and returns.
pub async fn serve(
    config: Config,
    authenticate: crate::auth::Authenticator,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let discovery = match &config.diagnostic_port {
        Some(port) => {
            let port = crate::diagnostics::reverse::ReversePort::bind(&port.endpoint_name)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on the diagnostic port {}",
                        port.endpoint_name.display()
                    )
                })?;
            tokio::spawn(resume_new_runtimes(port.clone()));
            Discovery::Listen(port)
        }
        None => Discovery::Connect {
            socket_dir: config
                .socket_dir
                .clone()
                .unwrap_or_else(crate::diagnostics::endpoint::default_socket_dir),
        },
    };
    let tls = if config.urls.iter().any(|url| url.starts_with("https://")) {
        let tls = config.tls.clone().context(
            "`urls` has an https:// address but no [tls] certificate and key are configured",
        )?;
        crate::tls::load_server_config(&tls)?;
        Some(tls)
    } else {
        None
    };
    let egress = EgressHost::load(&config.egress).await?;
    if !config.egress.providers.is_empty() {
        tracing::info!(providers = ?egress.provider_names(), "egress providers loaded");
    }
    let operations = Arc::new(OperationRegistry::new(&config.limits, &config.operations));
    let processes = ProcessDirectory::new(discovery, crate::diagnostics::Timeouts::default());
    let metrics = crate::metrics::MetricsService::new(config.metrics.clone());
    let stop_metrics = CancellationToken::new();
    metrics.spawn(processes.clone(), stop_metrics.clone());
    let state = AppState {
        metrics,
        processes,
        operations: operations.clone(),
        egress,
        config: Arc::new(config.clone()),
    };
    let app = router(state, authenticate.clone());

    let mut listeners = Vec::new();
    for url in &config.urls {
        let (scheme, address) = parse_url(url)?;
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("cannot listen on {url}"))?;
        let local = listener.local_addr()?;
        if scheme == "http" && authenticate.is_enabled() && !local.ip().is_loopback() {
            tracing::warn!(url = %url, "API keys will travel unencrypted over plain http on a non-loopback address; use https://");
        }
        println!("diagmon listening on {scheme}://{local}");
        tracing::info!(url = %format!("{scheme}://{local}"), "listening");
        listeners.push((scheme, listener));
    }

    let stopping = CancellationToken::new();
    tokio::spawn({
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: stopping running operations gracefully");
            operations.stop_all(SHUTDOWN_GRACE).await;
            stop_metrics.cancel();
            stopping.cancel();
        }
    });
    let mut servers = Vec::new();
    for (scheme, listener) in listeners {
        let app = app.clone().layer(Extension(ListenerScheme(scheme)));
        let stopping = stopping.clone();
        let tls = tls.clone();
        servers.push(tokio::spawn(async move {
            match (scheme, tls) {
                ("https", Some(tls)) => {
                    crate::tls::serve_https(listener, app, &tls, stopping.cancelled_owned())
                        .await
                        .map_err(anyhow::Error::from)
                }
                _ => axum::serve(listener, app)
                    .with_graceful_shutdown(stopping.cancelled_owned())
                    .await
                    .map_err(anyhow::Error::from),
            }
        }));
    }
    for server in servers {
        server.await??;
    }
    Ok(())
}

/// Resumes every runtime that connects to the diagnostic port, as dotnet-monitor does once it
/// has nothing to start before the runtime runs: a runtime started with `suspend` waits for it
/// (for a runtime that was not suspended, ResumeRuntime does nothing).
async fn resume_new_runtimes(port: crate::diagnostics::reverse::ReversePort) {
    use crate::diagnostics::endpoint::Endpoint;
    use crate::diagnostics::{DiagnosticsClient, Timeouts};
    let mut arrivals = port.subscribe();
    loop {
        let runtime = match arrivals.recv().await {
            Ok(runtime) => runtime,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "runtimes arrived faster than they could be resumed");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let endpoint = Endpoint::Reverse {
            port: port.clone(),
            cookie: runtime.cookie,
        };
        let client = DiagnosticsClient::new(endpoint, Timeouts::default());
        tokio::spawn(async move {
            match client.resume_runtime().await {
                Ok(()) => tracing::info!(pid = runtime.pid, "runtime resumed"),
                Err(error) => {
                    tracing::warn!(pid = runtime.pid, %error, "cannot resume the runtime")
                }
            }
        });
    }
}

/// Splits `http://host:port` into the scheme and a bindable `host:port`.
fn parse_url(url: &str) -> anyhow::Result<(&'static str, String)> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|error| anyhow::anyhow!("`{url}` in `urls` is not a URL: {error}"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => "http",
        Some("https") => "https",
        Some(other) => anyhow::bail!(
            "`{url}` in `urls`: the scheme `{other}` is not supported; use http:// or https://"
        ),
        None => anyhow::bail!("`{url}` in `urls` needs a scheme, e.g. http://127.0.0.1:52323"),
    };
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("`{url}` in `urls` has no host"))?;
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((
        scheme,
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        },
    ))
}

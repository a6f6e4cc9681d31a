//! The server's composition: what `diagmon collect` starts and how it stops.
//!
//! [`run`] starts process discovery (connect or listen mode), loads the egress providers, binds
//! every URL, serves the API ([`crate::http::router`]) on each under the connection limits of
//! `[http]` ([`connection`]), runs the collection rules ([`crate::rules`]), watches the config
//! file for key changes ([`key_reload`]) and rule changes and, when
//! the shutdown future resolves, stops:
//!
//! 1. new traces are refused with 503 (other routes still answer, so clients can follow their
//!    operations) and running operations are asked to stop gracefully (rundown, complete
//!    artifacts);
//! 2. once they have finished, the listeners stop accepting and open connections close after
//!    their in-flight responses;
//! 3. at `http.shutdown_timeout_seconds` after the signal, whatever is unfinished is cancelled
//!    (its operation reads Cancelled, its artifact is aborted, never completed) and the
//!    remaining connections are dropped.
//!
//! [`signals`] turns SIGTERM/SIGINT into that shutdown future; a second signal exits at once.

pub mod connection;
pub mod key_reload;
pub mod signals;

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::{Config, Scheme};
use crate::diagnostics::reverse::ReversePort;
use crate::diagnostics::{DiagnosticsClient, Timeouts, endpoint};
use crate::egress::EgressHost;
use crate::http::{AppState, Screen};
use crate::operations::{OperationFilter, OperationRegistry, Operations};
use crate::processes::{Discovery, ProcessDirectory};

pub use connection::{ConnectionLimits, Stopping, serve_listener};

/// How the server authenticates, as `collect`'s flags chose.
#[derive(Debug, Clone)]
pub struct ServerAuth {
    /// Decides about each request.
    pub authenticator: Authenticator,
    /// The config file whose `[authentication]` section the authenticator follows; `None`
    /// when the key does not come from a file (`--temp-apikey`, `--no-auth`, no file).
    pub watched_file: Option<PathBuf>,
    /// With authentication off: serve on addresses other machines can reach too
    /// (`--allow-no-auth-on-network`).
    pub no_auth_on_network: bool,
}

/// Runs the server on every configured URL until `shutdown` resolves, then stops it as the
/// module documentation says.
pub async fn run(
    config: Config,
    auth: ServerAuth,
    config_file: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let urls = config.listen_urls()?;
    let metrics_urls = config.metrics_listen_urls()?;
    let no_auth = !auth.authenticator.is_enabled();
    if no_auth && !auth.no_auth_on_network {
        let remote: Vec<&str> = config
            .urls
            .iter()
            .zip(&urls)
            .filter(|(_, url)| !url.is_loopback)
            .map(|(text, _)| text.as_str())
            .collect();
        if !remote.is_empty() {
            anyhow::bail!(
                "--no-auth would open {} to other machines without authentication; \
                 serve on 127.0.0.1 or add --allow-no-auth-on-network if that is really meant",
                remote.join(", ")
            );
        }
    }
    let tls = if urls
        .iter()
        .chain(&metrics_urls)
        .any(|url| url.scheme == Scheme::Https)
    {
        let tls = config.tls.as_ref().context(
            "`urls` has an https:// address but no [tls] certificate and key are configured",
        )?;
        Some(crate::tls::load_server_config(tls)?)
    } else {
        None
    };

    let (discovery, arrivals) = start_discovery(&config).await?;
    let egress = EgressHost::load(&config.egress).await?;
    if !config.egress.providers.is_empty() {
        tracing::info!(providers = ?egress.provider_names(), "egress providers loaded");
    }
    let rules_config =
        crate::rules::config::parse(&config.collection_rules, &egress.provider_names())?;
    let operations = Arc::new(OperationRegistry::new(&config.limits, &config.operations));
    let dumps = crate::dumps::DumpFolder::open(&config.storage)?;
    let processes = ProcessDirectory::new(discovery, config.runtime.timeouts());
    let metrics = crate::metrics::MetricsService::new(config.metrics.clone());
    let stop_metrics = CancellationToken::new();
    metrics.spawn(processes.clone(), stop_metrics.clone());
    let rules = crate::rules::RulesService::new(
        rules_config,
        crate::rules::actions::ActionEnv {
            operations: Operations::new(
                operations.clone(),
                processes.clone(),
                egress.clone(),
                &config,
            ),
            processes: processes.clone(),
            dumps: dumps.clone(),
            counter_interval: metrics.interval(),
            allow_execute: false,
        },
        metrics.clone(),
    );
    rules.spawn();
    if let Some(arrivals) = arrivals {
        tokio::spawn(resume_new_runtimes(arrivals, rules.clone()));
    }
    let rules_reload = config_file.map(|file| {
        tokio::spawn(crate::rules::watch_config_file(
            file,
            rules.clone(),
            egress.provider_names(),
        ))
    });
    let state_rules = rules.clone();
    let state = AppState {
        dumps: dumps.clone(),
        metrics,
        rules,
        processes,
        operations: operations.clone(),
        egress,
        config: Arc::new(config.clone()),
    };
    let screen = Screen::new(auth.authenticator.clone(), &config.http);
    let metrics_app = crate::http::metrics_router(state.clone(), screen.clone());
    let app = crate::http::router(state, screen.clone());

    let mut listeners = Vec::new();
    for (text, url) in config.urls.iter().zip(&urls) {
        let listener = TcpListener::bind(&url.address)
            .await
            .with_context(|| format!("cannot listen on {text}"))?;
        let local = listener.local_addr()?;
        if no_auth && !auth.no_auth_on_network && !local.ip().is_loopback() {
            anyhow::bail!(
                "--no-auth: {text} is bound to {local}, which is not a loopback address; \
                 serve on 127.0.0.1 or add --allow-no-auth-on-network if that is really meant"
            );
        }
        if url.scheme == Scheme::Http && !no_auth && !local.ip().is_loopback() {
            tracing::warn!(url = %text, "API keys will travel unencrypted over plain http on a non-loopback address; use https://");
        }
        let shown = format!("{}://{local}", url.scheme.as_str());
        // Best effort: a closed standard output must not stop the server.
        let _ = writeln!(std::io::stdout(), "diagmon listening on {shown}");
        tracing::info!(url = %shown, "listening");
        listeners.push((url.scheme, listener, app.clone()));
    }
    // `/metrics` alone: it needs a key only with `[metrics] require_auth`, like on the API URLs,
    // so serving it on another address opens nothing more than the API URLs do.
    for (text, url) in config.metrics.urls.iter().zip(&metrics_urls) {
        let listener = TcpListener::bind(&url.address)
            .await
            .with_context(|| format!("cannot listen on the metrics URL {text}"))?;
        let shown = format!("{}://{}", url.scheme.as_str(), listener.local_addr()?);
        let _ = writeln!(std::io::stdout(), "diagmon serving /metrics on {shown}");
        tracing::info!(url = %shown, "serving /metrics");
        listeners.push((url.scheme, listener, metrics_app.clone()));
    }

    let key_reload = auth
        .watched_file
        .map(|file| tokio::spawn(key_reload::watch_config_file(file, auth.authenticator)));
    let limits = Arc::new(ConnectionLimits::new(&config.http));
    let stopping = Stopping::default();
    let mut servers = Vec::new();
    for (scheme, listener, app) in listeners {
        let tls = (scheme == Scheme::Https).then(|| tls.clone()).flatten();
        servers.push(tokio::spawn(serve_listener(
            listener,
            tls,
            app,
            limits.clone(),
            stopping.clone(),
        )));
    }

    shutdown.await;
    let deadline = Instant::now() + config.http.shutdown_timeout();
    tracing::info!(
        deadline_seconds = config.http.shutdown_timeout_seconds,
        "shutting down: new traces are refused; running operations are asked to stop gracefully"
    );
    screen.start_shutdown();
    if let Some(key_reload) = key_reload {
        key_reload.abort();
    }
    if let Some(rules_reload) = rules_reload {
        rules_reload.abort();
    }
    state_rules.stop();
    operations
        .stop_all(deadline.saturating_duration_since(Instant::now()))
        .await;
    dumps
        .shutdown(deadline.saturating_duration_since(Instant::now()))
        .await;
    stop_metrics.cancel();
    stopping.drain.cancel();
    let mut servers = futures_util::future::join_all(servers);
    if tokio::time::timeout_at(deadline, &mut servers)
        .await
        .is_err()
    {
        let unfinished = cancel_unfinished(&operations);
        tracing::warn!(
            unfinished,
            "the shutdown deadline passed: unfinished operations are cancelled and open connections dropped"
        );
        stopping.abort.cancel();
        servers.await;
    } else {
        // Operations that outlived their graceful stop but whose connections closed.
        cancel_unfinished(&operations);
    }
    tracing::info!("stopped");
    Ok(())
}

/// Cancels every operation that has not finished (its artifact is aborted); returns how many.
fn cancel_unfinished(operations: &OperationRegistry) -> usize {
    operations
        .list(&OperationFilter::default())
        .iter()
        .filter(|operation| !operation.state().is_final())
        .filter(|operation| operation.cancel().is_ok())
        .count()
}

/// Finds runtimes by their sockets (connect mode) or binds the diagnostic port (listen mode);
/// in listen mode, also the runtimes that connect from now on, to resume them.
async fn start_discovery(config: &Config) -> anyhow::Result<(Discovery, Option<Arrivals>)> {
    Ok(match &config.diagnostic_port {
        Some(port) => {
            let port = ReversePort::bind(&port.endpoint_name, port.limits())
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on the diagnostic port {}",
                        port.endpoint_name.display()
                    )
                })?;
            let arrivals = Arrivals {
                receiver: port.subscribe(),
                port: port.clone(),
            };
            (Discovery::Listen(port), Some(arrivals))
        }
        None => (
            Discovery::Connect {
                socket_dir: config
                    .socket_dir
                    .clone()
                    .unwrap_or_else(endpoint::default_socket_dir),
            },
            None,
        ),
    })
}

/// The runtimes that connect to the diagnostic port, from its binding on.
struct Arrivals {
    receiver: tokio::sync::broadcast::Receiver<crate::diagnostics::reverse::AdvertisedRuntime>,
    port: ReversePort,
}

/// The longest a new runtime waits for its collection rules to be under way before it is resumed.
const RULES_BEFORE_RESUME: std::time::Duration = std::time::Duration::from_secs(30);

/// Resumes every runtime that connects to the diagnostic port once its collection rules are
/// under way (Startup actions started), as dotnet-monitor does: a runtime started with
/// `suspend` waits for it (for a runtime that was not suspended, ResumeRuntime does nothing).
async fn resume_new_runtimes(arrivals: Arrivals, rules: Arc<crate::rules::RulesService>) {
    use endpoint::Endpoint;
    let Arrivals {
        receiver: mut arrivals,
        port,
    } = arrivals;
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
        let rules = rules.clone();
        tokio::spawn(async move {
            rules
                .start_before_resume(runtime.cookie, RULES_BEFORE_RESUME)
                .await;
            match client.resume_runtime().await {
                Ok(()) => tracing::info!(pid = runtime.pid, "runtime resumed"),
                Err(error) => {
                    tracing::warn!(pid = runtime.pid, %error, "cannot resume the runtime")
                }
            }
        });
    }
}

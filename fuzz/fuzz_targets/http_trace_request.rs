//! `POST /trace` and `GET /trace` through diagmon's router, with an arbitrary query and body: the
//! query parsers (process selector, duration, tags, profiles) and the provider-spec parser of the
//! body. No process is observable, so a request either fails validation or finds no process; it
//! must always be answered with an `application/problem+json` client error, never a panic or a
//! server error.
//!
//! Input: the first byte picks the method (even: POST, odd: GET), the rest up to the first `\n`
//! is the query (its bytes percent-encoded, except `&` and `=`), the remainder the body.

#![no_main]

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use diagmon::auth::Authenticator;
use diagmon::config::{Config, StorageConfig};
use diagmon::dumps::DumpFolder;
use diagmon::egress::EgressHost;
use diagmon::http::{AppState, Screen, router};
use diagmon::metrics::MetricsService;
use diagmon::operations::{OperationRegistry, Operations};
use diagmon::processes::{Discovery, ProcessDirectory};
use diagmon::rules::RulesService;
use diagmon::rules::actions::ActionEnv;
use diagmon::rules::config::RulesConfig;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// The router (over an empty socket directory, with a dump folder inside it) and the runtime that
/// drives it, made once.
struct Server {
    runtime: tokio::runtime::Runtime,
    router: Router,
    _socket_dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let socket_dir = tempfile::tempdir().expect("a temporary socket directory");
        let config = Config::default();
        let processes = ProcessDirectory::new(
            Discovery::Connect {
                socket_dir: socket_dir.path().to_owned(),
            },
            config.runtime.timeouts(),
        );
        let operations = Arc::new(OperationRegistry::new(&config.limits, &config.operations));
        let dumps = DumpFolder::open(&StorageConfig {
            dump_temp_folder: Some(socket_dir.path().join("dumps")),
            ..StorageConfig::default()
        })
        .expect("a dump folder");
        let metrics = MetricsService::new(config.metrics.clone());
        let rules = RulesService::new(
            RulesConfig::default(),
            ActionEnv {
                operations: Operations::new(
                    operations.clone(),
                    processes.clone(),
                    EgressHost::default(),
                    &config,
                ),
                processes: processes.clone(),
                dumps: dumps.clone(),
                counter_interval: metrics.interval(),
                allow_execute: false,
            },
            metrics.clone(),
        );
        let state = AppState {
            processes,
            operations,
            egress: EgressHost::default(),
            dumps,
            metrics,
            rules,
            config: Arc::new(config),
        };
        let screen = Screen::new(Authenticator::disabled(), &state.config.http);
        Server {
            router: router(state, screen),
            runtime,
            _socket_dir: socket_dir,
        }
    })
}

/// Percent-encodes every byte but unreserved characters and the query's own `&` and `=`.
fn encode_query(bytes: &[u8]) -> String {
    let mut query = String::with_capacity(bytes.len() * 3);
    for byte in bytes {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'&' | b'=' => {
                query.push(char::from(*byte));
            }
            _ => query.push_str(&format!("%{byte:02X}")),
        }
    }
    query
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, rest)) = data.split_first() else {
        return;
    };
    let (query, body) = match rest.iter().position(|byte| *byte == b'\n') {
        Some(end) => (&rest[..end], &rest[end + 1..]),
        None => (rest, &[][..]),
    };
    let method = if selector % 2 == 0 {
        Method::POST
    } else {
        Method::GET
    };
    let request = Request::builder()
        .method(method)
        .uri(format!("/trace?{}", encode_query(query)))
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a well-formed request");
    let server = server();
    let response = server
        .runtime
        .block_on(server.router.clone().oneshot(request))
        .expect("the router is infallible");
    let status = response.status();
    assert!(status.is_client_error(), "answered {status}");
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok()),
        Some("application/problem+json"),
        "a {status} without a problem body"
    );
});

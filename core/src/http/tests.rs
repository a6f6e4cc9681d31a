//! The router in-process (`tower::ServiceExt::oneshot`): validation, authentication and problem
//! bodies, which need no runtime. Routes that capture from a runtime are tested end to end.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AppState, Screen, router};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::diagnostics::Timeouts;
use crate::egress::EgressHost;
use crate::operations::OperationRegistry;
use crate::processes::{Discovery, ProcessDirectory};

/// The API over an empty socket directory (no runtime is observable), with `authenticator`.
fn app(socket_dir: &std::path::Path, authenticator: Authenticator) -> Router {
    let mut config = Config::default();
    config.socket_dir = Some(socket_dir.to_owned());
    let processes = ProcessDirectory::new(
        Discovery::Connect {
            socket_dir: socket_dir.to_owned(),
        },
        Timeouts::default(),
    );
    let operations = Arc::new(OperationRegistry::new(&config.limits, &config.operations));
    let dumps = crate::dumps::DumpFolder::open(&crate::config::StorageConfig {
        dump_temp_folder: Some(socket_dir.join("dumps")),
        ..Default::default()
    })
    .expect("a dump folder");
    let metrics = crate::metrics::MetricsService::new(config.metrics.clone());
    let rules = crate::rules::RulesService::new(
        crate::rules::config::RulesConfig::default(),
        crate::rules::actions::ActionEnv {
            operations: crate::operations::Operations::new(
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
    let screen = Screen::new(authenticator, &state.config.http);
    router(state, screen)
}

/// Sends `request` through a fresh router without authentication; returns the status, the
/// content type and the body as JSON (null when it is not JSON).
async fn send(request: Request<Body>) -> (StatusCode, String, Value) {
    let dir = tempfile::tempdir().unwrap();
    send_to(app(dir.path(), Authenticator::disabled()), request).await
}

async fn send_to(app: Router, request: Request<Body>) -> (StatusCode, String, Value) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, content_type, body)
}

fn post_json(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, "localhost")
        .body(Body::empty())
        .unwrap()
}

fn sample_body() -> Value {
    json!({
        "providers": [
            {"name": "Microsoft-DotNETCore-SampleProfiler", "eventLevel": "Informational"},
            {"name": "Microsoft-Windows-DotNETRuntime", "keywords": "0x14C14FCCBD", "eventLevel": "Informational"}
        ],
        "requestRundown": true,
        "bufferSizeInMB": 64
    })
}

#[tokio::test]
async fn bad_trace_requests_are_problems_that_name_the_field() {
    let provider = |extra: Value| {
        let mut p = json!({"name": "Microsoft-Windows-DotNETRuntime"});
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"providers": [p]})
    };
    let cases: Vec<(&str, Option<Value>, &str)> = vec![
        ("pid=1", None, "body"),
        ("pid=1", Some(json!({"providers": []})), "providers"),
        ("pid=1", Some(json!({"providers": {}})), "providers"),
        (
            "pid=1",
            Some(json!({"providers": [{"keywords": "1"}]})),
            "providers[0].name",
        ),
        (
            "pid=1",
            Some(provider(json!({"keywords": "0xZZ"}))),
            "providers[0].keywords",
        ),
        (
            "pid=1",
            Some(provider(json!({"keywords": "18446744073709551615"}))),
            "providers[0].keywords",
        ),
        (
            "pid=1",
            Some(provider(json!({"keywords": 42}))),
            "providers[0].keywords",
        ),
        (
            "pid=1",
            Some(provider(json!({"eventLevel": "Loud"}))),
            "providers[0].eventLevel",
        ),
        (
            "pid=1",
            Some(provider(json!({"eventLevel": 9}))),
            "providers[0].eventLevel",
        ),
        (
            "pid=1",
            Some(provider(json!({"arguments": {"a": 1}}))),
            "providers[0].arguments.a",
        ),
        (
            "pid=1",
            Some(json!({"providers": [{"name": "P"}], "bufferSizeInMB": 0})),
            "bufferSizeInMB",
        ),
        (
            "pid=1",
            Some(json!({"providers": [{"name": "P"}], "bufferSizeInMB": 2048})),
            "bufferSizeInMB",
        ),
        (
            "pid=1",
            Some(json!({"providers": [{"name": "P"}], "requestRundown": "yes"})),
            "requestRundown",
        ),
        (
            "pid=1&durationSeconds=-2",
            Some(sample_body()),
            "durationSeconds",
        ),
        (
            "pid=1&durationSeconds=abc",
            Some(sample_body()),
            "durationSeconds",
        ),
        ("pid=x", Some(sample_body()), "pid"),
        ("uid=not-a-guid", Some(sample_body()), "uid"),
        (
            "pid=1&egressProvider=nowhere",
            Some(sample_body()),
            "egressProvider",
        ),
    ];
    for (query, body, field) in cases {
        let uri = format!("/trace?{query}");
        let request = match &body {
            Some(body) => post_json(&uri, body),
            None => Request::post(&uri)
                .header(header::HOST, "localhost")
                .body(Body::empty())
                .unwrap(),
        };
        let (status, content_type, problem) = send(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query} {body:?}");
        assert_eq!(content_type, "application/problem+json");
        assert!(
            problem["errors"][field].is_array(),
            "{query} {body:?}: expected errors.{field} in {problem}"
        );
        assert_eq!(problem["status"], 400);
    }
}

#[tokio::test]
async fn get_trace_names_an_unknown_profile() {
    let (status, _, problem) = send(get("/trace?profile=Cpu,Gpu")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        problem["errors"]["profile"][0]
            .as_str()
            .unwrap()
            .contains("`Gpu`"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_process_that_does_not_exist_is_a_problem_that_says_so() {
    for request in [
        post_json("/trace?pid=999999999", &sample_body()),
        get("/trace?pid=999999999"),
        get("/process?pid=999999999"),
        get("/env?pid=999999999"),
        get("/collectionrules?pid=999999999"),
        get("/collectionrules/any?pid=999999999"),
    ] {
        let uri = request.uri().clone();
        let (status, content_type, problem) = send(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(content_type, "application/problem+json");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("Unable to discover"),
            "{uri}: {problem}"
        );
    }
    let (status, _, processes) = send(get("/processes")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(processes, json!([]));
}

#[tokio::test]
async fn wrong_media_types_sizes_routes_and_ids_are_problems() {
    let text = Request::post("/trace?pid=1")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(sample_body().to_string()))
        .unwrap();
    let (status, content_type, _) = send(text).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(content_type, "application/problem+json");

    let huge = Request::post("/trace?pid=1")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(vec![b' '; 2 << 20]))
        .unwrap();
    let (status, content_type, _) = send(huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(content_type, "application/problem+json");

    let (status, content_type, _) = send(get("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(content_type, "application/problem+json");

    let (status, _, problem) = send(get("/operations/123")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["errors"]["operationId"].is_array(), "{problem}");

    let unknown = format!("/operations/{}", uuid::Uuid::new_v4());
    let (status, _, problem) = send(get(&unknown)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["detail"], "Operation not found.");

    let bad_stop = Request::delete(format!("{unknown}?stop=maybe"))
        .header(header::HOST, "localhost")
        .body(Body::empty())
        .unwrap();
    let (status, _, problem) = send(bad_stop).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["errors"]["stop"].is_array(), "{problem}");

    let (status, _, problem) = send(get("/operations?pid=x&uid=y")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        problem["errors"]["pid"].is_array() && problem["errors"]["uid"].is_array(),
        "{problem}"
    );
}

#[tokio::test]
async fn every_route_but_health_and_the_description_needs_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    let (authenticator, token) = Authenticator::temporary().unwrap();
    let app = app(dir.path(), authenticator);
    for uri in [
        "/processes",
        "/operations",
        "/info",
        "/trace?pid=1",
        "/collectionrules",
        "/collectionrules/any",
    ] {
        let (status, _, _) = send_to(app.clone(), get(uri)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        let forged = Request::get(uri)
            .header(header::HOST, "localhost")
            .header(header::AUTHORIZATION, format!("Bearer {token}x"))
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = send_to(app.clone(), forged).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{uri} with a forged token"
        );
    }
    for uri in ["/healthz", "/openapi.json"] {
        let (status, _, _) = send_to(app.clone(), get(uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    let (_, _, openapi) = send_to(app.clone(), get("/openapi.json")).await;
    for path in ["/collectionrules", "/collectionrules/{collectionRuleName}"] {
        assert!(openapi["paths"][path]["get"].is_object(), "{path}");
    }
    let authorized = Request::get("/operations")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, operations) = send_to(app.clone(), authorized).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(operations, json!([]));
    let validated = Request::get("/trace?durationSeconds=-5")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, problem) = send_to(app, validated).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["errors"]["durationSeconds"].is_array(), "{problem}");
}

#[tokio::test]
async fn own_request_metrics_are_labelled_with_the_route_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), Authenticator::disabled());
    let id = uuid::Uuid::new_v4();
    for uri in [
        "/healthz".to_owned(),
        format!("/operations/{id}"),
        "/nowhere".to_owned(),
    ] {
        app.clone().oneshot(get(&uri)).await.unwrap();
    }
    let response = app.oneshot(get("/metrics")).await.unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    for labels in [
        r#"route="/healthz",status="200""#,
        r#"route="/operations/{id}",status="400""#,
        r#"route="unmatched",status="404""#,
    ] {
        assert!(text.contains(labels), "{labels} missing:\n{text}");
    }
}

#[tokio::test]
async fn info_names_dotnet_monitors_capabilities_and_whether_they_are_here() {
    let (status, _, info) = send(get("/info")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["diagnosticPortMode"], "Connect");
    let capabilities: Vec<(String, bool)> = info["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["enabled"].as_bool().unwrap(),
            )
        })
        .collect();
    for (name, enabled) in [
        ("exceptions", false),
        ("parameters", false),
        ("call_stacks", false),
        ("metrics", true),
        ("http_egress", true),
        ("trace", true),
        ("egress", false),
    ] {
        assert!(
            capabilities.contains(&(name.to_owned(), enabled)),
            "{name}: {capabilities:?}"
        );
    }
}

//! The HTTP API end to end: the real `diagmon collect` binary on loopback, real HTTP, a real .NET
//! Core 3.1 target. Needs `tests/run` (installs the target and builds the binary).

use std::time::Duration;

use diagmon::diagnostics::nettrace::{NettraceSummary, NettraceValidator};
use diagmon_tests::monitor::Monitor;
use diagmon_tests::target::{Program, TestTarget};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The seed's sample body: CPU samples plus the runtime's default keywords at Informational.
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

/// A monitor without auth that sees the targets in `target`'s TMPDIR.
fn monitor_for(target: &TestTarget, extra_config: &str) -> Monitor {
    let config = format!(
        "socket_dir = {:?}\n{extra_config}",
        target.tmpdir().display().to_string()
    );
    Monitor::start(&config, &["--no-auth"])
}

fn validate(bytes: &[u8]) -> NettraceSummary {
    let mut validator = NettraceValidator::new();
    validator.feed(bytes).expect("well-formed nettrace");
    validator.finish().expect("a complete nettrace")
}

async fn operation(client: &reqwest::Client, location: &str) -> (StatusCode, Value) {
    let response = client.get(location).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// Polls the operation until it reaches a final state (≤ 30 s).
async fn final_operation(client: &reqwest::Client, location: &str) -> (StatusCode, Value) {
    for _ in 0..300 {
        let (status, body) = operation(client, location).await;
        if ["Succeeded", "Failed", "Cancelled"].contains(&body["status"].as_str().unwrap_or("")) {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("operation {location} did not finish");
}

/// `POST url` with the sample body.
async fn post_trace(client: &reqwest::Client, url: String) -> reqwest::Response {
    client.post(url).json(&sample_body()).send().await.unwrap()
}

/// `GET url` as JSON.
async fn get_json(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn location_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn post_trace_streams_a_complete_trace_selected_by_pid_name_or_uid() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "");
    let client = reqwest::Client::new();
    let processes: Value = get_json(&client, monitor.url("/processes")).await;
    assert_eq!(processes[0]["pid"], target.pid());
    assert_eq!(processes[0]["isDefault"], true);
    let uid = processes[0]["uid"].as_str().unwrap().to_owned();

    for selector in [
        format!("pid={}", target.pid()),
        "name=dotnet".to_owned(),
        format!("uid={uid}"),
    ] {
        let response = post_trace(
            &client,
            monitor.url(&format!("/trace?{selector}&durationSeconds=3")),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{selector}");
        assert_eq!(
            response.headers()["content-type"],
            "application/octet-stream"
        );
        let disposition = response.headers()["content-disposition"].to_str().unwrap();
        assert!(
            disposition.starts_with("attachment; filename=")
                && disposition.ends_with(&format!("_{}.nettrace", target.pid())),
            "{disposition}"
        );
        let location = location_of(&response);
        assert!(
            location.starts_with(&monitor.url("/operations/")),
            "{location}"
        );
        let bytes = response.bytes().await.unwrap();
        let summary = validate(&bytes);
        assert!(summary.events_by_provider["Microsoft-DotNETCore-SampleProfiler"] > 0);
        assert!(summary.events_by_provider["Microsoft-Windows-DotNETRuntime"] > 0);

        let (status, body) = final_operation(&client, &location).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["status"], "Succeeded");
        assert_eq!(body["process"]["pid"], target.pid());
        assert_eq!(body["bytesCaptured"], bytes.len());
        assert_eq!(body["summary"]["events"], summary.events);
        assert_eq!(body["summary"]["sha256"], sha256_hex(&bytes));
    }
}

#[tokio::test]
async fn get_trace_with_a_profile_gives_a_valid_trace() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "");
    let response = reqwest::get(monitor.url(&format!(
        "/trace?pid={}&profile=Cpu&durationSeconds=2",
        target.pid()
    )))
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let summary = validate(&response.bytes().await.unwrap());
    assert!(summary.events_by_provider["Microsoft-DotNETCore-SampleProfiler"] > 0);
}

#[tokio::test]
async fn an_endless_trace_stops_gracefully_or_is_cancelled() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "");
    let client = reqwest::Client::new();
    let trace = |client: reqwest::Client| {
        let url = monitor.url(&format!(
            "/trace?pid={}&durationSeconds=-1&tags=a,b",
            target.pid()
        ));
        async move { client.post(url).json(&sample_body()).send().await.unwrap() }
    };

    // Stopped: the body completes and is a whole trace.
    let response = trace(client.clone()).await;
    let location = location_of(&response);
    let body = tokio::spawn(response.bytes());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, running) = operation(&client, &location).await;
    assert_eq!(running["status"], "Running");
    assert_eq!(running["isStoppable"], true);
    let stop = client
        .delete(format!("{location}?stop=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), StatusCode::ACCEPTED);
    let bytes = body
        .await
        .unwrap()
        .expect("the stopped trace's body completes");
    validate(&bytes);
    let (_, stopped) = final_operation(&client, &location).await;
    assert_eq!(stopped["status"], "Succeeded");
    let listed: Value = get_json(&client, monitor.url("/operations?tags=b,a")).await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["operationId"] == stopped["operationId"])
    );

    // Cancelled: the body is cut off, the operation says Cancelled.
    let response = trace(client.clone()).await;
    let location = location_of(&response);
    let mut body = response.bytes_stream();
    assert!(body.next().await.is_some());
    let cancel = client.delete(&location).send().await.unwrap();
    assert_eq!(cancel.status(), StatusCode::OK);
    let mut ended_with_error = false;
    while let Some(chunk) = body.next().await {
        if chunk.is_err() {
            ended_with_error = true;
        }
    }
    assert!(
        ended_with_error,
        "a cancelled trace must not end like a complete one"
    );
    let (_, cancelled) = final_operation(&client, &location).await;
    assert_eq!(cancelled["status"], "Cancelled");
    let again = client.delete(&location).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_client_that_disconnects_ends_the_session_cleanly() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "");
    let client = reqwest::Client::new();
    let url = monitor.url(&format!("/trace?pid={}&durationSeconds=-1", target.pid()));
    let response = client.post(&url).json(&sample_body()).send().await.unwrap();
    let location = location_of(&response);
    let mut body = response.bytes_stream();
    assert!(body.next().await.is_some());
    drop(body);
    let (_, cancelled) = final_operation(&client, &location).await;
    assert_eq!(cancelled["status"], "Cancelled");
    // The runtime is not left with a session: a new trace starts and completes.
    let response = post_trace(
        &client,
        monitor.url(&format!("/trace?pid={}&durationSeconds=1", target.pid())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    validate(&response.bytes().await.unwrap());
}

#[tokio::test]
async fn a_killed_target_fails_the_operation_and_aborts_the_body() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "");
    let client = reqwest::Client::new();
    let response = post_trace(
        &client,
        monitor.url(&format!("/trace?pid={}&durationSeconds=-1", target.pid())),
    )
    .await;
    let location = location_of(&response);
    let mut body = response.bytes_stream();
    assert!(body.next().await.is_some());
    target.signal(libc::SIGKILL);
    let mut ended_with_error = false;
    while let Some(chunk) = body.next().await {
        if chunk.is_err() {
            ended_with_error = true;
        }
    }
    assert!(
        ended_with_error,
        "a cut-short trace must not end like a complete one"
    );
    let (_, failed) = final_operation(&client, &location).await;
    assert_eq!(failed["status"], "Failed");
    assert_eq!(failed["error"]["code"], "TraceTruncated");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cut short"),
        "{failed}"
    );
}

#[tokio::test]
async fn bad_inputs_are_problems_that_name_the_field() {
    let target = TestTarget::start(Program::Worker, &[]);
    let twin = TestTarget::start_in(target.tmpdir(), Program::Worker, &[]);
    let monitor = monitor_for(&target, "");
    let client = reqwest::Client::new();
    let pid = target.pid();
    let provider = |extra: Value| {
        let mut p = json!({"name": "Microsoft-Windows-DotNETRuntime"});
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"providers": [p]})
    };
    let cases: Vec<(String, Option<Value>, &str)> = vec![
        (format!("pid={pid}"), None, "body"),
        (
            format!("pid={pid}"),
            Some(json!({"providers": []})),
            "providers",
        ),
        (
            format!("pid={pid}"),
            Some(json!({"providers": [{"keywords": "1"}]})),
            "providers[0].name",
        ),
        (
            format!("pid={pid}"),
            Some(provider(json!({"keywords": "0xZZ"}))),
            "providers[0].keywords",
        ),
        (
            format!("pid={pid}"),
            Some(provider(json!({"keywords": 42}))),
            "providers[0].keywords",
        ),
        (
            format!("pid={pid}"),
            Some(provider(json!({"eventLevel": "Loud"}))),
            "providers[0].eventLevel",
        ),
        (
            format!("pid={pid}"),
            Some(provider(json!({"eventLevel": 9}))),
            "providers[0].eventLevel",
        ),
        (
            format!("pid={pid}"),
            Some(json!({"providers": [{"name": "P"}], "bufferSizeInMB": 0})),
            "bufferSizeInMB",
        ),
        (
            format!("pid={pid}"),
            Some(json!({"providers": [{"name": "P"}], "bufferSizeInMB": 2048})),
            "bufferSizeInMB",
        ),
        (
            format!("pid={pid}&durationSeconds=-2"),
            Some(sample_body()),
            "durationSeconds",
        ),
        (
            format!("pid={pid}&durationSeconds=abc"),
            Some(sample_body()),
            "durationSeconds",
        ),
        ("pid=x".to_owned(), Some(sample_body()), "pid"),
        ("uid=not-a-guid".to_owned(), Some(sample_body()), "uid"),
        (
            format!("pid={pid}&egressProvider=nowhere"),
            Some(sample_body()),
            "egressProvider",
        ),
    ];
    for (query, body, field) in cases {
        let request = client.post(monitor.url(&format!("/trace?{query}")));
        let request = match &body {
            Some(body) => request.json(body),
            None => request,
        };
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{query} {body:?}"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["errors"][field].is_array(),
            "{query} {body:?}: expected errors.{field} in {problem}"
        );
    }

    // Resolution failures name what was wrong.
    let unknown = client
        .post(monitor.url("/trace?pid=999999999"))
        .json(&sample_body())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let problem: Value = unknown.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Unable to discover"),
        "{problem}"
    );

    let ambiguous = client
        .post(monitor.url("/trace?name=dotnet"))
        .json(&sample_body())
        .send()
        .await
        .unwrap();
    assert_eq!(ambiguous.status(), StatusCode::BAD_REQUEST);
    let detail = ambiguous.json::<Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    for pid in [target.pid(), twin.pid()] {
        assert!(detail.contains(&format!("pid {pid} (dotnet)")), "{detail}");
    }

    let text = client
        .post(monitor.url(&format!("/trace?pid={pid}")))
        .header("content-type", "text/plain")
        .body(sample_body().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = client
        .post(monitor.url(&format!("/trace?pid={pid}")))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let missing = client.get(monitor.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let bad_op = client
        .get(monitor.url("/operations/123"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_op.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn concurrent_traces_are_limited_with_429() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "");
    let client = reqwest::Client::new();
    let url = monitor.url(&format!("/trace?pid={}&durationSeconds=2", target.pid()));
    let mut responses = Vec::new();
    for _ in 0..4 {
        responses.push(client.get(&url).send().await.unwrap());
    }
    let statuses: Vec<StatusCode> = responses.iter().map(|r| r.status()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        3,
        "{statuses:?}"
    );
    let limited = responses.pop().unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        limited.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        limited.json::<Value>().await.unwrap()["detail"],
        "Rate limit reached."
    );
    for response in responses {
        validate(&response.bytes().await.unwrap());
    }
    // The slots are free again once the traces ended.
    let mut accepted = false;
    for _ in 0..50 {
        let response = client.get(&url).send().await.unwrap();
        if response.status() == StatusCode::OK {
            validate(&response.bytes().await.unwrap());
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted);
}

#[tokio::test]
async fn process_routes_and_info() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "");
    let client = reqwest::Client::new();
    let process: Value = get_json(&client, monitor.url("/process")).await;
    assert_eq!(process["pid"], target.pid());
    assert_eq!(process["name"], "dotnet");
    assert!(
        process["commandLine"]
            .as_str()
            .unwrap()
            .contains("Worker.dll")
    );
    assert_eq!(process["managedEntryPointAssemblyName"], "Worker");

    let env = client
        .get(monitor.url(&format!("/env?pid={}", target.pid())))
        .send()
        .await
        .unwrap();
    assert_eq!(env.status(), StatusCode::BAD_REQUEST);
    assert!(
        env.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains(".NET Core 3.1")
    );

    let info: Value = get_json(&client, monitor.url("/info")).await;
    assert_eq!(info["diagnosticPortMode"], "Connect");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));

    let openapi: Value = get_json(&client, monitor.url("/openapi.json")).await;
    for (path, method) in [
        ("/trace", "post"),
        ("/trace", "get"),
        ("/processes", "get"),
        ("/operations/{id}", "delete"),
    ] {
        assert!(
            openapi["paths"][path][method].is_object(),
            "{path} {method}"
        );
    }
    assert!(
        openapi["components"]["schemas"]["OperationStatus"]["properties"]["bytesCaptured"]
            .is_object()
    );
    let parameters = |method: &str| -> Vec<String> {
        openapi["paths"]["/trace"][method]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|parameter| Some(parameter["name"].as_str()?.to_owned()))
            .collect()
    };
    for name in [
        "pid",
        "uid",
        "name",
        "durationSeconds",
        "egressProvider",
        "tags",
    ] {
        assert!(
            parameters("post").iter().any(|p| p == name),
            "POST /trace {name}"
        );
        assert!(
            parameters("get").iter().any(|p| p == name),
            "GET /trace {name}"
        );
    }
    assert!(parameters("get").iter().any(|p| p == "profile"));
}

#[tokio::test]
async fn sigterm_completes_running_traces_before_exiting() {
    let target = TestTarget::start(Program::Worker, &[]);
    let mut monitor = monitor_for(&target, "");
    let client = reqwest::Client::new();
    let response = post_trace(
        &client,
        monitor.url(&format!("/trace?pid={}&durationSeconds=-1", target.pid())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::spawn(response.bytes());
    tokio::time::sleep(Duration::from_secs(1)).await;
    monitor.signal(libc::SIGTERM);
    let bytes = body.await.unwrap().expect("the body completes on shutdown");
    validate(&bytes);
    let status = tokio::task::spawn_blocking(move || monitor.wait_exit(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("diagmon exits after SIGTERM");
    assert!(status.success(), "{status}");
}

/// A monitor with the built-in filesystem provider granted `dir` as `artifacts`.
fn monitor_with_filesystem_egress(target: &TestTarget, dir: &std::path::Path) -> Monitor {
    monitor_for(
        target,
        &format!(
            "[egress.providers.artifacts]\ncomponent = \"filesystem\"\ndirectory = {:?}\n",
            dir.display().to_string()
        ),
    )
}

#[tokio::test]
async fn egress_to_the_filesystem_provider_records_where_the_trace_landed() {
    let target = TestTarget::start(Program::Worker, &[]);
    let traces = tempfile::tempdir().unwrap();
    let monitor = monitor_with_filesystem_egress(&target, traces.path());
    let client = reqwest::Client::new();
    let response = post_trace(
        &client,
        monitor.url(&format!(
            "/trace?pid={}&durationSeconds=3&egressProvider=ARTIFACTS&tags=egress",
            target.pid()
        )),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = location_of(&response);
    assert!(response.bytes().await.unwrap().is_empty());
    let (status, done) = final_operation(&client, &location).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["egressProviderName"], "ARTIFACTS");
    let path = std::path::PathBuf::from(done["resourceLocation"].as_str().unwrap());
    assert!(path.starts_with(traces.path()), "{}", path.display());
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with(&format!("_{}.nettrace", target.pid()))
    );
    let bytes = std::fs::read(&path).unwrap();
    let summary = validate(&bytes);
    assert_eq!(done["summary"]["events"], summary.events);
    assert_eq!(done["summary"]["sha256"], sha256_hex(&bytes));
    let files: Vec<_> = std::fs::read_dir(traces.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "no temporary file is left: {files:?}");
}

#[tokio::test]
async fn a_killed_target_aborts_the_egress_upload() {
    let target = TestTarget::start(Program::Worker, &[]);
    let traces = tempfile::tempdir().unwrap();
    let monitor = monitor_with_filesystem_egress(&target, traces.path());
    let client = reqwest::Client::new();
    let response = post_trace(
        &client,
        monitor.url(&format!(
            "/trace?pid={}&durationSeconds=-1&egressProvider=artifacts",
            target.pid()
        )),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = location_of(&response);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    target.signal(libc::SIGKILL);
    let (_, failed) = final_operation(&client, &location).await;
    assert_eq!(failed["status"], "Failed", "{failed}");
    assert_eq!(failed["error"]["code"], "TraceTruncated");
    let files: Vec<_> = std::fs::read_dir(traces.path()).unwrap().collect();
    assert!(
        files.is_empty(),
        "nothing under a final (or temporary) name: {files:?}"
    );
}

#[tokio::test]
async fn listen_mode_serves_runtimes_that_connect_and_resumes_suspended_ones() {
    use diagmon_tests::simulated_runtime::{SimulatedRuntime, SimulatedRuntimeConfig};
    let dir = tempfile::tempdir().unwrap();
    let port = dir.path().join("port.sock");
    let monitor = Monitor::start(
        &format!(
            "[diagnostic_port]\nendpoint_name = {:?}\n",
            port.display().to_string()
        ),
        &["--no-auth"],
    );
    let config = SimulatedRuntimeConfig::default();
    let runtime = SimulatedRuntime::connect(&port, true, config.clone())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !runtime.is_resumed() {
        assert!(
            std::time::Instant::now() < deadline,
            "the monitor did not resume the suspended runtime"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = reqwest::Client::new();
    let processes: Value = get_json(&client, monitor.url("/processes")).await;
    assert_eq!(processes[0]["uid"], config.cookie.to_string());
    let env: Value = get_json(&client, monitor.url(&format!("/env?uid={}", config.cookie))).await;
    assert_eq!(env["DOTNET_SIMULATED_RUNTIME"], "1");
    let info: Value = get_json(&client, monitor.url("/info")).await;
    assert_eq!(info["diagnosticPortMode"], "Listen");
    assert_eq!(info["diagnosticPortName"], port.display().to_string());
    let trace = client
        .get(monitor.url("/trace?profile=Cpu&durationSeconds=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(trace.status(), StatusCode::OK);
    validate(&trace.bytes().await.unwrap());
}

/// The compile cache the egress host tests fill, so that the monitors here start fast.
fn egress_cache() -> String {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("egress-component-cache")
        .display()
        .to_string()
}

/// Starts a trace into `provider` and returns its final operation.
async fn egress_trace(monitor: &Monitor, target: &TestTarget, provider: &str) -> Value {
    let client = reqwest::Client::new();
    let response = post_trace(
        &client,
        monitor.url(&format!(
            "/trace?pid={}&durationSeconds=2&egressProvider={provider}",
            target.pid()
        )),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{provider}");
    final_operation(&client, &location_of(&response)).await.1
}

#[tokio::test]
async fn the_example_providers_egress_through_the_monitor() {
    use diagmon_tests::guests::{python_example, rust_example};
    use diagmon_tests::http_server::TestHttpServer;
    let target = TestTarget::start(Program::Worker, &[]);
    let server = TestHttpServer::start().await;
    let sidecar = tempfile::tempdir().unwrap();
    let sidecar_dir = sidecar.path().display().to_string();
    let config = format!(
        "[egress]\ncache_directory = {cache:?}\n\
         [egress.providers.hook]\ncomponent = {put:?}\nallowed_outbound_hosts = [{origin:?}]\n\
         settings = {{ url = \"{origin}/traces/{{file_name}}\" }}\n\
         [egress.providers.sidecar]\ncomponent = {python:?}\ndirectory = {sidecar_dir:?}\n\
         settings = {{ directory = {sidecar_dir:?} }}\n",
        cache = egress_cache(),
        put = rust_example("http_put_provider").display().to_string(),
        python = python_example().display().to_string(),
        origin = server.origin(),
    );
    let monitor = monitor_for(&target, &config);

    let done = egress_trace(&monitor, &target, "hook").await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    let requests = server.wait_for_requests(1).await;
    assert_eq!(requests[0].method, "PUT");
    assert!(requests[0].complete);
    assert!(
        requests[0]
            .path
            .ends_with(&format!("_{}.nettrace", target.pid()))
    );
    validate(&requests[0].body);
    assert_eq!(done["summary"]["sha256"], sha256_hex(&requests[0].body));

    let done = egress_trace(&monitor, &target, "sidecar").await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    let location = done["resourceLocation"].as_str().unwrap();
    let bytes = std::fs::read(location).unwrap();
    validate(&bytes);
    assert_eq!(done["summary"]["sha256"], sha256_hex(&bytes));
}

#[tokio::test]
async fn a_misbehaving_provider_fails_only_its_own_operation() {
    use diagmon_tests::guests::fixture;
    let target = TestTarget::start(Program::Worker, &[]);
    let traces = tempfile::tempdir().unwrap();
    let config = format!(
        "[egress]\ncache_directory = {cache:?}\n\
         [egress.providers.trap]\ncomponent = {trap:?}\n\
         [egress.providers.spin]\ncomponent = {spin:?}\nlimits = {{ write_timeout_ms = 500 }}\n\
         [egress.providers.artifacts]\ncomponent = \"filesystem\"\ndirectory = {dir:?}\n",
        cache = egress_cache(),
        trap = fixture("trap-in-write").display().to_string(),
        spin = fixture("infinite-loop").display().to_string(),
        dir = traces.path().display().to_string(),
    );
    let monitor = monitor_for(&target, &config);

    let trapped = egress_trace(&monitor, &target, "trap").await;
    assert_eq!(trapped["status"], "Failed", "{trapped}");
    assert_eq!(trapped["error"]["code"], "EgressProviderCrashed");
    assert!(
        trapped["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`trap` crashed in write"),
        "{trapped}"
    );

    let started = std::time::Instant::now();
    let looped = egress_trace(&monitor, &target, "spin").await;
    assert_eq!(looped["status"], "Failed", "{looped}");
    assert_eq!(looped["error"]["code"], "EgressDeadlineExceeded");
    assert!(started.elapsed() < Duration::from_secs(15));

    let fine = egress_trace(&monitor, &target, "artifacts").await;
    assert_eq!(
        fine["status"], "Succeeded",
        "the next request is served normally: {fine}"
    );
}

//! The HTTP API end to end: the real `diagmon collect` binary on loopback, real HTTP, a real .NET
//! Core 3.1 target. Needs `tests/run` (installs the target and builds the binary).

use std::time::Duration;

use diagmon_tests::api::{
    FINAL_STATES, final_operation, get_json, location_of, sha256_hex, validated_nettrace,
};
use diagmon_tests::monitor::Monitor;
use diagmon_tests::target::{Program, TestTarget};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long an operation may take to end before a test gives up on it.
const OPERATION_WAIT: Duration = Duration::from_secs(30);

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

async fn operation(client: &reqwest::Client, location: &str) -> (StatusCode, Value) {
    let response = client.get(location).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// `POST url` with the sample body.
async fn post_trace(client: &reqwest::Client, url: String) -> reqwest::Response {
    post_trace_with(client, url, &sample_body()).await
}

/// `POST url` with `body`.
async fn post_trace_with(client: &reqwest::Client, url: String, body: &Value) -> reqwest::Response {
    client.post(url).json(body).send().await.unwrap()
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
        let summary = validated_nettrace(&bytes);
        assert!(summary.events_by_provider["Microsoft-DotNETCore-SampleProfiler"] > 0);
        assert!(summary.events_by_provider["Microsoft-Windows-DotNETRuntime"] > 0);

        let body = final_operation(&client, &location, OPERATION_WAIT).await;
        assert_eq!(
            operation(&client, &location).await.0,
            StatusCode::CREATED,
            "{body}"
        );
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
    let summary = validated_nettrace(&response.bytes().await.unwrap());
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
    assert_eq!(running["kind"], "trace");
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
    validated_nettrace(&bytes);
    let stopped = final_operation(&client, &location, OPERATION_WAIT).await;
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
    let cancelled = final_operation(&client, &location, OPERATION_WAIT).await;
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
    let cancelled = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(cancelled["status"], "Cancelled");
    // The runtime is not left with a session: a new trace starts and completes.
    let response = post_trace(
        &client,
        monitor.url(&format!("/trace?pid={}&durationSeconds=1", target.pid())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    validated_nettrace(&response.bytes().await.unwrap());
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
    let failed = final_operation(&client, &location, OPERATION_WAIT).await;
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

/// Input validation, auth and problem bodies are tested in-process (`core/src/http/tests.rs`);
/// what needs real runtimes stays here: a selection two real processes make ambiguous.
#[tokio::test]
async fn an_ambiguous_selection_names_the_candidates() {
    let target = TestTarget::start(Program::Worker, &[]);
    let twin = TestTarget::start_in(target.tmpdir(), Program::Worker, &[]);
    let monitor = monitor_for(&target, "");
    let client = reqwest::Client::new();
    let ambiguous = client
        .post(monitor.url("/trace?name=dotnet"))
        .json(&sample_body())
        .send()
        .await
        .unwrap();
    assert_eq!(ambiguous.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        ambiguous.headers()["content-type"],
        "application/problem+json"
    );
    let detail = ambiguous.json::<Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    for pid in [target.pid(), twin.pid()] {
        assert!(detail.contains(&format!("pid {pid} (dotnet)")), "{detail}");
    }
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
        validated_nettrace(&response.bytes().await.unwrap());
    }
    // The slots are free again once the traces ended.
    let mut accepted = false;
    for _ in 0..50 {
        let response = client.get(&url).send().await.unwrap();
        if response.status() == StatusCode::OK {
            validated_nettrace(&response.bytes().await.unwrap());
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
    validated_nettrace(&bytes);
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
    let done = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(
        operation(&client, &location).await.0,
        StatusCode::CREATED,
        "{done}"
    );
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
    let summary = validated_nettrace(&bytes);
    assert_eq!(done["summary"]["events"], summary.events);
    assert_eq!(done["summary"]["sha256"], sha256_hex(&bytes));
    let files: Vec<_> = std::fs::read_dir(traces.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "no temporary file is left: {files:?}");
}

/// An egressed trace is read, summarised and written on its upload's thread: a stop still ends
/// it whole, and a cancel ends it promptly with nothing left behind, as for a streamed one.
#[tokio::test]
async fn an_endless_egressed_trace_stops_gracefully_or_is_cancelled() {
    let target = TestTarget::start(Program::Worker, &[]);
    let traces = tempfile::tempdir().unwrap();
    let monitor = monitor_with_filesystem_egress(&target, traces.path());
    let client = reqwest::Client::new();
    let url = monitor.url(&format!(
        "/trace?pid={}&durationSeconds=-1&egressProvider=artifacts",
        target.pid()
    ));

    // Stopped: the file is a whole trace, and the operation's summary is the file's.
    let response = post_trace(&client, url.clone()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = location_of(&response);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, running) = operation(&client, &location).await;
    assert_eq!(running["status"], "Running", "{running}");
    let stop = client
        .delete(format!("{location}?stop=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), StatusCode::ACCEPTED);
    let stopped = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(stopped["status"], "Succeeded", "{stopped}");
    let path = std::path::PathBuf::from(stopped["resourceLocation"].as_str().unwrap());
    let bytes = std::fs::read(&path).unwrap();
    let summary = validated_nettrace(&bytes);
    assert_eq!(stopped["summary"]["events"], summary.events);
    assert_eq!(stopped["summary"]["bytes"], bytes.len() as u64);
    assert_eq!(stopped["summary"]["sha256"], sha256_hex(&bytes));

    // Cancelled while the session is quiet (`quiet_body`): the upload's thread is waiting on
    // the socket. The operation is Cancelled at once; the upload is aborted right after, and its
    // partial file removed.
    let files = || -> Vec<_> {
        std::fs::read_dir(traces.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect()
    };
    let response = post_trace_with(&client, url, &quiet_body()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = location_of(&response);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(files().len(), 2, "the upload's partial file: {:?}", files());
    let cancel = client.delete(&location).send().await.unwrap();
    assert_eq!(cancel.status(), StatusCode::OK);
    let cancelled = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(cancelled["status"], "Cancelled", "{cancelled}");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while files() != vec![path.clone()] && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(files(), vec![path], "only the stopped trace's file is left");
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
    let failed = final_operation(&client, &location, OPERATION_WAIT).await;
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
    validated_nettrace(&trace.bytes().await.unwrap());
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
    final_operation(&client, &location_of(&response), OPERATION_WAIT).await
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
    validated_nettrace(&requests[0].body);
    assert_eq!(done["summary"]["sha256"], sha256_hex(&requests[0].body));

    let done = egress_trace(&monitor, &target, "sidecar").await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    let location = done["resourceLocation"].as_str().unwrap();
    let bytes = std::fs::read(location).unwrap();
    validated_nettrace(&bytes);
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
         [egress.providers.sleep]\ncomponent = {sleep:?}\nlimits = {{ write_timeout_ms = 500 }}\n\
         [egress.providers.artifacts]\ncomponent = \"filesystem\"\ndirectory = {dir:?}\n",
        cache = egress_cache(),
        trap = fixture("trap-in-write").display().to_string(),
        spin = fixture("infinite-loop").display().to_string(),
        sleep = fixture("sleep-in-write").display().to_string(),
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

    // Asleep in a host call, where epochs cannot reach: stopped at the same deadline.
    let started = std::time::Instant::now();
    let slept = egress_trace(&monitor, &target, "sleep").await;
    assert_eq!(slept["status"], "Failed", "{slept}");
    assert_eq!(slept["error"]["code"], "EgressDeadlineExceeded");
    assert!(started.elapsed() < Duration::from_secs(15));

    let fine = egress_trace(&monitor, &target, "artifacts").await;
    assert_eq!(
        fine["status"], "Succeeded",
        "the next request is served normally: {fine}"
    );
}

/// A body whose only provider exists nowhere: the runtime sends the trace's header and then
/// nothing, however long the session runs.
fn quiet_body() -> Value {
    json!({"providers": [{"name": "Diagmon-Test-Quiet-Provider"}], "requestRundown": false})
}

/// Sends `POST path` with `body` from a raw socket with a small receive buffer, and returns the
/// socket unread: a client that stops reading but keeps the connection open.
async fn unread_post(monitor: &Monitor, path: &str, body: &Value) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let url = reqwest::Url::parse(&monitor.url(path)).unwrap();
    let address = url.socket_addrs(|| None).unwrap()[0];
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(address).await.unwrap();
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// The operations tagged `tag`, once `count` of them satisfy `done` (polled for up to `limit`).
async fn operations_once(
    client: &reqwest::Client,
    monitor: &Monitor,
    tag: &str,
    count: usize,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let listed = get_json(client, monitor.url(&format!("/operations?tags={tag}"))).await;
        let operations = listed.as_array().unwrap().clone();
        if operations.iter().filter(|op| done(op)).count() >= count {
            return operations;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {count} `{tag}` operations reached the state in {limit:?}: {operations:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A new trace of `target` is accepted (200) and whole: no slot is left taken.
async fn a_new_trace_is_accepted(client: &reqwest::Client, monitor: &Monitor, pid: u32) {
    // A provider that writes nothing: what matters is a free slot, and a stop with events
    // flowing is one more chance of .NET Core 3.1's session-stop deadlock (docs/ipc-protocol.md).
    let url = monitor.url(&format!("/trace?pid={pid}&durationSeconds=1"));
    let response = post_trace_with(client, url, &quiet_body()).await;
    assert_eq!(response.status(), StatusCode::OK);
    validated_nettrace(&response.bytes().await.unwrap());
}

#[tokio::test]
async fn clients_that_stop_reading_fail_after_the_send_deadline_and_free_their_slots() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "[limits]\nstream_send_timeout_seconds = 2\n");
    let client = reqwest::Client::new();
    let path = format!(
        "/trace?pid={}&durationSeconds=-1&tags=stalled",
        target.pid()
    );
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(unread_post(&monitor, &path, &sample_body()).await);
    }
    let operations = operations_once(
        &client,
        &monitor,
        "stalled",
        3,
        Duration::from_secs(120),
        |op| op["status"] == "Failed",
    )
    .await;
    for operation in &operations {
        assert_eq!(operation["error"]["code"], "ClientStalled", "{operation}");
        assert!(operation["bytesCaptured"].as_u64().unwrap() > 0);
    }
    a_new_trace_is_accepted(&client, &monitor, target.pid()).await;
    drop(stalled);
}

#[tokio::test]
async fn cancelling_a_trace_whose_client_stopped_reading_frees_its_slot_at_once() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "[limits]\nstream_send_timeout_seconds = 600\n");
    let client = reqwest::Client::new();
    let path = format!("/trace?pid={}&durationSeconds=-1&tags=full", target.pid());
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(unread_post(&monitor, &path, &sample_body()).await);
    }
    // Stalled: every buffer between the runtime and the client is full, so the bytes captured
    // stop growing.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let operations = loop {
        let before = operations_once(
            &client,
            &monitor,
            "full",
            3,
            Duration::from_secs(30),
            |op| op["status"] == "Running",
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = operations_once(
            &client,
            &monitor,
            "full",
            3,
            Duration::from_secs(30),
            |op| op["status"] == "Running",
        )
        .await;
        let bytes = |ops: &[Value]| -> Vec<u64> {
            ops.iter()
                .map(|op| op["bytesCaptured"].as_u64().unwrap())
                .collect()
        };
        if bytes(&before) == bytes(&after) && bytes(&after).iter().all(|b| *b > 0) {
            break after;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the clients never stalled: {after:#?}"
        );
    };
    let limited = post_trace(
        &client,
        monitor.url(&format!("/trace?pid={}&durationSeconds=1", target.pid())),
    )
    .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    for operation in &operations {
        let id = operation["operationId"].as_str().unwrap();
        let cancel = client
            .delete(monitor.url(&format!("/operations/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(cancel.status(), StatusCode::OK);
    }
    a_new_trace_is_accepted(&client, &monitor, target.pid()).await;
    let operations = operations_once(&client, &monitor, "full", 3, Duration::from_secs(5), |op| {
        op["status"] == "Cancelled"
    })
    .await;
    assert_eq!(operations.len(), 3);
    drop(stalled);
}

/// A client that closed its connection is noticed even when the trace writes nothing that would
/// fail: its FIN, then 10 s without a byte moving (docs/security.md), ends the response.
#[tokio::test]
async fn a_client_gone_from_a_quiet_endless_trace_is_noticed() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "");
    let client = reqwest::Client::new();
    let url = monitor.url(&format!(
        "/trace?pid={}&durationSeconds=-1&tags=quiet",
        target.pid()
    ));
    for _ in 0..3 {
        // A client of its own, so that dropping the response closes its connection.
        let leaving = reqwest::Client::new();
        let response = leaving.post(&url).json(&quiet_body()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let location = location_of(&response);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, running) = operation(&client, &location).await;
        assert_eq!(running["status"], "Running", "{running}");
        drop(response);
        drop(leaving);
        let ended = final_operation(&client, &location, OPERATION_WAIT).await;
        assert_eq!(ended["status"], "Cancelled", "{ended}");
    }
    a_new_trace_is_accepted(&client, &monitor, target.pid()).await;
}

#[tokio::test]
async fn clients_that_leave_while_a_trace_starts_leave_no_operation_behind() {
    // A sleeping target and a provider that writes nothing: what this tests is the monitor's
    // side of 20 starts, cancels and stops in a row. With events flowing, each of them would also
    // risk a .NET Core 3.1 deadlock of its own (a session stopped while an application thread
    // writes an event hangs the runtime's diagnostics server; docs/ipc-protocol.md), which made
    // this test fail once in CI with a trace that never ended.
    let target = TestTarget::start(Program::HeapKeeper, &[]);
    let traces = tempfile::tempdir().unwrap();
    let monitor = monitor_with_filesystem_egress(&target, traces.path());
    let client = reqwest::Client::new();
    let streamed = format!(
        "/trace?pid={}&durationSeconds=-1&tags=leaving",
        target.pid()
    );
    let egressed = format!(
        "/trace?pid={}&durationSeconds=1&egressProvider=artifacts&tags=leaving",
        target.pid()
    );
    for round in 0..20u64 {
        let path = if round % 2 == 0 { &streamed } else { &egressed };
        let socket = unread_post(&monitor, path, &quiet_body()).await;
        tokio::time::sleep(Duration::from_millis(round % 5)).await;
        drop(socket);
        // Let the slots of the previous ones go before the next, so that none is refused.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let operations = operations_once(
        &client,
        &monitor,
        "leaving",
        1,
        Duration::from_secs(60),
        |_| true,
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let operations = loop {
        let listed = get_json(&client, monitor.url("/operations?tags=leaving")).await;
        let all = listed.as_array().unwrap().clone();
        if all
            .iter()
            .all(|op| FINAL_STATES.contains(&op["status"].as_str().unwrap()))
        {
            break all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "operations stayed unfinished: {all:#?} (first listing {operations:#?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for operation in &operations {
        match operation["status"].as_str().unwrap() {
            "Cancelled" => {}
            // An egressed trace that started before its client left runs to its end.
            "Succeeded" => assert_eq!(operation["egressProviderName"], "artifacts"),
            other => panic!("{other}: {operation}"),
        }
    }
    let succeeded = operations
        .iter()
        .filter(|op| op["status"] == "Succeeded")
        .count();
    let files = std::fs::read_dir(traces.path()).unwrap().count();
    assert_eq!(
        files, succeeded,
        "one file per egressed trace that succeeded"
    );
    a_new_trace_is_accepted(&client, &monitor, target.pid()).await;
}

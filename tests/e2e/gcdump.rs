//! Heap snapshots end to end: `GET /gcdump` and `diagmon gcdump` of the real binary against a
//! real .NET Core 3.1 target that keeps a known set of objects alive (`HeapKeeper.cs`), the file
//! read back with diagmon's reader, and the failures (a second gcdump of the same process, the
//! deadline, the process exiting mid-way). Needs `tests/run` (installs the target and builds the
//! binary).

use std::path::Path;
use std::process::Command as Process;
use std::time::Duration;

use diagmon::gcdump::{format, report};
use diagmon_tests::api::{final_operation, get_json, location_of, sha256_hex};
use diagmon_tests::monitor::{Monitor, monitor_binary};
use diagmon_tests::target::{Program, TestTarget};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

/// How long an operation may take to end before a test gives up on it.
const OPERATION_WAIT: Duration = Duration::from_secs(90);

/// Objects the target keeps alive.
const KEPT: u64 = 1000;
/// The size of one `Diagmon.Kept` on a 64-bit runtime: header, method table, a reference, a long.
const KEPT_SIZE: u64 = 32;

/// A monitor without auth that sees the targets in `socket_dir`, with `extra` configuration.
fn monitor_for(socket_dir: &Path, extra: &str) -> Monitor {
    Monitor::start(
        &format!(
            "socket_dir = {:?}\n{extra}\n",
            socket_dir.display().to_string()
        ),
        &["--no-auth"],
    )
}

/// The whole body, or the error that cut it.
async fn body_of(response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.map_err(|error| error.to_string())?);
    }
    Ok(body)
}

/// The final state of the one operation of `monitor`, after a streamed gcdump that must not
/// deliver a whole file: the response is either refused before its headers (the stream failed
/// before its first byte) or a 200 whose body is cut.
async fn failed_stream(
    client: &reqwest::Client,
    monitor: &Monitor,
    response: reqwest::Result<reqwest::Response>,
) -> Value {
    if let Ok(response) = response {
        assert_eq!(response.status(), StatusCode::OK);
        assert!(body_of(response).await.is_err(), "a cut body, not a file");
    }
    let operations: Value = get_json(client, monitor.url("/operations")).await;
    let operations = operations.as_array().unwrap();
    assert_eq!(operations.len(), 1, "{operations:?}");
    let id = operations[0]["operationId"].as_str().unwrap();
    final_operation(
        client,
        &monitor.url(&format!("/operations/{id}")),
        OPERATION_WAIT,
    )
    .await
}

/// The report's row for `name`.
fn row<'a>(report: &'a report::HeapReport, name: &str) -> Option<&'a report::TypeRow> {
    report.types.iter().find(|row| row.name == name)
}

#[tokio::test]
async fn get_gcdump_of_a_real_target_lists_its_objects_exactly() {
    let target = TestTarget::start(Program::HeapKeeper, &[&KEPT.to_string(), "100"]);
    let monitor = monitor_for(target.tmpdir(), "");
    let client = reqwest::Client::new();
    let response = client
        .get(monitor.url(&format!(
            "/gcdump?pid={}&report=true&tags=heap",
            target.pid()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    let suffix = format!("_{}.gcdump", target.pid());
    let name = disposition.strip_prefix("attachment; filename=").unwrap();
    assert!(name.ends_with(&suffix), "{disposition}");
    // diagmon names every artifact with its `{yyyyMMdd_HHmmss_fff}` stamp (egress::ArtifactKind).
    assert_eq!(
        name.len(),
        "yyyyMMdd_HHmmss_fff".len() + suffix.len(),
        "{name}"
    );
    let location = location_of(&response);
    let bytes = body_of(response).await.expect("a whole body");

    let dump = format::read(&bytes).expect("the file reads back");
    assert_eq!(dump.process_id as u32, target.pid());
    assert_eq!(dump.creation_tool.as_deref(), Some("diagmon"));
    assert!(dump.graph.is_64bit);
    let heap = report::report(&dump, None).unwrap();
    let kept = row(&heap, "Diagmon.Kept").expect("a Diagmon.Kept row");
    assert_eq!(kept.count, KEPT, "{heap:#?}");
    assert_eq!(kept.size, KEPT * KEPT_SIZE);
    // Each Kept object alone keeps its 100-byte array alive (array header and padding aside).
    assert!(
        (KEPT * (KEPT_SIZE + 100)..=KEPT * (KEPT_SIZE + 132)).contains(&kept.retained_size),
        "{kept:?}"
    );
    let arrays = row(&heap, "System.Byte[]").expect("a System.Byte[] row");
    assert!(arrays.count >= KEPT, "{arrays:?}");
    assert!(row(&heap, "System.String").is_some_and(|row| row.count > 0));
    assert!(heap.root_references > 0, "the root set is empty");
    assert_eq!(heap.undescribed_objects, 0);
    // Every Kept object is reachable from the roots and refers to its own array.
    let kept_type = dump
        .graph
        .types
        .iter()
        .position(|ty| ty.name == "Diagmon.Kept")
        .unwrap() as u32;
    let mut reached = std::collections::HashSet::new();
    let mut pending = vec![dump.graph.root];
    while let Some(index) = pending.pop() {
        if reached.insert(index) {
            pending.extend(dump.graph.node(index).unwrap().children);
        }
    }
    let mut kept_reached = 0;
    for &index in &reached {
        let node = dump.graph.node(index).unwrap();
        if node.type_index == kept_type {
            kept_reached += 1;
            assert_eq!(node.children.len(), 1, "a Kept refers to its array");
        }
    }
    assert_eq!(kept_reached, KEPT);

    let operation = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(operation["status"], "Succeeded", "{operation}");
    assert_eq!(operation["summary"]["bytes"], bytes.len());
    assert_eq!(operation["summary"]["sha256"], sha256_hex(&bytes));
    let summary_report = &operation["summary"]["report"];
    let kept_row = summary_report["heap"]["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["name"] == "Diagmon.Kept")
        .cloned()
        .unwrap();
    assert_eq!(kept_row["count"], KEPT);
    assert_eq!(summary_report["heap"]["sizeKind"], "shallow");
    assert_eq!(summary_report["heap"]["retainedSizeKind"], "dominated");
    assert_eq!(kept_row["retainedSize"], kept.retained_size);
    assert_eq!(summary_report["capture"]["gcdumpBytes"], bytes.len());
    assert!(summary_report["capture"]["nettraceBytes"].as_u64().unwrap() > 0);

    // The CLI reads the same file.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    let output = Process::new(monitor_binary())
        .args(["gcdump", "report", "--json", "--top", "500"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["objects"], heap.objects);
    let text = Process::new(monitor_binary())
        .args(["gcdump", "report", "--top", "3"])
        .arg(file.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("more types not listed"), "{text}");
}

#[tokio::test]
async fn diagmon_gcdump_writes_a_file_the_reader_opens() {
    let target = TestTarget::start(Program::HeapKeeper, &["300", "-1"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("heap.gcdump");
    let output = Process::new(monitor_binary())
        .args(["gcdump", "--pid", &target.pid().to_string(), "--socket-dir"])
        .arg(target.tmpdir())
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("Complete"), "{stdout}");
    let dump = format::read(&std::fs::read(&out).unwrap()).unwrap();
    let heap = report::report(&dump, None).unwrap();
    assert_eq!(row(&heap, "Diagmon.Kept").map(|row| row.count), Some(300));
}

#[tokio::test]
async fn a_second_gcdump_of_the_same_process_is_refused() {
    let target = TestTarget::start(Program::HeapKeeper, &["300000", "-1"]);
    let monitor = monitor_for(target.tmpdir(), "[limits]\nmax_concurrent_gcdumps = 2\n");
    let client = reqwest::Client::new();
    let url = monitor.url(&format!("/gcdump?pid={}", target.pid()));
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = client.get(&url).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers()["content-type"], "application/problem+json");
    let problem: Value = second.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("already running"), "{detail}");
    let location = location_of(&first);
    body_of(first).await.expect("the first one completes");
    let operation = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(operation["status"], "Succeeded", "{operation}");
    // Once it is done, the process can be snapshot again.
    let again = client.get(&url).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    body_of(again).await.expect("a whole body");
}

#[tokio::test]
async fn a_gcdump_past_its_timeout_fails_and_says_so() {
    let target = TestTarget::start(Program::HeapKeeper, &["1000", "-1"]);
    let monitor = monitor_for(target.tmpdir(), "");
    let client = reqwest::Client::new();
    let bad = client
        .get(monitor.url(&format!("/gcdump?pid={}&timeoutSeconds=0", target.pid())))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let problem: Value = bad.json().await.unwrap();
    assert!(problem["errors"]["timeoutSeconds"].is_array(), "{problem}");

    let response = client
        .get(monitor.url(&format!(
            "/gcdump?pid={}&timeoutSeconds=0.001",
            target.pid()
        )))
        .send()
        .await;
    let operation = failed_stream(&client, &monitor, response).await;
    assert_eq!(operation["status"], "Failed", "{operation}");
    assert_eq!(operation["error"]["code"], "RuntimeTimeout", "{operation}");
    let message = operation["error"]["message"].as_str().unwrap();
    assert!(message.contains("timeout"), "{message}");
    assert!(operation["summary"].is_null(), "{operation}");
}

#[tokio::test]
async fn a_process_that_exits_during_the_gcdump_fails_it() {
    let target = TestTarget::start(Program::HeapKeeper, &["2000000", "-1"]);
    let monitor = monitor_for(target.tmpdir(), "");
    let client = reqwest::Client::new();
    let request = client
        .get(monitor.url(&format!("/gcdump?pid={}", target.pid())))
        .send();
    // Killed once the snapshot is under way (its operation Running), not before it starts.
    let kill = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let operations: Value = get_json(&client, monitor.url("/operations")).await;
            if operations[0]["status"] == "Running" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{operations}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        target.signal(libc::SIGKILL);
    };
    let (response, ()) = tokio::join!(request, kill);
    let operation = failed_stream(&client, &monitor, response).await;
    assert_eq!(operation["status"], "Failed", "{operation}");
    assert_eq!(operation["error"]["code"], "TargetGone", "{operation}");
    let message = operation["error"]["message"].as_str().unwrap();
    assert!(message.contains("exited during the gcdump"), "{message}");
}

#[tokio::test]
async fn get_gcdump_with_egress_stores_the_file_its_summary_describes() {
    let target = TestTarget::start(Program::HeapKeeper, &["250", "-1"]);
    let dir = tempfile::tempdir().unwrap();
    let monitor = monitor_for(
        target.tmpdir(),
        &format!(
            "[egress.providers.files]\ncomponent = \"filesystem\"\ndirectory = {:?}\n",
            dir.path().display().to_string()
        ),
    );
    let client = reqwest::Client::new();
    let response = client
        .get(monitor.url(&format!(
            "/gcdump?pid={}&egressProvider=files",
            target.pid()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let operation = final_operation(&client, &location_of(&response), OPERATION_WAIT).await;
    assert_eq!(operation["status"], "Succeeded", "{operation}");
    assert_eq!(operation["egressProviderName"], "files");
    assert!(
        operation["summary"]["report"].is_null(),
        "only when asked for"
    );
    let stored: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "gcdump"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let bytes = std::fs::read(&stored[0]).unwrap();
    assert_eq!(operation["summary"]["sha256"], sha256_hex(&bytes));
    let dump = format::read(&bytes).unwrap();
    let heap = report::report(&dump, None).unwrap();
    assert_eq!(row(&heap, "Diagmon.Kept").map(|row| row.count), Some(250));
}

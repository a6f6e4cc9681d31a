//! The IPC client against the simulated runtime, for what .NET Core 3.1 cannot show: newer
//! Process and CollectTracing commands, listen mode, and broken peers.

use std::time::{Duration, Instant};

use diagmon::diagnostics::endpoint::Endpoint;
use diagmon::diagnostics::eventpipe::{EventIdFilter, Rundown};
use diagmon::diagnostics::reverse::{PortLimits, ReversePort};
use diagmon::diagnostics::summary::TraceDigester;
use diagmon::diagnostics::{
    Command, DiagnosticsClient, DiagnosticsError, EventPipeSession, EventProvider, SessionConfig,
    Timeouts,
};
use diagmon::processes::{Discovery, ProcessDirectory};
use diagmon_tests::api::get_json;
use diagmon_tests::simulated_runtime::{
    Fault, SimulatedRuntime, SimulatedRuntimeConfig, StreamBehaviour,
};

fn short_timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        reply: Duration::from_millis(500),
        stop: Duration::from_secs(5),
    }
}

async fn simulated(config: SimulatedRuntimeConfig) -> (tempfile::TempDir, SimulatedRuntime) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = SimulatedRuntime::listen(dir.path(), config).await.unwrap();
    (dir, runtime)
}

fn client_for(runtime: &SimulatedRuntime) -> DiagnosticsClient {
    DiagnosticsClient::new(
        Endpoint::Socket(runtime.socket_path().unwrap()),
        short_timeouts(),
    )
}

fn providers() -> Vec<EventProvider> {
    vec![EventProvider::new("Diagmon-Synthetic", u64::MAX, 5)]
}

#[tokio::test]
async fn process_info_versions_fall_back_and_fill_their_fields() {
    for level in [3u8, 2, 1] {
        let config = SimulatedRuntimeConfig {
            process_info_level: level,
            ..Default::default()
        };
        let (dir, runtime) = simulated(config.clone()).await;
        let directory = ProcessDirectory::new(
            Discovery::Connect {
                socket_dir: dir.path().to_owned(),
            },
            short_timeouts(),
        );
        let processes = directory.list().await;
        assert_eq!(processes.len(), 1, "level {level}");
        let process = &processes[0];
        assert_eq!(process.uid, config.cookie);
        assert_eq!(process.pid, u64::from(config.pid));
        assert_eq!(process.command_line, config.command_line);
        assert_eq!(process.name, "dotnet");
        assert_eq!(process.operating_system.as_deref(), Some("Linux"));
        assert!(process.supports_process_commands);
        let entry = process.managed_entry_point_assembly_name.as_deref();
        assert_eq!(
            entry,
            (level >= 2).then_some("SimulatedApp"),
            "level {level}"
        );
        let info = client_for(&runtime).process_info().await.unwrap();
        assert_eq!(
            info.runtime_identifier.is_some(),
            level == 3,
            "level {level}"
        );
        let tried: Vec<(u8, u8)> = runtime.commands_received();
        assert_eq!(tried[0], (0x04, 0x08), "ProcessInfo3 is tried first");
    }
}

#[tokio::test]
async fn environment_is_read_from_the_continuation() {
    let (_dir, runtime) = simulated(SimulatedRuntimeConfig::default()).await;
    let environment = client_for(&runtime).process_environment().await.unwrap();
    assert_eq!(environment["DOTNET_SIMULATED_RUNTIME"], "1");
    assert_eq!(environment["LANG"], "C.UTF-8");
}

#[tokio::test]
async fn collect_tracing_falls_back_to_the_oldest_command_that_expresses_the_request() {
    let config = SimulatedRuntimeConfig {
        collect_tracing_level: 1,
        ..Default::default()
    };
    let (_dir, runtime) = simulated(config).await;
    let client = client_for(&runtime);
    let session = client
        .start_session(&SessionConfig::new(providers()))
        .await
        .unwrap();
    assert_eq!(session.command(), Command::CollectTracing);
    let commands = runtime.commands_received();
    assert!(
        commands.ends_with(&[(0x02, 0x03), (0x02, 0x02)]),
        "{commands:?}"
    );
    drop(session);

    let mut no_rundown = SessionConfig::new(providers());
    no_rundown.rundown = Rundown::Off;
    let error = client.start_session(&no_rundown).await.unwrap_err();
    assert!(matches!(error, DiagnosticsError::Unsupported(_)), "{error}");
    assert!(error.to_string().contains("CollectTracing2"), "{error}");
}

#[tokio::test]
async fn newer_collect_tracing_commands_carry_their_options() {
    let (_dir, runtime) = simulated(SimulatedRuntimeConfig::default()).await;
    let client = client_for(&runtime);

    let mut no_stacks = SessionConfig::new(providers());
    no_stacks.stackwalk = false;
    drop(client.start_session(&no_stacks).await.unwrap());
    let request = runtime.last_collect_request().unwrap();
    assert_eq!(request.command_id, 0x04);
    assert!(!request.request_stackwalk);

    let mut rundown = SessionConfig::new(providers());
    rundown.rundown = Rundown::Keywords(0x8);
    drop(client.start_session(&rundown).await.unwrap());
    let request = runtime.last_collect_request().unwrap();
    assert_eq!((request.command_id, request.rundown_keyword), (0x05, 0x8));

    let mut filtered = SessionConfig::new(providers());
    filtered.providers[0].event_ids = Some(EventIdFilter::Only(vec![1, 7]));
    filtered.providers[0]
        .arguments
        .insert("Key".into(), "a;b".into());
    drop(client.start_session(&filtered).await.unwrap());
    let request = runtime.last_collect_request().unwrap();
    assert_eq!(request.command_id, 0x06);
    let provider = &request.providers[0];
    let filter = provider.event_filter.as_ref().unwrap();
    assert!(filter.enable);
    assert_eq!(filter.event_ids, [1, 7]);
    assert_eq!(provider.filter_data.as_deref(), Some("Key=\"a;b\""));
}

/// Checks that a stream's end is for good: a clean end stays clean, a failure is repeated as
/// `SessionFailed` with the same reason, never a clean end.
fn assert_ended_for_good(
    first: &Result<(), DiagnosticsError>,
    again: Result<Option<bytes::Bytes>, DiagnosticsError>,
) {
    match (first, again) {
        (Ok(()), Ok(None)) => {}
        (Err(error), Err(DiagnosticsError::SessionFailed(reason)))
            if reason == error.to_string() => {}
        (first, again) => panic!("ended with {first:?}, then read {again:?}"),
    }
}

/// Reads a session to its end, with its async reader or (`blocking`) the blocking one an egress
/// upload's thread uses: its bytes, and how it ended (`Ok` after the end-of-stream marker).
async fn read_to_end(
    session: EventPipeSession,
    blocking: bool,
) -> (Vec<u8>, Result<(), DiagnosticsError>) {
    if blocking {
        let mut session = session.into_blocking();
        return tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            let end = loop {
                match session.next_chunk() {
                    Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                    Ok(None) => break Ok(()),
                    Err(error) => break Err(error),
                }
            };
            assert_ended_for_good(&end, session.next_chunk());
            (bytes, end)
        })
        .await
        .unwrap();
    }
    let mut session = session;
    let mut bytes = Vec::new();
    let end = loop {
        match session.next_chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    assert_ended_for_good(&end, session.next_chunk().await);
    (bytes, end)
}

/// Both readers, the async one and the blocking one of an egress upload's thread: a stopped
/// session is whole; a cut one is truncated, for good, never a clean end.
#[tokio::test]
async fn a_stopped_session_is_complete_and_a_cut_one_is_truncated() {
    for blocking in [false, true] {
        let (_dir, runtime) = simulated(SimulatedRuntimeConfig::default()).await;
        let session = client_for(&runtime)
            .start_session(&SessionConfig::new(providers()))
            .await
            .unwrap();
        let stop = session.stop_handle();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.stop().await
        });
        let (bytes, end) =
            tokio::time::timeout(Duration::from_secs(20), read_to_end(session, blocking))
                .await
                .expect("the stopped session ends");
        stopper.await.unwrap().unwrap();
        end.unwrap_or_else(|error| panic!("blocking: {blocking}: {error}"));
        let mut digester = TraceDigester::default();
        digester.feed(&bytes).unwrap();
        assert!(digester.finish().unwrap().nettrace.events > 0);

        let config = SimulatedRuntimeConfig {
            stream: StreamBehaviour::DisconnectAfter {
                after_bytes: 150_000,
            },
            ..Default::default()
        };
        let (_dir, runtime) = simulated(config).await;
        let session = client_for(&runtime)
            .start_session(&SessionConfig::new(providers()))
            .await
            .unwrap();
        let (bytes, end) = read_to_end(session, blocking).await;
        assert_eq!(bytes.len(), 150_000, "blocking: {blocking}");
        assert!(
            matches!(end, Err(DiagnosticsError::Truncated { bytes: 150_000, .. })),
            "blocking: {blocking}: {end:?}"
        );
    }
}

#[tokio::test]
async fn listen_mode_takes_advertised_connections_and_resumes_a_suspended_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("port.sock");
    let port = ReversePort::bind(&path, PortLimits::default())
        .await
        .unwrap();
    let config = SimulatedRuntimeConfig::default();
    let runtime = SimulatedRuntime::connect(&path, true, config.clone())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while port.runtimes().is_empty() {
        assert!(Instant::now() < deadline, "the runtime never advertised");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let advertised = port.runtimes();
    assert_eq!(advertised[0].cookie, config.cookie);
    assert_eq!(advertised[0].pid, u64::from(config.pid));

    let directory = ProcessDirectory::new(Discovery::Listen(port.clone()), short_timeouts());
    let processes = directory.list().await;
    assert_eq!(processes.len(), 1);
    assert_eq!(processes[0].uid, config.cookie);
    assert!(!runtime.is_resumed());
    let client = directory.client(&processes[0]);
    client.resume_runtime().await.unwrap();
    assert!(runtime.is_resumed());

    // Each command used a fresh connection; a session and its stop need two more.
    let session = client
        .start_session(&SessionConfig::new(providers()))
        .await
        .unwrap();
    let stop = session.stop_handle();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.stop().await.unwrap();
    });
    let summary = session.copy_to(&mut Vec::new()).await.unwrap();
    assert!(summary.nettrace.events > 0);
    assert!(
        port.runtimes().len() == 1,
        "one runtime, however many connections"
    );
}

#[tokio::test]
async fn listen_mode_keeps_a_bound_port_from_being_stolen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("port.sock");
    let _port = ReversePort::bind(&path, PortLimits::default())
        .await
        .unwrap();
    let error = ReversePort::bind(&path, PortLimits::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("already listening"), "{error}");
}

/// Runs `process_info` against a broken peer and checks it fails fast with a clear error.
async fn fails_within(endpoint: Endpoint, expect: &str) {
    let started = Instant::now();
    let client = DiagnosticsClient::new(endpoint, short_timeouts());
    let error = client.process_info().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{expect}: took {:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains(expect), "{expect}: {error}");
}

#[tokio::test]
async fn broken_peers_give_clear_errors_within_their_timeout() {
    // A stale socket file: nobody listens any more.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("dotnet-diagnostic-1-1-socket");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    fails_within(Endpoint::Socket(stale), "cannot connect").await;

    for (fault, expect) in [
        (Fault::Garbage, "broke the diagnostics protocol"),
        (Fault::HalfHeaderThenStall, "did not answer within"),
        (Fault::OversizedLength, "did not finish its answer within"),
        (Fault::Silent, "did not answer within"),
        (Fault::HugeStringLength, "claims 2147483648 UTF-16 units"),
    ] {
        let config = SimulatedRuntimeConfig {
            fault: Some(fault),
            ..Default::default()
        };
        let (_dir, runtime) = simulated(config).await;
        fails_within(Endpoint::Socket(runtime.socket_path().unwrap()), expect).await;
    }
}

#[tokio::test]
async fn broken_peers_are_left_out_of_listings() {
    let (dir, _runtime) = simulated(SimulatedRuntimeConfig {
        fault: Some(Fault::Garbage),
        ..Default::default()
    })
    .await;
    let directory = ProcessDirectory::new(
        Discovery::Connect {
            socket_dir: dir.path().to_owned(),
        },
        short_timeouts(),
    );
    assert!(directory.list().await.is_empty());
}

#[tokio::test]
async fn a_refused_stop_is_retried_and_the_trace_completes() {
    let config = SimulatedRuntimeConfig {
        fault: Some(Fault::RefuseFirstStop),
        ..Default::default()
    };
    let (_dir, runtime) = simulated(config).await;
    let session = client_for(&runtime)
        .start_session(&SessionConfig::new(providers()))
        .await
        .unwrap();
    let stop = session.stop_handle();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.stop().await
    });
    let mut bytes = Vec::new();
    let summary = session.copy_to(&mut bytes).await.unwrap();
    stopper.await.unwrap().unwrap();
    assert!(summary.nettrace.events > 0);
    let stops = runtime
        .commands_received()
        .iter()
        .filter(|code| **code == Command::StopTracing.code())
        .count();
    assert_eq!(stops, 2, "the refused StopTracing was sent again");
}

/// Both readers of a session, the async one and the blocking one of an egress upload's thread,
/// end a session whose runtime ignores the stop as truncated at the stop deadline.
#[tokio::test]
async fn a_stop_the_runtime_ignores_ends_the_session_as_truncated_at_the_deadline() {
    for blocking in [false, true] {
        let config = SimulatedRuntimeConfig {
            fault: Some(Fault::IgnoreStop),
            ..Default::default()
        };
        let (_dir, runtime) = simulated(config).await;
        let timeouts = Timeouts {
            stop: Duration::from_secs(1),
            ..short_timeouts()
        };
        let client =
            DiagnosticsClient::new(Endpoint::Socket(runtime.socket_path().unwrap()), timeouts);
        let session = client
            .start_session(&SessionConfig::new(providers()))
            .await
            .unwrap();
        let stop = session.stop_handle();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.stop().await
        });
        let started = Instant::now();
        let error = read_to_end(session, blocking).await.1.unwrap_err();
        let elapsed = started.elapsed();
        stopper.await.unwrap().unwrap();
        assert!(
            matches!(&error, DiagnosticsError::Truncated { reason, .. } if reason.contains("stop request")),
            "blocking: {blocking}: {error}"
        );
        assert!(
            elapsed >= Duration::from_millis(1100) && elapsed < Duration::from_secs(4),
            "blocking: {blocking}: ended {elapsed:?} after the start, the deadline is 1 s after the stop"
        );
    }
}

#[tokio::test]
async fn a_stop_the_runtime_ignores_fails_the_operation_at_the_configured_deadline() {
    use diagmon_tests::monitor::Monitor;
    let config = SimulatedRuntimeConfig {
        fault: Some(Fault::IgnoreStop),
        ..Default::default()
    };
    let (dir, _runtime) = simulated(config).await;
    let monitor = Monitor::start(
        &format!(
            "socket_dir = {:?}\n[runtime]\nstop_timeout_seconds = 1\n",
            dir.path().display().to_string()
        ),
        &["--no-auth"],
    );
    let client = reqwest::Client::new();
    let response = client
        .get(monitor.url("/trace?profile=Cpu&durationSeconds=-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let location = response
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned();
    let body = tokio::spawn(response.bytes());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stop = client
        .delete(format!("{location}?stop=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), reqwest::StatusCode::ACCEPTED);
    let stopped = Instant::now();
    assert!(
        body.await.unwrap().is_err(),
        "a trace without its end is cut off, not completed"
    );
    let elapsed = stopped.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "ended {elapsed:?} after the stop; the deadline is 1 s"
    );
    let mut operation = serde_json::Value::Null;
    for _ in 0..50 {
        operation = client
            .get(&location)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if operation["status"] != "Stopping" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(operation["status"], "Failed", "{operation}");
    assert_eq!(operation["error"]["code"], "TraceTruncated", "{operation}");
}

#[tokio::test]
async fn listen_mode_lists_no_more_runtimes_than_configured() {
    use diagmon_tests::monitor::Monitor;
    let dir = tempfile::tempdir().unwrap();
    let port = dir.path().join("port.sock");
    let monitor = Monitor::start(
        &format!(
            "[diagnostic_port]\nendpoint_name = {:?}\nmax_runtimes = 1\n",
            port.display().to_string()
        ),
        &["--no-auth"],
    );
    let first = SimulatedRuntime::connect(&port, false, SimulatedRuntimeConfig::default())
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let listed = |client: reqwest::Client| {
        let url = monitor.url("/processes");
        async move {
            let processes: serde_json::Value = get_json(&client, url).await;
            processes
                .as_array()
                .unwrap()
                .iter()
                .map(|process| process["uid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while listed(client.clone()).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first runtime never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = SimulatedRuntime::connect(&port, false, SimulatedRuntimeConfig::default())
        .await
        .unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            listed(client.clone()).await,
            [first.config().cookie.to_string()],
            "only the first runtime is listed"
        );
    }
    drop(second);
    let log = monitor.stderr_lines().join("\n") + &monitor.stdout_lines().join("\n");
    assert!(log.contains("too many runtimes"), "{log}");
}

/// A monitor of the runtimes in `socket_dir` whose `files` provider (into the returned folder)
/// has one instance, so that a second upload waits for the first.
fn one_instance_monitor(
    socket_dir: &std::path::Path,
) -> (diagmon_tests::monitor::Monitor, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let monitor = diagmon_tests::monitor::Monitor::start(
        &format!(
            "socket_dir = {:?}\n[metrics]\nenabled = false\n\
             [egress.providers.files]\ncomponent = \"filesystem\"\ndirectory = {:?}\n\
             [egress.providers.files.limits]\nmax_instances = 1\ncall_timeout_ms = 20000\n",
            socket_dir.display().to_string(),
            out.path().display().to_string()
        ),
        &["--no-auth"],
    );
    (monitor, out)
}

/// An upload waiting for one of its provider's instances opens no session meanwhile: a session
/// opened first would go unread while it waits (a runtime drops events once its buffers fill).
#[tokio::test]
async fn an_egressed_trace_opens_its_session_only_once_the_provider_has_an_instance() {
    use diagmon_tests::api::{final_operation, location_of};
    let (dir, runtime) = simulated(SimulatedRuntimeConfig::default()).await;
    let (monitor, _out) = one_instance_monitor(dir.path());
    let client = reqwest::Client::new();
    let url = monitor.url("/trace?profile=Cpu&durationSeconds=-1&egressProvider=files");
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), reqwest::StatusCode::ACCEPTED);
    let first = location_of(&first);
    let collect_requests = |runtime: &SimulatedRuntime| {
        runtime
            .commands_received()
            .iter()
            // EventPipe's command set; command 1 is StopTracing, the others CollectTracing.
            .filter(|(set, command)| *set == 0x02 && *command != 0x01)
            .count()
    };
    assert_eq!(collect_requests(&runtime), 1);
    // The second waits for the only instance, which the first holds.
    let second = tokio::spawn({
        let client = client.clone();
        async move { client.get(&url).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !second.is_finished(),
        "the second start waits for an instance"
    );
    assert_eq!(
        (collect_requests(&runtime), runtime.active_sessions()),
        (1, 1),
        "no session is opened for the waiting upload"
    );
    let stop = client
        .delete(format!("{first}?stop=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), reqwest::StatusCode::ACCEPTED);
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second starts once the first is done")
        .unwrap();
    assert_eq!(second.status(), reqwest::StatusCode::ACCEPTED);
    let second = location_of(&second);
    assert_eq!(collect_requests(&runtime), 2);
    let stop = client
        .delete(format!("{second}?stop=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), reqwest::StatusCode::ACCEPTED);
    for location in [first, second] {
        let operation = final_operation(&client, &location, Duration::from_secs(10)).await;
        assert_eq!(operation["status"], "Succeeded", "{operation}");
    }
}

#[tokio::test]
async fn a_start_cancelled_while_it_waits_for_an_instance_opens_nothing() {
    use diagmon_tests::api::{final_operation, location_of};
    let (dir, runtime) = simulated(SimulatedRuntimeConfig::default()).await;
    let (monitor, _out) = one_instance_monitor(dir.path());
    let client = reqwest::Client::new();
    let url = monitor.url("/trace?profile=Cpu&durationSeconds=-1&egressProvider=files");
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), reqwest::StatusCode::ACCEPTED);
    let first = location_of(&first);
    // The second waits for the only instance, which the first holds; it is listed as Starting.
    let second = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        async move { client.get(&url).send().await.unwrap() }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let waiting = loop {
        let listed: serde_json::Value = get_json(&client, monitor.url("/operations")).await;
        let starting = listed.as_array().and_then(|all| {
            all.iter()
                .find(|operation| operation["status"] == "Starting")
                .cloned()
        });
        if let Some(operation) = starting {
            break operation;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Starting operation: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = waiting["operationId"].as_str().expect("an operation id");
    let cancel = client
        .delete(monitor.url(&format!("/operations/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), reqwest::StatusCode::OK);
    // The waiting start ends at once, and no session was opened for it.
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("a cancel ends the wait for an instance")
        .unwrap();
    assert_eq!(second.status(), reqwest::StatusCode::ACCEPTED);
    let second = location_of(&second);
    let cancelled = final_operation(&client, &second, Duration::from_secs(5)).await;
    assert_eq!(cancelled["status"], "Cancelled", "{cancelled}");
    assert_eq!(
        runtime.active_sessions(),
        1,
        "only the first's session is open"
    );
    let stop = client
        .delete(format!("{first}?stop=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), reqwest::StatusCode::ACCEPTED);
    let done = final_operation(&client, &first, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
}

//! The diagnostics IPC client against a real .NET Core 3.1 runtime: discovery, EventPipe
//! sessions, and how they end. Needs `bash tests/targets/install.sh` first.

use std::time::Duration;

use diagmon::diagnostics::eventpipe::Rundown;
use diagmon::diagnostics::nettrace::NettraceSummary;
use diagmon::diagnostics::{DiagnosticsError, EventProvider, SessionConfig, Timeouts};
use diagmon::processes::{Discovery, ProcessDirectory, ProcessRecord};
use diagmon_tests::api::{get_json, sha256_hex, validated_nettrace};
use diagmon_tests::target::{Program, TestTarget};

const SAMPLE_PROFILER: &str = "Microsoft-DotNETCore-SampleProfiler";
const RUNTIME: &str = "Microsoft-Windows-DotNETRuntime";
const RUNDOWN: &str = "Microsoft-Windows-DotNETRuntimeRundown";

fn directory(target: &TestTarget) -> ProcessDirectory {
    ProcessDirectory::new(
        Discovery::Connect {
            socket_dir: target.tmpdir().to_owned(),
        },
        Timeouts::default(),
    )
}

async fn the_process(target: &TestTarget) -> ProcessRecord {
    let processes = directory(target).list().await;
    assert_eq!(processes.len(), 1, "{processes:?}");
    processes.into_iter().next().unwrap()
}

/// The seed's sample request: CPU samples and the runtime's default keywords at Informational.
fn sample_config(rundown: Rundown) -> SessionConfig {
    let mut config = SessionConfig::new(vec![
        EventProvider::new(SAMPLE_PROFILER, 0, 4),
        EventProvider::new(RUNTIME, diagmon::profiles::RUNTIME_DEFAULT_KEYWORDS, 4),
    ]);
    config.rundown = rundown;
    config
}

/// Captures `seconds` of a trace; returns the bytes and the client's summary.
async fn capture(
    target: &TestTarget,
    config: &SessionConfig,
    seconds: u64,
) -> Result<(Vec<u8>, NettraceSummary), DiagnosticsError> {
    let process = the_process(target).await;
    let session = directory(target)
        .client(&process)
        .start_session(config)
        .await?;
    let stop = session.stop_handle();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.stop().await
    });
    let mut bytes = Vec::new();
    let digest = session.copy_to(&mut bytes).await?;
    stopper.await.unwrap()?;
    assert_eq!(
        digest.sha256,
        sha256_hex(&bytes),
        "the digest covers exactly the bytes written"
    );
    Ok((bytes, digest.nettrace))
}

#[tokio::test]
async fn discovery_finds_a_real_runtime_with_a_stable_uid() {
    let first = TestTarget::start(Program::Worker, &[]);
    let second = TestTarget::start_in(first.tmpdir(), Program::Worker, &[]);
    let processes = directory(&first).list().await;
    assert_eq!(processes.len(), 2, "{processes:?}");
    let process = processes
        .iter()
        .find(|p| p.pid == u64::from(first.pid()))
        .expect("first target listed");
    assert_eq!(process.name, "dotnet");
    assert!(
        process
            .command_line
            .contains(&first.dll_path().display().to_string()),
        "{}",
        process.command_line
    );
    assert_eq!(
        process.managed_entry_point_assembly_name.as_deref(),
        Some("Worker")
    );
    assert!(!process.supports_process_commands, "3.1 has no Process set");
    assert!(!process.uid.is_nil());

    let again = directory(&first).list().await;
    let uids = |list: &[ProcessRecord]| list.iter().map(|p| (p.pid, p.uid)).collect::<Vec<_>>();
    assert_eq!(uids(&processes), uids(&again), "uids are stable");
    assert_ne!(processes[0].uid, processes[1].uid, "two instances differ");
    assert!(processes.iter().any(|p| p.pid == u64::from(second.pid())));
}

#[tokio::test]
async fn a_session_returns_a_complete_trace_with_samples_and_runtime_events() {
    let target = TestTarget::start(Program::Worker, &[]);
    let (bytes, summary) = capture(&target, &sample_config(Rundown::On), 3)
        .await
        .unwrap();
    assert_eq!(summary.bytes, bytes.len() as u64);
    let checked = validated_nettrace(&bytes);
    assert_eq!(checked.events, summary.events);
    assert_eq!(checked.process_id, Some(u64::from(target.pid())));
    let count = |provider: &str| {
        checked
            .events_by_provider
            .get(provider)
            .copied()
            .unwrap_or(0)
    };
    assert!(
        count(SAMPLE_PROFILER) > 100,
        "{:?}",
        checked.events_by_provider
    );
    assert!(count(RUNTIME) > 0, "{:?}", checked.events_by_provider);
    assert!(
        count(RUNDOWN) > 0,
        "rundown requested: {:?}",
        checked.events_by_provider
    );
}

#[tokio::test]
async fn without_rundown_there_are_no_rundown_events() {
    let target = TestTarget::start(Program::Worker, &[]);
    let (bytes, _) = capture(&target, &sample_config(Rundown::Off), 2)
        .await
        .unwrap();
    let checked = validated_nettrace(&bytes);
    assert!(checked.events_by_provider.contains_key(SAMPLE_PROFILER));
    assert_eq!(checked.events_by_provider.get(RUNDOWN), None);
}

#[tokio::test]
async fn provider_keywords_and_level_reach_an_event_source() {
    let target = TestTarget::start(Program::EventSourceApp, &[]);
    let mut provider = EventProvider::new("Diagmon-Test", 0x1, 4);
    provider
        .arguments
        .insert("EventCounterIntervalSec".into(), "1".into());
    let mut config = SessionConfig::new(vec![provider]);
    config.rundown = Rundown::Off;
    let (bytes, _) = capture(&target, &config, 2).await.unwrap();
    let checked = validated_nettrace(&bytes);
    assert!(
        checked
            .events_by_event
            .get("Diagmon-Test/Tick")
            .copied()
            .unwrap_or(0)
            > 10,
        "{:?}",
        checked.events_by_event
    );
    assert_eq!(
        checked.events_by_event.get("Diagmon-Test/Detail"),
        None,
        "keyword Beta and level Verbose were not asked for"
    );
}

#[tokio::test]
async fn a_killed_target_gives_a_truncated_trace_never_success() {
    let target = TestTarget::start(Program::Worker, &[]);
    let process = the_process(&target).await;
    let mut session = directory(&target)
        .client(&process)
        .start_session(&sample_config(Rundown::On))
        .await
        .unwrap();
    let mut received = 0;
    let killer = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        target.signal(libc::SIGKILL);
    };
    let reader = async {
        loop {
            match session.next_chunk().await {
                Ok(Some(chunk)) => received += chunk.len(),
                Ok(None) => panic!("a killed target must not end the trace cleanly"),
                Err(error) => return error,
            }
        }
    };
    let (_, error) = tokio::join!(killer, reader);
    assert!(
        matches!(error, DiagnosticsError::Truncated { .. }),
        "{error}"
    );
    assert!(received > 0);
    assert!(error.to_string().contains("cut short"), "{error}");
}

#[tokio::test]
async fn sigterm_ends_the_trace_completely() {
    let target = TestTarget::start(Program::Worker, &[]);
    let process = the_process(&target).await;
    let session = directory(&target)
        .client(&process)
        .start_session(&sample_config(Rundown::On))
        .await
        .unwrap();
    let signal = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        target.signal(libc::SIGTERM);
    };
    let mut bytes = Vec::new();
    let (_, summary) = tokio::join!(signal, session.copy_to(&mut bytes));
    let summary = summary.expect("a graceful exit completes the trace");
    assert_eq!(validated_nettrace(&bytes).events, summary.nettrace.events);
    assert!(summary.nettrace.events_by_provider.contains_key(RUNDOWN));
}

#[tokio::test]
async fn dropping_a_session_ends_it_in_the_target() {
    let target = TestTarget::start(Program::Worker, &[]);
    let process = the_process(&target).await;
    let client = directory(&target).client(&process);
    let mut session = client
        .start_session(&sample_config(Rundown::Off))
        .await
        .unwrap();
    assert!(session.next_chunk().await.unwrap().is_some());
    drop(session);
    // The runtime notices the closed connection and serves a new session right away.
    let (bytes, _) = capture(&target, &sample_config(Rundown::Off), 1)
        .await
        .unwrap();
    validated_nettrace(&bytes);
}

/// A process that does nothing but live (a pid for impostor sockets to claim); killed on drop.
struct Bystander(std::process::Child);

impl Bystander {
    fn start() -> Bystander {
        Bystander(
            std::process::Command::new("sleep")
                .arg("120")
                .spawn()
                .expect("start sleep"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The socket name a runtime with this pid would create.
    fn socket_name(&self) -> String {
        let start = diagmon::procfs::stat(self.pid()).unwrap().start_time;
        format!("dotnet-diagnostic-{}-{start}-socket", self.pid())
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn impostor_sockets_beside_a_real_runtime_are_ignored() {
    use diagmon_tests::simulated_runtime::{Fault, SimulatedRuntime, SimulatedRuntimeConfig};
    let target = TestTarget::start(Program::Worker, &[]);
    let dir = target.tmpdir().to_owned();
    let pid = target.pid();
    let start = diagmon::procfs::stat(pid).unwrap().start_time;
    let invented = |pid: u32| SimulatedRuntimeConfig {
        pid,
        command_line: "/invented/by/an/impostor".to_owned(),
        ..Default::default()
    };
    // The real pid and start time, spelled with a leading zero, answering invented data.
    let _leading_zero = SimulatedRuntime::listen_at(
        &dir.join(format!("dotnet-diagnostic-{pid}-0{start}-socket")),
        invented(pid),
    )
    .await
    .unwrap();
    // A symlink to the real socket under another live process's exact name.
    let linked = Bystander::start();
    std::os::unix::fs::symlink(target.socket_path(), dir.join(linked.socket_name())).unwrap();
    // Sockets under other live processes' exact names, served by this process: one answering
    // invented data, one answering garbage.
    let claimed = Bystander::start();
    let _claiming = SimulatedRuntime::listen(&dir, invented(claimed.pid()))
        .await
        .unwrap();
    let garbled = Bystander::start();
    let _garbage = SimulatedRuntime::listen(
        &dir,
        SimulatedRuntimeConfig {
            fault: Some(Fault::Garbage),
            ..invented(garbled.pid())
        },
    )
    .await
    .unwrap();
    assert!(std::fs::read_dir(&dir).unwrap().count() >= 5);

    let check = |processes: &[ProcessRecord]| {
        assert_eq!(processes.len(), 1, "{processes:?}");
        assert_eq!(processes[0].pid, u64::from(pid));
        assert!(
            processes[0]
                .command_line
                .contains(&target.dll_path().display().to_string()),
            "{}",
            processes[0].command_line
        );
        assert!(!processes[0].supports_process_commands, "3.1's own data");
    };
    check(&directory(&target).list().await);

    let monitor = diagmon_tests::monitor::Monitor::start(
        &format!("socket_dir = {:?}\n", dir.display().to_string()),
        &["--no-auth"],
    );
    let client = reqwest::Client::new();
    let listed: serde_json::Value = get_json(&client, monitor.url("/processes")).await;
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["pid"], pid);
    assert_eq!(
        listed[0]["uid"],
        directory(&target).list().await[0].uid.to_string()
    );
    let stderr = monitor.stderr_lines().join("\n") + &monitor.stdout_lines().join("\n");
    assert!(
        stderr.contains("untrusted runtime socket"),
        "the impostors are logged: {stderr}"
    );
}

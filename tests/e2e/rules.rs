//! Collection rules end to end: the real binary applying rules to real .NET Core 3.1 targets in
//! connect mode (`CounterApp`'s `fixed-mean` counter always reports 42.5), artifacts landing in
//! a filesystem egress provider, rule states read from `/collectionrules`, and configurations
//! refused at start-up; and, on the simulated runtime, what 3.1 cannot show (meters, ASP.NET
//! Core request events, listen mode) and the operations of `Execute` and
//! `GetEnvironmentVariable`. Needs `tests/run` (installs the target and builds the binary).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diagmon::diagnostics::nettrace;
use diagmon_tests::api::FINAL_STATES;
use diagmon_tests::monitor::{Monitor, monitor_binary};
use diagmon_tests::target::{Program, TestTarget};
use serde_json::Value;

/// A trigger on CounterApp's `fixed-mean` (always 42.5) above `above` for `window`.
fn fixed_mean_trigger(above: f64, window: &str) -> String {
    format!(
        "{{ type = \"EventCounter\", settings = {{ provider_name = \"Diagmon-Counters\", \
         counter_name = \"fixed-mean\", greater_than = {above}, sliding_window_duration = \"{window}\" }} }}"
    )
}

/// `GET path` as JSON, with its status.
async fn get(monitor: &Monitor, path: &str) -> (u16, Value) {
    let response = reqwest::get(monitor.url(path)).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `/collectionrules/{rule}?pid=` until `ready` holds (≤ `within`); the last description.
async fn wait_rule(
    monitor: &Monitor,
    pid: u32,
    rule: &str,
    within: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = get(monitor, &format!("/collectionrules/{rule}?pid={pid}")).await;
        if status == 200 && ready(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "rule {rule} not as expected within {within:?}: {status} {body}\nstderr:\n{}",
            monitor.stderr_lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

fn egress_section(dir: &Path) -> String {
    format!(
        "[egress.providers.files]\ncomponent = \"filesystem\"\ndirectory = {:?}\n",
        dir.display().to_string()
    )
}

#[tokio::test]
async fn an_event_counter_trigger_collects_exactly_one_trace_then_finishes() {
    let target = TestTarget::start(Program::CounterApp, &[]);
    let stored = tempfile::tempdir().unwrap();
    let config = format!(
        "socket_dir = {:?}\n\
         [metrics]\ninterval_seconds = 1\nproviders = [\"Diagmon-Counters\"]\n\
         {egress}\
         [collection_rules.high]\n\
         trigger = {high}\n\
         actions = [{{ name = \"trace\", type = \"CollectTrace\", settings = {{ providers = [{{ name = \"Microsoft-Windows-DotNETRuntime\", keywords = \"0x1\", event_level = \"Informational\" }}], duration = \"00:00:02\", egress = \"files\" }} }}]\n\
         limits = {{ action_count = 1 }}\n\
         [collection_rules.never]\n\
         trigger = {{ type = \"EventCounter\", settings = {{ provider_name = \"Diagmon-Counters\", counter_name = \"fixed-mean\", less_than = 10, sliding_window_duration = \"1s\" }} }}\n\
         actions = [{{ type = \"CollectTrace\", settings = {{ profile = \"Cpu\", duration = \"2s\", egress = \"files\" }} }}]\n",
        target.tmpdir().display().to_string(),
        egress = egress_section(stored.path()),
        high = fixed_mean_trigger(40.0, "2s"),
    );
    let monitor = Monitor::start(&config, &["--no-auth"]);
    let pid = target.pid();
    let finished = wait_rule(&monitor, pid, "high", Duration::from_secs(90), |rule| {
        rule["state"] == "Finished"
    })
    .await;
    assert_eq!(finished["lifetimeOccurrences"], 1, "{finished}");
    assert_eq!(finished["actionCountLimit"], 1, "{finished}");
    assert!(
        finished["stateReason"]
            .as_str()
            .unwrap()
            .contains("ActionCount"),
        "{finished}"
    );
    // Exactly one complete nettrace.
    let files = files_in(stored.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0]
            .to_string_lossy()
            .ends_with(&format!("_{pid}.nettrace")),
        "{files:?}"
    );
    let summary = nettrace::validate_file(&files[0]).expect("a complete nettrace");
    assert!(summary.events > 0, "{summary:?}");
    // It is an ordinary operation, tagged with the rule's name.
    let (status, operations) = get(&monitor, "/operations?tags=high").await;
    assert_eq!(status, 200);
    let operations = operations.as_array().unwrap().clone();
    assert_eq!(operations.len(), 1, "{operations:?}");
    let (_, operation) = get(
        &monitor,
        &format!(
            "/operations/{}",
            operations[0]["operationId"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(operation["status"], "Succeeded", "{operation}");
    assert_eq!(operation["egressProviderName"], "files", "{operation}");
    assert_eq!(operation["process"]["pid"], pid, "{operation}");
    // The threshold never reached: no artifact, still Running.
    let (status, rules) = get(&monitor, &format!("/collectionrules?pid={pid}")).await;
    assert_eq!(status, 200, "{rules}");
    assert_eq!(rules["never"]["state"], "Running", "{rules}");
    assert_eq!(rules["high"]["state"], "Finished", "{rules}");
    let (_, never) = get(&monitor, &format!("/collectionrules/never?pid={pid}")).await;
    assert_eq!(never["lifetimeOccurrences"], 0, "{never}");
    let (_, tagged) = get(&monitor, "/operations?tags=never").await;
    assert_eq!(tagged, Value::Array(Vec::new()));
    assert_eq!(files_in(stored.path()).len(), 1);
    // An unknown rule is a 404 that says what to do.
    let (status, problem) = get(&monitor, &format!("/collectionrules/nope?pid={pid}")).await;
    assert_eq!(status, 404, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("[collection_rules.nope]"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_startup_rule_dumps_a_target_started_after_diagmon() {
    let socket_dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let stored = work.path().join("stored");
    std::fs::create_dir(&stored).unwrap();
    let config = format!(
        "socket_dir = {:?}\n{egress}\
         [storage]\ndump_temp_folder = {:?}\n\
         [collection_rules.dump_at_start]\n\
         filters = [{{ key = \"CommandLine\", value = \"CounterApp\", match = \"Contains\" }}]\n\
         trigger = {{ type = \"Startup\" }}\n\
         actions = [{{ type = \"CollectDump\", settings = {{ type = \"Mini\", egress = \"files\" }} }}]\n",
        socket_dir.path().display().to_string(),
        work.path().join("dumps").display().to_string(),
        egress = egress_section(&stored),
    );
    let monitor = Monitor::start(&config, &["--no-auth"]);
    let target = TestTarget::start_in(socket_dir.path(), Program::CounterApp, &[]);
    let finished = wait_rule(
        &monitor,
        target.pid(),
        "dump_at_start",
        Duration::from_secs(90),
        |rule| rule["state"] == "Finished",
    )
    .await;
    assert_eq!(finished["lifetimeOccurrences"], 1, "{finished}");
    assert!(
        finished["stateReason"]
            .as_str()
            .unwrap()
            .contains("Startup"),
        "{finished}"
    );
    assert!(finished.get("lastError").is_none(), "{finished}");
    let files = files_in(&stored);
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "a core file");
    let (_, operations) = get(&monitor, "/operations?tags=dump_at_start").await;
    assert_eq!(operations.as_array().unwrap().len(), 1, "{operations}");
    assert_eq!(operations[0]["status"], "Succeeded", "{operations}");
}

#[tokio::test]
async fn a_startup_rule_takes_a_heap_snapshot_that_lists_the_kept_objects() {
    let socket_dir = tempfile::tempdir().unwrap();
    let stored = tempfile::tempdir().unwrap();
    let config = format!(
        "socket_dir = {:?}\n{egress}\
         [collection_rules.heap_at_start]\n\
         filters = [{{ key = \"CommandLine\", value = \"HeapKeeper\", match = \"Contains\" }}]\n\
         trigger = {{ type = \"Startup\" }}\n\
         actions = [{{ type = \"CollectGCDump\", settings = {{ egress = \"files\" }} }}]\n",
        socket_dir.path().display().to_string(),
        egress = egress_section(stored.path()),
    );
    let monitor = Monitor::start(&config, &["--no-auth"]);
    // 500 objects of Diagmon.Kept, each holding a 100-byte array.
    let target = TestTarget::start_in(socket_dir.path(), Program::HeapKeeper, &["500", "100"]);
    let finished = wait_rule(
        &monitor,
        target.pid(),
        "heap_at_start",
        Duration::from_secs(90),
        |rule| rule["state"] == "Finished",
    )
    .await;
    assert!(finished.get("lastError").is_none(), "{finished}");
    let (_, operations) = get(&monitor, "/operations?tags=heap_at_start").await;
    assert_eq!(operations[0]["status"], "Succeeded", "{operations}");
    assert_eq!(operations[0]["kind"], "gcdump", "{operations}");
    let files = files_in(stored.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().ends_with(".gcdump"), "{files:?}");
    let dump = diagmon::gcdump::format::read(&std::fs::read(&files[0]).unwrap())
        .expect("a .gcdump that reads back");
    let heap = diagmon::gcdump::report::report(&dump, None).unwrap();
    let kept = heap
        .types
        .iter()
        .find(|row| row.name == "Diagmon.Kept")
        .expect("a Diagmon.Kept row");
    assert_eq!(kept.count, 500, "{heap:?}");
}

#[tokio::test]
async fn limits_count_throttle_and_end_rules() {
    let target = TestTarget::start(Program::CounterApp, &[]);
    let out = tempfile::tempdir().unwrap();
    let append = |file: &str| {
        format!(
            "[{{ type = \"Execute\", settings = {{ path = \"/bin/sh\", arguments = [\"-c\", \"echo $(Process.ProcessId) >> {}\"] }} }}]",
            out.path().join(file).display()
        )
    };
    let config = format!(
        "socket_dir = {:?}\n\
         [metrics]\ninterval_seconds = 1\nproviders = [\"Diagmon-Counters\"]\n\
         [collection_rules]\nallow_execute = true\n\
         [collection_rules.counted]\ntrigger = {trigger}\nactions = {counted}\nlimits = {{ action_count = 2 }}\n\
         [collection_rules.windowed]\ntrigger = {trigger}\nactions = {windowed}\n\
         limits = {{ action_count = 2, action_count_sliding_window_duration = \"00:00:08\" }}\n\
         [collection_rules.timed]\ntrigger = {trigger}\nactions = {timed}\n\
         limits = {{ action_count = 100, rule_duration = \"5s\" }}\n",
        target.tmpdir().display().to_string(),
        trigger = fixed_mean_trigger(40.0, "1s"),
        counted = append("counted"),
        windowed = append("windowed"),
        timed = append("timed"),
    );
    let monitor = Monitor::start(&config, &["--no-auth"]);
    let pid = target.pid();
    let within = Duration::from_secs(60);
    // The action count without a window finishes the rule after two runs.
    let counted = wait_rule(&monitor, pid, "counted", within, |r| {
        r["state"] == "Finished"
    })
    .await;
    assert_eq!(counted["lifetimeOccurrences"], 2, "{counted}");
    let lines = std::fs::read_to_string(out.path().join("counted")).unwrap();
    assert_eq!(
        lines,
        format!("{pid}\n{pid}\n"),
        "tokens substituted, two runs"
    );
    // The sliding window throttles after two runs in 8 s, then lets more run.
    let throttled = wait_rule(&monitor, pid, "windowed", within, |r| {
        r["state"] == "Throttled"
    })
    .await;
    assert_eq!(throttled["slidingWindowOccurrences"], 2, "{throttled}");
    assert_eq!(
        throttled["actionCountSlidingWindowDurationLimit"], "00:00:08",
        "{throttled}"
    );
    assert!(
        throttled["slidingWindowDurationCountdown"].is_string(),
        "{throttled}"
    );
    let again = wait_rule(&monitor, pid, "windowed", within, |r| {
        r["lifetimeOccurrences"].as_u64() >= Some(3)
    })
    .await;
    assert_ne!(again["state"], "Finished", "{again}");
    // The rule duration ends a rule whatever its count.
    let timed = wait_rule(&monitor, pid, "timed", within, |r| r["state"] == "Finished").await;
    assert!(
        timed["stateReason"]
            .as_str()
            .unwrap()
            .contains("RuleDuration"),
        "{timed}"
    );
    assert!(timed["ruleFinishedCountdown"].is_null(), "{timed}");
    let runs = std::fs::read_to_string(out.path().join("timed")).unwrap_or_default();
    let runs_then = runs.lines().count();
    assert!(runs_then < 100, "{runs_then}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let runs = std::fs::read_to_string(out.path().join("timed")).unwrap_or_default();
    assert_eq!(
        runs.lines().count(),
        runs_then,
        "no run after the rule finished"
    );
}

#[tokio::test]
async fn a_trigger_runs_its_own_counter_session_and_rules_reload() {
    let target = TestTarget::start(Program::CounterApp, &[]);
    let out = tempfile::tempdir().unwrap();
    let marker = out.path().join("ran");
    let head = format!(
        "socket_dir = {:?}\n[metrics]\nenabled = false\ninterval_seconds = 1\n\
         [collection_rules]\nallow_execute = true\n",
        target.tmpdir().display().to_string()
    );
    let monitor = Monitor::start(&head, &["--no-auth"]);
    let pid = target.pid();
    let (status, rules) = get(&monitor, &format!("/collectionrules?pid={pid}")).await;
    assert_eq!((status, rules), (200, serde_json::json!({})));
    // A rule added to the file starts without a restart; metrics are off, so the trigger has a
    // counter session of its own. PascalCase keys, a TimeSpan and `Arguments` quoted as .NET
    // splits them work as in dotnet-monitor.
    let rule = format!(
        "[collection_rules.added]\n\
         Trigger = {{ Type = \"EventCounter\", Settings = {{ ProviderName = \"Diagmon-Counters\", CounterName = \"fixed-mean\", GreaterThan = 40, SlidingWindowDuration = \"00:00:01\" }} }}\n\
         Actions = [\
           {{ Name = \"env\", Type = \"GetEnvironmentVariable\", Settings = {{ Name = \"DOTNET_SYSTEM_GLOBALIZATION_INVARIANT\" }} }},\
           {{ Type = \"Execute\", Settings = {{ Path = \"/bin/sh\", Arguments = '-c \"echo $(Process.Name) $(Actions.env.Value) > {}\"' }} }}\
         ]\n\
         Limits = {{ ActionCount = 1 }}\n",
        marker.display()
    );
    std::fs::write(monitor.config_path(), format!("{head}{rule}")).unwrap();
    let finished = wait_rule(&monitor, pid, "added", Duration::from_secs(60), |r| {
        r["state"] == "Finished"
    })
    .await;
    assert!(finished.get("lastError").is_none(), "{finished}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "dotnet 1\n");
    // Removed from the file: gone from the process.
    std::fs::write(monitor.config_path(), &head).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, rules) = get(&monitor, &format!("/collectionrules?pid={pid}")).await;
        if rules == serde_json::json!({}) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rule was not removed: {rules}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts the binary on `config` and expects it to refuse to start; its stderr.
fn refused(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diagmon.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(monitor_binary())
        .arg("collect")
        .arg("--config")
        .arg(&path)
        .args(["--urls", "http://127.0.0.1:0", "--no-auth"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "diagmon started on:\n{config}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_rules_stop_the_start_up_with_the_rule_and_key() {
    let socket_dir = tempfile::tempdir().unwrap();
    let head = format!(
        "socket_dir = {:?}\n",
        socket_dir.path().display().to_string()
    );
    for (rule, key) in [
        (
            "trigger = { type = \"WhenItRains\" }",
            "collection_rules.r.trigger.type",
        ),
        (
            "trigger = { type = \"Startup\" }\nactions = [{ type = \"CollectTrace\", settings = { profile = \"Cpu\", providers = [{ name = \"X\" }] } }]",
            "collection_rules.r.actions[0].settings.providers",
        ),
        (
            "trigger = { type = \"Startup\" }\nactions = [{ type = \"CollectTrace\", settings = { profile = \"Cpu\", duration = \"-00:00:30\" } }]",
            "collection_rules.r.actions[0].settings.duration",
        ),
        (
            "trigger = { type = \"Startup\" }\nactions = [{ type = \"Execute\", settings = { path = \"/bin/true\" } }]",
            "collection_rules.r.actions[0].settings.path",
        ),
    ] {
        let stderr = refused(&format!("{head}[collection_rules.r]\n{rule}\n"));
        assert!(stderr.contains(&format!("`{key}`")), "{rule}:\n{stderr}");
    }
    let stderr = refused(&format!(
        "{head}[collection_rules.r]\ntrigger = {{ type = \"Startup\" }}\nactions = [{{ type = \"Execute\", settings = {{ path = \"/bin/true\" }} }}]\n"
    ));
    assert!(stderr.contains("allow_execute = true"), "{stderr}");
}

#[tokio::test]
async fn listen_mode_starts_the_startup_actions_before_resuming_the_runtime() {
    use diagmon_tests::simulated_runtime::{SimulatedRuntime, SimulatedRuntimeConfig};
    let dir = tempfile::tempdir().unwrap();
    let port = dir.path().join("port.sock");
    let stored = dir.path().join("stored");
    std::fs::create_dir(&stored).unwrap();
    let config = format!(
        "{egress}[diagnostic_port]\nendpoint_name = {:?}\n\
         [collection_rules.from_the_start]\n\
         trigger = {{ type = \"Startup\" }}\n\
         actions = [{{ type = \"CollectTrace\", settings = {{ profile = \"Cpu\", duration = \"1s\", egress = \"files\" }} }}]\n",
        port.display().to_string(),
        egress = egress_section(&stored),
    );
    let monitor = Monitor::start(&config, &["--no-auth"]);
    let runtime = SimulatedRuntime::connect(&port, true, SimulatedRuntimeConfig::default())
        .await
        .unwrap();
    let pid = runtime.config().pid;
    let finished = wait_rule(
        &monitor,
        pid,
        "from_the_start",
        Duration::from_secs(60),
        |rule| rule["state"] == "Finished",
    )
    .await;
    assert!(finished.get("lastError").is_none(), "{finished}");
    assert!(runtime.is_resumed(), "the runtime was resumed");
    let commands = runtime.commands_received();
    let trace = commands
        .iter()
        .position(|&(set, id)| set == 0x02 && (0x02..=0x06).contains(&id));
    let resume = commands.iter().position(|&command| command == (0x04, 0x01));
    assert!(
        matches!((trace, resume), (Some(trace), Some(resume)) if trace < resume),
        "the trace must start before the runtime is resumed: {commands:02x?}"
    );
    let files = files_in(&stored);
    assert_eq!(files.len(), 1, "{files:?}");
    nettrace::validate_file(&files[0]).expect("a complete nettrace");
}

#[tokio::test]
async fn an_event_meter_trigger_fires_on_a_simulated_net_8_runtime() {
    use diagmon_tests::counter_events::METER_GAUGE;
    use diagmon_tests::simulated_runtime::{
        SimulatedRuntime, SimulatedRuntimeConfig, StreamBehaviour,
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = SimulatedRuntime::listen(
        dir.path(),
        SimulatedRuntimeConfig {
            stream: StreamBehaviour::Counters { malformed: false },
            ..SimulatedRuntimeConfig::default()
        },
    )
    .await
    .unwrap();
    let marker = dir.path().join("fired");
    let (instrument, value, _) = METER_GAUGE;
    let config = format!(
        "socket_dir = {:?}\n\
         [metrics]\ninterval_seconds = 1\nmeters = [\"Sim.Meter\"]\n\
         [collection_rules]\nallow_execute = true\n\
         [collection_rules.meter]\n\
         trigger = {{ type = \"EventMeter\", settings = {{ meter_name = \"Sim.Meter\", instrument_name = \"{instrument}\", greater_than = 10, sliding_window_duration = \"1s\" }} }}\n\
         actions = [\
           {{ name = \"env\", type = \"GetEnvironmentVariable\", settings = {{ name = \"DOTNET_SIMULATED_RUNTIME\" }} }},\
           {{ type = \"Execute\", settings = {{ path = \"/bin/sh\", arguments = [\"-c\", \"echo $(Actions.env.Value) $(Process.RuntimeId) > {}\"] }} }}\
         ]\n\
         limits = {{ action_count = 1 }}\n\
         [collection_rules.below]\n\
         trigger = {{ type = \"EventMeter\", settings = {{ meter_name = \"Sim.Meter\", instrument_name = \"{instrument}\", less_than = {value}, sliding_window_duration = \"1s\" }} }}\n",
        dir.path().display().to_string(),
        marker.display(),
    );
    let monitor = Monitor::start(&config, &["--no-auth"]);
    let pid = runtime.config().pid;
    let finished = wait_rule(&monitor, pid, "meter", Duration::from_secs(60), |rule| {
        rule["state"] == "Finished"
    })
    .await;
    assert!(finished.get("lastError").is_none(), "{finished}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        format!("1 {}\n", runtime.config().cookie)
    );
    let (_, below) = get(&monitor, &format!("/collectionrules/below?pid={pid}")).await;
    assert_eq!(below["state"], "Running", "{below}");
    assert_eq!(below["lifetimeOccurrences"], 0, "{below}");
}

#[tokio::test]
async fn rule_operations_are_ordinary_operations_that_can_be_stopped() {
    use diagmon_tests::simulated_runtime::{
        SimulatedRuntime, SimulatedRuntimeConfig, StreamBehaviour,
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = SimulatedRuntime::listen(
        dir.path(),
        SimulatedRuntimeConfig {
            stream: StreamBehaviour::Counters { malformed: false },
            ..SimulatedRuntimeConfig::default()
        },
    )
    .await
    .unwrap();
    let stored = dir.path().join("stored");
    std::fs::create_dir(&stored).unwrap();
    let config = format!(
        "socket_dir = {:?}\n{egress}\
         [metrics]\nenabled = false\ninterval_seconds = 1\n\
         [collection_rules.capture]\n\
         trigger = {{ type = \"Startup\" }}\n\
         actions = [\
           {{ name = \"metrics\", type = \"CollectLiveMetrics\", settings = {{ include_default_providers = false, providers = [{{ provider_name = \"Sim.Provider\" }}], duration = \"2s\", egress = \"files\" }} }},\
           {{ name = \"trace\", type = \"CollectTrace\", settings = {{ providers = [{{ name = \"Sim.Provider\" }}], duration = \"00:10:00\", egress = \"files\" }} }}\
         ]\n",
        dir.path().display().to_string(),
        egress = egress_section(&stored),
    );
    let monitor = Monitor::start(&config, &["--no-auth"]);
    let pid = runtime.config().pid;
    // Both actions start (neither waits for completion); the live metrics end after 2 s, the
    // trace runs on and the rule is executing its actions meanwhile.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (metrics, trace) = loop {
        let (_, operations) = get(&monitor, "/operations?tags=capture").await;
        let operations = operations.as_array().cloned().unwrap_or_default();
        let done = operations.iter().find(|o| o["status"] == "Succeeded");
        let running = operations.iter().find(|o| o["status"] == "Running");
        if let (Some(done), Some(running)) = (done, running) {
            break (done.clone(), running.clone());
        }
        assert!(Instant::now() < deadline, "{operations:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(trace["isStoppable"], true, "{trace}");
    let (_, rule) = get(&monitor, &format!("/collectionrules/capture?pid={pid}")).await;
    assert_eq!(rule["state"], "ActionExecuting", "{rule}");
    let stop = reqwest::Client::new()
        .delete(monitor.url(&format!(
            "/operations/{}?stop=true",
            trace["operationId"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert!(stop.status().is_success(), "{}", stop.status());
    let finished = wait_rule(&monitor, pid, "capture", Duration::from_secs(30), |rule| {
        rule["state"] == "Finished"
    })
    .await;
    assert!(finished.get("lastError").is_none(), "{finished}");
    let files = files_in(&stored);
    assert_eq!(files.len(), 2, "{files:?}");
    let nettrace_file = files
        .iter()
        .find(|f| f.to_string_lossy().ends_with(".nettrace"))
        .expect("the trace");
    nettrace::validate_file(nettrace_file).expect("a complete nettrace");
    let metrics_file = files
        .iter()
        .find(|f| f.to_string_lossy().ends_with(".metrics.json"))
        .expect("the live metrics");
    let records = std::fs::read_to_string(metrics_file).unwrap();
    assert!(records.starts_with('\u{1e}'), "json-seq: {records}");
    assert!(records.contains("Sim.Provider"), "{records}");
    assert_eq!(metrics["egressProviderName"], "files", "{metrics}");
}

/// The requests the simulated application serves in the ASP.NET trigger tests (times after the
/// session started, in ms).
fn simulated_requests() -> Vec<diagmon_tests::aspnet_events::SimulatedRequest> {
    use diagmon_tests::aspnet_events::SimulatedRequest;
    vec![
        SimulatedRequest::new(500, "/api/orders/1", 200, 10),
        SimulatedRequest::new(600, "/api/orders/2", 500, 10),
        SimulatedRequest::new(700, "/api/users", 503, 10),
        SimulatedRequest::new(800, "/health", 500, 10),
        SimulatedRequest::new(900, "/api/slow", 200, 1500),
        SimulatedRequest::hung(1000, "/api/hung"),
        SimulatedRequest::new(2000, "/spread/a", 200, 10),
        SimulatedRequest::new(4500, "/spread/b", 200, 10),
    ]
}

/// Polls `GET /operations?tags=TAG` until an operation is in a final state; it.
async fn wait_final_operation(monitor: &Monitor, tag: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, operations) = get(monitor, &format!("/operations?tags={tag}")).await;
        if let Some(done) = operations.as_array().and_then(|list| {
            list.iter()
                .find(|o| FINAL_STATES.contains(&o["status"].as_str().unwrap_or_default()))
        }) {
            return done.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no finished operation tagged {tag} within {within:?}: {operations}\nstderr:\n{}",
            monitor.stderr_lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn aspnet_triggers_fire_when_enough_matching_requests_fall_in_the_window() {
    use diagmon_tests::simulated_runtime::{SimulatedRuntime, SimulatedRuntimeConfig};
    let dir = tempfile::tempdir().unwrap();
    let runtime = SimulatedRuntime::listen(
        dir.path(),
        SimulatedRuntimeConfig {
            http_requests: simulated_requests(),
            ..SimulatedRuntimeConfig::default()
        },
    )
    .await
    .unwrap();
    let rule = |name: &str, trigger: &str| {
        format!(
            "[collection_rules.{name}]\n\
             trigger = {trigger}\n\
             actions = [{{ type = \"GetEnvironmentVariable\", settings = {{ name = \"DOTNET_SIMULATED_RUNTIME\" }} }}]\n\
             limits = {{ action_count = 1 }}\n"
        )
    };
    let config = format!(
        "socket_dir = {:?}\n[metrics]\nenabled = false\n{}{}{}{}{}{}{}{}",
        dir.path().display().to_string(),
        // Five requests under /api start (the hung one included).
        rule(
            "count",
            "{ type = \"AspNetRequestCount\", settings = { request_count = 5, include_paths = [\"/api/**/*\"], sliding_window_duration = \"00:01:00\" } }"
        ),
        rule(
            "too_few",
            "{ type = \"AspNetRequestCount\", settings = { RequestCount = 6, IncludePaths = [\"/api/**/*\"] } }"
        ),
        // 500 and 503 outside /health.
        rule(
            "errors",
            "{ type = \"AspNetResponseStatus\", settings = { response_count = 2, status_codes = [\"500-599\"], exclude_paths = [\"/health\"] } }"
        ),
        rule(
            "client_errors",
            "{ type = \"AspNetResponseStatus\", settings = { response_count = 1, status_codes = [\"400-499\"] } }"
        ),
        // /api/slow stops after 1.5 s; /api/hung never stops and counts once it ran 1 s.
        rule(
            "slow",
            "{ type = \"AspNetRequestDuration\", settings = { request_count = 2, request_duration = \"00:00:01\" } }"
        ),
        rule(
            "slow_excluded",
            "{ type = \"AspNetRequestDuration\", settings = { request_count = 1, request_duration = \"00:00:01\", exclude_paths = [\"/api/slow\", \"/api/hung\"] } }"
        ),
        // /spread/a and /spread/b start 2.5 s apart: within a 5 s window, not within 1 s.
        rule(
            "spread_wide",
            "{ type = \"AspNetRequestCount\", settings = { request_count = 2, include_paths = [\"/spread/*\"], sliding_window_duration = \"5s\" } }"
        ),
        rule(
            "spread_narrow",
            "{ type = \"AspNetRequestCount\", settings = { request_count = 2, include_paths = [\"/spread/*\"], sliding_window_duration = \"1s\" } }"
        ),
    );
    let monitor = Monitor::start(&config, &["--no-auth"]);
    let pid = runtime.config().pid;
    for fired in ["count", "errors", "slow", "spread_wide"] {
        let rule = wait_rule(&monitor, pid, fired, Duration::from_secs(60), |rule| {
            rule["state"] == "Finished"
        })
        .await;
        assert_eq!(rule["lifetimeOccurrences"], 1, "{fired}: {rule}");
        assert!(rule.get("lastError").is_none(), "{fired}: {rule}");
        let operation = wait_final_operation(&monitor, fired, Duration::from_secs(10)).await;
        assert_eq!(operation["kind"], "environment", "{operation}");
        assert_eq!(operation["outputs"]["Value"], "1", "{operation}");
    }
    // Every request has been served (and the hung one has run for more than a second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    for quiet in ["too_few", "client_errors", "slow_excluded", "spread_narrow"] {
        let (status, rule) = get(&monitor, &format!("/collectionrules/{quiet}?pid={pid}")).await;
        assert_eq!(status, 200, "{quiet}: {rule}");
        assert_eq!(rule["state"], "Running", "{quiet}: {rule}");
        assert_eq!(rule["lifetimeOccurrences"], 0, "{quiet}: {rule}");
    }
    // Each trigger asked for the hosting activity through the DiagnosticSource EventSource.
    let request = runtime.last_collect_request().expect("a session");
    let provider = request
        .providers
        .iter()
        .find(|p| p.name == "Microsoft-Diagnostics-DiagnosticSource")
        .expect("the DiagnosticSource provider");
    assert_eq!(provider.keywords & 0x2, 0x2);
    assert!(
        provider
            .filter_data
            .as_deref()
            .unwrap_or_default()
            .contains("HttpRequestIn.Stop@Activity1Stop"),
        "{provider:?}"
    );
}

/// The simulated hosting events of two requests differ only inside `Arguments`, which
/// `payload_filter` cannot look into: the filter matches every request's stop, and the trace must
/// end at the first one, long before the second request starts and long before its duration.
#[tokio::test]
async fn a_stopping_event_ends_the_trace_complete_at_the_first_matching_event() {
    use diagmon::rules::aspnet::{RequestEvent, request_event};
    use diagmon::rules::events::EventReader;
    use diagmon_tests::aspnet_events::SimulatedRequest;
    use diagmon_tests::simulated_runtime::{SimulatedRuntime, SimulatedRuntimeConfig};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let runtime = SimulatedRuntime::listen(
        dir.path(),
        SimulatedRuntimeConfig {
            http_requests: vec![
                SimulatedRequest::new(300, "/first", 200, 10),
                SimulatedRequest::new(30_000, "/later", 500, 10),
            ],
            ..SimulatedRuntimeConfig::default()
        },
    )
    .await
    .unwrap();
    let stored = dir.path().join("stored");
    std::fs::create_dir(&stored).unwrap();
    let specs = "Microsoft.AspNetCore/Microsoft.AspNetCore.Hosting.HttpRequestIn.Stop@Activity1Stop:-ActivityId=*Activity.Id;Request.Path;Response.StatusCode;ActivityDuration=*Activity.Duration.Ticks";
    let config = format!(
        "socket_dir = {:?}\n{egress}[metrics]\nenabled = false\n\
         [collection_rules.first_request_stop]\n\
         trigger = {{ type = \"Startup\" }}\n\
         actions = [{{ name = \"trace\", type = \"CollectTrace\", settings = {{ \
           providers = [{{ name = \"Microsoft-Diagnostics-DiagnosticSource\", keywords = \"0x2\", event_level = \"Verbose\", arguments = {{ FilterAndPayloadSpecs = \"{specs}\" }} }}], \
           duration = \"00:05:00\", egress = \"files\", \
           stopping_event = {{ provider_name = \"Microsoft-Diagnostics-DiagnosticSource\", event_name = \"Activity1/Stop\", payload_filter = {{ EventName = \"Microsoft.AspNetCore.Hosting.HttpRequestIn.Stop\", SourceName = \"Microsoft.AspNetCore\" }} }} }} }}]\n",
        dir.path().display().to_string(),
        egress = egress_section(&stored),
    );
    let started = Instant::now();
    let monitor = Monitor::start(&config, &["--no-auth"]);
    let operation =
        wait_final_operation(&monitor, "first_request_stop", Duration::from_secs(30)).await;
    let elapsed = started.elapsed();
    assert_eq!(operation["status"], "Succeeded", "{operation}");
    // The first stop comes 310 ms into the session; the second request starts at 30 s.
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    let pid = runtime.config().pid;
    let rule = wait_rule(
        &monitor,
        pid,
        "first_request_stop",
        Duration::from_secs(10),
        |rule| rule["state"] == "Finished",
    )
    .await;
    assert!(rule.get("lastError").is_none(), "{rule}");
    // The stopping event stops the trace as a stop request would: through Stopping.
    let id = operation["operationId"].as_str().expect("an operation id");
    assert!(
        monitor
            .stderr_lines()
            .iter()
            .any(|line| line.contains("operation stopping") && line.contains(id)),
        "operation {id} never went Stopping"
    );
    let files = files_in(&stored);
    assert_eq!(files.len(), 1, "{files:?}");
    nettrace::validate_file(&files[0]).expect("a complete nettrace");
    // The trace holds the stopping event (the first request's stop) and nothing of the later
    // request.
    let requests: Arc<Mutex<Vec<RequestEvent>>> = Arc::default();
    let mut reader = EventReader::new({
        let requests = Arc::clone(&requests);
        move |event| {
            if let Some(request) = request_event(event) {
                requests.lock().unwrap().push(request);
            }
        }
    });
    reader
        .feed(&std::fs::read(&files[0]).unwrap())
        .expect("a readable trace");
    let requests = requests.lock().unwrap().clone();
    assert!(
        matches!(
            requests.as_slice(),
            [RequestEvent::Stop { path, status: 200, .. }] if path == "/first"
        ),
        "{requests:?}"
    );
}

#[tokio::test]
async fn execute_and_environment_actions_are_operations_that_stop_and_cancel() {
    use diagmon_tests::simulated_runtime::{SimulatedRuntime, SimulatedRuntimeConfig};
    let dir = tempfile::tempdir().unwrap();
    let runtime = SimulatedRuntime::listen(dir.path(), SimulatedRuntimeConfig::default())
        .await
        .unwrap();
    let startup = |name: &str, action: &str| {
        format!(
            "[collection_rules.{name}]\ntrigger = {{ type = \"Startup\" }}\nactions = [{action}]\n"
        )
    };
    let config = format!(
        "socket_dir = {:?}\n[metrics]\nenabled = false\n[collection_rules]\nallow_execute = true\n{}{}{}{}{}{}",
        dir.path().display().to_string(),
        startup(
            "cancelled",
            "{ type = \"Execute\", settings = { path = \"/bin/sleep\", arguments = \"300\" } }"
        ),
        startup(
            "stopped",
            "{ type = \"Execute\", settings = { path = \"/bin/sh\", arguments = [\"-c\", \"trap 'exit 0' TERM; sleep 300 & wait\"] } }"
        ),
        startup(
            "exit3",
            "{ type = \"Execute\", settings = { path = \"/bin/sh\", arguments = [\"-c\", \"exit 3\"], ignore_exit_code = true } }"
        ),
        startup(
            "timeout",
            "{ type = \"Execute\", settings = { path = \"/bin/sleep\", arguments = \"300\", timeout = \"1s\" } }"
        ),
        startup(
            "missing",
            "{ type = \"GetEnvironmentVariable\", settings = { name = \"NOT_THERE\" } }"
        ),
        startup(
            "no_program",
            "{ type = \"Execute\", settings = { path = \"/nonexistent/program\" } }"
        ),
    );
    let monitor = Monitor::start(&config, &["--no-auth"]);
    let pid = runtime.config().pid;
    let client = reqwest::Client::new();
    // The two long programs run as stoppable operations tagged with their rules.
    for (rule, query) in [("cancelled", ""), ("stopped", "?stop=true")] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let running = loop {
            let (_, operations) = get(&monitor, &format!("/operations?tags={rule}")).await;
            if let Some(running) = operations
                .as_array()
                .and_then(|list| list.iter().find(|o| o["status"] == "Running"))
            {
                break running.clone();
            }
            assert!(Instant::now() < deadline, "{rule}: {operations}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(running["kind"], "execute", "{running}");
        assert_eq!(running["isStoppable"], true, "{running}");
        assert_eq!(running["process"]["pid"], pid, "{running}");
        let (_, state) = get(&monitor, &format!("/collectionrules/{rule}?pid={pid}")).await;
        assert_eq!(state["state"], "ActionExecuting", "{state}");
        let id = running["operationId"].as_str().unwrap();
        let response = client
            .delete(monitor.url(&format!("/operations/{id}{query}")))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let cancelled = loop {
        let operation = wait_final_operation(&monitor, "cancelled", Duration::from_secs(30)).await;
        // The exit code of the killed program follows the cancel.
        if operation["outputs"]["ExitCode"].is_string() || Instant::now() > deadline {
            break operation;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(cancelled["status"], "Cancelled", "{cancelled}");
    assert_eq!(
        cancelled["outputs"]["ExitCode"], "137",
        "SIGKILL: {cancelled}"
    );
    let stopped = wait_final_operation(&monitor, "stopped", Duration::from_secs(30)).await;
    assert_eq!(stopped["status"], "Succeeded", "{stopped}");
    assert_eq!(stopped["outputs"]["ExitCode"], "0", "{stopped}");
    let exit3 = wait_final_operation(&monitor, "exit3", Duration::from_secs(30)).await;
    assert_eq!(exit3["status"], "Succeeded", "{exit3}");
    assert_eq!(exit3["outputs"]["ExitCode"], "3", "{exit3}");
    let timeout = wait_final_operation(&monitor, "timeout", Duration::from_secs(30)).await;
    assert_eq!(timeout["status"], "Failed", "{timeout}");
    assert_eq!(timeout["error"]["code"], "ActionFailed", "{timeout}");
    assert_eq!(timeout["outputs"]["ExitCode"], "137", "{timeout}");
    let missing = wait_final_operation(&monitor, "missing", Duration::from_secs(30)).await;
    assert_eq!(missing["kind"], "environment", "{missing}");
    assert_eq!(missing["status"], "Failed", "{missing}");
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("NOT_THERE"),
        "{missing}"
    );
    let no_program = wait_final_operation(&monitor, "no_program", Duration::from_secs(30)).await;
    assert_eq!(no_program["status"], "Failed", "{no_program}");
    assert_eq!(no_program["error"]["code"], "ActionFailed", "{no_program}");
    assert!(no_program.get("outputs").is_none(), "{no_program}");
    // The rules end: the cancelled, timed-out, missing and unrunnable ones with their error.
    for (rule, failed) in [
        ("cancelled", true),
        ("stopped", false),
        ("exit3", false),
        ("timeout", true),
        ("missing", true),
        ("no_program", true),
    ] {
        let state = wait_rule(&monitor, pid, rule, Duration::from_secs(10), |state| {
            state["state"] == "Finished"
        })
        .await;
        assert_eq!(state.get("lastError").is_some(), failed, "{rule}: {state}");
    }
}

#[tokio::test]
async fn a_stopping_event_of_a_real_net_core_3_1_event_source_ends_the_trace() {
    let target = TestTarget::start(Program::EventSourceApp, &[]);
    let stored = tempfile::tempdir().unwrap();
    // EventSourceApp writes `Tick(n)` with n = 0, 1, 2, ... every 10 ms or a little more: the
    // tick n = 1000, some 10 s after its start, stops the trace (started well before).
    let config = format!(
        "socket_dir = {:?}\n{egress}[metrics]\nenabled = false\n\
         [collection_rules.first_report]\n\
         trigger = {{ type = \"Startup\" }}\n\
         actions = [{{ type = \"CollectTrace\", settings = {{ \
           providers = [{{ name = \"Diagmon-Test\", keywords = \"0x1\", event_level = \"Informational\" }}], \
           duration = \"00:05:00\", egress = \"files\", \
           stopping_event = {{ provider_name = \"Diagmon-Test\", event_name = \"Tick\", payload_filter = {{ n = 1000 }} }} }} }}]\n",
        target.tmpdir().display().to_string(),
        egress = egress_section(stored.path()),
    );
    let started = Instant::now();
    let monitor = Monitor::start(&config, &["--no-auth"]);
    let operation = wait_final_operation(&monitor, "first_report", Duration::from_secs(90)).await;
    assert_eq!(operation["status"], "Succeeded", "{operation}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    // The ticks up to the stopping one (those before the trace started are not in it), and
    // the few written while the stop reached the runtime: one every 10 ms, so a loaded machine
    // that takes a second or two to stop the session adds a hundred or two. A trace that ran its
    // 5-minute duration would hold some 30,000.
    let ticks = operation["summary"]["eventsByProvider"]["Diagmon-Test"]
        .as_u64()
        .unwrap_or_default();
    assert!((1..=1300).contains(&ticks), "{operation}");
    let files = files_in(stored.path());
    assert_eq!(files.len(), 1, "{files:?}");
    nettrace::validate_file(&files[0]).expect("a complete nettrace");
}

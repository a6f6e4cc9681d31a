//! Metrics end to end: real .NET Core 3.1 targets with counters of known values, the real
//! binary's `/metrics` read over real HTTP and parsed with the Prometheus project's own Python
//! parser (`prometheus_client`, installed by `tests/run` into `target/prometheus-client`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diagmon_tests::api::{final_operation, get_json, sha256_hex};
use diagmon_tests::monitor::Monitor;
use diagmon_tests::target::{Program, TestTarget};
use reqwest::StatusCode;
use serde_json::Value;

/// How long an operation may take to end before a test gives up on it.
const OPERATION_WAIT: Duration = Duration::from_secs(10);

/// Providers the tests ask for: the runtime's, the target's own, and one that does not exist
/// (it must simply give nothing).
const PROVIDERS: &str = r#"["System.Runtime", "Diagmon-Counters", "No-Such-Provider"]"#;

/// A monitor without auth that sees the targets in `tmpdir`, reporting counters every second.
fn monitor_in(tmpdir: &std::path::Path) -> Monitor {
    let config = format!(
        "socket_dir = {:?}\n[metrics]\ninterval_seconds = 1\nproviders = {PROVIDERS}\n",
        tmpdir.display().to_string()
    );
    Monitor::start(&config, &["--no-auth"])
}

/// One sample of the text format: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples and `# TYPE` lines of a scrape, read with a plain line reader (the Python parser
/// checks the format itself, see [`parse_with_prometheus_client`]).
fn samples_of(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once("=\"").expect("key=\"value\"");
                (key.to_owned(), value.trim_end_matches('"').to_owned())
            })
            .collect();
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value: value.parse().expect("a number"),
        });
    }
    (samples, types)
}

/// The value of `name` for `pid`, if listed.
fn value_for(samples: &[Sample], name: &str, pid: u32) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.get("pid") == Some(&pid.to_string()))
        .map(|s| s.value)
}

async fn scrape(client: &reqwest::Client, monitor: &Monitor, accept: Option<&str>) -> String {
    let mut request = client.get(monitor.url("/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    match accept {
        Some(_) => assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        ),
        None => assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8"),
    }
    response.text().await.unwrap()
}

/// Scrapes until `ready` holds (≤ `within`), returning the last scrape.
async fn scrape_until(
    client: &reqwest::Client,
    monitor: &Monitor,
    within: Duration,
    ready: impl Fn(&[Sample]) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = scrape(client, monitor, None).await;
        if ready(&samples_of(&text).0) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "not as expected within {within:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The venv `tests/run` makes for the Python Prometheus parser.
fn prometheus_python() -> PathBuf {
    let python =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/prometheus-client/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run tests/run (it installs prometheus_client)",
        python.display()
    );
    python
}

/// Parses `text` with `prometheus_client`'s text parser (or its OpenMetrics parser) and returns
/// `{family: {"type": ..., "samples": [[name, labels, value], ...]}}`.
fn parse_with_prometheus_client(text: &str, openmetrics: bool) -> Value {
    let module = if openmetrics {
        "prometheus_client.openmetrics.parser"
    } else {
        "prometheus_client.parser"
    };
    let script = format!(
        "import json, sys\nfrom {module} import text_string_to_metric_families as parse\n\
         out = {{}}\nfor f in parse(sys.stdin.read()):\n    \
         out[f.name] = {{'type': f.type, 'samples': [[s.name, s.labels, s.value] for s in f.samples]}}\n\
         print(json.dumps(out))\n"
    );
    let mut child = Command::new(prometheus_python())
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client rejected the output: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The samples of `family` in a parsed scrape for `pid`.
fn parsed_value(parsed: &Value, family: &str, sample: &str, pid: u32) -> Option<f64> {
    parsed[family]["samples"].as_array()?.iter().find_map(|s| {
        (s[0] == sample && s[1]["pid"].as_str() == Some(pid.to_string().as_str()))
            .then(|| s[2].as_f64())?
    })
}

#[tokio::test]
async fn metrics_lists_every_process_with_exact_values_labels_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let trigger = dir.path().join("increment-a");
    let trigger_arg = trigger.display().to_string();
    let a = TestTarget::start_in(dir.path(), Program::CounterApp, &[&trigger_arg]);
    let mut b = TestTarget::start_in(dir.path(), Program::CounterApp, &[]);
    let monitor = monitor_in(dir.path());
    let client = reqwest::Client::new();

    let both = |samples: &[Sample]| {
        [a.pid(), b.pid()].iter().all(|pid| {
            value_for(samples, "diagmoncounters_fixed_mean_ms", *pid).is_some()
                && value_for(samples, "diagmoncounters_polled_bytes", *pid).is_some()
                && value_for(samples, "diagmoncounters_requests_total", *pid).is_some()
                && value_for(samples, "systemruntime_cpu_usage_ratio", *pid).is_some()
        })
    };
    let text = scrape_until(&client, &monitor, Duration::from_secs(30), both).await;
    let (samples, types) = samples_of(&text);

    // Exact values, as dotnet-monitor writes them: the mean of constant writes, 12 MB as
    // 12,000,000 bytes, nothing counted yet.
    let processes: Value = get_json(&client, monitor.url("/processes")).await;
    for target in [&a, &b] {
        let pid = target.pid();
        assert_eq!(
            value_for(&samples, "diagmoncounters_fixed_mean_ms", pid),
            Some(42.5),
            "{text}"
        );
        assert_eq!(
            value_for(&samples, "diagmoncounters_polled_bytes", pid),
            Some(12_000_000.0),
            "{text}"
        );
        assert_eq!(
            value_for(&samples, "diagmoncounters_requests_total", pid),
            Some(0.0),
            "{text}"
        );
        // Labelled with the process: pid, process_name, runtime_uid as /processes lists them.
        let listed = processes
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .expect("listed by /processes");
        let sample = samples
            .iter()
            .find(|s| {
                s.name == "diagmoncounters_fixed_mean_ms" && s.labels["pid"] == pid.to_string()
            })
            .unwrap();
        assert_eq!(
            sample.labels["process_name"],
            listed["name"].as_str().unwrap()
        );
        assert_eq!(
            sample.labels["runtime_uid"],
            listed["uid"].as_str().unwrap()
        );
        // System.Runtime's counters, named as dotnet-monitor names them.
        for name in [
            "systemruntime_cpu_usage_ratio",
            "systemruntime_working_set_bytes",
            "systemruntime_gc_heap_size_bytes",
            "systemruntime_threadpool_thread_count",
        ] {
            assert!(
                value_for(&samples, name, pid).is_some(),
                "{name} missing:\n{text}"
            );
        }
    }
    assert_eq!(types["diagmoncounters_fixed_mean_ms"], "gauge");
    assert_eq!(types["diagmoncounters_polled_bytes"], "gauge");
    assert_eq!(types["diagmoncounters_requests_total"], "counter");
    // The provider that does not exist gives no series, and no error.
    assert!(!text.contains("nosuchprovider"), "{text}");

    // The IncrementingEventCounter: 7 added once is 7 in total, and stays 7.
    std::fs::write(&trigger, "7").unwrap();
    scrape_until(&client, &monitor, Duration::from_secs(10), |samples| {
        value_for(samples, "diagmoncounters_requests_total", a.pid()) == Some(7.0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let text = scrape(&client, &monitor, None).await;
    let (samples, _) = samples_of(&text);
    assert_eq!(
        value_for(&samples, "diagmoncounters_requests_total", a.pid()),
        Some(7.0)
    );
    assert_eq!(
        value_for(&samples, "diagmoncounters_requests_total", b.pid()),
        Some(0.0)
    );

    // The Prometheus project's parser reads both formats and finds the same values and types.
    let parsed = parse_with_prometheus_client(&text, false);
    assert_eq!(parsed["diagmoncounters_fixed_mean_ms"]["type"], "gauge");
    assert_eq!(
        parsed_value(
            &parsed,
            "diagmoncounters_fixed_mean_ms",
            "diagmoncounters_fixed_mean_ms",
            a.pid()
        ),
        Some(42.5)
    );
    assert_eq!(
        parsed["diagmoncounters_requests"]["type"], "counter",
        "{parsed}"
    );
    assert_eq!(
        parsed_value(
            &parsed,
            "diagmoncounters_requests",
            "diagmoncounters_requests_total",
            a.pid()
        ),
        Some(7.0)
    );
    let open = scrape(
        &client,
        &monitor,
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .await;
    assert!(open.ends_with("# EOF\n"));
    let parsed = parse_with_prometheus_client(&open, true);
    assert_eq!(
        parsed["diagmoncounters_requests"]["type"], "counter",
        "{parsed}"
    );
    assert_eq!(
        parsed_value(
            &parsed,
            "diagmoncounters_polled_bytes",
            "diagmoncounters_polled_bytes",
            b.pid()
        ),
        Some(12_000_000.0)
    );
    // diagmon's own metrics are there too: the scrapes above were counted.
    assert!(
        parsed["diagmon_http_requests"]["samples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s[1]["route"] == "/metrics"
                && s[1]["status"] == "200"
                && s[2].as_f64() > Some(0.0)),
        "{parsed}"
    );
    assert_eq!(parsed["diagmon_metrics_sessions"]["samples"][0][2], 2.0);

    // A target that exits disappears within two intervals.
    let pid_b = b.pid();
    b.signal(libc::SIGTERM);
    b.wait_exit(Duration::from_secs(10)).expect("b exits");
    let exited = Instant::now();
    scrape_until(&client, &monitor, Duration::from_secs(2), |samples| {
        samples
            .iter()
            .all(|s| s.labels.get("pid") != Some(&pid_b.to_string()))
    })
    .await;
    let gone_after = exited.elapsed();
    assert!(gone_after <= Duration::from_secs(2), "{gone_after:?}");
    let (samples, _) = samples_of(&scrape(&client, &monitor, None).await);
    assert_eq!(
        value_for(&samples, "diagmoncounters_fixed_mean_ms", a.pid()),
        Some(42.5)
    );
}

/// The records of a json-seq body: each is `\x1E` + JSON + `\n`.
fn json_seq(body: &[u8]) -> Vec<Value> {
    assert!(body.is_empty() || body[0] == 0x1E, "not json-seq: {body:?}");
    body.split(|byte| *byte == 0x1E)
        .filter(|record| !record.is_empty())
        .map(|record| {
            assert_eq!(record.last(), Some(&b'\n'), "a record ends with a newline");
            serde_json::from_slice(record).expect("a JSON record")
        })
        .collect()
}

#[tokio::test]
async fn livemetrics_streams_json_seq_metrics_with_known_values() {
    let target = TestTarget::start(Program::CounterApp, &[]);
    let monitor = monitor_in(target.tmpdir());
    let client = reqwest::Client::new();
    let pid = target.pid();

    let started = Instant::now();
    let response = client
        .post(monitor.url(&format!("/livemetrics?pid={pid}&durationSeconds=3")))
        .json(&serde_json::json!({
            "includeDefaultProviders": false,
            "providers": [{"providerName": "Diagmon-Counters"}, {"providerName": "No-Such-Provider"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json-seq");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.ends_with(&format!("_{pid}.metrics.json")),
        "{disposition}"
    );
    let body = response.bytes().await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(8),
        "{elapsed:?}"
    );
    let records = json_seq(&body);
    let find = |name: &str| {
        records
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {records:?}"))
    };
    let fixed = find("fixed-mean");
    assert_eq!(fixed["provider"], "Diagmon-Counters");
    assert_eq!(fixed["displayName"], "Fixed mean");
    assert_eq!(fixed["unit"], "ms");
    assert_eq!(fixed["counterType"], "Metric");
    assert_eq!(fixed["value"], 42.5);
    let polled = find("polled");
    assert_eq!(
        (polled["value"].as_f64(), polled["unit"].as_str()),
        (Some(12.0), Some("MB"))
    );
    let requests = find("requests");
    assert_eq!(
        (requests["counterType"].as_str(), requests["value"].as_f64()),
        (Some("Rate"), Some(0.0))
    );
    assert!(requests["timestamp"].as_str().unwrap().ends_with('Z'));
    // Only what was asked for, nothing of the provider that does not exist.
    assert!(
        records.iter().all(|r| r["provider"] == "Diagmon-Counters"),
        "{records:?}"
    );
    let operation = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(operation["status"], "Succeeded", "{operation}");

    // GET: the default providers (System.Runtime's counters).
    let response = client
        .get(monitor.url(&format!("/livemetrics?pid={pid}&durationSeconds=2")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let records = json_seq(&response.bytes().await.unwrap());
    let cpu = records
        .iter()
        .find(|r| r["provider"] == "System.Runtime" && r["name"] == "cpu-usage")
        .unwrap_or_else(|| panic!("no cpu-usage in {records:?}"));
    assert_eq!(cpu["unit"], "%");
    assert_eq!(cpu["counterType"], "Metric");
}

#[tokio::test]
async fn bad_metrics_requests_are_problems_that_name_the_field() {
    let target = TestTarget::start(Program::CounterApp, &[]);
    let monitor = monitor_in(target.tmpdir());
    let client = reqwest::Client::new();
    let pid = target.pid();
    let problem = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        response.json::<Value>().await.unwrap()
    };

    // An unknown pid.
    let body = problem(
        client
            .get(monitor.url("/livemetrics?pid=999999999&durationSeconds=1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no .NET process matches"),
        "{body}"
    );
    // A duration below -1.
    let body = problem(
        client
            .get(monitor.url(&format!("/livemetrics?pid={pid}&durationSeconds=-2")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(body["errors"]["durationSeconds"].is_array(), "{body}");
    // A body without provider names, and a list that is not a list.
    let body = problem(
        client
            .post(monitor.url(&format!("/livemetrics?pid={pid}")))
            .json(&serde_json::json!({"providers": [{"counterNames": ["x"]}], "meters": 3}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        body["errors"]["providers[0].providerName"].is_array(),
        "{body}"
    );
    assert!(body["errors"]["meters"].is_array(), "{body}");
    let body = problem(
        client
            .post(monitor.url(&format!("/livemetrics?pid={pid}")))
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(body["errors"]["body"].is_array(), "{body}");
    // /metrics kept serving through all of it.
    let response = client.get(monitor.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn counters_command_prints_one_line_per_report_into_a_pipe() {
    let target = TestTarget::start(Program::CounterApp, &[]);
    let socket_dir = target.tmpdir().display().to_string();
    let pid = target.pid().to_string();
    let output = Command::new(diagmon_tests::monitor::monitor_binary())
        .args(["counters", "--socket-dir", &socket_dir, "--pid", &pid])
        .args([
            "--providers",
            "Diagmon-Counters",
            "--interval",
            "1",
            "--duration",
            "3s",
        ])
        .output()
        .expect("run diagmon counters");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    // `timestamp provider counter value unit`, without the terminal's escape codes.
    assert!(!stdout.contains('\x1b'), "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" Diagmon-Counters fixed-mean 42.5 ms")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" Diagmon-Counters polled 12 MB")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" Diagmon-Counters requests 0")),
        "{stdout}"
    );
    // Reports every interval: 3 s at 1 s gives at least two of each.
    let fixed = lines.iter().filter(|l| l.contains(" fixed-mean ")).count();
    assert!(fixed >= 2, "{stdout}");

    // `diagmon counters | head -1`: once the reader is gone, the watch ends (well before the
    // minute it was asked for), quietly.
    let started = Instant::now();
    let mut child = Command::new(diagmon_tests::monitor::monitor_binary())
        .args(["counters", "--socket-dir", &socket_dir, "--pid", &pid])
        .args(["--interval", "1", "--duration", "60s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run diagmon counters");
    drop(child.stdout.take());
    let ended = child.wait_with_output().expect("diagmon counters ends");
    assert!(
        ended.status.success(),
        "{}",
        String::from_utf8_lossy(&ended.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let output = Command::new(diagmon_tests::monitor::monitor_binary())
        .args([
            "counters",
            "--socket-dir",
            &socket_dir,
            "--pid",
            "999999999",
            "--duration",
            "1s",
        ])
        .output()
        .expect("run diagmon counters");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no .NET process matches"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn meters_and_malformed_counter_events_from_the_simulated_runtime() {
    use diagmon_tests::counter_events::{GAUGE, METER_GAUGE, METER_RATE, RATE};
    use diagmon_tests::simulated_runtime::{
        SimulatedRuntime, SimulatedRuntimeConfig, StreamBehaviour,
    };
    let dir = tempfile::tempdir().unwrap();
    let config = SimulatedRuntimeConfig {
        stream: StreamBehaviour::Counters { malformed: true },
        ..Default::default()
    };
    let pid = config.pid;
    let _runtime = SimulatedRuntime::listen(dir.path(), config).await.unwrap();
    let monitor = Monitor::start(
        &format!(
            "socket_dir = {:?}\n[metrics]\ninterval_seconds = 1\nproviders = [\"Sim-Provider\"]\nmeters = [\"Sim.Meter\"]\n",
            dir.path().display().to_string()
        ),
        &["--no-auth"],
    );
    let client = reqwest::Client::new();
    let text = scrape_until(&client, &monitor, Duration::from_secs(20), |samples| {
        value_for(samples, "simprovider_sim_rate_total", pid).is_some_and(|v| v >= 2.0 * RATE.2)
            && value_for(samples, "simmeter_requests_total", pid).is_some()
    })
    .await;
    let (samples, types) = samples_of(&text);
    // EventCounters: the mean in bytes, the increments added up (a whole number of intervals).
    assert_eq!(
        value_for(&samples, "simprovider_sim_gauge_bytes", pid),
        Some(GAUGE.2 * 1_000_000.0)
    );
    let total = value_for(&samples, "simprovider_sim_rate_total", pid).unwrap();
    assert_eq!(total % RATE.2, 0.0, "{total}");
    // Meters, named and typed the same way; their tags become labels.
    assert_eq!(
        value_for(&samples, "simmeter_queue_length_items", pid),
        Some(17.0)
    );
    assert_eq!(METER_GAUGE.1, "17");
    assert_eq!(types["simmeter_queue_length_items"], "gauge");
    assert_eq!(types["simmeter_requests_total"], "counter");
    let requests = samples
        .iter()
        .find(|s| s.name == "simmeter_requests_total")
        .unwrap();
    assert_eq!(requests.labels["route"], "/a");
    assert_eq!(requests.value % 4.0, 0.0);
    assert_eq!(METER_RATE.1, "4");
    // The broken events were skipped and counted, and nothing else suffered.
    let malformed = samples
        .iter()
        .find(|s| s.name == "diagmon_metrics_malformed_events_total")
        .map(|s| s.value)
        .unwrap_or(0.0);
    assert!(malformed >= 2.0, "{text}");
    assert!(parse_with_prometheus_client(&text, false)["simmeter_requests"]["type"] == "counter");

    // /livemetrics reads meters the same way.
    let response = client
        .post(monitor.url(&format!("/livemetrics?pid={pid}&durationSeconds=2")))
        .json(&serde_json::json!({"includeDefaultProviders": false, "meters": [{"meterName": "Sim.Meter"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let records = json_seq(&response.bytes().await.unwrap());
    let gauge = records
        .iter()
        .find(|r| r["name"] == "queue-length")
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(gauge["provider"], "Sim.Meter");
    assert_eq!(
        (gauge["value"].as_f64(), gauge["counterType"].as_str()),
        (Some(17.0), Some("Metric"))
    );
    let rate = records.iter().find(|r| r["name"] == "requests").unwrap();
    assert_eq!(
        (rate["value"].as_f64(), rate["counterType"].as_str()),
        (Some(4.0), Some("Rate"))
    );
    assert_eq!(rate["tags"], "route=/a");
}

/// The address a `[metrics] urls` listener printed (`diagmon serving /metrics on URL`).
fn metrics_listener_url(monitor: &Monitor) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let printed = monitor.stdout_lines().iter().find_map(|line| {
            line.strip_prefix("diagmon serving /metrics on ")
                .map(str::to_owned)
        });
        if let Some(url) = printed {
            return url;
        }
        assert!(Instant::now() < deadline, "{:?}", monitor.stdout_lines());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn metrics_urls_serve_metrics_alone_on_their_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "socket_dir = {:?}\n[metrics]\nurls = [\"http://127.0.0.1:0\"]\n",
        dir.path().display().to_string()
    );
    let monitor = Monitor::start(&config, &["--temp-apikey"]);
    let metrics_url = metrics_listener_url(&monitor);
    assert_ne!(metrics_url, monitor.url(""));
    let client = reqwest::Client::new();

    // /metrics answers there without a key, like dotnet-monitor's metrics URLs; the API does not.
    let scraped = client
        .get(format!("{metrics_url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(
        scraped
            .text()
            .await
            .unwrap()
            .contains("# TYPE diagmon_process_resident_memory_bytes gauge")
    );
    for path in ["/processes", "/trace", "/operations", "/ui"] {
        let response = client
            .get(format!("{metrics_url}{path}"))
            .send()
            .await
            .unwrap();
        assert!(
            [StatusCode::NOT_FOUND, StatusCode::UNAUTHORIZED].contains(&response.status()),
            "{path}: {}",
            response.status()
        );
        assert_ne!(response.status(), StatusCode::OK, "{path}");
    }
    // The API URL still needs its key.
    let api = client.get(monitor.url("/processes")).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn a_bad_metrics_url_stops_the_start_and_names_the_key() {
    let output = std::process::Command::new(diagmon_tests::monitor::monitor_binary())
        .args(["collect", "--no-auth", "--urls", "http://127.0.0.1:0"])
        .env("DIAGMON_METRICS__URLS", "[\"ftp://127.0.0.1:1\"]")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("metrics.urls[0]"), "{stderr}");
}

#[tokio::test]
async fn livemetrics_with_egress_stores_the_records_its_summary_describes() {
    let target = TestTarget::start(Program::CounterApp, &[]);
    let stored = tempfile::tempdir().unwrap();
    let config = format!(
        "socket_dir = {:?}\n[metrics]\ninterval_seconds = 1\nproviders = {PROVIDERS}\n\
         [egress.providers.files]\ncomponent = \"filesystem\"\ndirectory = {:?}\n",
        target.tmpdir().display().to_string(),
        stored.path().display().to_string()
    );
    let monitor = Monitor::start(&config, &["--no-auth"]);
    let client = reqwest::Client::new();
    let pid = target.pid();
    let response = client
        .post(monitor.url(&format!(
            "/livemetrics?pid={pid}&durationSeconds=3&egressProvider=files&tags=live"
        )))
        .json(&serde_json::json!({
            "includeDefaultProviders": false,
            "providers": [{"providerName": "Diagmon-Counters", "counterNames": ["fixed-mean"]}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let operation = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(operation["status"], "Succeeded", "{operation}");
    assert_eq!(operation["kind"], "metrics");
    assert_eq!(operation["egressProviderName"], "files");
    assert_eq!(operation["tags"], serde_json::json!(["live"]));
    let path = operation["resourceLocation"].as_str().unwrap();
    assert!(path.ends_with(&format!("_{pid}.metrics.json")), "{path}");
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(operation["summary"]["bytes"], bytes.len());
    assert_eq!(operation["summary"]["sha256"], sha256_hex(&bytes).as_str());
    // About three one-second reports of the one counter asked for, each its known value.
    let records = json_seq(&bytes);
    assert!((2..=4).contains(&records.len()), "{records:?}");
    for record in &records {
        assert_eq!(record["name"], "fixed-mean", "{record}");
        assert_eq!(record["value"], 42.5, "{record}");
    }
}

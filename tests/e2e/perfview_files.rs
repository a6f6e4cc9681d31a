//! Files that other people's runtimes and tools wrote (PerfView's test inputs, see
//! `tests/fixtures/perfview/README.md`), read by `diagmon validate` and `diagmon gcdump report`.
//! The expected figures are PerfView's: its baselines for the traces, its XML export and the
//! files' own records for the heap snapshots.

use std::path::PathBuf;
use std::process::Command;

use diagmon_tests::monitor::monitor_binary;
use serde_json::Value;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/perfview")
        .join(name)
        .display()
        .to_string()
}

/// Runs diagmon with `args`, asserts it succeeded and returns its JSON output.
fn diagmon_json(args: &[&str]) -> Value {
    let output = Command::new(monitor_binary())
        .args(args)
        .output()
        .expect("run diagmon");
    assert!(
        output.status.success(),
        "diagmon {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

fn validate(name: &str) -> Value {
    let summary = diagmon_json(&["validate", &fixture(name)]);
    assert_eq!(summary["warnings"], serde_json::json!([]), "{name}");
    assert_eq!(summary["droppedEventsEstimate"], 0, "{name}");
    summary
}

/// Asserts the count of each event, by the name PerfView gives it (in the comment) and the
/// key diagmon reports it under.
fn assert_events(summary: &Value, expected: &[(&str, u64)]) {
    for (key, count) in expected {
        assert_eq!(
            summary["eventsByEvent"][key].as_u64(),
            Some(*count),
            "{key} in {}",
            summary["eventsByEvent"]
        );
    }
}

#[test]
fn a_net_core_2_1_netperf_file_with_self_describing_events() {
    let summary = validate("eventpipe-dotnetcore2.1-linux-x64-tracelogging.netperf");
    assert_eq!(summary["format"], "NetPerfV3");
    assert_eq!(summary["processId"], 12365);
    assert_eq!(summary["events"], 12);
    assert_events(
        &summary,
        &[
            ("MySource/SendEmptyEvent", 1),
            ("MySource/TestEmptyEvent", 2),
            ("MySource/TestEvent", 1),
            ("MySource/TestEvent1", 3),
            ("MySource/TestEvent2", 3),
            ("MySource/TestEventMethod", 1),
            ("MySource/TestNestedStructs", 1),
        ],
    );
}

#[test]
fn a_net_5_nettrace_v5_file_with_rundown() {
    let summary = validate("eventpipe-dotnetcore5.0-win-x64-arraytypes.nettrace");
    assert_eq!(summary["format"], "NetTraceV5");
    assert_eq!(summary["processId"], 26240);
    // PerfView's baseline leaves out the verbose method rundown (#144 and #150); the rest:
    assert_events(
        &summary,
        &[
            ("Microsoft-DotNETCore-EventPipe/ProcessInfo", 2),
            ("TestEventSource0/TestEvent1", 1),
            ("TestEventSource0/TestEvent2", 1),
            ("TestEventSource0/TestEvent3", 1),
            // Loader/AppDomainDCStop, AssemblyDCStop, DomainModuleDCStop, ModuleDCStop.
            ("Microsoft-Windows-DotNETRuntimeRundown/#158", 1),
            ("Microsoft-Windows-DotNETRuntimeRundown/#156", 33),
            ("Microsoft-Windows-DotNETRuntimeRundown/#152", 33),
            ("Microsoft-Windows-DotNETRuntimeRundown/#154", 33),
            // Method/DCStopComplete, Method/DCStopInit, Runtime/Start.
            ("Microsoft-Windows-DotNETRuntimeRundown/#146", 1),
            ("Microsoft-Windows-DotNETRuntimeRundown/#148", 1),
            ("Microsoft-Windows-DotNETRuntimeRundown/#187", 1),
        ],
    );
}

#[test]
fn a_net_6_nettrace_file_with_execution_checkpoints() {
    let summary = validate("eventpipe-dotnetcore6.0-win-x64-executioncheckpoints.nettrace");
    assert_eq!(summary["format"], "NetTraceV4");
    assert_eq!(summary["processId"], 9832);
    assert_eq!(summary["events"], 3);
    // ExecutionCheckpointRundown/ExecutionCheckpointDCEnd.
    assert_events(
        &summary,
        &[("Microsoft-Windows-DotNETRuntimeRundown/#300", 3)],
    );
}

fn gcdump_report(name: &str) -> Value {
    diagmon_json(&["gcdump", "report", "--json", &fixture(name)])
}

#[test]
fn a_javascript_heap_reads_as_perfview_exports_it() {
    let report = gcdump_report("test1.gcdump");
    assert_eq!(report["processName"], "Idle");
    // PerfView's XML export of this file: 6,481 nodes with an address, 1,009,270 bytes in
    // 1,992 types, and these three largest.
    assert_eq!(report["objects"], 6481);
    assert_eq!(report["size"], 1_009_270);
    assert_eq!(report["typeCount"], 1992);
    let largest: Vec<(&str, u64, u64)> = report["types"]
        .as_array()
        .expect("types")
        .iter()
        .take(3)
        .map(|row| {
            (
                row["name"].as_str().unwrap_or_default(),
                row["count"].as_u64().unwrap_or_default(),
                row["size"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        largest,
        [
            ("(Type  HTMLStyleElement <|tagName:STYLE|>)", 13, 167_540),
            (
                "(Type  HTMLImageElement <|tagName:IMG class:profile-img src://ssl.gstatic.com/accounts/ui/avatar_2x.png|>)",
                1,
                148_204
            ),
            ("(Type  CSSStyleSheet)", 13, 123_968),
        ]
    );
}

#[test]
fn a_net_framework_heap_with_version_0_segments() {
    let report = gcdump_report("test2.gcdump");
    // The collection log names the process; the graph records its total size.
    assert_eq!(report["processName"], "WpfApplication2");
    assert_eq!(report["processId"], 8660);
    assert_eq!(report["size"], 4_147_128);
    let rows = report["types"].as_array().expect("types");
    let counted: u64 = rows
        .iter()
        .map(|row| row["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(report["objects"], counted);
    assert!(rows.iter().all(|row| row["count"].as_u64() > Some(0)));
}

#[test]
fn a_reader_that_stops_early_ends_the_report_quietly() {
    // `diagmon gcdump report --json FILE | head -1`: the reader is gone before the report is.
    let mut child = Command::new(monitor_binary())
        .args(["gcdump", "report", "--json", &fixture("test2.gcdump")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run diagmon");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("diagmon ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

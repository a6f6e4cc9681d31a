//! The `diagmon ps`, `trace` and `validate` commands against a real .NET Core 3.1 target.

use std::process::Command;

use diagmon_tests::monitor::monitor_binary;
use diagmon_tests::target::{Program, TestTarget};

fn diagmon(args: &[&str]) -> std::process::Output {
    Command::new(monitor_binary())
        .args(args)
        .output()
        .expect("run diagmon")
}

#[test]
fn ps_trace_and_validate() {
    let target = TestTarget::start(Program::Worker, &[]);
    let dir = target.tmpdir().display().to_string();

    let ps = diagmon(&["ps", "--socket-dir", &dir, "--json"]);
    assert!(
        ps.status.success(),
        "{}",
        String::from_utf8_lossy(&ps.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(listed[0]["pid"], target.pid());
    assert_eq!(listed[0]["name"], "dotnet");

    let output = tempfile::tempdir().unwrap();
    let file = output.path().join("out.nettrace");
    let file_arg = file.display().to_string();
    let pid = target.pid().to_string();
    let trace = diagmon(&[
        "trace",
        "--socket-dir",
        &dir,
        "--pid",
        &pid,
        "--duration",
        "2s",
        "-o",
        &file_arg,
    ]);
    assert!(
        trace.status.success(),
        "{}",
        String::from_utf8_lossy(&trace.stderr)
    );

    let validate = diagmon(&["validate", &file_arg]);
    assert!(validate.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&validate.stdout).unwrap();
    assert!(summary["events"].as_u64().unwrap() > 0);
    assert!(
        summary["eventsByProvider"]["Microsoft-DotNETCore-SampleProfiler"]
            .as_u64()
            .unwrap()
            > 0
    );

    // A cut copy is reported as truncated (exit 2), garbage as malformed (exit 1).
    let bytes = std::fs::read(&file).unwrap();
    let cut = output.path().join("cut.nettrace");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let truncated = diagmon(&["validate", &cut.display().to_string()]);
    assert_eq!(truncated.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&truncated.stderr).contains("truncated"));
    let garbage = output.path().join("garbage.nettrace");
    std::fs::write(&garbage, b"this is not a trace at all").unwrap();
    assert_eq!(
        diagmon(&["validate", &garbage.display().to_string()])
            .status
            .code(),
        Some(1)
    );

    let ambiguous = diagmon(&["trace", "--socket-dir", &dir, "--pid", "1", "-o", &file_arg]);
    assert!(!ambiguous.status.success());
    assert!(String::from_utf8_lossy(&ambiguous.stderr).contains("no .NET process matches"));
}

#[test]
fn bad_configuration_names_the_key_and_no_auth_refuses_public_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[limits]\nmax_concurrent_traces = \"many\"\n").unwrap();
    let run = diagmon(&[
        "collect",
        "--config",
        &config.display().to_string(),
        "--no-auth",
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("max_concurrent_traces") && stderr.contains("bad.toml"),
        "{stderr}"
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "").unwrap();
    let public = diagmon(&[
        "collect",
        "--config",
        &good.display().to_string(),
        "--no-auth",
        "--urls",
        "http://0.0.0.0:0",
    ]);
    assert!(!public.status.success());
    assert!(String::from_utf8_lossy(&public.stderr).contains("--allow-no-auth-on-network"));

    let show = diagmon(&["config", "show", "--config", &good.display().to_string()]);
    assert!(show.status.success());
    assert!(String::from_utf8_lossy(&show.stdout).contains("max_concurrent_traces = 3"));

    // `config show` checks the rules as `collect` would: an egress provider nobody configured.
    let bad_rule = dir.path().join("rules.json");
    std::fs::write(
        &bad_rule,
        r#"{ "CollectionRules": { "r": {
              "Trigger": { "Type": "Startup" },
              "Actions": [{ "Type": "CollectDump", "Settings": { "Egress": "nope" } }],
            } } }"#,
    )
    .unwrap();
    let show = diagmon(&[
        "config",
        "show",
        "--config",
        &bad_rule.display().to_string(),
    ]);
    assert!(!show.status.success());
    let stderr = String::from_utf8_lossy(&show.stderr);
    assert!(
        stderr.contains("collection_rules.r.actions[0].settings.egress"),
        "{stderr}"
    );
}

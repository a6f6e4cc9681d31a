//! Dump benchmark: a dump of a real .NET Core 3.1 process holding a large managed heap (the
//! `BigHeap` target, 1024 MiB by default), three ways:
//! - `createdump` run by hand on the process (the floor: what writing the file costs);
//! - the runtime asked over IPC (GenerateCoreDump) to write it into a file, as diagmon asks;
//! - `GET /dump` of the real `diagmon` binary, streamed to the bench and dropped: from the request
//!   to the last byte.
//!
//! For the HTTP row it also reads the monitor's `/proc/<pid>/io` (`rchar`, `wchar`: bytes its
//! read and write calls moved) to give the bytes copied per byte of dump, and its peak RSS
//! (`VmHWM`, reset before each dump). Asserts nothing.
//!
//! `cargo build --release -p diagmon && cargo bench -p diagmon-tests --bench dump [-- HEAP_MIB]`;
//! `BENCH_ROUNDS` (3 by default) rounds, the rows interleaved; `BENCH_DUMP_TYPE` (WithHeap by
//! default; Mini, Full, Triage).

use std::path::Path;
use std::process::Command as Process;
use std::time::{Duration, Instant};

use diagmon::diagnostics::dump::DumpType;
use diagmon::diagnostics::{DiagnosticsClient, Endpoint, Timeouts};
use diagmon_tests::bench::{env_number, median, reset_peak_rss, status_mib};
use diagmon_tests::monitor::Monitor;
use diagmon_tests::target::{Program, TestTarget};
use futures_util::StreamExt;

const MIB: f64 = (1 << 20) as f64;

/// `rchar` and `wchar` of `/proc/{pid}/io`.
fn io_counters(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("rchar:"), field("wchar:"))
}

/// createdump's own option for a dump type.
fn createdump_option(dump_type: DumpType) -> &'static str {
    match dump_type {
        DumpType::Mini => "--normal",
        DumpType::WithHeap => "--withheap",
        DumpType::Triage => "--triage",
        DumpType::Full => "--full",
    }
}

/// Runs the runtime's createdump on `pid` into `path`; returns the time and the file's size.
fn createdump_alone(pid: u32, dump_type: DumpType, path: &Path) -> (Duration, u64) {
    let createdump =
        std::fs::read_dir(TestTarget::dotnet_root().join("shared/Microsoft.NETCore.App"))
            .expect("the runtime's shared folder")
            .flatten()
            .map(|version| version.path().join("createdump"))
            .find(|path| path.exists())
            .expect("createdump");
    let started = Instant::now();
    let output = Process::new(createdump)
        .arg("-f")
        .arg(path)
        .arg(createdump_option(dump_type))
        .arg(pid.to_string())
        .output()
        .expect("run createdump");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "createdump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let size = std::fs::metadata(path).expect("the dump").len();
    let _ = std::fs::remove_file(path);
    (elapsed, size)
}

/// Asks the runtime over IPC to write the dump into `path`; returns the time and the size.
async fn runtime_alone(target: &TestTarget, dump_type: DumpType, path: &Path) -> (Duration, u64) {
    let client =
        DiagnosticsClient::new(Endpoint::Socket(target.socket_path()), Timeouts::default());
    let started = Instant::now();
    client
        .generate_core_dump(path, dump_type, Duration::from_secs(600))
        .await
        .expect("GenerateCoreDump");
    let elapsed = started.elapsed();
    let size = std::fs::metadata(path).expect("the dump").len();
    let _ = std::fs::remove_file(path);
    (elapsed, size)
}

/// One `GET /dump` through the monitor.
struct HttpSample {
    elapsed: Duration,
    bytes: u64,
    peak_rss_mib: f64,
    read_per_byte: f64,
    written_per_byte: f64,
}

async fn http_dump(
    client: &reqwest::Client,
    monitor: &Monitor,
    pid: u32,
    dump_type: DumpType,
) -> HttpSample {
    reset_peak_rss(monitor.pid());
    let (read_before, written_before) = io_counters(monitor.pid());
    let started = Instant::now();
    let response = client
        .get(monitor.url(&format!("/dump?pid={pid}&type={dump_type}")))
        .send()
        .await
        .expect("response");
    assert!(response.status().is_success(), "{}", response.status());
    let mut body = response.bytes_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = body.next().await {
        bytes += chunk.expect("a complete body").len() as u64;
    }
    let elapsed = started.elapsed();
    let (read_after, written_after) = io_counters(monitor.pid());
    HttpSample {
        elapsed,
        bytes,
        peak_rss_mib: status_mib(monitor.pid(), "VmHWM"),
        read_per_byte: (read_after - read_before) as f64 / bytes as f64,
        written_per_byte: (written_after - written_before) as f64 / bytes as f64,
    }
}

fn seconds(values: &[Duration]) -> (f64, f64) {
    let list: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    let best = list.iter().copied().fold(f64::INFINITY, f64::min);
    (best, median(list))
}

#[tokio::main]
async fn main() {
    let heap_mib: u64 = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(1024);
    let rounds: usize = env_number("BENCH_ROUNDS").unwrap_or(3).max(1);
    let dump_type: DumpType = std::env::var("BENCH_DUMP_TYPE")
        .ok()
        .map(|text| text.parse().expect("BENCH_DUMP_TYPE"))
        .unwrap_or_default();
    let target = TestTarget::start(Program::BigHeap, &[&heap_mib.to_string()]);
    let scratch = tempfile::tempdir().expect("scratch folder");
    let monitor = Monitor::start(
        &format!(
            "socket_dir = {:?}\n[storage]\ndump_temp_folder = {:?}\n",
            target.tmpdir().display().to_string(),
            scratch.path().join("dumps").display().to_string()
        ),
        &["--no-auth"],
    );
    let http = reqwest::Client::new();
    println!(
        "dump of a .NET Core 3.1 process with a {heap_mib} MiB heap (RSS {:.0} MiB), type {dump_type}, {rounds} rounds",
        status_mib(target.pid(), "VmRSS")
    );
    let (mut alone, mut runtime, mut served) = (Vec::new(), Vec::new(), Vec::new());
    let mut size = 0;
    for round in 1..=rounds {
        let (time, bytes) =
            createdump_alone(target.pid(), dump_type, &scratch.path().join("direct"));
        alone.push(time);
        size = bytes;
        let (time, _) = runtime_alone(&target, dump_type, &scratch.path().join("ipc")).await;
        runtime.push(time);
        let sample = http_dump(&http, &monitor, target.pid(), dump_type).await;
        println!(
            "round {round}: createdump {:.2} s, runtime {:.2} s, GET /dump {:.2} s ({} bytes, peak RSS {:.1} MiB, read {:.3} and wrote {:.3} bytes per byte)",
            time_of(&alone),
            time_of(&runtime),
            sample.elapsed.as_secs_f64(),
            sample.bytes,
            sample.peak_rss_mib,
            sample.read_per_byte,
            sample.written_per_byte
        );
        served.push(sample);
    }
    let (alone_best, alone_median) = seconds(&alone);
    let (runtime_best, runtime_median) = seconds(&runtime);
    let times: Vec<Duration> = served.iter().map(|s| s.elapsed).collect();
    let (http_best, http_median) = seconds(&times);
    println!();
    println!("dump size: {:.1} MiB", size as f64 / MIB);
    println!(
        "{:<34} {:>8} {:>8} {:>10}",
        "row", "best s", "median s", "MiB/s best"
    );
    for (label, best, median) in [
        ("createdump alone", alone_best, alone_median),
        (
            "runtime GenerateCoreDump -> file",
            runtime_best,
            runtime_median,
        ),
        ("GET /dump, request to last byte", http_best, http_median),
    ] {
        println!(
            "{label:<34} {best:>8.2} {median:>8.2} {:>10.0}",
            size as f64 / MIB / best
        );
    }
    println!(
        "GET /dump vs createdump alone: {:.2}x (best), {:.2}x (median)",
        http_best / alone_best,
        http_median / alone_median
    );
    let worst_rss = served.iter().map(|s| s.peak_rss_mib).fold(0.0, f64::max);
    let read = median(served.iter().map(|s| s.read_per_byte).collect());
    let written = median(served.iter().map(|s| s.written_per_byte).collect());
    println!(
        "diagmon: peak RSS {worst_rss:.1} MiB (worst round); read {read:.3} and wrote {written:.3} bytes per byte of dump (median)"
    );
}

/// The last time recorded.
fn time_of(times: &[Duration]) -> f64 {
    times.last().map_or(f64::NAN, Duration::as_secs_f64)
}

//! gcdump benchmark: `GET /gcdump` of the real `diagmon` binary on a real .NET Core 3.1 process
//! keeping about 1,000,000 objects alive (the `HeapKeeper` target: 500,000 `Diagmon.Kept`
//! objects, each holding a 16-byte array), streamed to the bench.
//!
//! Prints, per round: the time from the request to the last byte of the file, the CPU time diagmon
//! spent in it, the part of the time until the heap-walk session ended (the runtime's GC and
//! diagmon reading its events; the rest is building and writing the graph), diagmon's peak RSS
//! (`VmHWM`, reset before each snapshot) and its growth over the RSS before the request (also per
//! million objects), the objects and references the heap walk described, and the size of the
//! `.gcdump` against the nettrace stream it was built from (from the operation's report). Asserts
//! only that each snapshot succeeded.
//!
//! `cargo build --release -p diagmon && cargo bench -p diagmon-tests --bench gcdump [-- KEPT]`;
//! `BENCH_ROUNDS` (3 by default) rounds.

use std::time::{Duration, Instant};

use diagmon_tests::bench::{cpu_seconds, env_number, median, reset_peak_rss, status_mib};
use diagmon_tests::monitor::Monitor;
use diagmon_tests::target::{Program, TestTarget};
use futures_util::StreamExt;
use serde_json::Value;

const MIB: f64 = (1 << 20) as f64;

#[tokio::main]
async fn main() {
    let kept: u64 = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(500_000);
    let rounds: usize = env_number("BENCH_ROUNDS").unwrap_or(3).max(1);
    let target = TestTarget::start(Program::HeapKeeper, &[&kept.to_string(), "16"]);
    let monitor = Monitor::start(
        &format!("socket_dir = {:?}\n", target.tmpdir().display().to_string()),
        &["--no-auth"],
    );
    let client = reqwest::Client::new();
    println!(
        "gcdump of a process keeping {kept} objects with a 16-byte array each ({} rounds)",
        rounds
    );
    println!(
        "{:>5} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>10} {:>10} {:>11} {:>10} {:>7}",
        "round",
        "seconds",
        "walk s",
        "cpu s",
        "objects",
        "refs",
        "peak MiB",
        "growth MiB",
        "MiB/1M obj",
        "nettrace MiB",
        "gcdump MiB",
        "ratio"
    );
    let mut times = Vec::new();
    let mut growths = Vec::new();
    for round in 1..=rounds {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = status_mib(monitor.pid(), "VmRSS");
        reset_peak_rss(monitor.pid());
        let cpu_before = cpu_seconds(monitor.pid());
        let started = Instant::now();
        let response = client
            .get(monitor.url(&format!("/gcdump?pid={}&report=true", target.pid())))
            .send()
            .await
            .expect("the request");
        assert!(response.status().is_success(), "{}", response.status());
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let mut body = response.bytes_stream();
        let mut bytes = 0u64;
        while let Some(chunk) = body.next().await {
            bytes += chunk.expect("a whole body").len() as u64;
        }
        let elapsed = started.elapsed();
        let peak = status_mib(monitor.pid(), "VmHWM");
        let cpu = cpu_seconds(monitor.pid()) - cpu_before;
        let operation = loop {
            let operation: Value = client
                .get(&location)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if operation["status"] != "Running" && operation["status"] != "Starting" {
                break operation;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(operation["status"], "Succeeded", "{operation}");
        let capture = &operation["summary"]["report"]["capture"];
        let number = |field: &str| capture[field].as_u64().unwrap_or(0);
        let objects = number("nodes");
        let nettrace = number("nettraceBytes") as f64 / MIB;
        let gcdump = bytes as f64 / MIB;
        let growth = peak - before;
        println!(
            "{:>5} {:>9.2} {:>9.2} {:>9.2} {:>10} {:>10} {:>9.1} {:>10.1} {:>10.1} {:>11.1} {:>10.1} {:>7.3}",
            round,
            elapsed.as_secs_f64(),
            number("walkMilliseconds") as f64 / 1000.0,
            cpu,
            objects,
            number("edges"),
            peak,
            growth,
            growth / (objects as f64 / 1e6),
            nettrace,
            gcdump,
            gcdump / nettrace
        );
        times.push(elapsed.as_secs_f64());
        growths.push(growth / (objects as f64 / 1e6));
    }
    println!(
        "median: {:.2} s to the finished file, {:.1} MiB of peak RSS growth per million objects",
        median(times),
        median(growths)
    );
}

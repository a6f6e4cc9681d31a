//! `/metrics` with many observed processes: scrape latency, the monitor's CPU per observed
//! process per interval, and its RSS over time.
//!
//! `BENCH_PROCESSES` (default 50) simulated runtimes connect to the monitor's diagnostic port
//! (listen mode) and report two EventCounters and two meter instruments every second; the real
//! `diagmon` binary keeps one counter session per runtime. The bench then
//! - measures the monitor's CPU over 10 s without scrapes (per process per interval);
//! - scrapes `/metrics` every 20 ms for 20 s (p50, p99, max latency);
//! - samples the monitor's RSS every 10 s for `BENCH_SECONDS` (default 60).
//!
//! Run: `cargo build -p diagmon && cargo bench -p diagmon-tests --bench metrics --profile dev`
//! (the debug binary; `cargo build --release -p diagmon` and plain `cargo bench` for release).

use std::time::{Duration, Instant};

use diagmon_tests::bench::{cpu_seconds, env_number, status_mib};
use diagmon_tests::monitor::Monitor;
use diagmon_tests::simulated_runtime::{SimulatedRuntime, SimulatedRuntimeConfig, StreamBehaviour};

#[tokio::main]
async fn main() {
    let processes: u32 = env_number("BENCH_PROCESSES").unwrap_or(50);
    let seconds: u64 = env_number("BENCH_SECONDS").unwrap_or(60);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = dir.path().join("port.sock");
    let monitor = Monitor::start(
        &format!(
            "[diagnostic_port]\nendpoint_name = {:?}\n[metrics]\ninterval_seconds = 1\n\
             providers = [\"Sim-Provider\"]\nmeters = [\"Sim.Meter\"]\n",
            port.display().to_string()
        ),
        &["--no-auth"],
    );
    let mut runtimes = Vec::new();
    for index in 0..processes {
        let config = SimulatedRuntimeConfig {
            pid: 400_000 + index,
            stream: StreamBehaviour::Counters { malformed: false },
            ..Default::default()
        };
        runtimes.push(
            SimulatedRuntime::connect(&port, false, config)
                .await
                .expect("a simulated runtime"),
        );
    }
    let client = reqwest::Client::new();
    let scrape = || async {
        client
            .get(monitor.url("/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("scrape body")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = scrape().await;
        let observed = (0..processes)
            .filter(|index| {
                text.contains(&format!(
                    "simprovider_sim_gauge_bytes{{pid=\"{}\"",
                    400_000 + index
                ))
            })
            .count();
        if observed == processes as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {observed} of {processes} processes observed after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let pid = monitor.pid();
    println!("{processes} simulated processes observed at a 1 s interval");

    // CPU, without scrapes.
    let (cpu_before, started) = (cpu_seconds(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu = cpu_seconds(pid) - cpu_before;
    let intervals = started.elapsed().as_secs_f64();
    println!(
        "monitor CPU: {:.1} ms per s in all, {:.3} ms per process per interval",
        cpu * 1000.0 / intervals,
        cpu * 1000.0 / intervals / f64::from(processes)
    );

    // Scrape latency.
    let mut latencies = Vec::new();
    let mut size = 0;
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let start = Instant::now();
        size = scrape().await.len();
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "scrape latency over {} scrapes of {size} bytes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );

    // RSS over time.
    let mut samples = vec![status_mib(pid, "VmRSS")];
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(10)).await;
        samples.push(status_mib(pid, "VmRSS"));
    }
    println!(
        "monitor RSS every 10 s over {seconds} s ({} process-intervals): {}",
        seconds * u64::from(processes),
        samples
            .iter()
            .map(|mib| format!("{mib:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    drop(runtimes);
}

//! Capture benchmark: what a production host pays for a trace, in CPU seconds of the `diagmon`
//! process per GB captured (all its threads, from `/proc/<pid>/stat`) beside the throughput.
//! Prints figures. Its only checks: each monitor row's trace succeeded (a success status and a
//! complete body, or an operation that `Succeeded`), and each floor row's trace was valid and
//! whole.
//!
//!     cargo build --release -p diagmon
//!     cargo bench -p diagmon-tests --bench capture [-- SIZE_MIB]      (default 256)
//!
//! The simulated runtime (a process of its own, serving a synthetic nettrace as fast as it is
//! read) and this bench's own reading run on one CPU (`BENCH_SIM_CPU`, default 0); the monitor
//! and the plain copy run on another (`BENCH_CPU`, default 1), so that the monitor's CPU is its
//! own. Part one, per average event size (`BENCH_EVENT_BYTES`, default `100,1000`):
//! - **plain copy -> null**: a thread on the monitor's CPU sends CollectTracing2 by hand and
//!   reads the stream (256 KiB reads) into nothing: the floor of reading the socket;
//! - **plain copy + summary -> null**: the same thread also validates every event and hashes
//!   every byte as it reads them, with the monitor's own validator and SHA-256: the floor of
//!   every capture (reading, checking and hashing each byte once, on one thread), measured in
//!   the same run as the rows it is the floor of, since the VM's speed moves from hour to hour;
//! - **plain copy + summary -> TCP**: the same, each read then written to a loopback TCP
//!   connection that a thread on the simulator's CPU reads as this bench reads the HTTP row's
//!   body: the floor of a streamed trace, which must also deliver its bytes;
//! - **plain copy -> file**, per directory: the same, each read then `write`n into a file of the
//!   directory;
//! - **plain copy + summary -> file**, per directory: each read validated, hashed and written
//!   into a file of the directory, on that one thread: the floor of egress to a file;
//! - **HTTP stream**: `POST /trace` of the real monitor, the body read (and dropped) by this
//!   bench: the session, per-event validation, SHA-256 and HTTP;
//! - **egress -> files**, per directory: `POST /trace?egressProvider=files` (the built-in
//!   filesystem provider into the directory), polled until it succeeds: the session, validation,
//!   SHA-256 and the WebAssembly provider writing the file.
//!
//! The directories are tmpfs (`/dev/shm`) and one on the real disk (`BENCH_DISK_DIR`, default the
//! bench's target temporary directory). After each file row the bench calls `sync` untimed, so
//! that one row's write-back does not land on the next. Rows run interleaved, `BENCH_ROUNDS`
//! times (5 by default); the table shows the median and the best of each figure.
//!
//! Part two (`BENCH_MANY`, default 32; 0 skips it): as many simulated runtimes, one egressed
//! trace from each at once (`limits.max_concurrent_traces` and the provider's `max_instances`
//! raised to match) into the disk directory: aggregate throughput, the monitor's peak RSS
//! against 64 MiB + 4 MiB per operation, operations failed, and the slowest operation's rate
//! against the fastest's.
//!
//! Under the table, each monitor row is set against its floor, from the same run's medians: the
//! streamed path against `plain copy + summary -> null` and against `plain copy + summary ->
//! TCP`, an egress row against `plain copy + summary -> file` into the same directory.
//!
//! `BENCH_ROWS=plain-summary,stream` runs only those rows of part one (the keys: `plain-null`,
//! `plain-summary`, `plain-summary-tcp`, `plain-file`, `plain-summary-file`, `stream`, `egress`).
//! `BENCH_PARTS=single` or `many` runs one part. The knobs do not start with `DIAGMON_`: the
//! monitor's configuration reads every such variable.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diagmon::diagnostics::nettrace::NettraceValidator;
use diagmon::diagnostics::protocol::{Command, HEADER_LEN, PayloadWriter, encode_request};
use diagmon_tests::bench::{
    RowChoice, SYNTHETIC_PROVIDER, SimulatorOptions, SimulatorProcess, cpu_seconds, env_number,
    median, pin_to_cpu, reset_peak_rss, rounds, status_mib, thread_cpu_seconds,
};
use diagmon_tests::monitor::Monitor;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const GB: f64 = 1e9;

/// What one run measured.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// MiB/s from the request to the last byte (streamed) or to the operation's success.
    rate: f64,
    /// CPU seconds per GB of the process doing the work (the monitor; the copying thread for a
    /// plain copy).
    cpu_per_gb: f64,
    /// Peak RSS of the monitor during the run, MiB (NaN for a plain copy).
    rss: f64,
}

/// The CPUs of the two sides.
#[derive(Clone, Copy)]
struct Cpus {
    simulator: usize,
    monitor: usize,
}

/// Where a plain copy writes each read.
enum CopyTo {
    /// Nowhere.
    Null,
    /// A file, created at this path.
    File(PathBuf),
    /// A loopback TCP connection, read (256 KiB reads, discarded) by a thread on the simulator's
    /// CPU, as this bench reads the HTTP row's body.
    Tcp,
}

/// A plain copy of one session's stream, on a thread pinned to the monitor's CPU: a
/// CollectTracing2 request by hand, then 256 KiB reads, each written to `to`, and validated and
/// hashed first if `summarize` (it then asserts that the trace was whole).
fn plain_copy(socket: &str, to: CopyTo, summarize: bool, cpus: Cpus) -> (u64, f64) {
    let socket = socket.to_owned();
    std::thread::spawn(move || {
        pin_to_cpu(cpus.monitor);
        let before = thread_cpu_seconds();
        let mut payload = PayloadWriter::new();
        payload.u32(256).u32(1).bool(false).u32(1);
        payload
            .u64(u64::MAX)
            .u32(5)
            .string(SYNTHETIC_PROVIDER)
            .string("");
        let request =
            encode_request(Command::CollectTracing2, &payload.into_bytes()).expect("request");
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        stream.write_all(&request).expect("send");
        let mut reply = [0u8; HEADER_LEN + 8];
        stream.read_exact(&mut reply).expect("reply");
        let mut reader = None;
        let mut out: Option<Box<dyn std::io::Write>> = match &to {
            CopyTo::Null => None,
            CopyTo::File(path) => Some(Box::new(std::fs::File::create(path).expect("create"))),
            CopyTo::Tcp => {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
                let address = listener.local_addr().expect("address");
                reader = Some(std::thread::spawn(move || {
                    pin_to_cpu(cpus.simulator);
                    let (mut connection, _) = listener.accept().expect("accept");
                    let mut buffer = vec![0u8; 256 * 1024];
                    let mut received = 0u64;
                    loop {
                        let read = connection.read(&mut buffer).expect("read");
                        if read == 0 {
                            break received;
                        }
                        received += read as u64;
                    }
                }));
                Some(Box::new(
                    std::net::TcpStream::connect(address).expect("connect"),
                ))
            }
        };
        let mut summary = summarize.then(|| (NettraceValidator::new(), Sha256::new()));
        let mut buffer = vec![0u8; 256 * 1024];
        let mut copied = 0u64;
        loop {
            let read = stream.read(&mut buffer).expect("read");
            if read == 0 {
                break;
            }
            if let Some((validator, hasher)) = summary.as_mut() {
                validator.feed(&buffer[..read]).expect("a valid trace");
                hasher.update(&buffer[..read]);
            }
            if let Some(out) = out.as_mut() {
                out.write_all(&buffer[..read]).expect("write");
            }
            copied += read as u64;
        }
        drop(out);
        if let Some((validator, hasher)) = summary {
            validator
                .finish()
                .expect("a valid trace with its end-of-stream marker");
            std::hint::black_box(hasher.finalize());
        }
        let cpu = thread_cpu_seconds() - before;
        if let Some(reader) = reader {
            assert_eq!(reader.join().expect("the TCP reader"), copied);
        }
        (copied, cpu)
    })
    .join()
    .expect("the copying thread")
}

/// `POST /trace` for the simulator `pid`, streamed or to the `files` provider.
fn trace_url(monitor: &Monitor, pid: u32, egress: bool) -> String {
    let egress = if egress { "&egressProvider=files" } else { "" };
    monitor.url(&format!("/trace?pid={pid}&durationSeconds=-1{egress}"))
}

fn trace_body() -> serde_json::Value {
    serde_json::json!({"providers": [{"name": SYNTHETIC_PROVIDER}], "requestRundown": false})
}

/// Streams one trace through the monitor; returns its bytes.
async fn http_stream(client: &reqwest::Client, monitor: &Monitor, pid: u32) -> u64 {
    let response = client
        .post(trace_url(monitor, pid, false))
        .json(&trace_body())
        .send()
        .await
        .expect("response");
    assert!(response.status().is_success(), "{}", response.status());
    let mut stream = response.bytes_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk.expect("complete body").len() as u64;
    }
    bytes
}

/// Egresses one trace through the monitor and polls its operation until it ends; returns the
/// operation's final state (`status`, `bytesCaptured`, ...).
async fn http_egress(client: &reqwest::Client, monitor: &Monitor, pid: u32) -> serde_json::Value {
    let response = client
        .post(trace_url(monitor, pid, true))
        .json(&trace_body())
        .send()
        .await
        .expect("response");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::ACCEPTED,
        "{:?}",
        response.text().await
    );
    let location = response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .expect("a Location header")
        .to_owned();
    loop {
        let body: serde_json::Value = client
            .get(&location)
            .send()
            .await
            .expect("operation")
            .json()
            .await
            .expect("operation JSON");
        if ["Succeeded", "Failed", "Cancelled"].contains(&body["status"].as_str().unwrap_or("")) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The rows of part one.
#[derive(Clone, Debug, PartialEq)]
enum Row {
    PlainNull,
    PlainSummary,
    PlainSummaryTcp,
    PlainFile(PathBuf),
    PlainSummaryFile(PathBuf),
    Stream,
    Egress(PathBuf),
}

impl Row {
    /// Every row's name in `BENCH_ROWS`, in the order of [`Row::key`]'s arms.
    const KEYS: [&'static str; 7] = [
        "plain-null",
        "plain-summary",
        "plain-summary-tcp",
        "plain-file",
        "plain-summary-file",
        "stream",
        "egress",
    ];

    /// The row's name in `BENCH_ROWS`.
    fn key(&self) -> &'static str {
        Row::KEYS[match self {
            Row::PlainNull => 0,
            Row::PlainSummary => 1,
            Row::PlainSummaryTcp => 2,
            Row::PlainFile(_) => 3,
            Row::PlainSummaryFile(_) => 4,
            Row::Stream => 5,
            Row::Egress(_) => 6,
        }]
    }
}

struct Single<'a> {
    client: reqwest::Client,
    simulator: &'a SimulatorProcess,
    monitor: &'a Monitor,
    cpus: Cpus,
    /// The monitor's `files` directory for each of the two bases.
    egress_dirs: &'a [(PathBuf, PathBuf)],
}

impl Single<'_> {
    async fn run(&self, row: &Row) -> Sample {
        let monitor = self.monitor.pid();
        reset_peak_rss(monitor);
        let monitor_before = cpu_seconds(monitor);
        let started = Instant::now();
        let (bytes, cpu) = match row {
            Row::PlainNull => plain_copy(self.simulator.socket(), CopyTo::Null, false, self.cpus),
            Row::PlainSummary => plain_copy(self.simulator.socket(), CopyTo::Null, true, self.cpus),
            Row::PlainSummaryTcp => {
                plain_copy(self.simulator.socket(), CopyTo::Tcp, true, self.cpus)
            }
            Row::PlainFile(dir) | Row::PlainSummaryFile(dir) => {
                let path = dir.join("plain.nettrace");
                let copied = plain_copy(
                    self.simulator.socket(),
                    CopyTo::File(path.clone()),
                    matches!(row, Row::PlainSummaryFile(_)),
                    self.cpus,
                );
                let _ = std::fs::remove_file(path);
                copied
            }
            Row::Stream => {
                let bytes = http_stream(&self.client, self.monitor, self.simulator.pid()).await;
                (bytes, cpu_seconds(monitor) - monitor_before)
            }
            Row::Egress(base) => {
                let body = http_egress(&self.client, self.monitor, self.simulator.pid()).await;
                assert_eq!(body["status"], "Succeeded", "{body}");
                let bytes = body["bytesCaptured"].as_u64().expect("bytesCaptured");
                let out = &self
                    .egress_dirs
                    .iter()
                    .find(|(candidate, _)| candidate == base)
                    .expect("a files directory")
                    .1;
                for entry in std::fs::read_dir(out).expect("the files directory") {
                    let _ = std::fs::remove_file(entry.expect("an entry").path());
                }
                (bytes, cpu_seconds(monitor) - monitor_before)
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        let rss = match row {
            Row::Stream | Row::Egress(_) => status_mib(monitor, "VmHWM"),
            _ => f64::NAN,
        };
        if matches!(
            row,
            Row::PlainFile(_) | Row::PlainSummaryFile(_) | Row::Egress(_)
        ) {
            // Untimed: the file's write-back happens now, not during the next row.
            // SAFETY: sync has no preconditions.
            unsafe { libc::sync() };
        }
        Sample {
            rate: bytes as f64 / MIB as f64 / elapsed,
            cpu_per_gb: cpu / (bytes as f64 / GB),
            rss,
        }
    }
}

/// The monitor's configuration: the simulators' socket directory, a `files` provider into
/// `out`, and room for `traces` traces at once (both the trace limit and the provider's
/// instances: with the default 8 instances, 24 of 32 uploads would queue for one). Metrics are off: the monitor's counters session
/// to a simulator would get a full-speed synthetic trace too (the simulator serves one to every
/// session), and decoding its payloads took a third of the monitor's CPU.
fn monitor_config(socket_dir: &Path, out: &Path, cache: &Path, traces: usize) -> String {
    format!(
        "socket_dir = {:?}\n[metrics]\nenabled = false\n\
         [limits]\nmax_concurrent_traces = {traces}\n\
         [egress]\ncache_directory = {:?}\n\
         [egress.providers.files]\ncomponent = \"filesystem\"\ndirectory = {:?}\n\
         [egress.providers.files.limits]\nmax_instances = {traces}\n",
        socket_dir.display().to_string(),
        cache.display().to_string(),
        out.display().to_string()
    )
}

/// Starts the monitor on `cpus.monitor` (it inherits the affinity of the thread that starts
/// it), then puts this thread back on `cpus.simulator`.
fn start_monitor(config: &str, cpus: Cpus) -> Monitor {
    pin_to_cpu(cpus.monitor);
    let monitor = Monitor::start(config, &["--no-auth"]);
    pin_to_cpu(cpus.simulator);
    // For `perf record -p`.
    println!("(monitor pid {})", monitor.pid());
    monitor
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|load| {
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

async fn single(size: u64, cpus: Cpus, bases: &[(String, PathBuf)], cache: &Path) {
    let rounds = rounds();
    let event_sizes: Vec<usize> = std::env::var("BENCH_EVENT_BYTES")
        .unwrap_or_else(|_| "100,1000".to_owned())
        .split(',')
        .filter_map(|size| size.trim().parse().ok())
        .collect();
    let chosen = RowChoice::from_env(&Row::KEYS);
    let socket_parent = tempfile::tempdir().expect("socket directory");
    let mut egress_dirs = Vec::new();
    for (_, base) in bases {
        egress_dirs.push((base.clone(), base.join("files")));
    }
    for event_bytes in event_sizes {
        let simulator = SimulatorProcess::start_with(
            env!("CARGO_BIN_EXE_simulated-runtime"),
            size * MIB,
            &SimulatorOptions {
                socket_dir: None,
                parent: Some(socket_parent.path().to_owned()),
                event_bytes: Some(event_bytes),
            },
        );
        let socket_dir = Path::new(simulator.socket())
            .parent()
            .expect("socket dir")
            .to_owned();
        // One monitor per directory (a provider's directory is its configuration); the rows of
        // a directory use its own.
        let mut monitors = Vec::new();
        for (base, out) in &egress_dirs {
            std::fs::create_dir_all(out).expect("files directory");
            monitors.push((
                base.clone(),
                start_monitor(&monitor_config(&socket_dir, out, cache, 3), cpus),
            ));
        }
        let mut rows: Vec<(String, Row)> = vec![
            ("plain copy -> null".to_owned(), Row::PlainNull),
            ("plain copy + summary -> null".to_owned(), Row::PlainSummary),
            (
                "plain copy + summary -> TCP".to_owned(),
                Row::PlainSummaryTcp,
            ),
            ("HTTP stream".to_owned(), Row::Stream),
        ];
        for (name, base) in bases {
            rows.push((
                format!("plain copy -> file, {name}"),
                Row::PlainFile(base.clone()),
            ));
            rows.push((
                format!("plain copy + summary -> file, {name}"),
                Row::PlainSummaryFile(base.clone()),
            ));
            rows.push((
                format!("egress -> files, {name}"),
                Row::Egress(base.clone()),
            ));
        }
        rows.retain(|(_, row)| chosen.includes(row.key()));
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); rows.len()];
        let load_before = load();
        for round in 0..=rounds {
            for (index, (_, row)) in rows.iter().enumerate() {
                let monitor = match row {
                    Row::Egress(base) => {
                        &monitors
                            .iter()
                            .find(|(candidate, _)| candidate == base)
                            .expect("its monitor")
                            .1
                    }
                    _ => &monitors[0].1,
                };
                let bench = Single {
                    client: reqwest::Client::new(),
                    simulator: &simulator,
                    monitor,
                    cpus,
                    egress_dirs: &egress_dirs,
                };
                let sample = bench.run(row).await;
                // Round 0 warms up (page cache, heap, the provider's compiled code).
                if round > 0 {
                    samples[index].push(sample);
                }
            }
        }
        println!(
            "--- {size} MiB trace, events of ~{event_bytes} B, {rounds} rounds; load average {load_before} before, {} after ---",
            load()
        );
        println!(
            "{:<34} {:>12} {:>8} {:>10} {:>8} {:>9}   runs (CPU s/GB)",
            "", "CPU s/GB med", "best", "MiB/s med", "best", "peak RSS"
        );
        let mut medians: Vec<(&Row, f64)> = Vec::with_capacity(rows.len());
        for ((label, row), runs) in rows.iter().zip(&samples) {
            let cpu: Vec<f64> = runs.iter().map(|sample| sample.cpu_per_gb).collect();
            let cpu_median = median(cpu.clone());
            medians.push((row, cpu_median));
            let rate: Vec<f64> = runs.iter().map(|sample| sample.rate).collect();
            let rss = runs
                .iter()
                .map(|sample| sample.rss)
                .fold(f64::NAN, f64::max);
            println!(
                "{label:<34} {cpu_median:>12.2} {:>8.2} {:>10.0} {:>8.0} {:>5.1} MiB   {:?}",
                cpu.iter().copied().fold(f64::NAN, f64::min),
                median(rate.clone()),
                rate.iter().copied().fold(f64::NAN, f64::max),
                rss,
                cpu.iter()
                    .map(|value| (value * 100.0).round() / 100.0)
                    .collect::<Vec<_>>(),
            );
        }
        print_floors(&medians, bases);
    }
}

/// Sets each monitor row's median CPU per GB against its floor from the same run (see the
/// module's doc): what the monitor adds to the work no capture can skip. A line needs both its
/// rows; without them it is left out.
fn print_floors(medians: &[(&Row, f64)], bases: &[(String, PathBuf)]) {
    let of = |wanted: &Row| {
        medians
            .iter()
            .find(|(row, _)| *row == wanted)
            .map(|(_, cpu)| *cpu)
    };
    let mut lines = Vec::new();
    if let (Some(stream), Some(floor)) = (of(&Row::Stream), of(&Row::PlainSummary)) {
        lines.push(format!(
            "  HTTP stream {stream:.2} = floor {floor:.2} (plain copy + summary -> null) {:+.2}",
            stream - floor
        ));
    }
    if let (Some(stream), Some(floor)) = (of(&Row::Stream), of(&Row::PlainSummaryTcp)) {
        lines.push(format!(
            "  HTTP stream {stream:.2} = floor {floor:.2} (plain copy + summary -> TCP) {:+.2}",
            stream - floor
        ));
    }
    for (name, base) in bases {
        let egress = of(&Row::Egress(base.clone()));
        let floor = of(&Row::PlainSummaryFile(base.clone()));
        if let (Some(egress), Some(floor)) = (egress, floor) {
            lines.push(format!(
                "  egress -> files, {name} {egress:.2} = floor {floor:.2} (plain copy + summary -> file) {:+.2}",
                egress - floor
            ));
        }
    }
    if !lines.is_empty() {
        println!("against the floor, from the medians (CPU s/GB):");
        for line in lines {
            println!("{line}");
        }
    }
}

async fn many(count: usize, size: u64, cpus: Cpus, disk: &Path, cache: &Path) {
    let sockets = tempfile::tempdir().expect("socket directory");
    let simulators: Vec<SimulatorProcess> = (0..count)
        .map(|_| {
            SimulatorProcess::start_with(
                env!("CARGO_BIN_EXE_simulated-runtime"),
                size * MIB,
                &SimulatorOptions {
                    socket_dir: Some(sockets.path().to_owned()),
                    parent: None,
                    event_bytes: Some(100),
                },
            )
        })
        .collect();
    let out = disk.join("many");
    std::fs::create_dir_all(&out).expect("files directory");
    let monitor = start_monitor(&monitor_config(sockets.path(), &out, cache, count), cpus);
    let client = reqwest::Client::new();
    // Warm-up: one trace alone.
    http_egress(&client, &monitor, simulators[0].pid()).await;
    for entry in std::fs::read_dir(&out).expect("the files directory") {
        let _ = std::fs::remove_file(entry.expect("an entry").path());
    }
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let resident_before = status_mib(monitor.pid(), "VmRSS");
    reset_peak_rss(monitor.pid());
    let cpu_before = cpu_seconds(monitor.pid());
    let load_before = load();
    let started = Instant::now();
    let operations = simulators.iter().map(|simulator| {
        let client = client.clone();
        let monitor = &monitor;
        async move {
            let body = http_egress(&client, monitor, simulator.pid()).await;
            (body, started.elapsed())
        }
    });
    let results = futures_util::future::join_all(operations).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(monitor.pid()) - cpu_before;
    let peak = status_mib(monitor.pid(), "VmHWM");
    let mut failed = Vec::new();
    let mut total = 0u64;
    let mut rates = Vec::new();
    for (body, took) in &results {
        if body["status"] != "Succeeded" {
            failed.push(body.to_string());
            continue;
        }
        let bytes = body["bytesCaptured"].as_u64().unwrap_or(0);
        total += bytes;
        rates.push(bytes as f64 / MIB as f64 / took.as_secs_f64());
    }
    let slowest = rates.iter().copied().fold(f64::NAN, f64::min);
    let fastest = rates.iter().copied().fold(f64::NAN, f64::max);
    let goal = 64.0 + 4.0 * count as f64;
    println!(
        "--- {count} traces of {size} MiB egressed at once into {} (events of ~100 B); load average {load_before} before, {} after ---",
        out.display(),
        load()
    );
    println!(
        "aggregate {:.0} MiB/s, {:.2} CPU s/GB, {} of {count} failed",
        total as f64 / MIB as f64 / elapsed,
        cpu / (total as f64 / GB),
        failed.len()
    );
    println!(
        "monitor RSS: {resident_before:.1} MiB before, peak {peak:.1} MiB (goal <= {goal:.0} MiB: {})",
        if peak <= goal { "met" } else { "NOT met" }
    );
    println!(
        "per operation MiB/s: slowest {slowest:.1}, median {:.1}, fastest {fastest:.1}: slowest / fastest {:.2} (goal >= 0.5)",
        median(rates.clone()),
        slowest / fastest
    );
    for failure in failed.iter().take(3) {
        println!("  failed: {failure}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

fn main() {
    let cpus = Cpus {
        simulator: env_number("BENCH_SIM_CPU").unwrap_or(0),
        monitor: env_number("BENCH_CPU").unwrap_or(1),
    };
    // Before the runtime starts, so that its threads and the simulators inherit it.
    pin_to_cpu(cpus.simulator);
    let size = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse::<u64>().ok())
        .unwrap_or(256);
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "single,many".to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tmpfs = tempfile::tempdir_in("/dev/shm").expect("a directory in /dev/shm");
        let disk_base = std::env::var_os("BENCH_DISK_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
        let disk = tempfile::tempdir_in(&disk_base).expect("a directory on disk");
        let cache = tempfile::tempdir().expect("cache directory");
        println!(
            "capture benchmark: simulator and this bench on CPU {}, monitor and plain copies on CPU {}",
            cpus.simulator, cpus.monitor
        );
        let bases = vec![
            ("tmpfs".to_owned(), tmpfs.path().to_owned()),
            ("disk".to_owned(), disk.path().to_owned()),
        ];
        if parts.contains("single") {
            single(size, cpus, &bases, cache.path()).await;
        }
        let count: usize = env_number("BENCH_MANY").unwrap_or(32);
        if parts.contains("many") && count > 0 {
            let size = env_number("BENCH_MANY_MIB").unwrap_or(64);
            many(count, size, cpus, disk.path(), cache.path()).await;
        }
    });
}

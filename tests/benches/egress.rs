//! Egress benchmark for the built-in filesystem provider: prints figures, asserts nothing.
//!
//!     cargo bench -p diagmon-tests --bench egress [-- SIZE_MIB...]    (default 200 and 2048)
//!
//! It measures what issue #5 sets targets for:
//! - **throughput**, per size: a synthetic nettrace streamed by the simulated runtime (a separate
//!   process started with `--full-speed-bytes`) and read through diagmon's client
//!   (`start_session`, then `next_chunk`), each chunk then going, as it comes, to
//!   - (a) *native*: `std::fs::File::write_all` into a file of the target directory, on a writer
//!     thread fed through a bounded queue (about 3 MiB, what an upload keeps in flight), as a
//!     careful async implementation does: the reading task never blocks on the file;
//!   - (b) *component*: [`diagmon::egress::Upload::write`], through the filesystem component into
//!     the same directory, as the capture pipeline does; the host gathers the chunks into the
//!     provider's `chunk_kib` (`BENCH_CHUNK_KIB` overrides it);
//!   - for reference, native `write_all` inline on the reading task (no thread, no queue).
//!
//!   After one warm-up run of each, the rows run interleaved, `BENCH_ROUNDS` times (5 by
//!   default): the machine is shared by the simulator and the reader, so one run can land on a
//!   busy core. The table shows each row's best and median rate (MiB/s from the session request
//!   to the file being complete), every run, and the cores the simulator and this process used
//!   in the best run; the component is compared with each native row best with best and median
//!   with median. `BENCH_ROWS=native,component` runs only those rows (`inline` is the third);
//! - **peak RSS** of this process while egressing (`VmHWM`, reset before each run), per size: it
//!   should not grow with the trace;
//! - **per-upload overhead**: instantiate + `configure` + `begin` + `finish` of an empty artifact;
//! - **start-up**: `EgressHost::load` with the component already in the compile cache, and without.
//!
//! `BENCH_CPU=N` pins the bench and the simulator to CPU N, so that the rates measure the work per
//! byte rather than where the scheduler put the threads.
//!
//! The target directory is under `BENCH_DIR` (default: tmpfs `/dev/shm` when there is one, so
//! that disk write-back does not drown the difference). The knobs deliberately do not start with
//! `DIAGMON_`: the monitor's configuration reads every such variable.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use diagmon::egress::{Artifact, EgressConfig, EgressHost, ProviderConfig, ProviderLimits};
use diagmon_tests::bench::{
    RowChoice, SimulatorProcess, cpu_seconds, env_number, median, pin_to_cpu, reset_peak_rss,
    rounds, sizes_mib, status_mib,
};

const MIB: u64 = 1 << 20;

/// Chunks (256 KiB reads) queued for the native writer thread.
const WRITER_QUEUE: usize = 12;

fn artifact(pid: u64) -> Artifact {
    Artifact::trace(
        pid,
        uuid::Uuid::new_v4(),
        "bench",
        uuid::Uuid::new_v4(),
        Vec::new(),
        SystemTime::now(),
    )
}

fn config(directory: &Path, cache: &Path) -> EgressConfig {
    let mut limits = ProviderLimits::default();
    if let Some(kib) = env_number("BENCH_CHUNK_KIB") {
        limits.chunk_kib = kib;
    }
    let mut settings = BTreeMap::new();
    settings.insert(
        "name_template".to_owned(),
        serde_json::json!("{operation_id}.nettrace"),
    );
    let provider = ProviderConfig {
        component: "filesystem".to_owned(),
        directory: Some(directory.to_owned()),
        allowed_outbound_hosts: Vec::new(),
        object_store: None,
        settings,
        limits,
    };
    EgressConfig {
        providers: [("artifacts".to_owned(), provider)].into_iter().collect(),
        cache_directory: Some(cache.to_owned()),
    }
}

/// The ways of egressing the stream that the table compares.
#[derive(Clone, Copy, PartialEq)]
enum Row {
    /// (a) the baseline: native writes on a writer thread.
    Native = 0,
    /// (b) through the filesystem component.
    Component = 1,
    /// For reference: native writes inline on the reading task.
    NativeInline = 2,
}

impl Row {
    const ALL: [Row; 3] = [Row::Native, Row::Component, Row::NativeInline];

    /// The row's name in `BENCH_ROWS`.
    fn key(self) -> &'static str {
        match self {
            Row::Native => "native",
            Row::Component => "component",
            Row::NativeInline => "inline",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Row::Native => "(a) native, writer thread",
            Row::Component => "(b) filesystem component",
            Row::NativeInline => "native, inline on the task",
        }
    }
}

/// One run of one row.
#[derive(Clone, Copy)]
struct Sample {
    /// MiB/s from the session request to the file being complete.
    rate: f64,
    /// Peak RSS of this process during the run, MiB.
    rss: f64,
    /// Cores used on average by the simulator and by this process.
    cores: [f64; 2],
}

struct Bench<'a> {
    simulator: &'a SimulatorProcess,
    host: &'a EgressHost,
    directory: &'a Path,
}

impl Bench<'_> {
    async fn run(&self, row: Row) -> Sample {
        let pids = [self.simulator.pid(), std::process::id()];
        let cpu_before = pids.map(cpu_seconds);
        reset_peak_rss(std::process::id());
        let started = Instant::now();
        let mut session = self.simulator.session().await;
        let mut bytes = 0u64;
        let path = self.directory.join("native.nettrace");
        let path = match row {
            Row::Native => {
                // What a careful async implementation does: the reading task never blocks on the
                // file; a thread of its own writes each chunk as it comes, as the upload's thread
                // does, with as much queued (about 3 MiB) as an upload keeps in flight.
                let mut file = std::fs::File::create(&path).expect("create");
                let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(WRITER_QUEUE);
                let writer = tokio::task::spawn_blocking(move || {
                    while let Some(chunk) = receiver.blocking_recv() {
                        file.write_all(&chunk).expect("write");
                    }
                });
                while let Some(chunk) = session.next_chunk().await.expect("complete trace") {
                    bytes += chunk.len() as u64;
                    sender.send(chunk).await.expect("the writer runs");
                }
                drop(sender);
                writer.await.expect("writer");
                path
            }
            Row::NativeInline => {
                let mut file = std::fs::File::create(&path).expect("create");
                while let Some(chunk) = session.next_chunk().await.expect("complete trace") {
                    bytes += chunk.len() as u64;
                    file.write_all(&chunk).expect("write");
                }
                drop(file);
                path
            }
            Row::Component => {
                let mut upload = self
                    .host
                    .begin("artifacts", artifact(1))
                    .await
                    .expect("begin");
                while let Some(chunk) = session.next_chunk().await.expect("complete trace") {
                    bytes += chunk.len() as u64;
                    upload.write(chunk).await.expect("write");
                }
                PathBuf::from(upload.finish().await.expect("finish"))
            }
        };
        let elapsed = started.elapsed();
        let rss = status_mib(std::process::id(), "VmHWM");
        let mut cores = [0.0; 2];
        for (index, pid) in pids.into_iter().enumerate() {
            cores[index] = (cpu_seconds(pid) - cpu_before[index]) / elapsed.as_secs_f64();
        }
        assert_eq!(
            std::fs::metadata(&path).expect("the written file").len(),
            bytes,
            "{} wrote every byte",
            row.label()
        );
        std::fs::remove_file(&path).expect("remove");
        Sample {
            rate: bytes as f64 / MIB as f64 / elapsed.as_secs_f64(),
            rss,
            cores,
        }
    }
}

fn median_duration(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let sizes = sizes_mib();
    let rounds = rounds();
    if let Some(cpu) = env_number("BENCH_CPU") {
        pin_to_cpu(cpu);
        println!("(pinned to CPU {cpu}, with the simulator)");
    }
    let chosen = RowChoice::from_env(&Row::ALL.map(Row::key));
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if Path::new("/dev/shm").is_dir() {
                PathBuf::from("/dev/shm")
            } else {
                PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            }
        });
    let work = tempfile::tempdir_in(&base).expect("work directory");
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).expect("output directory");
    let cache = work.path().join("cache");
    let chunk_kib = config(&out, &cache).providers["artifacts"].limits.chunk_kib;
    println!(
        "egress benchmark: filesystem component (chunk_kib {chunk_kib}) vs native, into {}",
        out.display()
    );

    // Start-up: cold (compiles and fills the cache), then warm (loads the precompiled component).
    let started = Instant::now();
    EgressHost::load(&config(&out, &cache)).await.expect("load");
    let cold = started.elapsed();
    let mut warm = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        EgressHost::load(&config(&out, &cache)).await.expect("load");
        warm.push(started.elapsed());
    }
    let host = EgressHost::load(&config(&out, &cache)).await.expect("load");
    println!(
        "start-up (load + check + settings validation): cold {:.1} ms, precompiled {:.2} ms (median of 5)",
        ms(cold),
        ms(median_duration(warm))
    );

    // Per-upload overhead.
    let mut overhead = Vec::new();
    for i in 0..300 {
        let started = Instant::now();
        let upload = host.begin("artifacts", artifact(i)).await.expect("begin");
        let location = upload.finish().await.expect("finish");
        overhead.push(started.elapsed());
        std::fs::remove_file(location).expect("remove");
    }
    overhead.sort();
    println!(
        "per upload (instantiate + configure + begin + finish, empty): p50 {:.3} ms, p99 {:.3} ms",
        ms(overhead[overhead.len() / 2]),
        ms(overhead[overhead.len() * 99 / 100])
    );

    let resident_before = status_mib(std::process::id(), "VmRSS");
    let mut peaks = Vec::new();
    for size in sizes {
        let simulator =
            SimulatorProcess::start(env!("CARGO_BIN_EXE_simulated-runtime"), size * MIB);
        let bench = Bench {
            simulator: &simulator,
            host: &host,
            directory: &out,
        };
        let rows: Vec<Row> = Row::ALL
            .into_iter()
            .filter(|row| chosen.includes(row.key()))
            .collect();
        // Warm-up: the first run of each kind pays for fresh page-cache and heap pages.
        for row in &rows {
            bench.run(*row).await;
        }
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); Row::ALL.len()];
        for _ in 0..rounds {
            for row in &rows {
                samples[*row as usize].push(bench.run(*row).await);
            }
        }
        println!(
            "--- {size} MiB synthetic nettrace from the simulated runtime, {rounds} interleaved rounds ---"
        );
        println!(
            "{:<32} {:>10} {:>8} {:>10}  cores sim/bench  runs MiB/s",
            "", "best MiB/s", "median", "peak RSS"
        );
        let rates = |row: Row| -> Vec<f64> {
            samples[row as usize]
                .iter()
                .map(|sample| sample.rate)
                .collect()
        };
        let best = |row: Row| rates(row).into_iter().fold(f64::NAN, f64::max);
        let middle = |row: Row| median(rates(row));
        for row in &rows {
            let runs = &samples[*row as usize];
            let top = runs
                .iter()
                .max_by(|a, b| a.rate.total_cmp(&b.rate))
                .expect("a run");
            let rss = runs.iter().map(|sample| sample.rss).fold(0.0, f64::max);
            println!(
                "{:<32} {:>10.0} {:>8.0} {:>6.1} MiB  {:.2} / {:.2}      {:?}",
                row.label(),
                top.rate,
                middle(*row),
                rss,
                top.cores[0],
                top.cores[1],
                rates(*row)
                    .iter()
                    .map(|rate| rate.round() as u64)
                    .collect::<Vec<_>>(),
            );
            if *row == Row::Component {
                peaks.push((size, rss));
            }
        }
        let versus = |baseline: Row| {
            if rows.contains(&Row::Component) && rows.contains(&baseline) {
                println!(
                    "component / {}: {:.2}x best vs best, {:.2}x median vs median",
                    baseline.label(),
                    best(Row::Component) / best(baseline),
                    middle(Row::Component) / middle(baseline),
                );
            }
        };
        versus(Row::Native);
        versus(Row::NativeInline);
    }
    println!(
        "peak RSS while egressing through the component: {} (process RSS before the runs: {resident_before:.1} MiB)",
        peaks
            .iter()
            .map(|(size, rss)| format!("{size} MiB -> {rss:.1} MiB"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

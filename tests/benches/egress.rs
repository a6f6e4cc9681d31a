//! Egress benchmark: prints figures, asserts nothing.
//!
//! Run with:
//!
//!     cargo bench -p diagmon-tests --bench egress
//!
//! It measures, for the built-in filesystem provider:
//! - throughput of a synthetic stream (2 GiB by default; `DIAGMON_BENCH_EGRESS_MIB` changes it)
//!   pushed in 64 KiB chunks, as the capture pipeline does, against a native Rust `write_all`
//!   loop of the same chunks into the same directory (tmpfs `/dev/shm` when there is one); the
//!   host coalesces them into the provider's `chunk_kib` (`DIAGMON_BENCH_CHUNK_KIB` overrides);
//! - peak resident memory of the process while egressing, above what it used before;
//! - per-upload overhead: instantiate + `configure` + `begin` + `finish` of an empty artifact;
//! - start-up: `EgressHost::load` with the component already in the compile cache, and without.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use diagmon::egress::{Artifact, EgressConfig, EgressHost, ProviderConfig, ProviderLimits};

const CHUNK: usize = 64 << 10;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn artifact(pid: u64) -> Artifact {
    let started_at = SystemTime::now();
    Artifact {
        file_name: Artifact::trace_file_name(started_at, pid),
        content_type: "application/octet-stream".to_owned(),
        kind: "trace".to_owned(),
        pid,
        uid: uuid::Uuid::new_v4(),
        process_name: "bench".to_owned(),
        operation_id: uuid::Uuid::new_v4(),
        tags: Vec::new(),
        started_at,
    }
}

fn config(directory: &Path, cache: &Path) -> EgressConfig {
    let mut limits = ProviderLimits::default();
    if let Some(kib) = std::env::var("DIAGMON_BENCH_CHUNK_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
    {
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

/// The synthetic stream: one 64 KiB chunk of varied bytes, handed out `total / CHUNK` times.
fn chunk() -> Bytes {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    Bytes::from(
        (0..CHUNK)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect::<Vec<u8>>(),
    )
}

fn native(directory: &Path, chunk: &Bytes, chunks: usize) -> Duration {
    let path = directory.join("native.bin");
    let started = Instant::now();
    let mut file = std::fs::File::create(&path).unwrap();
    for _ in 0..chunks {
        file.write_all(chunk).unwrap();
    }
    drop(file);
    let elapsed = started.elapsed();
    std::fs::remove_file(&path).unwrap();
    elapsed
}

async fn component(host: &EgressHost, chunk: &Bytes, chunks: usize) -> Duration {
    let started = Instant::now();
    let mut upload = host.begin("artifacts", artifact(1)).await.unwrap();
    for _ in 0..chunks {
        upload.write(chunk.clone()).await.unwrap();
    }
    let location = upload.finish().await.unwrap();
    let elapsed = started.elapsed();
    std::fs::remove_file(location).unwrap();
    elapsed
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let mib: u64 = std::env::var("DIAGMON_BENCH_EGRESS_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let bytes = mib << 20;
    let chunks = (bytes as usize) / CHUNK;
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
    };
    let work = tempfile::tempdir_in(&base).unwrap();
    let out = work.path().join("out");
    let cache = work.path().join("cache");
    println!(
        "egress benchmark: {mib} MiB in {} KiB chunks into {}",
        CHUNK >> 10,
        out.display()
    );

    // Start-up: cold (compiles and fills the cache), then warm (loads the precompiled component).
    let started = Instant::now();
    EgressHost::load(&config(&out, &cache)).await.unwrap();
    let cold = started.elapsed();
    let mut warm = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        EgressHost::load(&config(&out, &cache)).await.unwrap();
        warm.push(started.elapsed());
    }
    let host = EgressHost::load(&config(&out, &cache)).await.unwrap();
    println!(
        "start-up (load + check + settings validation): cold {:.1} ms, precompiled {:.2} ms (median of 5)",
        cold.as_secs_f64() * 1e3,
        median(warm).as_secs_f64() * 1e3
    );

    // Per-upload overhead.
    let mut overhead = Vec::new();
    for i in 0..300 {
        let started = Instant::now();
        let upload = host.begin("artifacts", artifact(i)).await.unwrap();
        let location = upload.finish().await.unwrap();
        overhead.push(started.elapsed());
        std::fs::remove_file(location).unwrap();
    }
    overhead.sort();
    println!(
        "per upload (instantiate + configure + begin + finish, empty): p50 {:.3} ms, p99 {:.3} ms",
        overhead[overhead.len() / 2].as_secs_f64() * 1e3,
        overhead[overhead.len() * 99 / 100].as_secs_f64() * 1e3
    );

    // Throughput, alternating native and component runs after a native warm-up.
    let chunk = chunk();
    native(&out, &chunk, chunks);
    let baseline_rss = rss_kib();
    let peak = Arc::new(AtomicU64::new(baseline_rss));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let peak = peak.clone();
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut native_runs = Vec::new();
    let mut component_runs = Vec::new();
    for _ in 0..3 {
        native_runs.push(native(&out, &chunk, chunks));
        component_runs.push(component(&host, &chunk, chunks).await);
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let native_median = median(native_runs.clone());
    let component_median = median(component_runs.clone());
    let total = (chunks * CHUNK) as u64;
    println!(
        "native write_all:     {:7.0} MB/s (median of 3; runs {:?})",
        mb_per_s(total, native_median),
        native_runs
            .iter()
            .map(|d| format!("{:.0}", mb_per_s(total, *d)))
            .collect::<Vec<_>>()
    );
    println!(
        "filesystem component: {:7.0} MB/s (median of 3; runs {:?}) = {:.2}x native",
        mb_per_s(total, component_median),
        component_runs
            .iter()
            .map(|d| format!("{:.0}", mb_per_s(total, *d)))
            .collect::<Vec<_>>(),
        native_median.as_secs_f64() / component_median.as_secs_f64()
    );
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "resident memory: {:.1} MiB before the runs, peak {:.1} MiB during them (+{:.1} MiB)",
        baseline_rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak.saturating_sub(baseline_rss)) as f64 / 1024.0
    );
}

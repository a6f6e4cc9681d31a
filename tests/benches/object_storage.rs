//! Object-storage egress benchmark: prints figures, asserts nothing.
//!
//! Run with (after `bash tests/services/install.sh`):
//!
//!     cargo bench -p diagmon-tests --bench object_storage
//!
//! For moto (S3) and Azurite (Azure Blob), each started on loopback for the run, it uploads the
//! same synthetic bytes (1 GiB by default; `DIAGMON_BENCH_OBJECT_MIB` changes it) twice:
//! - **bare**: object_store alone, `put_multipart_opts` through `WriteMultipart`, 8 MiB parts, at
//!   most 4 in flight, the bytes written in 64 KiB chunks;
//! - **diagmon**: through the built-in `object-storage` provider and the host's object-store
//!   grant, driven by `EgressHost` in 64 KiB chunks as the capture pipeline does (8 MiB parts, 4
//!   in flight);
//!
//! and prints MiB/s, the ratio diagmon / bare, and the peak resident memory of this process above
//! its level before the diagmon upload (bounded by parts in flight × part size + a constant).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use diagmon::egress::{
    Artifact, EgressConfig, EgressHost, GrantValue, ObjectStoreGrant, ProviderConfig,
};
use diagmon_tests::storage::{AZURITE_ACCOUNT, AZURITE_KEY, Azurite, Moto};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

const CHUNK: usize = 64 << 10;
const PART: usize = 8 << 20;
const IN_FLIGHT: usize = 4;

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

/// Samples the RSS every 5 ms until stopped; returns the peak.
fn rss_sampler() -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let (stop2, peak2) = (stop.clone(), peak.clone());
    let handle = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            peak2.fetch_max(rss_kib(), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
        }
        peak2.load(Ordering::Relaxed)
    });
    (stop, handle)
}

/// One MiB of pseudo-random bytes, repeated.
fn block() -> Bytes {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    Bytes::from(bytes)
}

fn chunks(total: usize) -> impl Iterator<Item = Bytes> {
    let block = block();
    (0..total / CHUNK).map(move |i| {
        let at = (i * CHUNK) % block.len();
        block.slice(at..at + CHUNK)
    })
}

async fn bare(store: Arc<dyn ObjectStore>, total: usize) -> f64 {
    let path = StorePath::from("bench/bare.bin");
    let started = Instant::now();
    let upload = store.put_multipart(&path).await.expect("begin");
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
    for chunk in chunks(total) {
        writer.wait_for_capacity(IN_FLIGHT).await.expect("a part");
        writer.put(chunk);
    }
    writer.finish().await.expect("complete");
    let elapsed = started.elapsed().as_secs_f64();
    store.delete(&path).await.expect("delete");
    elapsed
}

fn artifact() -> Artifact {
    Artifact::trace(
        1,
        uuid::Uuid::new_v4(),
        "bench",
        uuid::Uuid::new_v4(),
        Vec::new(),
        SystemTime::now(),
    )
}

async fn through_diagmon(
    grant: ObjectStoreGrant,
    store: Arc<dyn ObjectStore>,
    total: usize,
) -> (f64, u64) {
    let cache = tempfile::tempdir().unwrap();
    let mut provider = ProviderConfig::new("object-storage");
    provider.object_store = Some(grant);
    provider.settings = BTreeMap::from([
        (
            "name_template".to_owned(),
            serde_json::json!("bench/diagmon.bin"),
        ),
        ("part_size_mib".to_owned(), serde_json::json!(PART >> 20)),
        ("parts_in_flight".to_owned(), serde_json::json!(IN_FLIGHT)),
    ]);
    let config = EgressConfig {
        providers: [("bench".to_owned(), provider)].into_iter().collect(),
        cache_directory: Some(cache.path().to_owned()),
    };
    let host = EgressHost::load(&config).await.expect("the provider loads");
    let before = rss_kib();
    let (stop, sampler) = rss_sampler();
    let started = Instant::now();
    let mut upload = host.begin("bench", artifact()).await.expect("begin");
    for chunk in chunks(total) {
        upload.write(chunk).await.expect("write");
    }
    upload.finish().await.expect("finish");
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    store
        .delete(&StorePath::from("bench/diagmon.bin"))
        .await
        .expect("delete");
    (elapsed, peak.saturating_sub(before))
}

fn text(value: &str) -> GrantValue {
    GrantValue::Text(value.to_owned())
}

async fn compare(name: &str, store: Arc<dyn ObjectStore>, grant: ObjectStoreGrant, total: usize) {
    let mib = (total >> 20) as f64;
    // Alternate, best of two each, so that neither side gets the warm server alone.
    let mut bare_best = f64::MAX;
    let mut diagmon_best = f64::MAX;
    let mut peak_kib = 0;
    for _ in 0..2 {
        bare_best = bare_best.min(bare(store.clone(), total).await);
        let (elapsed, peak) = through_diagmon(grant.clone(), store.clone(), total).await;
        diagmon_best = diagmon_best.min(elapsed);
        peak_kib = peak_kib.max(peak);
    }
    println!(
        "{name:8} bare object_store {:7.1} MiB/s | diagmon {:7.1} MiB/s | ratio {:.2} | diagmon peak RSS +{} MiB (parts in flight × part size = {} MiB)",
        mib / bare_best,
        mib / diagmon_best,
        bare_best / diagmon_best,
        peak_kib >> 10,
        (IN_FLIGHT * PART) >> 20
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let total: usize = std::env::var("DIAGMON_BENCH_OBJECT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
        << 20;
    println!(
        "object-storage egress: {} MiB in {} KiB chunks, {} MiB parts, {} in flight",
        total >> 20,
        CHUNK >> 10,
        PART >> 20,
        IN_FLIGHT
    );

    let moto = Moto::start();
    moto.create_bucket("bench");
    let s3: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(moto.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name("bench")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap(),
    );
    let grant = ObjectStoreGrant {
        url: "s3://bench".to_owned(),
        options: BTreeMap::from([
            ("endpoint".to_owned(), text(&moto.endpoint())),
            ("allow_http".to_owned(), text("true")),
            ("region".to_owned(), text("us-east-1")),
            ("access_key_id".to_owned(), text("testing")),
            ("secret_access_key".to_owned(), text("testing")),
        ]),
    };
    compare("moto", s3, grant, total).await;
    drop(moto);

    let azurite = Azurite::start();
    azurite.create_container("bench");
    let azure: Arc<dyn ObjectStore> = Arc::new(
        MicrosoftAzureBuilder::new()
            .with_account(AZURITE_ACCOUNT)
            .with_access_key(AZURITE_KEY)
            .with_endpoint(azurite.endpoint())
            .with_allow_http(true)
            .with_container_name("bench")
            .build()
            .unwrap(),
    );
    let grant = ObjectStoreGrant {
        url: "az://bench".to_owned(),
        options: BTreeMap::from([
            ("endpoint".to_owned(), text(&azurite.endpoint())),
            ("allow_http".to_owned(), text("true")),
            ("account_name".to_owned(), text(AZURITE_ACCOUNT)),
            ("access_key".to_owned(), text(AZURITE_KEY)),
        ]),
    };
    compare("azurite", azure, grant, total).await;
}

//! What each provider template costs: prints figures, asserts nothing.
//!
//!     cargo bench -p diagmon-tests --bench templates
//!
//! For the example of each language `diagmon plugin new` writes (Rust on the SDK: the gzip
//! example; Python; JavaScript; C), built as the tests build them (`diagmon_tests::guests`, so
//! the toolchains `tests/run` installs must be there), it measures:
//! - the component's size;
//! - **check**: [`diagmon::egress::check_component`], what `diagmon plugin check FILE` does (it
//!   compiles the component, without the cache);
//! - **cold start-up**: [`EgressHost::load`] with an empty compile cache (compiles, fills it);
//! - **cached start-up**: the same load with the compiled form in the cache (median of 5);
//! - **per upload**: begin, a 3 MiB artifact in 1 MiB writes, finish (median of
//!   `BENCH_ROUNDS`, 10 by default), which includes instantiating and configuring a fresh
//!   instance, as every artifact does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use diagmon::egress::{
    Artifact, CompileSource, EgressConfig, EgressHost, ObjectStoreGrant, ProviderConfig,
};
use diagmon_tests::bench::median;
use diagmon_tests::guests::{c_example, js_example, python_example, rust_example};

const MIB: usize = 1 << 20;

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The provider's configuration, granting what the example needs under `work`.
fn provider(language: &str, component: &Path, work: &Path) -> ProviderConfig {
    let mut provider = ProviderConfig::new(component.display().to_string());
    match language {
        "javascript" => {
            provider.object_store = Some(ObjectStoreGrant {
                url: format!("file://{}", work.display()),
                options: Default::default(),
            });
        }
        "python" => {
            provider.directory = Some(work.to_owned());
            provider.settings.insert(
                "directory".to_owned(),
                serde_json::json!(work.display().to_string()),
            );
        }
        _ => provider.directory = Some(work.to_owned()),
    }
    provider
}

fn config(provider: ProviderConfig, cache: &Path) -> EgressConfig {
    EgressConfig {
        providers: [("bench".to_owned(), provider)].into_iter().collect(),
        cache_directory: Some(cache.to_owned()),
    }
}

#[tokio::main]
async fn main() {
    let rounds = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10usize);
    let examples: [(&str, PathBuf); 4] = [
        ("rust (gzip, SDK)", rust_example("gzip_directory_provider")),
        ("python", python_example()),
        ("javascript", js_example()),
        ("c", c_example()),
    ];
    println!(
        "| template | size | plugin check | cold start-up | cached start-up | per 3 MiB upload |"
    );
    println!("|---|---|---|---|---|---|");
    let payload = Bytes::from(vec![0x5a_u8; MIB]);
    for (language, component) in examples {
        let work = tempfile::tempdir().expect("work directory");
        let store = work.path().join("store");
        std::fs::create_dir_all(&store).expect("store directory");
        let cache = work.path().join("cache");
        let size = std::fs::metadata(&component).expect("component").len();

        let started = Instant::now();
        let report = diagmon::egress::check_component(&component)
            .await
            .expect("check");
        let check = started.elapsed();
        assert!(report.is_ok(), "{report}");

        let kind = language.split(' ').next().unwrap_or(language);
        let config = config(provider(kind, &component, &store), &cache);
        let started = Instant::now();
        drop(EgressHost::load(&config).await.expect("cold load"));
        let cold = started.elapsed();
        let mut cached = Vec::new();
        let mut host = None;
        for _ in 0..5 {
            let started = Instant::now();
            let loaded = EgressHost::load(&config).await.expect("cached load");
            cached.push(ms(started.elapsed()));
            assert_eq!(loaded.compile_source("bench"), Some(CompileSource::Cache));
            host = Some(loaded);
        }
        let host = host.expect("loaded");

        let mut uploads = Vec::new();
        for round in 0..rounds {
            let artifact = Artifact::trace(
                round as u64 + 1,
                uuid::Uuid::new_v4(),
                "bench",
                uuid::Uuid::new_v4(),
                Vec::new(),
                SystemTime::now(),
            );
            let started = Instant::now();
            let mut upload = host.begin("bench", artifact).await.expect("begin");
            for _ in 0..3 {
                upload.write(payload.clone()).await.expect("write");
            }
            let location = upload.finish().await.expect("finish");
            uploads.push(ms(started.elapsed()));
            let path = location.strip_prefix("file://").unwrap_or(&location);
            // The Python example writes a sidecar too; the JS one may percent-encode.
            let _ = std::fs::remove_file(path);
        }
        println!(
            "| {language} | {:.0} KB | {:.0} ms | {:.0} ms | {:.1} ms | {:.1} ms |",
            size as f64 / 1000.0,
            ms(check),
            ms(cold),
            median(cached),
            median(uploads)
        );
    }
}

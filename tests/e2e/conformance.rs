//! The conformance suite (`diagmon plugin test`) against every built-in provider and every
//! example, and against a broken fixture to see that it fails what it should; `plugin test` and
//! `plugin check --config` through the real binary.
//!
//! The large artifact is 1 GiB from the command line; here it is smaller
//! ([`LARGE_BYTES`]) so that the suite stays cheap on a shared CI machine, except for the
//! built-in filesystem provider, which goes through the full 1 GiB once.

use std::path::{Path, PathBuf};
use std::process::Command;

use diagmon::egress::{
    ConformanceOptions, ConformanceReport, DEFAULT_LARGE_BYTES, ObjectStoreGrant, Outcome,
    ProviderConfig, run_conformance,
};
use diagmon_tests::guests::{c_example, fixture, js_example, python_example, rust_example};
use diagmon_tests::http_server::TestHttpServer;
use diagmon_tests::monitor::monitor_binary;

/// The large artifact of every provider but the built-in filesystem one.
const LARGE_BYTES: u64 = 48 << 20;

/// The compile cache shared with the egress tests of this run.
fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("egress-component-cache")
}

async fn conformance(provider: ProviderConfig, large_bytes: u64) -> ConformanceReport {
    let report = run_conformance(&ConformanceOptions {
        name: "under-test".to_owned(),
        provider,
        cache_directory: Some(shared_cache()),
        large_bytes,
    })
    .await;
    eprint!("{report}");
    report
}

/// Every case of the suite, in order.
const CASES: &[&str] = &[
    "component loads",
    "configure with the settings and grant",
    "unknown setting refused",
    "begin, write, finish",
    "abort after partial writes",
    "empty artifact",
    "an artifact of every kind",
    "names with spaces and unicode",
    "large artifact in 64 KiB chunks",
    "large artifact in 16 MiB chunks",
    "denied without its grant",
];

fn assert_passes(report: &ConformanceReport) {
    let names: Vec<&str> = report.cases.iter().map(|c| c.name).collect();
    assert_eq!(names, CASES);
    assert!(report.passed(), "{report}");
    assert!(report.to_string().ends_with("skipped)\n"), "{report}");
}

#[tokio::test]
async fn the_built_in_filesystem_provider_passes_with_a_1_gib_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let mut provider = ProviderConfig::new("filesystem");
    provider.directory = Some(dir.path().to_owned());
    let report = conformance(provider, DEFAULT_LARGE_BYTES).await;
    assert_passes(&report);
    assert_eq!(
        report.case("component loads").unwrap().outcome,
        Outcome::Skip
    );
    let large = report.case("large artifact in 16 MiB chunks").unwrap();
    assert!(large.detail.starts_with("1024 MiB at "), "{}", large.detail);
    let unknown = report.case("unknown setting refused").unwrap();
    assert!(
        unknown
            .detail
            .contains("diagmon_conformance_unknown_setting"),
        "the provider's own words: {}",
        unknown.detail
    );
    let denied = report.case("denied without its grant").unwrap();
    assert!(
        denied.detail.contains("no directory is granted"),
        "{}",
        denied.detail
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the suite removes what it stored"
    );
}

#[tokio::test]
async fn the_built_in_object_storage_provider_passes_on_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut provider = ProviderConfig::new("object-storage");
    provider.object_store = Some(ObjectStoreGrant {
        url: format!("file://{}", dir.path().display()),
        options: Default::default(),
    });
    assert_passes(&conformance(provider, LARGE_BYTES).await);
}

#[tokio::test]
async fn the_http_put_example_passes_against_a_granted_server() {
    let server = TestHttpServer::start().await;
    let mut provider = ProviderConfig::new(rust_example("http_put_provider").display().to_string());
    provider.allowed_outbound_hosts = vec![server.origin()];
    provider.settings.insert(
        "url".to_owned(),
        serde_json::json!(format!("{}/traces/{{file_name}}", server.origin())),
    );
    let report = conformance(provider, LARGE_BYTES).await;
    assert_passes(&report);
    // What the suite cannot see itself, the server saw: every finished upload complete, the
    // aborted one never completed.
    let requests = server.requests();
    let complete: Vec<_> = requests.iter().filter(|r| r.complete).collect();
    // begin/write/finish, empty, five kinds, unusual names, two large ones.
    assert_eq!(complete.len(), 10, "{} requests", requests.len());
    assert!(complete.iter().any(|r| r.body.len() as u64 == LARGE_BYTES));
    assert!(
        complete
            .iter()
            .any(|r| r.path.contains("trace%20of%20my%20app") || r.path.contains("trace of my app")),
        "{:?}",
        complete.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_python_example_passes() {
    let dir = tempfile::tempdir().unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    let mut provider = ProviderConfig::new(python_example().display().to_string());
    provider.directory = Some(canonical.clone());
    provider.settings.insert(
        "directory".to_owned(),
        serde_json::json!(canonical.display().to_string()),
    );
    assert_passes(&conformance(provider, LARGE_BYTES).await);
}

/// The JavaScript example on a `file://` object store: the suite checks the stored bytes itself.
fn js_provider(store: &Path) -> ProviderConfig {
    let mut provider = ProviderConfig::new(js_example().display().to_string());
    provider.object_store = Some(ObjectStoreGrant {
        url: format!("file://{}", store.display()),
        options: Default::default(),
    });
    provider
        .settings
        .insert("prefix".to_owned(), serde_json::json!("traces/"));
    provider
}

#[tokio::test]
async fn the_javascript_example_passes_on_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let report = conformance(js_provider(dir.path()), LARGE_BYTES).await;
    assert_passes(&report);
    let unknown = report.case("unknown setting refused").unwrap();
    assert!(
        unknown.detail.contains("this provider knows `prefix`"),
        "the provider's own words: {}",
        unknown.detail
    );
    let stored = report.case("begin, write, finish").unwrap();
    assert!(
        stored.detail.contains("/traces/"),
        "stored under the prefix: {}",
        stored.detail
    );
    // A prefix that would leave the grant stops start-up, in the provider's words.
    let mut escaping = js_provider(dir.path());
    escaping
        .settings
        .insert("prefix".to_owned(), serde_json::json!("../elsewhere"));
    let error = diagmon::egress::EgressHost::load(&diagmon::egress::EgressConfig {
        providers: [("js".to_owned(), escaping)].into_iter().collect(),
        cache_directory: Some(shared_cache()),
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("`prefix` must be a relative path") && error.contains("../elsewhere"),
        "{error}"
    );
}

/// Start-up with the JavaScript provider (12 MB, seconds to compile) once its compiled form is
/// in `egress.cache_directory`: the load takes it from the cache. Prints the time it took (the
/// goal is 100 ms; no timed assertion).
#[tokio::test]
async fn a_cached_javascript_provider_starts_from_the_compile_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = diagmon::egress::EgressConfig {
        providers: [("js".to_owned(), js_provider(dir.path()))]
            .into_iter()
            .collect(),
        cache_directory: Some(shared_cache()),
    };
    // The first load compiles it unless an earlier test of this run already did.
    let first = diagmon::egress::EgressHost::load(&config).await.unwrap();
    drop(first);
    let started = std::time::Instant::now();
    let host = diagmon::egress::EgressHost::load(&config).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        host.compile_source("js"),
        Some(diagmon::egress::CompileSource::Cache)
    );
    eprintln!(
        "start-up with the cached JavaScript provider ({} bytes): {:.1} ms (load, link, \
         instantiate, configure)",
        std::fs::metadata(js_example()).unwrap().len(),
        elapsed.as_secs_f64() * 1000.0
    );
    // It works from there: one artifact through it.
    let artifact = diagmon::egress::Artifact::trace(
        7,
        uuid::Uuid::new_v4(),
        "app",
        uuid::Uuid::new_v4(),
        Vec::new(),
        std::time::SystemTime::now(),
    );
    let name = artifact.file_name.clone();
    let mut upload = host.begin("js", artifact).await.unwrap();
    upload
        .write(bytes::Bytes::from_static(b"nettrace bytes"))
        .await
        .unwrap();
    let location = upload.finish().await.unwrap();
    assert!(location.ends_with(&format!("traces/{name}")), "{location}");
    assert_eq!(
        std::fs::read(dir.path().join("traces").join(&name)).unwrap(),
        b"nettrace bytes"
    );
}

#[tokio::test]
async fn the_c_example_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut provider = ProviderConfig::new(c_example().display().to_string());
    provider.directory = Some(dir.path().to_owned());
    let report = conformance(provider, LARGE_BYTES).await;
    assert_passes(&report);
    let unknown = report.case("unknown setting refused").unwrap();
    assert!(
        unknown.detail.contains("this provider knows `overwrite`"),
        "{}",
        unknown.detail
    );
    let denied = report.case("denied without its grant").unwrap();
    assert!(
        denied.detail.contains("no directory is granted"),
        "{}",
        denied.detail
    );
}

/// The oldest contract version diagmon still loads: the one whose folder `wit/README.md` marks
/// "the oldest supported", with a component built against it kept prebuilt in
/// `tests/fixtures/components/` (the C example as built from `wit/diagmon-egress@0.1.0`), so that
/// rebuilding every provider of the repository against a newer folder cannot hide a break.
#[tokio::test]
async fn a_component_built_against_the_oldest_supported_contract_still_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let policy = std::fs::read_to_string(root.join("wit/README.md")).unwrap();
    let oldest = policy
        .lines()
        .find(|line| line.contains("the oldest supported"))
        .and_then(|line| line.split("`diagmon:egress@").nth(1))
        .and_then(|rest| rest.split('`').next())
        .expect("wit/README.md names the oldest supported version");
    assert!(
        root.join(format!("wit/diagmon-egress@{oldest}")).is_dir(),
        "the oldest supported version {oldest} has its folder"
    );
    let component = root.join(format!(
        "tests/fixtures/components/c_directory@{oldest}.wasm"
    ));
    let report = diagmon::egress::check_component(&component).await.unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        report.provider_export.as_deref(),
        Some(format!("diagmon:egress/provider@{oldest}").as_str())
    );
    let dir = tempfile::tempdir().unwrap();
    let mut provider = ProviderConfig::new(component.display().to_string());
    provider.directory = Some(dir.path().to_owned());
    assert_passes(&conformance(provider, 4 << 20).await);
}

#[tokio::test]
async fn a_provider_that_traps_fails_the_suite_with_its_panic_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut provider = ProviderConfig::new(fixture("trap-in-write").display().to_string());
    provider.directory = Some(dir.path().to_owned());
    let report = conformance(provider, 1 << 20).await;
    assert!(!report.passed());
    let case = report.case("begin, write, finish").unwrap();
    assert_eq!(case.outcome, Outcome::Fail);
    assert!(
        case.detail.starts_with("stopped by the host: "),
        "{}",
        case.detail
    );
    assert!(report.to_string().contains("result: FAIL"), "{report}");
}

#[test]
fn plugin_test_on_the_command_line_prints_every_case_and_exits_0() {
    let output = Command::new(monitor_binary())
        .args(["plugin", "test", "filesystem", "--large-mib", "8"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for case in CASES {
        assert!(stdout.contains(case), "{case} missing from:\n{stdout}");
    }
    assert!(stdout.contains("result: PASS"), "{stdout}");
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains('\u{1b}'),
        "no colour codes into a pipe"
    );
}

#[test]
fn plugin_check_with_a_config_tries_the_real_settings_and_grant() {
    let dir = tempfile::tempdir().unwrap();
    let component = rust_example("http_put_provider");
    let config = dir.path().join("diagmon.toml");
    let write_config = |url: &str| {
        std::fs::write(
            &config,
            format!(
                "[egress.providers.upload]\ncomponent = \"ignored.wasm\"\n\
                 allowed_outbound_hosts = [\"http://127.0.0.1:9\"]\n\
                 [egress.providers.upload.settings]\nurl = \"{url}\"\n\
                 [egress.providers.other]\ncomponent = \"filesystem\"\ndirectory = \"{}\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
    };
    let check = || {
        Command::new(monitor_binary())
            .args(["plugin", "check"])
            .arg(&component)
            .arg("--config")
            .arg(&config)
            .args(["--provider", "UPLOAD"])
            .output()
            .unwrap()
    };

    write_config("http://127.0.0.1:9/{file_name}");
    let output = check();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("settings:  OK: `configure` accepted the settings and grants of [egress.providers.upload]"),
        "{stdout}"
    );

    write_config("ftp://127.0.0.1:9/x");
    let output = check();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("settings:  REFUSED: "), "{stdout}");

    // Two providers and none chosen: the error names them.
    let output = Command::new(monitor_binary())
        .args(["plugin", "check"])
        .arg(&component)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("choose one with --provider NAME") && stderr.contains("other, upload"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_gzip_example_built_on_the_guest_sdk_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut provider = ProviderConfig::new(
        rust_example("gzip_directory_provider")
            .display()
            .to_string(),
    );
    provider.directory = Some(dir.path().to_owned());
    provider
        .settings
        .insert("level".to_owned(), serde_json::json!(1));
    let report = conformance(provider, LARGE_BYTES).await;
    assert_passes(&report);
    // The SDK's settings errors name the key and what the provider knows.
    let unknown = report.case("unknown setting refused").unwrap();
    assert!(
        unknown
            .detail
            .contains("the gzip provider knows `level`, `overwrite`"),
        "{}",
        unknown.detail
    );
    // A real round trip: what it stores is a gzip of the bytes, under `{file_name}.gz`.
    let host = diagmon::egress::EgressHost::load(&diagmon::egress::EgressConfig {
        providers: [("gz".to_owned(), {
            let mut p = ProviderConfig::new(
                rust_example("gzip_directory_provider")
                    .display()
                    .to_string(),
            );
            p.directory = Some(dir.path().to_owned());
            p
        })]
        .into_iter()
        .collect(),
        cache_directory: Some(shared_cache()),
    })
    .await
    .unwrap();
    let artifact = diagmon::egress::Artifact::trace(
        1,
        uuid::Uuid::new_v4(),
        "app",
        uuid::Uuid::new_v4(),
        Vec::new(),
        std::time::SystemTime::now(),
    );
    let name = format!("{}.gz", artifact.file_name);
    let mut upload = host.begin("gz", artifact).await.unwrap();
    let text = "a line of a very compressible trace\n".repeat(50_000);
    upload
        .write(bytes::Bytes::from(text.clone().into_bytes()))
        .await
        .unwrap();
    let location = upload.finish().await.unwrap();
    assert_eq!(PathBuf::from(&location), dir.path().join(&name));
    let stored = std::fs::read(&location).unwrap();
    assert!(stored.len() < text.len() / 20, "{} bytes", stored.len());
    let gunzip = Command::new("gzip")
        .args(["-dc"])
        .arg(&location)
        .output()
        .unwrap();
    assert!(gunzip.status.success());
    assert!(gunzip.stdout == text.as_bytes());
}

#[test]
fn the_guest_sdk_carries_the_contract_unchanged() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    assert!(
        std::fs::read(root.join("wit/diagmon-egress@0.1.0/egress.wit")).unwrap()
            == std::fs::read(root.join("plugins/sdk/wit/egress.wit")).unwrap(),
        "plugins/sdk/wit/egress.wit differs from wit/diagmon-egress@0.1.0/egress.wit; copy it over"
    );
}

/// `plugin new --lang rust` writes a project that builds on its own (offline, from the crates
/// cargo already has) and passes the conformance suite; `--lang python` writes the Python
/// example, which passes it above.
/// `diagmon plugin test COMPONENT --large-mib 16` passes every case.
fn passes_the_suite_on_the_command_line(component: &Path) {
    let test = Command::new(monitor_binary())
        .args(["plugin", "test"])
        .arg(component)
        .args(["--large-mib", "16"])
        .output()
        .expect("run diagmon plugin test");
    let stdout = String::from_utf8_lossy(&test.stdout);
    assert!(test.status.success(), "{stdout}");
    assert!(
        stdout.contains("result: PASS (11 cases, 0 skipped)"),
        "{stdout}"
    );
}

#[test]
fn a_new_rust_project_builds_and_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("fresh-provider");
    let new = Command::new(monitor_binary())
        .args(["plugin", "new", "--lang", "rust"])
        .arg(&project)
        .output()
        .unwrap();
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    // One target directory for every run, so that later runs build incrementally.
    let target = diagmon_tests::guests::target_dir().join("wasm-templates");
    let started = std::time::Instant::now();
    let build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&project)
        .args([
            "build",
            "--offline",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let component = target.join("wasm32-wasip2/release/fresh_provider.wasm");
    eprintln!(
        "built the Rust template in {:.1} s: {} bytes",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&component).unwrap().len()
    );
    passes_the_suite_on_the_command_line(&component);

    let python = dir.path().join("py-provider");
    let new = Command::new(monitor_binary())
        .args(["plugin", "new", "--lang", "python"])
        .arg(&python)
        .output()
        .unwrap();
    assert!(new.status.success());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-sidecar");
    for file in ["app.py", "provider.py"] {
        assert!(
            std::fs::read(python.join(file)).unwrap() == std::fs::read(root.join(file)).unwrap()
        );
    }
    assert!(python.join("build.sh").is_file() && python.join("wit/egress.wit").is_file());
}

/// `plugin new --lang c` writes a project that builds with its own `build.sh` (the tools
/// `tests/run` installs) and passes the suite; `--lang js` writes the JavaScript example, built
/// and run through the suite above, with the contract next to it and its pinned toolchain.
#[test]
fn new_c_and_javascript_projects_build_and_pass_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let new = |language: &str, name: &str| {
        let project = dir.path().join(name);
        let output = Command::new(monitor_binary())
            .args(["plugin", "new", "--lang", language])
            .arg(&project)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        project
    };

    let c = new("c", "c-provider");
    assert!(
        std::fs::read(c.join("provider.c")).unwrap()
            == std::fs::read(examples.join("c-directory/provider.c")).unwrap()
    );
    let tools = diagmon_tests::guests::target_dir().join("c-tools/bin");
    let started = std::time::Instant::now();
    let build = Command::new("sh")
        .arg(c.join("build.sh"))
        .env("WIT_BINDGEN", tools.join("wit-bindgen"))
        .env("WASM_TOOLS", tools.join("wasm-tools"))
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let component = c.join("c_provider.wasm");
    eprintln!(
        "built the C template in {:.1} s: {} bytes",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&component).unwrap().len()
    );
    passes_the_suite_on_the_command_line(&component);

    let js = new("js", "js-provider");
    assert!(
        std::fs::read(js.join("provider.js")).unwrap()
            == std::fs::read(examples.join("js-object-store/provider.js")).unwrap()
    );
    let package = std::fs::read_to_string(js.join("package.json")).unwrap();
    assert!(package.contains("\"name\": \"js-provider\""), "{package}");
    let lock = std::fs::read_to_string(js.join("package-lock.json")).unwrap();
    assert!(
        lock.contains("\"@bytecodealliance/componentize-js\": \"0.23.0\""),
        "the toolchain is pinned"
    );
    let build = std::fs::read_to_string(js.join("build.sh")).unwrap();
    assert!(
        build.contains("--wit \"$WIT\"") && build.contains("WIT=${WIT:-wit}"),
        "{build}"
    );
    assert!(js.join("wit/egress.wit").is_file());
}

//! The egress host, driven directly: the built-in filesystem provider, misbehaving providers
//! (built from `tests/plugins/`: traps, loops, allocations, escapes, waits inside host calls,
//! pinned host memory), load errors, limits, the compile cache and `plugin check`.
//!
//! The fixtures are built once per run, before the first test that needs them, with
//! `cargo build --release --target wasm32-wasip2` into `<target>/wasm-fixtures`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use diagmon::egress::{
    Artifact, ArtifactKind, EgressConfig, EgressError, EgressHost, ProviderConfig,
    ProviderErrorKind, check_component,
};
use diagmon_tests::guests::{fixture, python_example, rust_example};
use diagmon_tests::http_server::TestHttpServer;

/// A compile cache shared by the tests of this run (compiling in a debug build is slow).
fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("egress-component-cache")
}

fn config(providers: Vec<(&str, ProviderConfig)>) -> EgressConfig {
    EgressConfig {
        providers: providers
            .into_iter()
            .map(|(name, p)| (name.to_owned(), p))
            .collect(),
        cache_directory: Some(shared_cache()),
    }
}

fn artifact() -> Artifact {
    Artifact::trace(
        4242,
        uuid::Uuid::new_v4(),
        "fixture",
        uuid::Uuid::new_v4(),
        vec!["test".to_owned()],
        SystemTime::now(),
    )
}

/// Deterministic bytes that are not all alike.
fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn listing(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A filesystem provider granted `directory`.
fn filesystem(directory: &Path) -> ProviderConfig {
    let mut p = ProviderConfig::new("filesystem");
    p.directory = Some(directory.to_owned());
    p
}

async fn load_error(providers: Vec<(&str, ProviderConfig)>) -> EgressError {
    match EgressHost::load(&config(providers)).await {
        Ok(_) => panic!("the configuration loaded"),
        Err(error) => {
            eprintln!("{error}");
            error
        }
    }
}

/// Writes `data` in 64 KiB chunks, as the capture pipeline does, and finishes.
async fn upload_through(
    host: &EgressHost,
    provider: &str,
    data: &[u8],
) -> Result<String, EgressError> {
    let mut upload = host.begin(provider, artifact()).await?;
    for chunk in data.chunks(64 << 10) {
        upload.write(Bytes::copy_from_slice(chunk)).await?;
    }
    upload.finish().await
}

#[tokio::test]
async fn filesystem_provider_stores_the_bytes_under_the_final_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("traces");
    let host = EgressHost::load(&config(vec![("Artifacts", filesystem(&out))]))
        .await
        .unwrap();
    assert!(host.has_provider("artifacts"));
    assert!(host.has_provider("ARTIFACTS"));
    assert_eq!(host.provider_names(), vec!["Artifacts".to_owned()]);

    let data = payload(5 * 1024 * 1024 + 12345);
    let artifact = artifact();
    let expected_name = artifact.file_name.clone();
    let mut upload = host.begin("artifacts", artifact).await.unwrap();
    for chunk in data.chunks(64 << 10) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    // While the upload runs, only a hidden temporary file exists.
    let during = listing(&out);
    assert_eq!(during.len(), 1, "{during:?}");
    assert!(
        during[0].starts_with('.') && during[0].ends_with(".partial"),
        "{during:?}"
    );
    let location = upload.finish().await.unwrap();

    let canonical = out.canonicalize().unwrap();
    assert_eq!(PathBuf::from(&location), canonical.join(&expected_name));
    assert_eq!(std::fs::read(&location).unwrap(), data);
    assert_eq!(
        listing(&out),
        vec![expected_name],
        "no temporary file is left"
    );
}

#[tokio::test]
async fn an_aborted_upload_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let host = EgressHost::load(&config(vec![("artifacts", filesystem(dir.path()))]))
        .await
        .unwrap();
    let mut upload = host.begin("artifacts", artifact()).await.unwrap();
    for chunk in payload(3 << 20).chunks(64 << 10) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    upload.abort().await;
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));

    // Dropping an upload aborts it too (without waiting).
    let mut upload = host.begin("artifacts", artifact()).await.unwrap();
    upload.write(Bytes::from(payload(2 << 20))).await.unwrap();
    drop(upload);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listing(dir.path()).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}

#[tokio::test]
async fn an_empty_artifact_and_a_name_template_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = filesystem(dir.path());
    p.settings.insert(
        "name_template".to_owned(),
        serde_json::json!("{process_name}-{pid}-{operation_id}.nettrace"),
    );
    let host = EgressHost::load(&config(vec![("artifacts", p)]))
        .await
        .unwrap();
    let artifact = artifact();
    let expected = format!("fixture-4242-{}.nettrace", artifact.operation_id);
    let upload = host.begin("artifacts", artifact).await.unwrap();
    let location = upload.finish().await.unwrap();
    assert!(location.ends_with(&expected), "{location}");
    assert_eq!(std::fs::metadata(&location).unwrap().len(), 0);
}

#[tokio::test]
async fn an_existing_file_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = filesystem(dir.path());
    p.settings.insert(
        "name_template".to_owned(),
        serde_json::json!("fixed.nettrace"),
    );
    let host = EgressHost::load(&config(vec![("artifacts", p)]))
        .await
        .unwrap();
    std::fs::write(dir.path().join("fixed.nettrace"), b"keep me").unwrap();
    let error = host.begin("artifacts", artifact()).await.unwrap_err();
    assert!(
        matches!(
            error,
            EgressError::Provider {
                kind: ProviderErrorKind::Denied,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("already exists"), "{error}");
    assert_eq!(
        std::fs::read(dir.path().join("fixed.nettrace")).unwrap(),
        b"keep me"
    );
}

#[tokio::test]
async fn an_unknown_provider_is_reported_as_such() {
    let host = EgressHost::load(&config(vec![])).await.unwrap();
    let error = host.begin("nowhere", artifact()).await.unwrap_err();
    assert_eq!(error.kind(), "UnknownEgressProvider");
    assert!(error.to_string().contains("`nowhere`"), "{error}");
}

/// A host with `name` (a fixture, limits as given) and a working filesystem provider beside it.
async fn host_with(name: &str, mut fixture_config: ProviderConfig, out: &Path) -> EgressHost {
    fixture_config.component = fixture(name).display().to_string();
    EgressHost::load(&config(vec![
        (name, fixture_config),
        ("artifacts", filesystem(out)),
    ]))
    .await
    .unwrap()
}

/// The host still serves a normal upload after a provider misbehaved.
async fn assert_still_serving(host: &EgressHost, out: &Path) {
    let data = payload(1 << 20);
    let location = upload_through(host, "artifacts", &data).await.unwrap();
    assert_eq!(std::fs::read(&location).unwrap(), data);
    assert!(location.starts_with(out.canonicalize().unwrap().to_str().unwrap()));
}

#[tokio::test]
async fn a_provider_that_traps_in_write_fails_its_upload_with_the_panic_message() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with("trap-in-write", ProviderConfig::new(""), dir.path()).await;
    let started = Instant::now();
    let error = upload_through(&host, "trap-in-write", &payload(256 << 10))
        .await
        .unwrap_err();
    eprintln!("{error}");
    assert!(
        matches!(error, EgressError::Trap { call: "write", .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), "EgressProviderCrashed");
    let message = error.to_string();
    assert!(
        message.contains("`trap-in-write` crashed in write"),
        "{message}"
    );
    // `upload_through` writes 64 KiB pieces, large enough to reach the provider as they are.
    assert!(
        message.contains("fixture panics on a chunk of 65536 bytes"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_still_serving(&host, dir.path()).await;
}

#[tokio::test]
async fn a_provider_that_loops_forever_is_stopped_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = ProviderConfig::new("");
    p.limits.write_timeout_ms = 500;
    let host = host_with("infinite-loop", p, dir.path()).await;
    let started = Instant::now();
    let error = upload_through(&host, "infinite-loop", &payload(64 << 10))
        .await
        .unwrap_err();
    eprintln!("{error}");
    let elapsed = started.elapsed();
    assert!(
        matches!(error, EgressError::DeadlineExceeded { call: "write", .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), "EgressDeadlineExceeded");
    assert!(
        error
            .to_string()
            .contains("exceeded its 500ms deadline in write"),
        "{error}"
    );
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(3),
        "stopped after {elapsed:?}"
    );
    assert_still_serving(&host, dir.path()).await;
}

#[tokio::test]
async fn a_provider_that_allocates_without_bound_hits_its_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = ProviderConfig::new("");
    p.limits.memory_mib = 32;
    let host = host_with("unbounded-alloc", p, dir.path()).await;
    let started = Instant::now();
    let error = upload_through(&host, "unbounded-alloc", &payload(64 << 10))
        .await
        .unwrap_err();
    eprintln!("{error}");
    assert!(
        matches!(error, EgressError::MemoryLimit { call: "write", .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), "EgressMemoryLimitExceeded");
    assert!(
        error
            .to_string()
            .contains("exceeded its memory limit of 32 MiB"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_still_serving(&host, dir.path()).await;
}

#[tokio::test]
async fn a_provider_cannot_reach_paths_outside_its_grant() {
    let dir = tempfile::tempdir().unwrap();
    let grant = dir.path().join("grant");
    let out = dir.path().join("out");
    let mut p = ProviderConfig::new("");
    p.directory = Some(grant.clone());
    let host = host_with("path-escape", p, &out).await;
    let artifact = artifact();
    let id = artifact.operation_id;
    let error = host.begin("path-escape", artifact).await.unwrap_err();
    eprintln!("{error}");
    let message = error.to_string();
    assert!(
        matches!(
            error,
            EgressError::Provider {
                kind: ProviderErrorKind::Denied,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        message.contains("every path outside the grant was refused"),
        "{message}"
    );
    assert!(message.contains("/etc/passwd"), "{message}");
    assert!(message.contains("-> ../../etc: "), "{message}");
    assert!(!message.contains("ESCAPED"), "{message}");
    // Nothing was written outside the grant, nor inside it.
    assert!(!dir.path().join(format!("escaped-{id}.txt")).exists());
    assert!(!Path::new(&format!("/tmp/escaped-{id}.txt")).exists());
    assert_eq!(
        listing(dir.path()),
        vec!["grant".to_owned(), "out".to_owned()]
    );
    assert!(listing(&grant).is_empty());
    assert_still_serving(&host, &out).await;
}

#[tokio::test]
async fn a_provider_cannot_open_a_tcp_connection_without_a_grant() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut p = ProviderConfig::new("");
    p.settings
        .insert("address".to_owned(), serde_json::json!(address.to_string()));
    let host = host_with("tcp-connect", p, dir.path()).await;
    let error = host.begin("tcp-connect", artifact()).await.unwrap_err();
    eprintln!("{error}");
    let message = error.to_string();
    assert!(
        matches!(
            error,
            EgressError::Provider {
                kind: ProviderErrorKind::Denied,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(message.contains("TCP connection refused"), "{message}");
    assert!(!message.contains("CONNECTED"), "{message}");
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the listener got a connection"
    );
    assert_still_serving(&host, dir.path()).await;
}

#[tokio::test]
async fn a_missing_component_fails_the_load_naming_the_provider() {
    let error = load_error(vec![(
        "ghost",
        ProviderConfig::new("/nonexistent/ghost.wasm"),
    )])
    .await;
    assert_eq!(error.kind(), "EgressProviderLoadFailed");
    let message = error.to_string();
    assert!(
        message.contains("egress provider `ghost` cannot be loaded"),
        "{message}"
    );
    assert!(message.contains("/nonexistent/ghost.wasm"), "{message}");
    assert!(message.contains("No such file"), "{message}");
}

#[tokio::test]
async fn a_file_that_is_not_a_component_fails_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "not wasm at all").unwrap();
    let error = load_error(vec![(
        "text",
        ProviderConfig::new(text.display().to_string()),
    )])
    .await;
    assert!(
        error.to_string().contains("`text` cannot be loaded"),
        "{error}"
    );
    assert!(
        error.to_string().contains("is not a WebAssembly component"),
        "{error}"
    );

    // The smallest core module: a module, not a component.
    let module = dir.path().join("module.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let error = load_error(vec![(
        "module",
        ProviderConfig::new(module.display().to_string()),
    )])
    .await;
    assert!(
        error.to_string().contains("`module` cannot be loaded"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("core WebAssembly module, not a component"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unknown_built_in_fails_the_load() {
    let error = load_error(vec![("s3", ProviderConfig::new("object-store"))]).await;
    let message = error.to_string();
    assert!(message.contains("`s3` cannot be loaded"), "{message}");
    assert!(
        message.contains("`object-store` is not a built-in component (filesystem, object-storage)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_component_of_another_world_version_fails_the_load() {
    let error = load_error(vec![(
        "future",
        ProviderConfig::new(fixture("wrong-version").display().to_string()),
    )])
    .await;
    let message = error.to_string();
    assert!(message.contains("`future` cannot be loaded"), "{message}");
    assert!(
        message
            .contains("targets diagmon:egress@0.2.0, but this diagmon speaks diagmon:egress@0.1.0"),
        "{message}"
    );
}

#[tokio::test]
async fn a_component_whose_import_is_not_granted_fails_the_load() {
    let error = load_error(vec![(
        "webhook",
        ProviderConfig::new(fixture("needs-http").display().to_string()),
    )])
    .await;
    let message = error.to_string();
    assert!(message.contains("`webhook` cannot be loaded"), "{message}");
    assert!(message.contains("imports `wasi:http/"), "{message}");
    assert!(message.contains("allowed_outbound_hosts"), "{message}");
}

#[tokio::test]
async fn settings_the_provider_refuses_fail_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = filesystem(dir.path());
    p.settings
        .insert("colour".to_owned(), serde_json::json!("blue"));
    let error = load_error(vec![("artifacts", p)]).await;
    let message = error.to_string();
    assert!(
        message.contains("`artifacts` cannot be loaded"),
        "{message}"
    );
    assert!(
        message.contains("its settings were refused: unknown setting `colour`"),
        "{message}"
    );

    let mut p = filesystem(dir.path());
    p.settings.insert(
        "name_template".to_owned(),
        serde_json::json!("{nope}.nettrace"),
    );
    let error = load_error(vec![("artifacts", p)]).await;
    assert!(
        error.to_string().contains("unknown placeholder `{nope}`"),
        "{error}"
    );

    let error = load_error(vec![("artifacts", ProviderConfig::new("filesystem"))]).await;
    assert!(
        error.to_string().contains("no directory is granted"),
        "{error}"
    );
}

#[tokio::test]
async fn compiled_components_are_cached_and_a_bad_entry_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = dir.path().join("out");
    let mut egress = config(vec![("artifacts", filesystem(&out))]);
    egress.cache_directory = Some(cache.clone());
    EgressHost::load(&egress).await.unwrap();
    let entries = listing(&cache);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].ends_with(".cwasm"), "{entries:?}");

    // A cached load is fast, even in a debug build.
    let started = Instant::now();
    EgressHost::load(&egress).await.unwrap();
    let cached = started.elapsed();

    // A corrupt entry is a miss, and is rewritten.
    std::fs::write(cache.join(&entries[0]), b"garbage").unwrap();
    let host = EgressHost::load(&egress).await.unwrap();
    assert!(std::fs::metadata(cache.join(&entries[0])).unwrap().len() > 1000);
    assert_still_serving(&host, &out).await;
    eprintln!("load from the cache: {cached:?}");
}

#[tokio::test]
async fn plugin_check_reports_exports_and_needs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("filesystem.wasm");
    std::fs::write(
        &path,
        diagmon::egress::builtin::component("filesystem").unwrap(),
    )
    .unwrap();
    let report = check_component(&path).await.unwrap();
    eprintln!("{report}");
    assert!(report.is_ok(), "{report}");
    let text = report.to_string();
    assert!(
        text.contains("provider:  diagmon:egress/provider@0.1.0"),
        "{text}"
    );
    assert!(text.contains("diagmon:egress/log@0.1.0"), "{text}");
    assert!(
        text.contains("sees only the directory granted by `directory`"),
        "{text}"
    );
    assert!(text.contains("result:    OK"), "{text}");

    let report = check_component(fixture("wrong-version")).await.unwrap();
    assert!(!report.is_ok());
    assert!(
        report.to_string().contains("targets diagmon:egress@0.2.0"),
        "{report}"
    );

    let report = check_component(fixture("needs-http")).await.unwrap();
    assert!(
        report
            .to_string()
            .contains("needs `allowed_outbound_hosts`"),
        "{report}"
    );

    let error = check_component(dir.path().join("missing.wasm"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("missing.wasm"), "{error}");
}

#[tokio::test]
async fn uploads_run_concurrently_each_in_its_own_instance() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = filesystem(dir.path());
    p.settings.insert(
        "name_template".to_owned(),
        serde_json::json!("{operation_id}.nettrace"),
    );
    let host = EgressHost::load(&config(vec![("artifacts", p)]))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let data = payload((i + 1) * 300_000);
            let location = upload_through(&host, "artifacts", &data).await.unwrap();
            assert_eq!(std::fs::read(&location).unwrap(), data);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(listing(dir.path()).len(), 6);
}

/// The HTTP PUT example, granted the test server's origin.
fn http_put(server: &TestHttpServer, url_path: &str) -> ProviderConfig {
    let mut p = ProviderConfig::new(rust_example("http_put_provider").display().to_string());
    p.allowed_outbound_hosts = vec![server.origin()];
    p.settings.insert(
        "url".to_owned(),
        serde_json::json!(format!("{}{url_path}", server.origin())),
    );
    p
}

#[tokio::test]
async fn the_http_put_example_streams_the_artifact_to_a_granted_server() {
    let server = TestHttpServer::start().await;
    let mut p = http_put(&server, "/traces/{file_name}?signature=secret");
    p.settings.insert(
        "headers".to_owned(),
        serde_json::json!({ "x-api-key": "k1" }),
    );
    let host = EgressHost::load(&config(vec![("upload", p)]))
        .await
        .unwrap();
    let data = payload(3 * 1024 * 1024 + 7);
    let artifact = artifact();
    let name = artifact.file_name.clone();
    let mut upload = host.begin("upload", artifact).await.unwrap();
    for chunk in data.chunks(64 << 10) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let location = upload.finish().await.unwrap();
    assert_eq!(
        location,
        format!("{}/traces/{name}", server.origin()),
        "no query string"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "PUT");
    assert_eq!(request.path, format!("/traces/{name}?signature=secret"));
    assert!(request.complete);
    assert!(
        request.body == data,
        "the server got {} bytes",
        request.body.len()
    );
    assert!(
        request
            .headers
            .contains(&("x-api-key".to_owned(), "k1".to_owned()))
    );
    assert!(request.headers.contains(&(
        "content-type".to_owned(),
        "application/octet-stream".to_owned()
    )));
}

#[tokio::test]
async fn the_http_put_example_reports_the_servers_refusal() {
    let server = TestHttpServer::start().await;
    let host = EgressHost::load(&config(vec![(
        "upload",
        http_put(&server, "/forbidden/{file_name}"),
    )]))
    .await
    .unwrap();
    let error = upload_through(&host, "upload", &payload(100_000))
        .await
        .unwrap_err();
    eprintln!("{error}");
    assert!(
        matches!(
            error,
            EgressError::Provider {
                kind: ProviderErrorKind::Denied,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("the server answered 403"),
        "{error}"
    );
}

#[tokio::test]
async fn an_aborted_http_upload_never_completes_its_request() {
    let server = TestHttpServer::start().await;
    let host = EgressHost::load(&config(vec![(
        "upload",
        http_put(&server, "/traces/{file_name}"),
    )]))
    .await
    .unwrap();
    let mut upload = host.begin("upload", artifact()).await.unwrap();
    upload.write(Bytes::from(payload(2 << 20))).await.unwrap();
    upload.abort().await;
    let requests = server.wait_for_requests(1).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(!requests[0].complete, "the server saw a complete body");
}

#[tokio::test]
async fn a_request_to_an_origin_not_granted_is_refused_by_the_host() {
    let server = TestHttpServer::start().await;
    let mut p = http_put(&server, "/traces/{file_name}");
    // Granted: another port on the same host.
    p.allowed_outbound_hosts = vec![format!("http://127.0.0.1:{}", server.address().port() ^ 1)];
    let host = EgressHost::load(&config(vec![("upload", p)]))
        .await
        .unwrap();
    let error = upload_through(&host, "upload", &payload(100_000))
        .await
        .unwrap_err();
    eprintln!("{error}");
    assert!(
        matches!(
            error,
            EgressError::Provider {
                kind: ProviderErrorKind::Denied,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("allowed_outbound_hosts"),
        "{error}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(server.requests().is_empty(), "the server was reached");
}

#[tokio::test]
async fn a_bad_allow_list_entry_fails_the_load() {
    let server = TestHttpServer::start().await;
    let mut p = http_put(&server, "/");
    p.allowed_outbound_hosts = vec!["hooks.example.com".to_owned()];
    let error = load_error(vec![("upload", p)]).await;
    assert!(
        error.to_string().contains("`upload` cannot be loaded"),
        "{error}"
    );
    assert!(error.to_string().contains("`hooks.example.com`"), "{error}");
}

#[tokio::test]
async fn the_python_example_stores_the_artifact_and_its_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    let mut p = ProviderConfig::new(python_example().display().to_string());
    p.directory = Some(canonical.clone());
    p.settings.insert(
        "directory".to_owned(),
        serde_json::json!(canonical.display().to_string()),
    );
    let host = EgressHost::load(&config(vec![("sidecar", p)]))
        .await
        .unwrap();

    let data = payload(2 * 1024 * 1024 + 3);
    let artifact = artifact();
    let name = artifact.file_name.clone();
    let operation_id = artifact.operation_id;
    let mut upload = host.begin("sidecar", artifact).await.unwrap();
    for chunk in data.chunks(64 << 10) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let location = upload.finish().await.unwrap();
    assert_eq!(PathBuf::from(&location), canonical.join(&name));
    assert_eq!(std::fs::read(&location).unwrap(), data);
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{location}.json")).unwrap()).unwrap();
    assert_eq!(sidecar["size"], serde_json::json!(data.len()));
    assert_eq!(
        sidecar["operation_id"],
        serde_json::json!(operation_id.to_string())
    );
    assert_eq!(
        listing(&canonical),
        vec![name.clone(), format!("{name}.json")]
    );

    // An abort leaves nothing behind.
    let mut upload = host.begin("sidecar", self::artifact()).await.unwrap();
    upload.write(Bytes::from(payload(1 << 20))).await.unwrap();
    upload.abort().await;
    assert_eq!(
        listing(&canonical),
        vec![name.clone(), format!("{name}.json")]
    );
}

/// Waits up to `within` for the provider's thread count to reach zero; returns how long it took.
async fn threads_released(host: &EgressHost, provider: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let usage = host.usage(provider).expect("a loaded provider");
        if usage.threads == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{provider} still has {} thread(s) after {within:?}",
            usage.threads
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_provider_sleeping_an_hour_in_a_host_call_fails_at_its_deadline_and_frees_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = ProviderConfig::new("");
    p.limits.write_timeout_ms = 500;
    let host = host_with("sleep-in-write", p, dir.path()).await;
    let started = Instant::now();
    let error = upload_through(&host, "sleep-in-write", &payload(1000))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("{error} after {elapsed:?}");
    assert!(
        matches!(error, EgressError::DeadlineExceeded { call: "write", .. }),
        "{error:?}"
    );
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(3),
        "stopped after {elapsed:?}"
    );
    // The thread ends with the call, not an hour later.
    let released = threads_released(&host, "sleep-in-write", Duration::from_secs(2)).await;
    eprintln!("thread released {released:?} after the error");
    assert_still_serving(&host, dir.path()).await;
}

#[tokio::test]
async fn stuck_providers_are_bounded_in_threads_and_do_not_stall_a_well_behaved_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = ProviderConfig::new("");
    p.limits.write_timeout_ms = 1500;
    p.limits.call_timeout_ms = 1000;
    p.limits.max_instances = 2;
    let host = host_with("sleep-in-write", p, dir.path()).await;
    let mut stuck = Vec::new();
    for _ in 0..8 {
        let host = host.clone();
        stuck.push(tokio::spawn(async move {
            upload_through(&host, "sleep-in-write", &payload(1000))
                .await
                .unwrap_err()
        }));
    }
    // While they wait, a well-behaved provider works at full speed.
    let mut most_threads = 0;
    for _ in 0..3 {
        most_threads = most_threads.max(host.usage("sleep-in-write").unwrap().threads);
        let started = Instant::now();
        assert_still_serving(&host, dir.path()).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    let mut busy = 0;
    for task in stuck {
        let error = task.await.unwrap();
        match error {
            EgressError::DeadlineExceeded { call: "write", .. } => {}
            EgressError::Busy {
                max_instances: 2, ..
            } => busy += 1,
            other => panic!("{other:?}"),
        }
        most_threads = most_threads.max(host.usage("sleep-in-write").unwrap().threads);
    }
    assert!(most_threads <= 2, "{most_threads} threads");
    // 8 uploads, 2 at a time, 1.5 s each, 1 s of waiting for an instance: most find none.
    assert!(busy >= 4, "{busy} uploads found no instance");
    threads_released(&host, "sleep-in-write", Duration::from_secs(2)).await;
}

/// A local HTTP server that answers every GET with a body it sends forever, one byte every
/// 20 ms (`/trickle`), or with headers and then nothing (`/stall`).
async fn slow_http_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let headers = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
                if stream.write_all(headers.as_bytes()).await.is_err() {
                    return;
                }
                if head.starts_with("GET /stall") {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                while stream.write_all(b"1\r\nx\r\n").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    });
    (address, task)
}

fn http_reader(address: std::net::SocketAddr, path: &str) -> ProviderConfig {
    let mut p = ProviderConfig::new(fixture("http-read").display().to_string());
    p.allowed_outbound_hosts = vec![format!("http://{address}")];
    p.settings.insert(
        "url".to_owned(),
        serde_json::json!(format!("http://{address}{path}")),
    );
    p
}

#[tokio::test]
async fn a_trickling_or_stalled_http_peer_is_cut_at_the_deadline_and_frees_the_thread() {
    let (address, _server) = slow_http_server().await;
    let dir = tempfile::tempdir().unwrap();
    for path in ["/trickle", "/stall"] {
        let mut p = http_reader(address, path);
        p.limits.write_timeout_ms = 800;
        let host = EgressHost::load(&config(vec![
            ("reader", p),
            ("artifacts", filesystem(dir.path())),
        ]))
        .await
        .unwrap();
        let started = Instant::now();
        let error = upload_through(&host, "reader", &payload(10))
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        eprintln!("{path}: {error} after {elapsed:?}");
        assert!(
            matches!(error, EgressError::DeadlineExceeded { call: "write", .. }),
            "{path}: {error:?}"
        );
        assert!(
            elapsed < Duration::from_secs(3),
            "{path}: cut after {elapsed:?}"
        );
        // A stalled read blocked the thread inside a host call: it ends with the call.
        threads_released(&host, "reader", Duration::from_secs(2)).await;
        assert_still_serving(&host, dir.path()).await;
    }
}

#[tokio::test]
async fn an_http_peer_that_stops_sending_is_cut_by_the_between_bytes_timeout() {
    let (address, _server) = slow_http_server().await;
    let mut p = http_reader(address, "/stall");
    p.settings
        .insert("between_bytes_ms".to_owned(), serde_json::json!("300"));
    p.limits.write_timeout_ms = 5000;
    let host = EgressHost::load(&config(vec![("reader", p)]))
        .await
        .unwrap();
    let started = Instant::now();
    let error = upload_through(&host, "reader", &payload(10))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("{error} after {elapsed:?}");
    // The provider's own read failed (it was not stopped), long before the 5 s deadline.
    assert!(
        matches!(
            error,
            EgressError::Provider {
                kind: ProviderErrorKind::Unavailable,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("reading the response body failed"),
        "{error}"
    );
    assert!(elapsed < Duration::from_secs(3), "cut after {elapsed:?}");
}

#[tokio::test]
async fn two_uploads_racing_for_one_name_without_overwrite_leave_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = filesystem(dir.path());
    p.settings.insert(
        "name_template".to_owned(),
        serde_json::json!("same.nettrace"),
    );
    let host = EgressHost::load(&config(vec![("artifacts", p)]))
        .await
        .unwrap();
    // Both begin before either finishes: both pass the early check for the name.
    let mut first = host.begin("artifacts", artifact()).await.unwrap();
    let mut second = host.begin("artifacts", artifact()).await.unwrap();
    first.write(Bytes::from(payload(100_000))).await.unwrap();
    second.write(Bytes::from(vec![7u8; 50_000])).await.unwrap();
    let (one, two) = tokio::join!(first.finish(), second.finish());
    let (winner, loser) = match (one, two) {
        (Ok(location), Err(error)) => ((location, payload(100_000)), error),
        (Err(error), Ok(location)) => ((location, vec![7u8; 50_000]), error),
        other => panic!("not exactly one winner: {other:?}"),
    };
    eprintln!("{loser}");
    assert!(
        matches!(
            loser,
            EgressError::Provider {
                call: "finish",
                kind: ProviderErrorKind::Denied,
                ..
            }
        ),
        "{loser:?}"
    );
    assert!(loser.to_string().contains("already exists"), "{loser}");
    assert_eq!(std::fs::read(&winner.0).unwrap(), winner.1);
    assert_eq!(listing(dir.path()), vec!["same.nettrace".to_owned()]);
}

#[tokio::test]
async fn a_provider_stopped_mid_upload_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = filesystem(dir.path());
    p.limits.memory_mib = 3;
    p.limits.chunk_kib = 4096;
    let host = EgressHost::load(&config(vec![("artifacts", p)]))
        .await
        .unwrap();
    let mut upload = host.begin("artifacts", artifact()).await.unwrap();
    assert_eq!(listing(dir.path()).len(), 1, "the partial file exists");
    // A 4 MiB chunk does not fit in 3 MiB of memory: the instance is stopped in `write`.
    let error = match upload.write(Bytes::from(payload(4 << 20))).await {
        Ok(()) => upload.finish().await.unwrap_err(),
        Err(error) => error,
    };
    eprintln!("{error}");
    assert_eq!(error.kind(), "EgressMemoryLimitExceeded", "{error:?}");
    threads_released(&host, "artifacts", Duration::from_secs(2)).await;
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}

#[tokio::test]
async fn partial_files_of_an_earlier_run_are_swept_at_load_and_others_kept() {
    let dir = tempfile::tempdir().unwrap();
    let partial = format!(".a.nettrace.{}.partial", uuid::Uuid::new_v4());
    std::fs::write(dir.path().join(&partial), b"cut short").unwrap();
    std::fs::write(dir.path().join("keep.partial"), b"not ours").unwrap();
    std::fs::write(dir.path().join("a.nettrace"), b"whole").unwrap();
    let _host = EgressHost::load(&config(vec![("artifacts", filesystem(dir.path()))]))
        .await
        .unwrap();
    assert_eq!(
        listing(dir.path()),
        vec!["a.nettrace".to_owned(), "keep.partial".to_owned()]
    );
}

#[tokio::test]
async fn limits_that_would_overflow_fail_the_load_naming_the_provider_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    type Change = fn(&mut diagmon::egress::ProviderLimits);
    let cases: [(&str, Change); 3] = [
        ("limits.chunk_kib", |l| l.chunk_kib = 1 << 54),
        ("limits.memory_mib", |l| l.memory_mib = 1 << 44),
        ("limits.call_timeout_ms", |l| l.call_timeout_ms = u64::MAX),
    ];
    for (key, change) in cases {
        let mut p = filesystem(dir.path());
        change(&mut p.limits);
        let error = load_error(vec![("files", p)]).await.to_string();
        assert!(
            error.contains("egress provider `files` cannot be loaded"),
            "{error}"
        );
        assert!(error.contains(&format!("`{key}`")), "{error}");
    }
}

#[tokio::test]
async fn a_dump_goes_through_the_filesystem_provider_under_its_dotnet_monitor_name() {
    let dir = tempfile::tempdir().unwrap();
    let host = EgressHost::load(&config(vec![("artifacts", filesystem(dir.path()))]))
        .await
        .unwrap();
    let started_at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_141_848_123);
    let dump = Artifact::new(
        ArtifactKind::Dump,
        4242,
        uuid::Uuid::new_v4(),
        "fixture",
        uuid::Uuid::new_v4(),
        Vec::new(),
        started_at,
    );
    let data = payload(3 << 20);
    let mut upload = host.begin("artifacts", dump).await.unwrap();
    upload.write(Bytes::from(data.clone())).await.unwrap();
    let location = upload.finish().await.unwrap();
    assert!(
        location.ends_with("/core_20251126_072408_123"),
        "{location}"
    );
    assert_eq!(std::fs::read(&location).unwrap(), data);

    // `{kind}` names it too.
    let mut p = filesystem(dir.path());
    p.settings.insert(
        "name_template".to_owned(),
        serde_json::json!("{kind}-{pid}-{file_name}"),
    );
    let host = EgressHost::load(&config(vec![("artifacts", p)]))
        .await
        .unwrap();
    let gcdump = Artifact::new(
        ArtifactKind::GcDump,
        4242,
        uuid::Uuid::new_v4(),
        "fixture",
        uuid::Uuid::new_v4(),
        Vec::new(),
        started_at,
    );
    let location = host
        .begin("artifacts", gcdump)
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    assert!(
        location.ends_with("/gcdump-4242-20251126_072408_123_4242.gcdump"),
        "{location}"
    );
}

/// An S3 endpoint that starts multipart uploads and then never answers a part (nor reads it):
/// every part a provider puts stays in diagmon's memory until its request times out.
async fn s3_that_never_stores_a_part() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    if head.starts_with("put ") {
                        // Hold the part: no answer, no read.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let reply = if head.starts_with("post ") {
                        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>upload-1</UploadId></InitiateMultipartUploadResult>";
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{xml}",
                            xml.len()
                        )
                    } else {
                        "HTTP/1.1 204 No Content\r\n\r\n".to_owned()
                    };
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_parts_in_flight_count_against_the_memory_limit() {
    let (address, _server) = s3_that_never_stores_a_part().await;
    let grant: diagmon::egress::ObjectStoreGrant = serde_json::from_value(serde_json::json!({
        "url": "s3://b/hog",
        "endpoint": format!("http://{address}"),
        "allow_http": true,
        "region": "us-east-1",
        "access_key_id": "a",
        "secret_access_key": "b",
        "max_retries": 0,
        "timeout": "60s",
    }))
    .unwrap();
    let mut p = ProviderConfig::new(fixture("object-store-hog").display().to_string());
    p.object_store = Some(grant);
    p.settings
        .insert("part_mib".to_owned(), serde_json::json!(5));
    p.limits.memory_mib = 48;
    p.limits.write_timeout_ms = 5000;
    let host = EgressHost::load(&config(vec![("hog", p)])).await.unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (host, done) = (host.clone(), done.clone());
        tokio::spawn(async move {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                most = most.max(host.usage("hog").unwrap().host_buffer_bytes);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            most
        })
    };
    let error = upload_through(&host, "hog", &payload(10))
        .await
        .unwrap_err();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    eprintln!("{error}");
    let most = sampler.await.unwrap();
    eprintln!("at most {} MiB of parts in flight", most >> 20);
    // 4 uploads × 16 parts × 5 MiB = 320 MiB without the limit.
    assert!(most <= 48 << 20, "{most} bytes in flight");
    assert!(most >= 5 << 20, "no part was ever in flight");
    // The provider never got all its parts in: it failed waiting for room (or, on a loaded
    // machine, at its deadline).
    assert!(!error.to_string().contains("ALL 64 parts"), "{error}");
    threads_released(&host, "hog", Duration::from_secs(3)).await;
    // The parts still in flight are dropped with the instance.
    let deadline = Instant::now() + Duration::from_secs(2);
    while host.usage("hog").unwrap().host_buffer_bytes > 0 {
        assert!(Instant::now() < deadline, "{:?}", host.usage("hog"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_file_left_by_a_killed_monitor_is_swept_when_it_starts_again() {
    use diagmon_tests::monitor::Monitor;
    use diagmon_tests::target::{Program, TestTarget};
    let target = TestTarget::start(Program::Worker, &[]);
    let out = tempfile::tempdir().unwrap();
    let config = format!(
        "socket_dir = {:?}\n[egress]\ncache_directory = {:?}\n\
         [egress.providers.files]\ncomponent = \"filesystem\"\ndirectory = {:?}\n",
        target.tmpdir().display().to_string(),
        shared_cache().display().to_string(),
        out.path().display().to_string()
    );
    let mut monitor = Monitor::start(&config, &["--no-auth"]);
    let response = reqwest::Client::new()
        .post(monitor.url(&format!(
            "/trace?pid={}&durationSeconds=-1&egressProvider=files",
            target.pid()
        )))
        .json(&serde_json::json!({
            "providers": [{"name": "Microsoft-DotNETCore-SampleProfiler", "eventLevel": "Informational"}],
            "requestRundown": true
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !listing(out.path()).iter().any(|n| n.ends_with(".partial")) {
        assert!(Instant::now() < deadline, "no partial file appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    monitor.signal(libc::SIGKILL);
    assert!(monitor.wait_exit(Duration::from_secs(10)).is_some());
    let left = listing(out.path());
    assert!(
        left.len() == 1 && left[0].ends_with(".partial"),
        "the kill left {left:?}"
    );

    let again = Monitor::start(&config, &["--no-auth"]);
    assert!(listing(out.path()).is_empty(), "{:?}", listing(out.path()));
    assert!(
        again
            .stderr_lines()
            .iter()
            .any(|line| line.contains("removed 1 partial file(s) left by an earlier run")),
        "{:?}",
        again.stderr_lines()
    );
}

#[test]
fn a_limit_that_would_wrap_stops_the_monitor_at_start_naming_the_provider_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("diagmon.toml");
    std::fs::write(
        &config,
        format!(
            "[egress.providers.files]\ncomponent = \"filesystem\"\ndirectory = {:?}\n\
             [egress.providers.files.limits]\nchunk_kib = 18014398509481984\n",
            dir.path().join("out").display().to_string()
        ),
    )
    .unwrap();
    let run = std::process::Command::new(diagmon_tests::monitor::monitor_binary())
        .args([
            "collect",
            "--no-auth",
            "--urls",
            "http://127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("run diagmon");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "diagmon started: {stderr}");
    assert!(
        stderr.contains("egress provider `files` cannot be loaded: `limits.chunk_kib` is 18014398509481984; it must be between 1 and 16384"),
        "{stderr}"
    );
}

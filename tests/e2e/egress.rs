//! The egress host, driven directly: the built-in filesystem provider, misbehaving providers
//! (built from `tests/plugins/`), load errors, the compile cache and `plugin check`.
//!
//! The fixtures are built once per run, before the first test that needs them, with
//! `cargo build --release --target wasm32-wasip2` into `<target>/wasm-fixtures`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use diagmon::egress::{
    Artifact, EgressConfig, EgressError, EgressHost, ProviderConfig, ProviderErrorKind,
    check_component,
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
    assert!(
        message.contains("fixture panics on a chunk of 262144 bytes"),
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

//! Object-storage egress end to end: the real `diagmon collect` binary with the built-in
//! `object-storage` provider, real storage servers (moto for S3, Azurite for Azure Blob Storage,
//! one per test, see `diagmon_tests::storage`), traces from the real .NET Core 3.1 target or the
//! simulated runtime, and every object read back with a client independent of diagmon (boto3, or
//! SharedKey-signed HTTP for Azure). Needs `tests/run` (installs the servers and the target).
//!
//! GCS is tested for its configuration only: no installable emulator serves the XML API that
//! object_store writes through.

use std::path::Path;
use std::time::{Duration, Instant};

use diagmon_tests::api::{final_operation, sha256_hex, validated_nettrace};
use diagmon_tests::monitor::{Monitor, monitor_binary};
use diagmon_tests::simulated_runtime::{SimulatedRuntime, SimulatedRuntimeConfig, StreamBehaviour};
use diagmon_tests::storage::{AZURITE_ACCOUNT, AZURITE_KEY, Azurite, Moto, StoredObject};
use diagmon_tests::target::{Program, TestTarget};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long an operation may take to end before a test gives up on it.
const OPERATION_WAIT: Duration = Duration::from_secs(60);

const BUCKET: &str = "traces";

/// Short timeouts and few retries, so that failures show within seconds.
const FAIL_FAST: &str =
    r#", timeout = "3s", connect_timeout = "1s", max_retries = 1, retry_timeout = "1s""#;

/// The compile cache of this test binary, so that each monitor does not compile the provider
/// again (seconds in a debug build).
fn component_cache() -> String {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("object-storage-component-cache")
        .display()
        .to_string()
}

/// The `object_store` grant of a moto bucket prefix, with the server's current keys.
fn s3_grant(moto: &Moto, url: &str, extra: &str) -> String {
    format!(
        r#"object_store = {{ url = "{url}", endpoint = "{}", allow_http = true, region = "us-east-1", access_key_id = "{}", secret_access_key = "{}"{extra} }}"#,
        moto.endpoint(),
        moto.access_key_id,
        moto.secret_access_key
    )
}

/// The `object_store` grant of an Azurite container prefix, signed with `key`.
fn azure_grant(azurite: &Azurite, url: &str, key: &str, extra: &str) -> String {
    format!(
        r#"object_store = {{ url = "{url}", account_name = "{AZURITE_ACCOUNT}", access_key = "{key}", endpoint = "{}", allow_http = true{extra} }}"#,
        azurite.endpoint()
    )
}

/// A `[egress.providers.NAME]` table of the built-in provider with `grant` and `settings`.
fn provider(name: &str, grant: &str, settings: &str) -> String {
    format!(
        "[egress.providers.{name}]\ncomponent = \"object-storage\"\n{grant}\nsettings = {{ {settings} }}\n"
    )
}

/// A monitor without auth that sees the runtimes in `socket_dir`, with `providers`.
fn monitor(socket_dir: &Path, providers: &str) -> Monitor {
    let config = format!(
        "socket_dir = {:?}\n[egress]\ncache_directory = {:?}\n{providers}",
        socket_dir.display().to_string(),
        component_cache()
    );
    Monitor::start(&config, &["--no-auth"])
}

fn body() -> Value {
    json!({
        "providers": [
            {"name": "Microsoft-DotNETCore-SampleProfiler", "eventLevel": "Informational"},
            {"name": "Microsoft-Windows-DotNETRuntime", "keywords": "0x14C14FCCBD", "eventLevel": "Informational"}
        ],
        "requestRundown": true,
        "bufferSizeInMB": 64
    })
}

/// Starts a trace into `provider`; returns the operation's URL.
async fn start_trace(client: &reqwest::Client, monitor: &Monitor, query: &str) -> String {
    let response = client
        .post(monitor.url(&format!("/trace?{query}")))
        .json(&body())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    location.expect("a Location header")
}

async fn operation(client: &reqwest::Client, location: &str) -> Value {
    client
        .get(location)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Checks that `object` is the operation's trace, whole, with its metadata.
fn assert_is_the_trace(object: &StoredObject, done: &Value, pid: u64) {
    let summary = validated_nettrace(&object.bytes);
    assert_eq!(
        done["summary"]["sha256"],
        sha256_hex(&object.bytes),
        "the stored bytes are the trace"
    );
    assert_eq!(done["summary"]["bytes"], object.bytes.len() as u64);
    assert_eq!(done["summary"]["events"], summary.events);
    let metadata = &object.metadata;
    assert_eq!(metadata["pid"], pid.to_string(), "{metadata:?}");
    assert_eq!(
        metadata["operation_id"], done["operationId"],
        "{metadata:?}"
    );
    assert_eq!(metadata["kind"], "trace");
    for name in ["uid", "process_name", "file_name", "started_at", "tags"] {
        assert!(metadata.contains_key(name), "no `{name}` in {metadata:?}");
    }
    assert_eq!(
        object.content_type.as_deref(),
        Some("application/octet-stream")
    );
}

/// The object's name under the grant's prefix: the last segment of the resource location.
fn object_name(done: &Value) -> String {
    let location = done["resourceLocation"]
        .as_str()
        .expect("a resource location");
    location.rsplit('/').next().unwrap().to_owned()
}

/// The operation's error message (printed: it is what a user reads).
fn error_message(done: &Value) -> String {
    let message = done["error"]["message"].as_str().unwrap_or_default();
    eprintln!("operation error: {message}");
    message.to_owned()
}

#[tokio::test]
async fn s3_egress_of_a_real_trace_is_a_complete_object_with_its_metadata() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor(
        target.tmpdir(),
        &provider("s3", &s3_grant(&moto, "s3://traces/e2e/real", ""), ""),
    );
    let client = reqwest::Client::new();
    let location = start_trace(
        &client,
        &monitor,
        &format!(
            "pid={}&durationSeconds=2&egressProvider=s3&tags=object,storage",
            target.pid()
        ),
    )
    .await;
    let done = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    assert_eq!(done["egressProviderName"], "s3");
    let name = object_name(&done);
    assert!(
        name.ends_with(&format!("_{}.nettrace", target.pid())),
        "{name}"
    );
    assert_eq!(
        done["resourceLocation"],
        format!("{}/traces/e2e/real/{name}", moto.endpoint())
    );
    let object = moto
        .get(BUCKET, &format!("e2e/real/{name}"))
        .expect("the object exists");
    assert_is_the_trace(&object, &done, u64::from(target.pid()));
    assert_eq!(object.metadata["tags"], "object,storage");
    assert_eq!(moto.list(BUCKET, ""), vec![format!("e2e/real/{name}")]);
}

#[tokio::test]
async fn azure_egress_of_a_real_trace_is_a_complete_blob_with_its_metadata_and_a_signed_url() {
    let azurite = Azurite::start();
    azurite.create_container(BUCKET);
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor(
        target.tmpdir(),
        &provider(
            "azure",
            &azure_grant(&azurite, "az://traces/e2e", AZURITE_KEY, ""),
            r#"name_template = "{date}/{file_name}", signed_url_expiry = "1h""#,
        ),
    );
    let client = reqwest::Client::new();
    let location = start_trace(
        &client,
        &monitor,
        &format!(
            "pid={}&durationSeconds=2&egressProvider=azure",
            target.pid()
        ),
    )
    .await;
    let done = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    // The location is a SAS URL: the blob's URL and a signature.
    let signed = done["resourceLocation"].as_str().unwrap();
    let (url, query) = signed.split_once('?').expect("a signed URL");
    assert!(query.contains("sig="), "{signed}");
    let prefix = format!("{}/traces/e2e/", azurite.endpoint());
    assert!(url.starts_with(&prefix), "{url}");
    let blob = format!("e2e/{}", &url[prefix.len()..]);
    assert_eq!(blob.matches('/').count(), 2, "a date folder: {blob}");
    let object = azurite.get(BUCKET, &blob).expect("the blob exists");
    assert_is_the_trace(&object, &done, u64::from(target.pid()));
    // Whoever holds the signed URL reads the blob with a plain GET; without the signature, not.
    let response = client.get(signed).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), object.bytes);
    let response = client.get(url).send().await.unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
}

/// A simulated runtime in its own socket folder.
async fn simulated(stream: StreamBehaviour) -> (tempfile::TempDir, SimulatedRuntime, u32) {
    let dir = tempfile::tempdir().unwrap();
    let config = SimulatedRuntimeConfig {
        stream,
        ..Default::default()
    };
    let pid = config.pid;
    let runtime = SimulatedRuntime::listen(dir.path(), config).await.unwrap();
    (dir, runtime, pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_of_many_parts_arrives_whole() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    // "About" that many bytes: a little more, so that the trace is at least 64 MiB.
    let (dir, _runtime, pid) = simulated(StreamBehaviour::FullSpeed {
        total_bytes: (64 << 20) + (256 << 10),
    })
    .await;
    let monitor = monitor(
        dir.path(),
        &provider(
            "s3",
            &s3_grant(&moto, "s3://traces/big", ""),
            r#"part_size_mib = 5, parts_in_flight = 3"#,
        ),
    );
    let client = reqwest::Client::new();
    let started = Instant::now();
    let location = start_trace(
        &client,
        &monitor,
        &format!("pid={pid}&durationSeconds=-1&egressProvider=s3"),
    )
    .await;
    let done = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    let elapsed = started.elapsed();
    let name = object_name(&done);
    let object = moto
        .get(BUCKET, &format!("big/{name}"))
        .expect("the object exists");
    assert!(
        object.bytes.len() >= 64 << 20,
        "{} bytes",
        object.bytes.len()
    );
    assert_is_the_trace(&object, &done, u64::from(pid));
    assert!(moto.unfinished_uploads(BUCKET).is_empty());
    eprintln!(
        "{} MiB through S3 (moto) in {:.1} s",
        object.bytes.len() >> 20,
        elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_short_trace_aborts_the_s3_upload_leaving_no_parts() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let (dir, _runtime, pid) = simulated(StreamBehaviour::DisconnectAfter {
        after_bytes: 24 << 20,
    })
    .await;
    let monitor = monitor(
        dir.path(),
        &provider(
            "s3",
            &s3_grant(&moto, "s3://traces/cut", ""),
            r#"part_size_mib = 5"#,
        ),
    );
    let client = reqwest::Client::new();
    let location = start_trace(
        &client,
        &monitor,
        &format!("pid={pid}&durationSeconds=-1&egressProvider=s3"),
    )
    .await;
    let done = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(done["status"], "Failed", "{done}");
    assert_eq!(done["error"]["code"], "TraceTruncated", "{done}");
    // The upload had started (24 MiB is more than 4 parts) and was aborted.
    assert_eq!(moto.list(BUCKET, ""), Vec::<String>::new(), "no object");
    assert_eq!(
        moto.unfinished_uploads(BUCKET),
        Vec::<String>::new(),
        "no parts left"
    );
    assert!(
        monitor
            .stderr_lines()
            .iter()
            .any(|l| l.contains("multipart upload aborted")),
        "{:?}",
        monitor.stderr_lines()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_server_killed_mid_upload_fails_the_operation_as_unreachable() {
    let mut azurite = Azurite::start();
    azurite.create_container(BUCKET);
    let (dir, _runtime, pid) = simulated(StreamBehaviour::FullSpeed {
        total_bytes: 4 << 30,
    })
    .await;
    let monitor = monitor(
        dir.path(),
        &provider(
            "azure",
            &azure_grant(&azurite, "az://traces/killed", AZURITE_KEY, FAIL_FAST),
            r#"part_size_mib = 5, parts_in_flight = 2"#,
        ),
    );
    let client = reqwest::Client::new();
    let location = trace_under_way(&client, &monitor, pid, "azure").await;
    azurite.kill();
    let killed = Instant::now();
    let done = final_operation(&client, &location, OPERATION_WAIT).await;
    let took = killed.elapsed();
    assert_eq!(done["status"], "Failed", "{done}");
    let message = error_message(&done);
    assert!(message.contains("storage unreachable"), "{message}");
    assert!(message.contains("az://traces/killed"), "{message}");
    // timeout 3 s, one retry within 1 s: the failure shows well within 10 s.
    assert!(took < Duration::from_secs(10), "failed after {took:?}");
    // The upload was given up: with the server back on the same data, no blob is there.
    azurite.restart();
    let committed: Vec<String> = azurite
        .list(BUCKET, "killed/")
        .into_iter()
        .filter(|blob| azurite.get(BUCKET, blob).is_some())
        .collect();
    assert!(committed.is_empty(), "no complete blob: {committed:?}");
}

/// Starts a long full-speed trace into `provider` and waits until more than 24 MiB went out.
async fn trace_under_way(
    client: &reqwest::Client,
    monitor: &Monitor,
    pid: u32,
    provider: &str,
) -> String {
    let location = start_trace(
        client,
        monitor,
        &format!("pid={pid}&durationSeconds=-1&egressProvider={provider}"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = operation(client, &location).await;
        assert!(
            ["Starting", "Running"].contains(&now["status"].as_str().unwrap_or("")),
            "{now}"
        );
        if now["bytesCaptured"].as_u64().unwrap_or(0) > 24 << 20 {
            return location;
        }
        assert!(
            Instant::now() < deadline,
            "the upload did not get going: {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_storage_server_fails_the_operation_as_timed_out_within_its_timeout() {
    let azurite = Azurite::start();
    azurite.create_container(BUCKET);
    let (dir, _runtime, pid) = simulated(StreamBehaviour::FullSpeed {
        total_bytes: 4 << 30,
    })
    .await;
    let monitor = monitor(
        dir.path(),
        &provider(
            "azure",
            &azure_grant(&azurite, "az://traces/hung", AZURITE_KEY, FAIL_FAST),
            r#"part_size_mib = 5, parts_in_flight = 2"#,
        ),
    );
    let client = reqwest::Client::new();
    let location = trace_under_way(&client, &monitor, pid, "azure").await;
    azurite.freeze();
    let frozen = Instant::now();
    let done = final_operation(&client, &location, OPERATION_WAIT).await;
    let took = frozen.elapsed();
    assert_eq!(done["status"], "Failed", "{done}");
    let message = error_message(&done);
    assert!(message.contains("timed out"), "{message}");
    // A 3 s request timeout and a 1 s retry budget, not object_store's 3 minutes.
    assert!(took < Duration::from_secs(12), "failed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_the_operation_as_credentials_rejected() {
    let mut moto = Moto::start();
    moto.create_bucket(BUCKET);
    moto.enable_auth();
    let azurite = Azurite::start();
    azurite.create_container(BUCKET);
    let (dir, _runtime, pid) = simulated(StreamBehaviour::FullSpeed {
        total_bytes: 12 << 20,
    })
    .await;
    let wrong_s3 = s3_grant(&moto, "s3://traces/denied", FAIL_FAST)
        .replace(&moto.secret_access_key, "not-the-secret");
    // A well-formed key that is not the account's.
    let wrong_key = format!("AAAA{}", &AZURITE_KEY[4..]);
    let providers = provider("s3", &wrong_s3, "part_size_mib = 5")
        + &provider(
            "azure",
            &azure_grant(&azurite, "az://traces/denied", &wrong_key, FAIL_FAST),
            "part_size_mib = 5",
        )
        + &provider(
            "good",
            &s3_grant(&moto, "s3://traces/allowed", FAIL_FAST),
            "",
        );
    let monitor = monitor(dir.path(), &providers);
    let client = reqwest::Client::new();
    for name in ["s3", "azure"] {
        let location = start_trace(
            &client,
            &monitor,
            &format!("pid={pid}&durationSeconds=1&egressProvider={name}"),
        )
        .await;
        let done = final_operation(&client, &location, OPERATION_WAIT).await;
        assert_eq!(done["status"], "Failed", "{name}: {done}");
        let message = error_message(&done);
        assert!(
            message.contains("credentials rejected"),
            "{name}: {message}"
        );
        assert!(message.contains("traces/denied"), "{name}: {message}");
    }
    assert!(moto.list(BUCKET, "denied/").is_empty());
    // The right key works on the same server.
    let location = start_trace(
        &client,
        &monitor,
        &format!("pid={pid}&durationSeconds=1&egressProvider=good"),
    )
    .await;
    let done = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
}

#[tokio::test]
async fn a_missing_bucket_fails_the_operation_as_bucket_missing() {
    let moto = Moto::start();
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor(
        target.tmpdir(),
        &provider("s3", &s3_grant(&moto, "s3://nobucket/x", FAIL_FAST), ""),
    );
    let client = reqwest::Client::new();
    let location = start_trace(
        &client,
        &monitor,
        &format!("pid={}&durationSeconds=1&egressProvider=s3", target.pid()),
    )
    .await;
    let done = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(done["status"], "Failed", "{done}");
    let message = error_message(&done);
    assert!(message.contains("bucket missing"), "{message}");
    assert!(message.contains("s3://nobucket/x"), "{message}");
}

/// Runs `diagmon collect` with `config` and returns its stderr, asserting that it refused to start.
fn refused_start(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diagmon.toml");
    std::fs::write(&path, config).unwrap();
    let run = std::process::Command::new(monitor_binary())
        .args([
            "collect",
            "--no-auth",
            "--urls",
            "http://127.0.0.1:0",
            "--config",
        ])
        .arg(&path)
        .env_remove("DIAGMON_TEST_UNSET_SECRET")
        .output()
        .expect("run diagmon");
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        !run.status.success(),
        "diagmon started with:\n{config}\n{stderr}"
    );
    stderr
}

fn cache_config() -> String {
    format!("[egress]\ncache_directory = {:?}\n", component_cache())
}

#[test]
fn unbuildable_store_options_stop_start_up_naming_the_provider_and_the_option() {
    let grant =
        r#"object_store = { url = "s3://traces/x", region = "us-east-1", allow_http = "maybe" }"#;
    let stderr = refused_start(&(cache_config() + &provider("archive", grant, "")));
    assert!(
        stderr.contains("`archive`") && stderr.contains("`allow_http`"),
        "{stderr}"
    );

    let grant = r#"object_store = { url = "s3://traces/x", regoin = "us-east-1" }"#;
    let stderr = refused_start(&(cache_config() + &provider("archive", grant, "")));
    assert!(
        stderr.contains("`archive`") && stderr.contains("`regoin`"),
        "{stderr}"
    );

    let grant = r#"object_store = { url = "s3://traces/x", secret_access_key = { env = "DIAGMON_TEST_UNSET_SECRET" } }"#;
    let stderr = refused_start(&(cache_config() + &provider("archive", grant, "")));
    assert!(stderr.contains("DIAGMON_TEST_UNSET_SECRET"), "{stderr}");

    let grant = r#"object_store = { url = "ftp://traces/x" }"#;
    let stderr = refused_start(&(cache_config() + &provider("archive", grant, "")));
    assert!(
        stderr.contains("`archive`") && stderr.contains("ftp"),
        "{stderr}"
    );

    // The built-in needs the grant; a setting it does not know is refused too.
    let stderr = refused_start(&(cache_config() + &provider("archive", "", "")));
    assert!(stderr.contains("object-store grant"), "{stderr}");
    let grant = r#"object_store = { url = "s3://traces/x", region = "us-east-1" }"#;
    let stderr =
        refused_start(&(cache_config() + &provider("archive", grant, "part_size_mib = 1")));
    assert!(stderr.contains("part_size_mib"), "{stderr}");
}

#[test]
fn a_gcs_grant_is_configured_and_checked_at_start_up() {
    // Configuration only: no local GCS emulator takes object_store's XML-API writes.
    let dir = tempfile::tempdir().unwrap();
    let account = dir.path().join("service-account.json");
    std::fs::write(
        &account,
        r#"{"gcs_base_url": "http://127.0.0.1:1", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}"#,
    )
    .unwrap();
    let grant = format!(
        "object_store = {{ url = \"gs://traces/prod\", service_account_path = {:?} }}",
        account.display().to_string()
    );
    let config = format!("socket_dir = {:?}\n", dir.path().display().to_string())
        + &cache_config()
        + &provider("gcs", &grant, r#"signed_url_expiry = "1h""#);
    let monitor = Monitor::start(&config, &["--no-auth"]);
    assert!(
        monitor
            .stderr_lines()
            .iter()
            .any(|l| l.contains("gcs") && l.contains("loaded")),
        "{:?}",
        monitor.stderr_lines()
    );
    drop(monitor);

    let grant = r#"object_store = { url = "gs://traces/prod", service_account_path = "/nonexistent/sa.json" }"#;
    let stderr = refused_start(&(cache_config() + &provider("gcs", grant, "")));
    assert!(stderr.contains("`gcs`"), "{stderr}");
    assert!(
        stderr.contains("service_account_path") || stderr.contains("/nonexistent/sa.json"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_dump_is_stored_under_its_dotnet_monitor_name_with_its_kind_in_the_metadata() {
    use diagmon::egress::{
        Artifact, ArtifactKind, EgressConfig, EgressHost, ObjectStoreGrant, ProviderConfig,
    };
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let grant: ObjectStoreGrant = serde_json::from_value(json!({
        "url": "s3://traces/dumps",
        "endpoint": moto.endpoint(),
        "allow_http": true,
        "region": "us-east-1",
        "access_key_id": moto.access_key_id,
        "secret_access_key": moto.secret_access_key,
    }))
    .unwrap();
    let mut p = ProviderConfig::new("object-storage");
    p.object_store = Some(grant);
    p.settings
        .insert("name_template".to_owned(), json!("{kind}/{file_name}"));
    p.settings.insert("part_size_mib".to_owned(), json!(5));
    let host = EgressHost::load(&EgressConfig {
        providers: [("s3".to_owned(), p)].into_iter().collect(),
        cache_directory: Some(component_cache().into()),
    })
    .await
    .unwrap();
    let started_at = std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_141_848_123);
    let dump = Artifact::new(
        ArtifactKind::Dump,
        4242,
        uuid::Uuid::new_v4(),
        "worker",
        uuid::Uuid::new_v4(),
        vec!["dumped".to_owned()],
        started_at,
    );
    // More than a part: a multipart upload, as a real dump would be.
    let bytes: Vec<u8> = (0..(7u32 << 20)).map(|i| (i % 251) as u8).collect();
    let mut upload = host.begin("s3", dump).await.unwrap();
    for chunk in bytes.chunks(1 << 20) {
        upload
            .write(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    let location = upload.finish().await.unwrap();
    let key = "dumps/dump/core_20251126_072408_123";
    assert_eq!(location, format!("{}/traces/{key}", moto.endpoint()));
    let object = moto.get(BUCKET, key).expect("the object exists");
    assert!(object.bytes == bytes, "{} bytes stored", object.bytes.len());
    assert_eq!(object.metadata["kind"], "dump");
    assert_eq!(object.metadata["file_name"], "core_20251126_072408_123");
    assert_eq!(object.metadata["pid"], "4242");
    assert_eq!(
        object.content_type.as_deref(),
        Some("application/octet-stream")
    );
}

/// A TCP proxy to `upstream` that holds back the answer to every CompleteMultipartUpload
/// (`POST ...?uploadId=...`) for `delay`: the store has committed the object, the client hears
/// of it late. Returns the proxy's address.
async fn slow_complete_proxy(upstream: u16, delay: Duration) -> std::net::SocketAddr {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            // Requests and answers alternate on a connection: the flag says the request
            // waiting for its answer is a complete.
            let completing = Arc::new(AtomicBool::new(false));
            let marks = completing.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0; 64 << 10];
                while let Ok(read @ 1..) = client_read.read(&mut buffer).await {
                    let text = String::from_utf8_lossy(&buffer[..read]);
                    let request_line = text.lines().next().unwrap_or_default();
                    if ["GET ", "PUT ", "POST ", "HEAD ", "DELETE "]
                        .iter()
                        .any(|method| request_line.starts_with(method))
                    {
                        marks.store(
                            request_line.starts_with("POST ") && request_line.contains("uploadId="),
                            Ordering::SeqCst,
                        );
                    }
                    if server_write.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buffer = vec![0; 64 << 10];
                while let Ok(read @ 1..) = server_read.read(&mut buffer).await {
                    if completing.swap(false, Ordering::SeqCst) {
                        tokio::time::sleep(delay).await;
                    }
                    if client_write.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_whose_answer_comes_too_late_but_committed_is_a_success() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let proxy = slow_complete_proxy(moto.port(), Duration::from_secs(10)).await;
    let (dir, _runtime, pid) = simulated(StreamBehaviour::FullSpeed {
        total_bytes: 7 << 20,
    })
    .await;
    let grant = format!(
        r#"object_store = {{ url = "s3://traces/late", endpoint = "http://{proxy}", allow_http = true, region = "us-east-1", access_key_id = "{}", secret_access_key = "{}" }}"#,
        moto.access_key_id, moto.secret_access_key
    );
    // `finish` may take 8 s: the complete waits for up to 6 of them, then the object is looked at.
    let providers = format!(
        "{}[egress.providers.s3.limits]\ncall_timeout_ms = 8000\n",
        provider("s3", &grant, "part_size_mib = 5")
    );
    let monitor = monitor(dir.path(), &providers);
    let client = reqwest::Client::new();
    let location = start_trace(
        &client,
        &monitor,
        &format!("pid={pid}&durationSeconds=-1&egressProvider=s3"),
    )
    .await;
    let done = final_operation(&client, &location, OPERATION_WAIT).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    let object = moto
        .get(BUCKET, &format!("late/{}", object_name(&done)))
        .expect("the object exists");
    assert_is_the_trace(&object, &done, u64::from(pid));
    assert!(
        monitor
            .stderr_lines()
            .iter()
            .any(|line| line.contains("committed although completing it reported a failure")),
        "the late answer was not what happened"
    );
}

//! Unit tests of the grant and the store, without a server: building (and refusing) grants,
//! confinement, metadata rules, a directory store, an unreachable store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Handle;

use super::grant::*;
use super::store::*;
use crate::egress::budget::{MemoryBudget, ProviderUsage};
use crate::egress::error::EgressError;

/// A budget that never refuses.
fn unlimited() -> Arc<MemoryBudget> {
    MemoryBudget::new(usize::MAX, Arc::new(ProviderUsage::default()))
}

fn grant(url: &str, options: &[(&str, &str)]) -> ObjectStoreGrant {
    ObjectStoreGrant {
        url: url.to_owned(),
        options: options
            .iter()
            .map(|(k, v)| ((*k).to_owned(), GrantValue::Text((*v).to_owned())))
            .collect(),
    }
}

fn load_cause(result: Result<GrantedStore, EgressError>) -> String {
    match result {
        Err(EgressError::Load { cause, .. }) => cause,
        other => panic!("expected a load error, got {other:?}"),
    }
}

#[test]
fn s3_azure_and_gcs_grants_build_without_contacting_the_store() {
    let s3 = GrantedStore::build(
        "s3",
        &grant(
            "s3://traces/prod/x",
            &[
                ("endpoint", "http://127.0.0.1:1"),
                ("allow_http", "true"),
                ("access_key_id", "a"),
                ("secret_access_key", "b"),
                ("region", "eu-west-1"),
            ],
        ),
    )
    .unwrap();
    assert_eq!(s3.description(), "s3://traces/prod/x");
    let path = s3.resolve("t/1.nettrace").unwrap();
    assert_eq!(path.as_ref(), "prod/x/t/1.nettrace");
    assert_eq!(
        s3.object_url(&path),
        "http://127.0.0.1:1/traces/prod/x/t/1.nettrace"
    );

    let azure = GrantedStore::build(
            "azure",
            &grant(
                "az://traces",
                &[("account_name", "devstoreaccount1"), ("access_key", "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="), ("endpoint", "http://127.0.0.1:2/devstoreaccount1"), ("allow_http", "true")],
            ),
        )
        .unwrap();
    let path = azure.resolve("a b.nettrace").unwrap();
    assert_eq!(
        azure.object_url(&path),
        "http://127.0.0.1:2/devstoreaccount1/traces/a%20b.nettrace"
    );

    // GCS: configuration only (no local server takes object_store's XML-API writes).
    let dir = tempfile::tempdir().unwrap();
    let account = dir.path().join("sa.json");
    std::fs::write(
        &account,
        r#"{"disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}"#,
    )
    .unwrap();
    let gcs = GrantedStore::build(
        "gcs",
        &grant(
            "gs://bucket/p",
            &[("service_account_path", account.to_str().unwrap())],
        ),
    )
    .unwrap();
    assert_eq!(gcs.description(), "gs://bucket/p");
    let path = gcs.resolve("x.nettrace").unwrap();
    assert_eq!(
        gcs.object_url(&path),
        "https://storage.googleapis.com/bucket/p/x.nettrace"
    );
    let cause = load_cause(GrantedStore::build(
        "gcs",
        &grant(
            "gs://bucket/p",
            &[("service_account", "/nonexistent/sa.json")],
        ),
    ));
    assert!(
        cause.contains("`gcs`") || cause.contains("sa.json"),
        "{cause}"
    );
}

#[test]
fn paths_stay_under_the_prefix() {
    let store = GrantedStore::build(
        "s3",
        &grant(
            "s3://b/pre",
            &[
                ("region", "x"),
                ("access_key_id", "a"),
                ("secret_access_key", "b"),
            ],
        ),
    )
    .unwrap();
    for bad in [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a//b",
        "a/",
        "./a",
        "a\\b",
        "a\u{0}b",
    ] {
        let error = store.resolve(bad).unwrap_err();
        assert_eq!(error.kind, StoreErrorKind::InvalidArgument, "{bad:?}");
    }
    assert_eq!(store.resolve("x/y.z").unwrap().as_ref(), "pre/x/y.z");
}

#[test]
fn unknown_options_and_bad_values_name_the_option() {
    let cause = load_cause(GrantedStore::build(
        "s3",
        &grant("s3://b", &[("regoin", "x")]),
    ));
    assert!(
        cause.contains("`regoin`") && cause.contains("AmazonS3ConfigKey"),
        "{cause}"
    );
    let cause = load_cause(GrantedStore::build(
        "s3",
        &grant("s3://b", &[("allow_http", "maybe"), ("region", "x")]),
    ));
    assert!(cause.contains("`allow_http`"), "{cause}");
    let cause = load_cause(GrantedStore::build(
        "s3",
        &grant("s3://b", &[("timeout", "soon")]),
    ));
    assert!(cause.contains("`timeout`"), "{cause}");
    let cause = load_cause(GrantedStore::build(
        "s3",
        &grant("s3://b", &[("retry_timeout", "soon")]),
    ));
    assert!(cause.contains("`retry_timeout`"), "{cause}");
    let cause = load_cause(GrantedStore::build("x", &grant("ftp://b/x", &[])));
    assert!(cause.contains("`ftp`"), "{cause}");
    let cause = load_cause(GrantedStore::build("x", &grant("s3://key:secret@b/x", &[])));
    assert!(
        cause.contains("credentials") && !cause.contains("secret@"),
        "{cause}"
    );
    let cause = load_cause(GrantedStore::build(
        "x",
        &grant("az://c", &[("endpoint", "http://127.0.0.1:1")]),
    ));
    assert!(
        cause.contains("cannot be built") && cause.contains("Account must be specified"),
        "{cause}"
    );
}

#[test]
fn secrets_come_from_the_environment_or_a_file_and_are_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let mut grant = grant(
        "s3://b",
        &[("region", "x"), ("secret_access_key", "inline-secret")],
    );
    grant.options.insert(
        "access_key_id".into(),
        GrantValue::File(FromFile { file: file.clone() }),
    );
    let shown = serde_json::to_string(&grant).unwrap();
    assert!(
        !shown.contains("inline-secret") && shown.contains("<redacted>"),
        "{shown}"
    );
    assert!(!format!("{grant:?}").contains("inline-secret"));
    let resolved = resolve_options("s3", &grant).unwrap();
    assert!(
        resolved
            .store
            .contains(&("access_key_id".to_owned(), "from-a-file".to_owned()))
    );
    grant.options.insert(
        "token".into(),
        GrantValue::Env(FromEnv {
            env: "DIAGMON_TEST_UNSET_VARIABLE".into(),
        }),
    );
    let cause = load_cause(GrantedStore::build("s3", &grant));
    assert!(
        cause.contains("DIAGMON_TEST_UNSET_VARIABLE") && cause.contains("`token`"),
        "{cause}"
    );
}

#[test]
fn metadata_names_must_be_identifiers() {
    let options = |name: &str, value: &str| ObjectOptions {
        content_type: None,
        metadata: vec![(name.to_owned(), value.to_owned())],
    };
    assert!(options("trace_id", "x").attributes().is_ok());
    assert_eq!(
        options("trace-id", "x").attributes().unwrap_err().kind,
        StoreErrorKind::InvalidArgument
    );
    assert_eq!(
        options("pid", "é").attributes().unwrap_err().kind,
        StoreErrorKind::InvalidArgument
    );
}

#[tokio::test]
async fn a_directory_grant_takes_puts_and_multipart_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path().join("out")).unwrap();
    let store = Arc::new(GrantedStore::build("local", &grant(url.as_str(), &[])).unwrap());
    let info = store
        .put(
            "small.txt",
            Bytes::from_static(b"hi"),
            &ObjectOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("out/small.txt")).unwrap(),
        b"hi"
    );
    assert!(
        info.url.starts_with("file:///") && info.url.ends_with("/out/small.txt"),
        "{}",
        info.url
    );

    let mut upload = store
        .begin_multipart(
            "big/trace.nettrace",
            &ObjectOptions::default(),
            2,
            Handle::current(),
            unlimited(),
        )
        .await
        .unwrap();
    let part = vec![7u8; MIN_PART];
    for _ in 0..3 {
        upload.put_part(Bytes::from(part.clone())).await.unwrap();
    }
    upload.put_part(Bytes::from_static(b"tail")).await.unwrap();
    let error = upload
        .put_part(Bytes::from_static(b"more"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, StoreErrorKind::InvalidArgument);
    let info = upload.complete().await.unwrap();
    assert_eq!(info.size, 3 * MIN_PART as u64 + 4);
    let stored = std::fs::read(dir.path().join("out/big/trace.nettrace")).unwrap();
    assert_eq!(stored.len() as u64, info.size);

    let mut aborted = store
        .begin_multipart(
            "gone.nettrace",
            &ObjectOptions::default(),
            1,
            Handle::current(),
            unlimited(),
        )
        .await
        .unwrap();
    aborted.put_part(Bytes::from(part)).await.unwrap();
    aborted.abort().await.unwrap();
    assert!(!dir.path().join("out/gone.nettrace").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

#[tokio::test]
async fn an_unreachable_store_is_reported_as_such_quickly() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = GrantedStore::build(
        "s3",
        &grant(
            "s3://traces/p",
            &[
                ("endpoint", &format!("http://127.0.0.1:{port}")),
                ("allow_http", "true"),
                ("access_key_id", "a"),
                ("secret_access_key", "b"),
                ("region", "us-east-1"),
                ("max_retries", "1"),
                ("retry_timeout", "1s"),
            ],
        ),
    )
    .unwrap();
    let started = Instant::now();
    let error = store
        .put("x", Bytes::from_static(b"x"), &ObjectOptions::default())
        .await
        .unwrap_err();
    assert_eq!(error.kind, StoreErrorKind::Unreachable, "{error}");
    assert!(
        error
            .message
            .starts_with("storage unreachable: s3://traces/p"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn parts_in_flight_are_charged_to_the_instance_budget() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/out", dir.path().display());
    let store = Arc::new(GrantedStore::build("local", &grant(&url, &[])).unwrap());
    let usage = Arc::new(ProviderUsage::default());
    // Room for one part of 5 MiB, not two.
    let budget = MemoryBudget::new(8 << 20, usage.clone());
    let mut upload = store
        .begin_multipart(
            "o.bin",
            &ObjectOptions::default(),
            4,
            Handle::current(),
            budget,
        )
        .await
        .unwrap();
    let part = Bytes::from(vec![1u8; MIN_PART]);
    // The second part waits for the first to be stored instead of pinning 10 MiB.
    upload.put_part(part.clone()).await.unwrap();
    upload.put_part(part.clone()).await.unwrap();
    assert!(usage.host_bytes.load(std::sync::atomic::Ordering::SeqCst) <= 8 << 20);
    let error = upload
        .put_part(Bytes::from(vec![1u8; 9 << 20]))
        .await
        .unwrap_err();
    assert_eq!(error.kind, StoreErrorKind::InvalidArgument);
    assert!(
        error.message.contains("`limits.memory_mib` = 8"),
        "{}",
        error.message
    );
    upload.abort().await.unwrap();
    assert_eq!(
        usage.host_bytes.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

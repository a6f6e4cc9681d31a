//! Process dumps end to end: the Dump command set against the simulated runtime (GenerateCoreDump
//! 2 and 3, error replies), and real dumps of a real .NET Core 3.1 target through the dump folder,
//! `diagmon dump` and `GET /dump` of the real binary. Needs `tests/run` (installs the target and
//! builds the binary).

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;

use diagmon::config::StorageConfig;
use diagmon::diagnostics::dump::{DumpCommandError, DumpType};
use diagmon::diagnostics::{Command, DiagnosticsClient, Endpoint, RuntimeErrorCode, Timeouts};
use diagmon::dumps::{DumpError, DumpFile, DumpFolder, DumpStream};
use diagmon_tests::api::{final_operation, get_json, location_of, sha256_hex};
use diagmon_tests::monitor::{Monitor, monitor_binary};
use diagmon_tests::simulated_runtime::{
    DumpBehaviour, SimulatedRuntime, SimulatedRuntimeConfig, hresult,
};
use diagmon_tests::storage::Moto;
use diagmon_tests::target::{Program, TestTarget};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long an operation may take to end before a test gives up on it.
const OPERATION_WAIT: Duration = Duration::from_secs(60);

/// ELF `e_type` of a core file.
const ET_CORE: u16 = 4;
/// Program header type of a note segment.
const PT_NOTE: u32 = 4;
/// Note type of a thread's registers and status: one per thread in a Linux core file.
const NT_PRSTATUS: u32 = 1;

/// What the ELF header and notes of a core file say.
#[derive(Debug)]
struct CoreFile {
    e_type: u16,
    prstatus_notes: usize,
}

/// Reads the ELF64 header of `path`, its program headers and every note of its note segments.
fn read_core(path: &Path) -> CoreFile {
    let file = std::fs::File::open(path).unwrap();
    let read = |offset: u64, len: usize| {
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, offset).unwrap();
        bytes
    };
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let header = read(0, 64);
    assert_eq!(&header[..4], b"\x7fELF", "ELF magic");
    assert_eq!(header[4], 2, "ELFCLASS64");
    let program_headers = u64_at(&header, 32);
    let entry_size = u64::from(u16_at(&header, 54));
    let mut count = u64::from(u16_at(&header, 56));
    if count == 0xFFFF {
        // PN_XNUM: the real count is in the first section header's sh_info.
        let section = read(u64_at(&header, 40), 64);
        count = u64::from(u32_at(&section, 44));
    }
    let mut prstatus_notes = 0;
    for index in 0..count {
        let entry = read(program_headers + index * entry_size, 56);
        if u32_at(&entry, 0) != PT_NOTE {
            continue;
        }
        let notes = read(u64_at(&entry, 8), u64_at(&entry, 32) as usize);
        let mut at = 0;
        while at + 12 <= notes.len() {
            let name_len = u32_at(&notes, at) as usize;
            let desc_len = u32_at(&notes, at + 4) as usize;
            if u32_at(&notes, at + 8) == NT_PRSTATUS {
                prstatus_notes += 1;
            }
            at += 12 + name_len.next_multiple_of(4) + desc_len.next_multiple_of(4);
        }
    }
    CoreFile {
        e_type: u16_at(&header, 16),
        prstatus_notes,
    }
}

/// The threads of `pid` now.
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// The files in `dir`.
fn listing(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A dump folder in a fresh temporary directory.
fn folder_in(dir: &Path) -> Arc<DumpFolder> {
    DumpFolder::open(&StorageConfig {
        dump_temp_folder: Some(dir.join("dumps")),
        ..StorageConfig::default()
    })
    .unwrap()
}

/// Asks `folder` for a dump and waits until it is written.
async fn dump_of(
    folder: &Arc<DumpFolder>,
    client: DiagnosticsClient,
    pid: u32,
    dump_type: DumpType,
) -> Result<DumpFile, DumpError> {
    folder.begin(client, pid, dump_type)?.written().await
}

/// A client for the runtime listening at `socket`.
fn client_at(socket: PathBuf) -> DiagnosticsClient {
    DiagnosticsClient::new(Endpoint::Socket(socket), Timeouts::default())
}

/// A simulated runtime that answers Dump commands up to `dump_level` and does `dump`.
async fn simulated(
    dump_level: u8,
    dump: DumpBehaviour,
) -> (tempfile::TempDir, SimulatedRuntime, DiagnosticsClient) {
    let dir = tempfile::tempdir().unwrap();
    let config = SimulatedRuntimeConfig {
        dump_level,
        dump,
        ..Default::default()
    };
    let runtime = SimulatedRuntime::listen(dir.path(), config).await.unwrap();
    let client = client_at(runtime.socket_path().unwrap());
    (dir, runtime, client)
}

#[tokio::test]
async fn the_newest_dump_command_the_runtime_knows_is_used() {
    for (level, expected, sent) in [
        (3, Command::GenerateCoreDump3, vec![(1, 3)]),
        (2, Command::GenerateCoreDump2, vec![(1, 3), (1, 2)]),
        (1, Command::GenerateCoreDump, vec![(1, 3), (1, 2), (1, 1)]),
    ] {
        let (dir, runtime, client) =
            simulated(level, DumpBehaviour::Write { bytes: 100_000 }).await;
        let path = dir.path().join("core");
        let used = client
            .generate_core_dump(&path, DumpType::Mini, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(used, expected, "level {level}");
        assert_eq!(runtime.commands_received(), sent, "level {level}");
        let request = runtime.last_dump_request().unwrap();
        assert_eq!(request.path, path.to_str().unwrap());
        assert_eq!(
            (request.dump_type, request.flags),
            (1, 0),
            "Mini is Normal (1)"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 100_000);
        runtime.shutdown().await;
    }
}

#[tokio::test]
async fn dump_error_replies_carry_the_hresult_and_the_v3_message() {
    let failing = DumpBehaviour::Fail {
        hresult: hresult::E_FAIL,
        message: "Problem launching createdump (may not have execute permissions)".to_owned(),
    };
    let (dir, runtime, client) = simulated(3, failing.clone()).await;
    let error = client
        .generate_core_dump(
            &dir.path().join("core"),
            DumpType::Full,
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    match &error {
        DumpCommandError::Refused {
            command: Command::GenerateCoreDump3,
            code: RuntimeErrorCode::Failed,
            message: Some(message),
        } => assert!(message.contains("execute permissions"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        runtime.commands_received(),
        [(1, 3)],
        "no fallback on E_FAIL"
    );
    runtime.shutdown().await;

    let (dir, runtime, client) = simulated(2, failing).await;
    let error = client
        .generate_core_dump(
            &dir.path().join("core"),
            DumpType::Full,
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            DumpCommandError::Refused {
                command: Command::GenerateCoreDump2,
                code: RuntimeErrorCode::Failed,
                message: None,
            }
        ),
        "{error:?}"
    );
    runtime.shutdown().await;

    let (dir, runtime, client) = simulated(0, DumpBehaviour::Write { bytes: 64 }).await;
    let error = client
        .generate_core_dump(
            &dir.path().join("core"),
            DumpType::Full,
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            DumpCommandError::Refused {
                command: Command::GenerateCoreDump,
                code: RuntimeErrorCode::UnknownCommand,
                ..
            }
        ),
        "{error:?}"
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_dump_folder_dump_of_the_simulated_runtime_is_streamed_and_gone_from_the_folder() {
    let (dir, runtime, client) = simulated(3, DumpBehaviour::Write { bytes: 3 << 20 }).await;
    let folder = folder_in(dir.path());
    let dump = dump_of(&folder, client, std::process::id(), DumpType::WithHeap)
        .await
        .unwrap();
    assert_eq!(dump.command(), Command::GenerateCoreDump3);
    assert_eq!(runtime.last_dump_request().unwrap().dump_type, 2);
    assert!(
        listing(folder.path()).is_empty(),
        "the name is gone once open"
    );
    let mut stream = DumpStream::start(dump).unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next_chunk().await.unwrap() {
        bytes.extend_from_slice(&chunk);
    }
    assert_eq!(bytes.len(), 3 << 20);
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(
        bytes[64..],
        (0..=255u8).cycle().take((3 << 20) - 64).collect::<Vec<_>>()[..]
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_runtime_failure_with_a_message_is_reported_with_it_and_leaves_no_file() {
    let (dir, runtime, client) = simulated(
        3,
        DumpBehaviour::Fail {
            hresult: 0x8007_0005,
            message: "ptrace(ATTACH) failed: Operation not permitted".to_owned(),
        },
    )
    .await;
    let folder = folder_in(dir.path());
    let error = dump_of(&folder, client, std::process::id(), DumpType::Mini)
        .await
        .unwrap_err();
    assert_eq!(error.code().as_str(), "RuntimeError");
    assert!(
        error.to_string().contains("ptrace(ATTACH) failed"),
        "{error}"
    );
    assert!(listing(folder.path()).is_empty());
    runtime.shutdown().await;
}

#[tokio::test]
async fn real_mini_and_full_dumps_are_elf_cores_with_a_note_per_thread() {
    let target = TestTarget::start(Program::Worker, &[]);
    let dir = tempfile::tempdir().unwrap();
    let folder = folder_in(dir.path());
    let mut sizes = Vec::new();
    for dump_type in [DumpType::Mini, DumpType::Full] {
        let threads = thread_count(target.pid());
        let dump = dump_of(
            &folder,
            client_at(target.socket_path()),
            target.pid(),
            dump_type,
        )
        .await
        .unwrap_or_else(|error| panic!("{dump_type}: {error}"));
        assert_eq!(dump.command(), Command::GenerateCoreDump, "3.1 speaks v1");
        let out = dir.path().join(format!("{dump_type}.core"));
        let mut file = std::fs::File::create(&out).unwrap();
        let mut stream = DumpStream::start(dump).unwrap();
        while let Some(chunk) = stream.next_chunk().await.unwrap() {
            std::io::Write::write_all(&mut file, &chunk).unwrap();
        }
        let core = read_core(&out);
        assert_eq!(core.e_type, ET_CORE, "{dump_type}");
        assert!(
            core.prstatus_notes >= threads,
            "{dump_type}: {} NT_PRSTATUS notes for {threads} threads",
            core.prstatus_notes
        );
        sizes.push(std::fs::metadata(&out).unwrap().len());
        assert!(
            listing(folder.path()).is_empty(),
            "{dump_type}: folder empty"
        );
    }
    assert!(
        sizes[1] > sizes[0],
        "Full ({}) > Mini ({})",
        sizes[1],
        sizes[0]
    );
}

/// A copy of the cached runtime in a temporary folder, with `createdump` changed by `change`.
fn runtime_copy(change: impl FnOnce(&Path)) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let status = Process::new("cp")
        .arg("-a")
        .arg(TestTarget::dotnet_root())
        .arg(copy.path().join("bin"))
        .status()
        .unwrap();
    assert!(status.success(), "cp -a the runtime");
    let createdump = std::fs::read_dir(copy.path().join("bin/shared/Microsoft.NETCore.App"))
        .unwrap()
        .flatten()
        .map(|version| version.path().join("createdump"))
        .find(|path| path.exists())
        .expect("createdump in the runtime copy");
    change(&createdump);
    copy
}

#[tokio::test]
async fn createdump_without_its_execute_bit_is_named_with_the_fix() {
    let runtime = runtime_copy(|createdump| {
        std::fs::set_permissions(createdump, std::fs::Permissions::from_mode(0o644)).unwrap()
    });
    let target = TestTarget::start_on_runtime(&runtime.path().join("bin"), Program::Worker, &[]);
    let dir = tempfile::tempdir().unwrap();
    let folder = folder_in(dir.path());
    let error = dump_of(
        &folder,
        client_at(target.socket_path()),
        target.pid(),
        DumpType::Mini,
    )
    .await
    .unwrap_err();
    assert_eq!(error.code().as_str(), "CreatedumpNotExecutable", "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "chmod +x {}",
            runtime.path().join("bin").display()
        )) && message.contains("/createdump"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_createdump_is_named() {
    // A trimmed runtime: without the file, and without its entry in the framework's deps.json
    // (the host refuses to start a runtime whose listed files are missing).
    let runtime = runtime_copy(|createdump| {
        std::fs::remove_file(createdump).unwrap();
        let deps = createdump.with_file_name("Microsoft.NETCore.App.deps.json");
        let mut text = std::fs::read_to_string(&deps).unwrap();
        let start = text
            .find("\"runtimes/linux-x64/native/createdump\"")
            .unwrap();
        let end = start + text[start..].find("},").unwrap() + 2;
        text.replace_range(start..end, "");
        std::fs::write(&deps, text).unwrap();
    });
    let target = TestTarget::start_on_runtime(&runtime.path().join("bin"), Program::Worker, &[]);
    let dir = tempfile::tempdir().unwrap();
    let error = dump_of(
        &folder_in(dir.path()),
        client_at(target.socket_path()),
        target.pid(),
        DumpType::Mini,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, DumpError::CreatedumpMissing { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("createdump is missing"),
        "{error}"
    );
}

#[tokio::test]
async fn a_target_killed_while_dumping_fails_and_leaves_no_file() {
    let target = TestTarget::start(Program::BigHeap, &["512"]);
    let dir = tempfile::tempdir().unwrap();
    let folder = folder_in(dir.path());
    let capture = {
        let folder = folder.clone();
        let client = client_at(target.socket_path());
        let pid = target.pid();
        tokio::spawn(async move { dump_of(&folder, client, pid, DumpType::Full).await })
    };
    // Kill it once createdump has started writing.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while listing(folder.path()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no dump file appeared"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    target.signal(libc::SIGKILL);
    let error = capture.await.unwrap().unwrap_err();
    assert!(matches!(error, DumpError::TargetGone { .. }), "{error}");
    assert!(
        listing(folder.path()).is_empty(),
        "{:?}",
        listing(folder.path())
    );
}

#[test]
fn diagmon_dump_writes_the_file_and_says_what_dotnet_dump_says() {
    let target = TestTarget::start(Program::Worker, &[]);
    let dir = tempfile::tempdir().unwrap();
    let dumps = dir.path().join("dumps");
    let config = dir.path().join("diagmon.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndump_temp_folder = {:?}\n",
            dumps.display().to_string()
        ),
    )
    .unwrap();
    let out = dir.path().join("mini.core");
    let output = Process::new(monitor_binary())
        .args(["dump", "--type", "mini", "--pid"])
        .arg(target.pid().to_string())
        .arg("--socket-dir")
        .arg(target.tmpdir())
        .arg("--config")
        .arg(&config)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("Writing dump to {}", out.display()));
    let size = std::fs::metadata(&out).unwrap().len();
    assert!(
        lines[1].starts_with(&format!("Wrote {size} bytes")),
        "{stdout}"
    );
    assert_eq!(lines.last(), Some(&"Complete"));
    assert_eq!(read_core(&out).e_type, ET_CORE);
    assert!(listing(&dumps).is_empty());

    let output = Process::new(monitor_binary())
        .args(["dump", "--type", "Huge", "--pid", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Huge") && stderr.contains("Mini, Full, WithHeap or Triage"),
        "{stderr}"
    );
}

// ---- GET /dump through the real binary -------------------------------------------------------

/// A monitor without auth that sees the targets in `socket_dir`, with its dump folder in `dumps`
/// and `extra` configuration.
fn monitor_with(socket_dir: &Path, dumps: &Path, extra: &str) -> Monitor {
    Monitor::start(
        &format!(
            "socket_dir = {:?}\n{extra}\n[storage]\ndump_temp_folder = {:?}\n",
            socket_dir.display().to_string(),
            dumps.display().to_string()
        ),
        &["--no-auth"],
    )
}

/// Streams a response body into `path`; returns its bytes' SHA-256 and length.
async fn save_body(response: reqwest::Response, path: &Path) -> (String, u64) {
    use sha2::Digest;
    let mut file = std::fs::File::create(path).unwrap();
    let mut hasher = sha2::Sha256::new();
    let mut length = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("a complete body");
        hasher.update(&chunk);
        length += chunk.len() as u64;
        std::io::Write::write_all(&mut file, &chunk).unwrap();
    }
    let hash = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (hash, length)
}

#[tokio::test]
async fn get_dump_streams_mini_and_full_cores_that_match_their_operation() {
    let target = TestTarget::start(Program::Worker, &[]);
    let dir = tempfile::tempdir().unwrap();
    let dumps = dir.path().join("dumps");
    let monitor = monitor_with(target.tmpdir(), &dumps, "");
    let client = reqwest::Client::new();
    let mut sizes = Vec::new();
    for dump_type in ["mini", "Full"] {
        let threads = thread_count(target.pid());
        let response = client
            .get(monitor.url(&format!(
                "/dump?pid={}&type={dump_type}&tags=a,b",
                target.pid()
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{dump_type}");
        assert_eq!(
            response.headers()["content-type"],
            "application/octet-stream"
        );
        let disposition = response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_owned();
        let name = disposition
            .strip_prefix("attachment; filename=core_")
            .unwrap_or_default();
        assert!(
            name.len() == 19
                && name.as_bytes()[8] == b'_'
                && name.as_bytes()[15] == b'_'
                && name.replace('_', "").bytes().all(|b| b.is_ascii_digit()),
            "{disposition}"
        );
        let location = location_of(&response);
        let out = dir.path().join(format!("{dump_type}.core"));
        let (sha256, length) = save_body(response, &out).await;
        let core = read_core(&out);
        assert_eq!(core.e_type, ET_CORE, "{dump_type}");
        assert!(
            core.prstatus_notes >= threads,
            "{dump_type}: {} NT_PRSTATUS notes for {threads} threads",
            core.prstatus_notes
        );
        let operation = final_operation(&client, &location, OPERATION_WAIT).await;
        assert_eq!(operation["status"], "Succeeded", "{operation}");
        assert_eq!(operation["isStoppable"], false);
        assert_eq!(operation["kind"], "dump");
        assert_eq!(
            operation["summary"]["sha256"],
            sha256.as_str(),
            "{operation}"
        );
        assert_eq!(operation["summary"]["bytes"], length);
        assert_eq!(operation["bytesCaptured"], length);
        assert_eq!(operation["tags"], json!(["a", "b"]));
        assert!(listing(&dumps).is_empty(), "{:?}", listing(&dumps));
        sizes.push(length);
    }
    assert!(
        sizes[1] > sizes[0],
        "Full ({}) > Mini ({})",
        sizes[1],
        sizes[0]
    );
}

#[tokio::test]
async fn get_dump_with_egress_stores_what_the_summary_describes() {
    let moto = Moto::start();
    moto.create_bucket("dumps");
    let target = TestTarget::start(Program::Worker, &[]);
    let dir = tempfile::tempdir().unwrap();
    let dumps = dir.path().join("dumps");
    let stored = dir.path().join("stored");
    std::fs::create_dir(&stored).unwrap();
    let providers = format!(
        "[egress.providers.files]\ncomponent = \"filesystem\"\ndirectory = {:?}\n\
         [egress.providers.s3]\ncomponent = \"object-storage\"\n\
         object_store = {{ url = \"s3://dumps/e2e\", endpoint = \"{}\", allow_http = true, region = \"us-east-1\", access_key_id = \"{}\", secret_access_key = \"{}\" }}\n",
        stored.display().to_string(),
        moto.endpoint(),
        moto.access_key_id,
        moto.secret_access_key
    );
    let monitor = monitor_with(target.tmpdir(), &dumps, &providers);
    let client = reqwest::Client::new();
    for provider in ["files", "s3"] {
        let response = client
            .get(monitor.url(&format!(
                "/dump?pid={}&type=Mini&egressProvider={provider}",
                target.pid()
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{provider}");
        let operation = final_operation(&client, &location_of(&response), OPERATION_WAIT).await;
        assert_eq!(operation["status"], "Succeeded", "{provider}: {operation}");
        assert_eq!(operation["egressProviderName"], provider);
        let location = operation["resourceLocation"].as_str().unwrap();
        let bytes = if provider == "files" {
            std::fs::read(location).unwrap()
        } else {
            let keys = moto.list("dumps", "e2e/");
            assert_eq!(keys.len(), 1, "{keys:?}");
            assert!(keys[0].contains("core_"), "{keys:?}");
            moto.get("dumps", &keys[0]).unwrap().bytes
        };
        assert_eq!(&bytes[..4], b"\x7fELF", "{provider}");
        assert_eq!(
            operation["summary"]["sha256"],
            sha256_hex(&bytes).as_str(),
            "{provider}"
        );
        assert_eq!(operation["summary"]["bytes"], bytes.len());
        assert!(listing(&dumps).is_empty());
    }
}

#[tokio::test]
async fn bad_dump_requests_are_problems_that_say_what_to_do() {
    let target = TestTarget::start(Program::BigHeap, &["256"]);
    let dir = tempfile::tempdir().unwrap();
    let dumps = dir.path().join("dumps");
    let monitor = monitor_with(target.tmpdir(), &dumps, "");
    let client = reqwest::Client::new();
    let problem = |response: reqwest::Response| async move {
        let status = response.status();
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        (status, response.json::<Value>().await.unwrap())
    };

    let (status, body) = problem(
        client
            .get(monitor.url(&format!("/dump?pid={}&type=Huge", target.pid())))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["errors"]["type"][0].as_str().unwrap().contains("Huge"),
        "{body}"
    );

    let (status, body) = problem(
        client
            .get(monitor.url("/dump?pid=999999999"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Two at once of one process: the second is refused while the first is written.
    let first = {
        let client = client.clone();
        let url = monitor.url(&format!("/dump?pid={}&type=Full", target.pid()));
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while listing(&dumps).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first dump did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = problem(
        client
            .get(monitor.url(&format!("/dump?pid={}&type=Mini", target.pid())))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let first = first.await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let (_, length) = save_body(first, &dir.path().join("first.core")).await;
    assert!(length > 256 << 20, "{length}");
    assert!(listing(&dumps).is_empty());
}

#[tokio::test]
async fn get_dump_names_createdump_without_its_execute_bit_and_the_fix() {
    let runtime = runtime_copy(|createdump| {
        std::fs::set_permissions(createdump, std::fs::Permissions::from_mode(0o644)).unwrap()
    });
    let target = TestTarget::start_on_runtime(&runtime.path().join("bin"), Program::Worker, &[]);
    let dir = tempfile::tempdir().unwrap();
    let monitor = monitor_with(target.tmpdir(), &dir.path().join("dumps"), "");
    let response = reqwest::get(monitor.url(&format!("/dump?pid={}", target.pid())))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("createdump") && detail.contains("chmod +x"),
        "{detail}"
    );
    let operations: Value = get_json(&reqwest::Client::new(), monitor.url("/operations")).await;
    let operation = get_json(
        &reqwest::Client::new(),
        monitor.url(&format!(
            "/operations/{}",
            operations[0]["operationId"].as_str().unwrap()
        )),
    )
    .await;
    assert_eq!(operation["status"], "Failed");
    assert_eq!(
        operation["error"]["code"], "CreatedumpNotExecutable",
        "{operation}"
    );
}

#[tokio::test]
async fn a_target_killed_during_an_egressed_dump_fails_it_and_leaves_nothing() {
    let target = TestTarget::start(Program::BigHeap, &["512"]);
    let dir = tempfile::tempdir().unwrap();
    let dumps = dir.path().join("dumps");
    let stored = dir.path().join("stored");
    std::fs::create_dir(&stored).unwrap();
    let monitor = monitor_with(
        target.tmpdir(),
        &dumps,
        &format!(
            "[egress.providers.files]\ncomponent = \"filesystem\"\ndirectory = {:?}\n",
            stored.display().to_string()
        ),
    );
    let client = reqwest::Client::new();
    let response = client
        .get(monitor.url(&format!(
            "/dump?pid={}&type=Full&egressProvider=files",
            target.pid()
        )))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while listing(&dumps).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dump did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    target.signal(libc::SIGKILL);
    assert_eq!(status, StatusCode::ACCEPTED);
    let operation = final_operation(&client, &location_of(&response), OPERATION_WAIT).await;
    assert_eq!(operation["status"], "Failed", "{operation}");
    assert_eq!(operation["error"]["code"], "TargetGone", "{operation}");
    assert!(listing(&dumps).is_empty(), "{:?}", listing(&dumps));
    assert!(listing(&stored).is_empty(), "{:?}", listing(&stored));
}

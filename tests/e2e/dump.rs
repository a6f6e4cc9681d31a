//! Process dumps end to end: the Dump command set against the simulated runtime (GenerateCoreDump
//! 2 and 3, error replies), and real dumps of a real .NET Core 3.1 target through the dump folder,
//! `diagmon dump` and `GET /dump` of the real binary. Needs `tests/run` (installs the target and
//! builds the binary).

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

use diagmon::config::StorageConfig;
use diagmon::diagnostics::dump::{DumpCommandError, DumpType};
use diagmon::diagnostics::{Command, DiagnosticsClient, Endpoint, RuntimeErrorCode, Timeouts};
use diagmon::dumps::{DumpError, DumpFolder, DumpStream};
use diagmon_tests::monitor::monitor_binary;
use diagmon_tests::simulated_runtime::{
    DumpBehaviour, SimulatedRuntime, SimulatedRuntimeConfig, hresult,
};
use diagmon_tests::target::{Program, TestTarget};
use tokio_util::sync::CancellationToken;

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
    std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count()
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

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A dump folder in a fresh temporary directory.
fn folder_in(dir: &Path) -> std::sync::Arc<DumpFolder> {
    DumpFolder::open(&StorageConfig {
        dump_temp_folder: Some(dir.join("dumps")),
        ..StorageConfig::default()
    })
    .unwrap()
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
        assert_eq!((request.dump_type, request.flags), (1, 0), "Mini is Normal (1)");
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
        .generate_core_dump(&dir.path().join("core"), DumpType::Full, Duration::from_secs(10))
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
    assert_eq!(runtime.commands_received(), [(1, 3)], "no fallback on E_FAIL");
    runtime.shutdown().await;

    let (dir, runtime, client) = simulated(2, failing).await;
    let error = client
        .generate_core_dump(&dir.path().join("core"), DumpType::Full, Duration::from_secs(10))
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
        .generate_core_dump(&dir.path().join("core"), DumpType::Full, Duration::from_secs(10))
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
    let dump = folder
        .capture(client, std::process::id(), DumpType::WithHeap, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(dump.command(), Command::GenerateCoreDump3);
    assert_eq!(runtime.last_dump_request().unwrap().dump_type, 2);
    assert!(listing(folder.path()).is_empty(), "the name is gone once open");
    let mut stream = DumpStream::start(dump).unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next_chunk().await.unwrap() {
        bytes.extend_from_slice(&chunk);
    }
    assert_eq!(bytes.len(), 3 << 20);
    assert_eq!(stream.digest().unwrap().sha256, sha256_hex(&bytes));
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
    let error = folder
        .capture(client, std::process::id(), DumpType::Mini, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "RuntimeError");
    assert!(error.to_string().contains("ptrace(ATTACH) failed"), "{error}");
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
        let dump = folder
            .capture(
                client_at(target.socket_path()),
                target.pid(),
                dump_type,
                &CancellationToken::new(),
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
        assert!(listing(folder.path()).is_empty(), "{dump_type}: folder empty");
    }
    assert!(sizes[1] > sizes[0], "Full ({}) > Mini ({})", sizes[1], sizes[0]);
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
    let target =
        TestTarget::start_on_runtime(&runtime.path().join("bin"), Program::Worker, &[]);
    let dir = tempfile::tempdir().unwrap();
    let folder = folder_in(dir.path());
    let error = folder
        .capture(
            client_at(target.socket_path()),
            target.pid(),
            DumpType::Mini,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), "CreatedumpNotExecutable", "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("chmod +x {}", runtime.path().join("bin").display()))
            && message.contains("/createdump"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_createdump_is_named() {
    let runtime = runtime_copy(|createdump| std::fs::remove_file(createdump).unwrap());
    let target =
        TestTarget::start_on_runtime(&runtime.path().join("bin"), Program::Worker, &[]);
    let dir = tempfile::tempdir().unwrap();
    let error = folder_in(dir.path())
        .capture(
            client_at(target.socket_path()),
            target.pid(),
            DumpType::Mini,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, DumpError::CreatedumpMissing { .. }), "{error}");
    assert!(error.to_string().contains("createdump is missing"), "{error}");
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
        tokio::spawn(async move {
            folder
                .capture(client, pid, DumpType::Full, &CancellationToken::new())
                .await
        })
    };
    // Kill it once createdump has started writing.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while listing(folder.path()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no dump file appeared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    target.signal(libc::SIGKILL);
    let error = capture.await.unwrap().unwrap_err();
    assert!(matches!(error, DumpError::TargetGone { .. }), "{error}");
    assert!(listing(folder.path()).is_empty(), "{:?}", listing(folder.path()));
}

#[test]
fn diagmon_dump_writes_the_file_and_says_what_dotnet_dump_says() {
    let target = TestTarget::start(Program::Worker, &[]);
    let dir = tempfile::tempdir().unwrap();
    let dumps = dir.path().join("dumps");
    let config = dir.path().join("diagmon.toml");
    std::fs::write(
        &config,
        format!("[storage]\ndump_temp_folder = {:?}\n", dumps.display().to_string()),
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
    assert!(lines[1].starts_with(&format!("Wrote {size} bytes")), "{stdout}");
    assert_eq!(lines.last(), Some(&"Complete"));
    assert_eq!(read_core(&out).e_type, ET_CORE);
    assert!(listing(&dumps).is_empty());

    let output = Process::new(monitor_binary())
        .args(["dump", "--type", "Huge", "--pid", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Huge") && stderr.contains("Mini, Full, WithHeap or Triage"), "{stderr}");
}

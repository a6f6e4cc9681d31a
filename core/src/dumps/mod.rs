//! Process dumps: the dump folder, the checks before a dump, and the dump file's life.
//!
//! The runtime writes a dump itself (through `createdump`) at a path the target resolves, so
//! diagmon and the target must share a folder ([`DumpFolder`]). One dump goes like this:
//! 1. the target is checked: alive, `createdump` present and executable, the folder visible at
//!    the same path and writable by the target's user, enough free space ([`checks`]);
//! 2. the runtime is asked for the dump at `{folder}/diagmon-dump-{pid}-{id}` and diagmon waits
//!    for its answer (or the target's death) on a task of its own, which an abandoned request
//!    does not stop: the runtime writes the file anyway, and that task deletes it once the
//!    runtime is done;
//! 3. on success the file is opened and its name removed at once, so nothing is left behind
//!    whatever happens next (a failed upload, a cancel, a crash of diagmon): the open file is
//!    streamed ([`DumpStream`]) and its space freed when it is closed;
//! 4. on failure the file (if any) is deleted once no `createdump` writes it any more.
//!
//! Files are marked by their name; at start-up the ones older than
//! `storage.dump_leftover_max_age_seconds` (left by a killed diagmon) are removed. One dump runs
//! per process at a time.

mod artifact;
pub mod checks;
mod stream;

use std::collections::BTreeSet;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::config::StorageConfig;
use crate::diagnostics::dump::{DumpCommandError, DumpType};
use crate::diagnostics::{Command, DiagnosticsClient, DiagnosticsError, RuntimeErrorCode};
use crate::operations::{ErrorCode, OperationError};
use crate::procfs;

pub use artifact::{DumpSource, DumpSpec};
pub use stream::{CHUNK_SIZE, CHUNKS_IN_FLIGHT, DumpStream};

/// The start of every dump file's name: what marks a file as diagmon's.
pub const FILE_PREFIX: &str = "diagmon-dump-";

/// How long diagmon waits for `createdump` to let go of a failed dump's file.
const WRITER_WAIT: Duration = Duration::from_secs(10);

/// How often the target's liveness is checked while the runtime writes a dump.
const TARGET_POLL: Duration = Duration::from_millis(100);

/// Why a dump could not be made, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// A dump of this process is still being written.
    #[error(
        "a dump of process {pid} is still being written; the runtime writes one dump at a time, try again when it is done"
    )]
    InProgress {
        /// The process.
        pid: u32,
    },
    /// The target process exited (or was killed) before or while the dump was written.
    #[error("process {pid} is gone: it exited or was killed, so no dump can be written")]
    TargetGone {
        /// The process.
        pid: u32,
    },
    /// The runtime's `createdump` does not exist.
    #[error(
        "createdump is missing: the runtime needs {path} to write dumps; install the full runtime (it ships createdump next to libcoreclr.so)"
    )]
    CreatedumpMissing {
        /// Where the runtime looks for it, in the target's file system.
        path: PathBuf,
    },
    /// The runtime's `createdump` lacks its execute bit.
    #[error(
        "createdump is not executable: {path} has no execute permission for the target's user (unpacking the runtime from a zip or wheel drops it); fix it with `chmod +x {path}`"
    )]
    CreatedumpNotExecutable {
        /// Its path in the target's file system.
        path: PathBuf,
    },
    /// The target cannot create files in the dump folder.
    #[error(
        "the dump folder {folder} is not writable by process {pid}, which runs as user {uid} (the folder belongs to user {owner}, mode {mode:o}); run the target as the same user as diagmon, or set `storage.dump_temp_folder` to a folder both users can write"
    )]
    FolderNotWritable {
        /// The folder.
        folder: PathBuf,
        /// The process.
        pid: u32,
        /// The target's effective user.
        uid: u32,
        /// The folder's owner.
        owner: u32,
        /// The folder's permission bits.
        mode: u32,
    },
    /// The target does not see the dump folder at the same path (another container).
    #[error(
        "the dump folder {folder} is not the same folder in process {pid}'s file system; mount the same volume at the same path in both containers and set `storage.dump_temp_folder` to that path"
    )]
    FolderNotShared {
        /// The folder.
        folder: PathBuf,
        /// The process.
        pid: u32,
    },
    /// Not enough free space for a dump.
    #[error(
        "not enough free space for a dump in {folder}: {free} bytes free, at least {minimum} needed (`storage.dump_min_free_mib`); free some space or point `storage.dump_temp_folder` at a larger disk"
    )]
    NotEnoughSpace {
        /// The folder.
        folder: PathBuf,
        /// Bytes free.
        free: u64,
        /// Bytes required.
        minimum: u64,
    },
    /// The dump folder itself is unusable.
    #[error("the dump folder {folder}: {source}")]
    Folder {
        /// The folder.
        folder: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The runtime refused or failed to write the dump.
    #[error("the runtime of process {pid} could not write the dump: {source}{hint}")]
    Runtime {
        /// The process.
        pid: u32,
        /// What the runtime answered.
        source: DumpCommandError,
        /// What to check, when known.
        hint: &'static str,
    },
    /// The runtime said the dump is written, but the file is not a whole dump.
    #[error("the dump is unusable: {0}")]
    Invalid(String),
    /// diagmon's own machinery failed.
    #[error("diagmon failed internally: {0}")]
    Internal(String),
}

/// Said when createdump failed and none of the checks found why.
const CREATEDUMP_HINT: &str = "; createdump could not read the process: in a container it needs the SYS_PTRACE capability, and the kernel's ptrace_scope (/proc/sys/kernel/yama/ptrace_scope) may forbid it";

impl DumpError {
    /// The operation error code, as `GET /operations/{id}` shows it.
    pub fn code(&self) -> ErrorCode {
        match self {
            DumpError::InProgress { .. } => ErrorCode::DumpInProgress,
            DumpError::TargetGone { .. } => ErrorCode::TargetGone,
            DumpError::CreatedumpMissing { .. } => ErrorCode::CreatedumpMissing,
            DumpError::CreatedumpNotExecutable { .. } => ErrorCode::CreatedumpNotExecutable,
            DumpError::FolderNotWritable { .. } => ErrorCode::DumpFolderNotWritable,
            DumpError::FolderNotShared { .. } => ErrorCode::DumpFolderNotShared,
            DumpError::NotEnoughSpace { .. } => ErrorCode::NotEnoughSpace,
            DumpError::Folder { .. } => ErrorCode::DumpFolderError,
            DumpError::Runtime {
                source: DumpCommandError::Diagnostics(DiagnosticsError::Timeout { .. }),
                ..
            } => ErrorCode::RuntimeTimeout,
            DumpError::Runtime { .. } => ErrorCode::RuntimeError,
            DumpError::Invalid(_) => ErrorCode::DumpInvalid,
            DumpError::Internal(_) => ErrorCode::InternalError,
        }
    }
}

impl From<DumpError> for OperationError {
    fn from(error: DumpError) -> Self {
        OperationError::new(error.code(), error.to_string())
    }
}

/// The folder the runtime writes dumps into, and the dumps under way there.
#[derive(Debug)]
pub struct DumpFolder {
    path: PathBuf,
    min_free: u64,
    timeout: Duration,
    /// Processes with a dump under way.
    busy: Mutex<BTreeSet<u32>>,
    /// Files being written, and their count for [`DumpFolder::shutdown`].
    writing: Mutex<BTreeSet<PathBuf>>,
    writing_count: watch::Sender<usize>,
}

/// A dump the runtime finished: its file, open, with its name already removed.
#[derive(Debug)]
pub struct DumpFile {
    file: std::fs::File,
    size: u64,
    command: Command,
}

impl DumpFile {
    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The Dump command the runtime accepted (which version it speaks).
    pub fn command(&self) -> Command {
        self.command
    }
}

impl DumpFolder {
    /// Opens (and creates, 0700, if missing) the configured folder, or the private default one,
    /// and removes leftovers older than the configured age.
    pub fn open(config: &StorageConfig) -> Result<Arc<DumpFolder>, DumpError> {
        let path = match &config.dump_temp_folder {
            Some(path) => {
                create_private(path)?;
                path.clone()
            }
            None => default_folder()?,
        };
        let (writing_count, _) = watch::channel(0);
        let folder = DumpFolder {
            path,
            min_free: config.dump_min_free_mib.saturating_mul(1 << 20),
            timeout: Duration::from_secs(config.dump_timeout_seconds),
            busy: Mutex::default(),
            writing: Mutex::default(),
            writing_count,
        };
        let removed = folder.sweep(Duration::from_secs(config.dump_leftover_max_age_seconds));
        if removed > 0 {
            tracing::info!(folder = %folder.path.display(), removed, "removed dumps left behind by an earlier run");
        }
        Ok(Arc::new(folder))
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes diagmon's dump files last written longer than `max_age` ago; returns how many.
    pub fn sweep(&self, max_age: Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return 0;
        };
        let now = SystemTime::now();
        entries
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(FILE_PREFIX))
            .filter(|entry| {
                entry.metadata().is_ok_and(|meta| {
                    meta.is_file()
                        && meta
                            .modified()
                            .ok()
                            .and_then(|modified| now.duration_since(modified).ok())
                            .is_some_and(|age| age > max_age)
                })
            })
            .filter(|entry| std::fs::remove_file(entry.path()).is_ok())
            .count()
    }

    /// Checks that a dump of `pid` can be written now (see [`checks`]).
    pub fn check(&self, pid: u32) -> Result<(), DumpError> {
        let credentials =
            checks::Credentials::of_process(pid).ok_or(DumpError::TargetGone { pid })?;
        if !procfs::is_alive(pid) {
            return Err(DumpError::TargetGone { pid });
        }
        checks::check_createdump(pid, &credentials)?;
        checks::check_folder_access(pid, &credentials, &self.path)?;
        checks::check_free_space(&self.path, self.min_free)
    }

    /// Starts a dump of `pid` through `client`: checks that it can be written (an error here is
    /// immediate), then asks the runtime on a task of its own. [`PendingDump::written`] waits for
    /// the file; dropping the [`PendingDump`] abandons the dump (the file is deleted once the
    /// runtime is done with it).
    pub fn begin(
        self: &Arc<Self>,
        client: DiagnosticsClient,
        pid: u32,
        dump_type: DumpType,
    ) -> Result<PendingDump, DumpError> {
        let claim = self.claim(pid)?;
        self.check(pid)?;
        let path = self
            .path
            .join(format!("{FILE_PREFIX}{pid}-{}", Uuid::new_v4().simple()));
        let writing = self.start_writing(path.clone());
        let (sender, receiver) = oneshot::channel();
        let folder = self.clone();
        tokio::spawn(async move {
            let result = folder.write(&client, pid, &path, dump_type).await;
            // Nobody listening (abandoned): a finished dump's file is closed with `result`.
            let _ = sender.send(result);
            drop(writing);
            drop(claim);
        });
        Ok(PendingDump { receiver })
    }

    /// Waits (at most `grace`) for the runtimes still writing dumps, then deletes whatever is
    /// left of their files: for a shutdown.
    pub async fn shutdown(&self, grace: Duration) {
        let mut count = self.writing_count.subscribe();
        if tokio::time::timeout(grace, count.wait_for(|count| *count == 0))
            .await
            .is_err()
        {
            tracing::warn!("dumps still being written after {grace:?}; deleting their files");
        }
        for path in self.lock_writing().iter() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Asks the runtime for the dump and turns its answer into an open file or an error.
    async fn write(
        &self,
        client: &DiagnosticsClient,
        pid: u32,
        path: &Path,
        dump_type: DumpType,
    ) -> Result<DumpFile, DumpError> {
        let started = Instant::now();
        let answer = tokio::select! {
            answer = client.generate_core_dump(path, dump_type, self.timeout) => answer,
            // createdump inherits the runtime's end of the connection, so a killed target's
            // connection stays open while createdump runs: watch the process itself.
            () = target_exit(pid) => {
                release_file(path, true).await;
                return Err(DumpError::TargetGone { pid });
            }
        };
        match answer {
            Ok(command) => {
                let opened = open_written(path, command);
                if opened.is_err() {
                    release_file(path, false).await;
                }
                if let Ok(dump) = &opened {
                    tracing::info!(pid, %command, bytes = dump.size, elapsed = ?started.elapsed(), "dump written");
                }
                opened
            }
            Err(error) => {
                release_file(path, !procfs::is_alive(pid)).await;
                Err(self.diagnose(pid, error))
            }
        }
    }

    /// Says why the runtime failed: the target died, a check that now fails, or the runtime's
    /// own answer.
    fn diagnose(&self, pid: u32, error: DumpCommandError) -> DumpError {
        if !procfs::is_alive(pid) {
            return DumpError::TargetGone { pid };
        }
        let failed = matches!(
            error,
            DumpCommandError::Refused {
                code: RuntimeErrorCode::Failed,
                ..
            }
        );
        if failed && let Err(reason) = self.check(pid) {
            return reason;
        }
        DumpError::Runtime {
            pid,
            source: error,
            hint: if failed { CREATEDUMP_HINT } else { "" },
        }
    }

    fn claim(self: &Arc<Self>, pid: u32) -> Result<ProcessClaim, DumpError> {
        if !self.lock_busy().insert(pid) {
            return Err(DumpError::InProgress { pid });
        }
        Ok(ProcessClaim {
            folder: self.clone(),
            pid,
        })
    }

    fn start_writing(self: &Arc<Self>, path: PathBuf) -> Writing {
        let mut writing = self.lock_writing();
        writing.insert(path.clone());
        self.writing_count.send_replace(writing.len());
        Writing {
            folder: self.clone(),
            path,
        }
    }

    fn lock_busy(&self) -> MutexGuard<'_, BTreeSet<u32>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_writing(&self) -> MutexGuard<'_, BTreeSet<PathBuf>> {
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A dump the runtime is writing.
#[derive(Debug)]
pub struct PendingDump {
    receiver: oneshot::Receiver<Result<DumpFile, DumpError>>,
}

impl PendingDump {
    /// Waits until the runtime has written the dump; returns the open file.
    pub async fn written(self) -> Result<DumpFile, DumpError> {
        self.receiver.await.unwrap_or_else(|_| {
            Err(DumpError::Internal(
                "the dump task ended without a result".to_owned(),
            ))
        })
    }
}

/// Resolves once process `pid` has exited (or is a zombie).
async fn target_exit(pid: u32) {
    while procfs::is_alive(pid) {
        tokio::time::sleep(TARGET_POLL).await;
    }
}

/// A process's dump slot, released when dropped.
struct ProcessClaim {
    folder: Arc<DumpFolder>,
    pid: u32,
}

impl Drop for ProcessClaim {
    fn drop(&mut self) {
        self.folder.lock_busy().remove(&self.pid);
    }
}

/// A dump file the runtime may be writing; forgotten when dropped.
struct Writing {
    folder: Arc<DumpFolder>,
    path: PathBuf,
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut writing = self.folder.lock_writing();
        writing.remove(&self.path);
        self.folder.writing_count.send_replace(writing.len());
    }
}

/// Opens the dump the runtime reported written, removes its name and checks that it is a core
/// file.
fn open_written(path: &Path, command: Command) -> Result<DumpFile, DumpError> {
    let file = std::fs::File::open(path).map_err(|error| {
        DumpError::Invalid(format!(
            "the runtime reported the dump written, but {} cannot be opened ({error}); does the target see `storage.dump_temp_folder` at the same path?",
            path.display()
        ))
    })?;
    let _ = std::fs::remove_file(path);
    let size = file
        .metadata()
        .map_err(|error| DumpError::Invalid(format!("cannot read the dump's size: {error}")))?
        .len();
    if size == 0 {
        return Err(DumpError::Invalid(
            "the runtime reported success but the dump file is empty".to_owned(),
        ));
    }
    let mut magic = [0u8; 4];
    if file.read_exact_at(&mut magic, 0).is_err() || &magic != b"\x7fELF" {
        return Err(DumpError::Invalid(format!(
            "the file the runtime wrote is not an ELF core file (it starts with {magic:02X?})"
        )));
    }
    Ok(DumpFile {
        file,
        size,
        command,
    })
}

/// Deletes a failed dump's file and waits (at most [`WRITER_WAIT`]) until no `createdump -f PATH`
/// writes it any more, so that its space is free too. `createdump` may outlive the runtime's
/// answer; when the target is gone, one still running after that wait is stuck on the dead
/// process (it keeps the dead target's threads attached) and is killed.
async fn release_file(path: &Path, target_gone: bool) {
    let _ = std::fs::remove_file(path);
    let deadline = Instant::now() + WRITER_WAIT;
    let needle = path.as_os_str().as_encoded_bytes().to_vec();
    loop {
        let search = needle.clone();
        let writers = tokio::task::spawn_blocking(move || processes_mentioning(&search))
            .await
            .unwrap_or_default();
        if writers.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            if target_gone {
                for writer in writers {
                    tracing::warn!(pid = writer, path = %path.display(), "killing a createdump stuck on a process that is gone");
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    unsafe { libc::kill(writer as libc::pid_t, libc::SIGKILL) };
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // createdump may have created the file after the first removal.
    let _ = std::fs::remove_file(path);
}

/// The processes that have `needle` among their command-line arguments.
fn processes_mentioning(needle: &[u8]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == needle))
        })
        .collect()
}

/// `diagmon-dumps-{uid}` under the system temporary directory, private to diagmon's user.
fn default_folder() -> Result<PathBuf, DumpError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let path = std::env::temp_dir().join(format!("diagmon-dumps-{uid}"));
    create_private(&path)?;
    let folder_error = |source: std::io::Error| DumpError::Folder {
        folder: path.clone(),
        source,
    };
    let metadata = std::fs::symlink_metadata(&path).map_err(folder_error)?;
    if !metadata.is_dir() || metadata.uid() != uid {
        return Err(folder_error(std::io::Error::other(format!(
            "it exists but is not a directory of user {uid}; remove it, or set `storage.dump_temp_folder`"
        ))));
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .map_err(folder_error)?;
    }
    Ok(path)
}

/// Creates `path` (and its parents) with mode 0700 when it does not exist.
fn create_private(path: &Path) -> Result<(), DumpError> {
    if path.to_string_lossy().contains('%') {
        return Err(DumpError::Folder {
            folder: path.to_owned(),
            source: std::io::Error::other("the path contains `%`, which createdump expands"),
        });
    }
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(source) => Err(DumpError::Folder {
            folder: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_at(path: &Path) -> Arc<DumpFolder> {
        DumpFolder::open(&StorageConfig {
            dump_temp_folder: Some(path.to_owned()),
            ..StorageConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn a_missing_folder_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b");
        let folder = folder_at(&path);
        let mode = std::fs::metadata(folder.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn start_up_removes_only_old_marked_files() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        let write = |name: &str, modified: SystemTime| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"x").unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(modified)
                .unwrap();
            path
        };
        let leftover = write("diagmon-dump-1-abc", old);
        let fresh = write("diagmon-dump-2-def", SystemTime::now());
        let foreign = write("core.1234", old);
        folder_at(dir.path());
        assert!(!leftover.exists());
        assert!(fresh.exists() && foreign.exists());
    }

    #[test]
    fn one_dump_per_process() {
        let dir = tempfile::tempdir().unwrap();
        let folder = folder_at(dir.path());
        let claim = folder.claim(7).unwrap();
        assert!(matches!(
            folder.claim(7),
            Err(DumpError::InProgress { pid: 7 })
        ));
        let _other = folder.claim(8).unwrap();
        drop(claim);
        folder.claim(7).unwrap();
    }

    #[test]
    fn written_files_are_checked_and_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        std::fs::write(&path, b"\x7fELF rest").unwrap();
        let dump = open_written(&path, Command::GenerateCoreDump).unwrap();
        assert_eq!(dump.size(), 9);
        assert!(!path.exists(), "the name is removed once the file is open");
        std::fs::write(&path, b"").unwrap();
        assert!(open_written(&path, Command::GenerateCoreDump).is_err());
        std::fs::write(&path, b"MZ..").unwrap();
        let error = open_written(&path, Command::GenerateCoreDump).unwrap_err();
        assert!(error.to_string().contains("not an ELF core"), "{error}");
        assert!(open_written(&dir.path().join("none"), Command::GenerateCoreDump).is_err());
    }

    #[tokio::test]
    async fn a_stream_reads_every_byte_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let mut content = b"\x7fELF".to_vec();
        content.extend((0..CHUNK_SIZE * 2 + 17).map(|i| i as u8));
        std::fs::write(&path, &content).unwrap();
        let dump = open_written(&path, Command::GenerateCoreDump3).unwrap();
        let mut stream = DumpStream::start(dump).unwrap();
        assert_eq!(stream.size(), content.len() as u64);
        let mut read = Vec::new();
        while let Some(chunk) = stream.next_chunk().await.unwrap() {
            assert!(chunk.len() <= CHUNK_SIZE);
            read.extend_from_slice(&chunk);
        }
        assert_eq!(read, content);
    }

    #[test]
    fn a_process_mentioning_a_path_is_found() {
        let me = std::fs::read("/proc/self/cmdline").unwrap();
        let first = me.split(|b| *b == 0).next().unwrap().to_vec();
        assert!(processes_mentioning(&first).contains(&std::process::id()));
        assert!(processes_mentioning(b"/no/such/diagmon-dump-0-0").is_empty());
    }
}

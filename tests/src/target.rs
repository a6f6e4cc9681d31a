//! Real .NET Core 3.1 programs as test targets.
//!
//! The runtime and the compiled programs of `tests/targets/*.cs` live in a cache folder
//! ([`cache_dir`]) that `bash tests/targets/install.sh` fills. A [`TestTarget`] runs one of those
//! programs with its own `TMPDIR`, where the runtime creates its diagnostic socket
//! `dotnet-diagnostic-{pid}-{disambiguation}-socket`, so that parallel tests never see each
//! other's processes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long [`TestTarget::start`] waits for the socket and the "ready" line.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The .NET runtime version that `install.sh` installs.
const RUNTIME_VERSION: &str = "3.1.23";
/// The command that fills the cache, for error messages.
const INSTALL_HINT: &str = "run `bash tests/targets/install.sh` from the repository root";

/// One of the programs in `tests/targets/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `Worker.cs`: allocates and burns CPU on three threads. Args: `[seconds [exit-code]]`;
    /// runs until killed without them. Prints "bye" on a graceful exit (time up or SIGTERM).
    Worker,
    /// `EventSourceApp.cs`: writes EventSource "Diagmon-Test" events every 10 ms:
    /// `Tick(int)` (keyword 0x1, Informational) and `Detail(string)` (keyword 0x2, Verbose).
    /// Args: `[seconds]`; runs until killed without it.
    EventSourceApp,
    /// `BigHeap.cs`: keeps `[mebibytes]` (default 1024) of written byte arrays on the managed
    /// heap, then sleeps until killed.
    BigHeap,
    /// `CounterApp.cs`: EventSource "Diagmon-Counters" with counters of known values:
    /// `fixed-mean` (EventCounter, always 42.5, "ms"), `requests` (IncrementingEventCounter,
    /// incremented by N when the file given as the first argument appears holding N) and `polled`
    /// (PollingCounter, always 12, "MB"). Runs until killed.
    CounterApp,
    /// `HeapKeeper.cs`: keeps `[count]` (default 1000) `Diagmon.Kept` objects alive (32 bytes
    /// each on 64-bit), each holding a byte array of `[payloadBytes]` (default 100; -1: none),
    /// prints "ready", then sleeps until killed.
    HeapKeeper,
}

impl Program {
    /// The program's name, which is also the name of its `.cs` and `.dll` files.
    pub fn name(self) -> &'static str {
        match self {
            Program::Worker => "Worker",
            Program::EventSourceApp => "EventSourceApp",
            Program::BigHeap => "BigHeap",
            Program::CounterApp => "CounterApp",
            Program::HeapKeeper => "HeapKeeper",
        }
    }
}

/// The runtime cache folder: `$DIAGMON_TEST_CACHE`, or `<workspace root>/.cache/test-target`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("DIAGMON_TEST_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/test-target"),
    }
}

/// The `DOTNET_ROOT` of the cached runtime.
fn dotnet_root() -> PathBuf {
    cache_dir().join("dotnetcore2/bin")
}

/// A real .NET Core 3.1 program started for one test, with its own TMPDIR.
///
/// Dropping it kills the process (SIGKILL) if it still runs, reaps it and removes the
/// temporary folder that [`TestTarget::start`] made.
pub struct TestTarget {
    child: Child,
    program: Program,
    tmpdir: PathBuf,
    socket: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
    /// Dropped after the child is reaped, see `Drop`.
    _own_tmpdir: Option<tempfile::TempDir>,
}

impl TestTarget {
    /// Starts `program` with `args` in a fresh temporary TMPDIR; waits (≤ 15 s) until its
    /// diagnostic socket `dotnet-diagnostic-{pid}-*-socket` exists in that TMPDIR and the program
    /// printed "ready". Panics with a helpful message if the runtime cache is missing or the
    /// program does not start.
    pub fn start(program: Program, args: &[&str]) -> TestTarget {
        let dir = tempfile::Builder::new()
            .prefix("diagmon-target-")
            .tempdir()
            .expect("create a temporary TMPDIR for the test target");
        let path = dir.path().to_path_buf();
        Self::spawn(&path, Some(dir), &dotnet_root(), program, args)
    }

    /// Same as [`TestTarget::start`], but on the runtime in `root` (a copy of
    /// [`TestTarget::dotnet_root`], e.g. with a file changed) instead of the cached one.
    pub fn start_on_runtime(root: &Path, program: Program, args: &[&str]) -> TestTarget {
        let dir = tempfile::Builder::new()
            .prefix("diagmon-target-")
            .tempdir()
            .expect("create a temporary TMPDIR for the test target");
        let path = dir.path().to_path_buf();
        Self::spawn(&path, Some(dir), root, program, args)
    }

    /// The `DOTNET_ROOT` of the cached runtime (the `dotnet` host and `shared/`).
    pub fn dotnet_root() -> PathBuf {
        dotnet_root()
    }

    /// Same as [`TestTarget::start`], but with `tmpdir` as TMPDIR, which is left in place (to put
    /// two targets in one TMPDIR).
    pub fn start_in(tmpdir: &Path, program: Program, args: &[&str]) -> TestTarget {
        Self::spawn(tmpdir, None, &dotnet_root(), program, args)
    }

    fn spawn(
        tmpdir: &Path,
        own_tmpdir: Option<tempfile::TempDir>,
        root: &Path,
        program: Program,
        args: &[&str],
    ) -> TestTarget {
        let dll = dll_path_of(program);
        check_installed(program, &dll);
        let mut child = Command::new(root.join("dotnet"))
            .arg(&dll)
            .args(args)
            .env("DOTNET_ROOT", root)
            .env("DOTNET_SYSTEM_GLOBALIZATION_INVARIANT", "1")
            .env("TMPDIR", tmpdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {} {}: {e}",
                    root.join("dotnet").display(),
                    dll.display()
                )
            });
        let stdout = Arc::new(Mutex::new(Vec::new()));
        drain(
            child.stdout.take().expect("piped stdout"),
            program,
            Arc::clone(&stdout),
        );
        // From here on, a panic drops `target`, which kills the child.
        let mut target = TestTarget {
            child,
            program,
            tmpdir: tmpdir.to_path_buf(),
            socket: PathBuf::new(),
            stdout,
            _own_tmpdir: own_tmpdir,
        };
        target.socket = target.wait_started();
        target
    }

    /// Waits until the socket exists and "ready" was printed; returns the socket's path.
    fn wait_started(&mut self) -> PathBuf {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let socket = find_socket(&self.tmpdir, self.pid());
            let ready = self.stdout_lines().iter().any(|l| l == "ready");
            if let (Some(socket), true) = (&socket, ready) {
                return socket.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "test target {:?} exited before it was ready: {status}",
                    self.program
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "test target {:?} (pid {}) not ready after {START_TIMEOUT:?}: \
                     socket {socket:?}, printed \"ready\": {ready}, {} holds {:?}",
                    self.program,
                    self.pid(),
                    self.tmpdir.display(),
                    std::fs::read_dir(&self.tmpdir)
                        .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                        .unwrap_or_default(),
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process id (the `dotnet` host runs the runtime in its own process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The program's TMPDIR, where its diagnostic socket is.
    pub fn tmpdir(&self) -> &Path {
        &self.tmpdir
    }

    /// The diagnostic socket's path, as found at start (the runtime removes it on a graceful
    /// exit).
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone()
    }

    /// The program's dll, the argument of `dotnet` on its command line.
    pub fn dll_path(&self) -> PathBuf {
        dll_path_of(self.program)
    }

    /// The `dotnet` host of the cached runtime.
    pub fn dotnet_path() -> PathBuf {
        dotnet_root().join("dotnet")
    }

    /// The lines the program printed on stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends signal `sig` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}): {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
    }

    /// Waits for the process to exit, at most `timeout`; returns its exit status, or `None` if
    /// it still runs. Can be called again after it returned a status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the test target") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestTarget {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn dll_path_of(program: Program) -> PathBuf {
    cache_dir()
        .join("bin")
        .join(format!("{}.dll", program.name()))
}

/// Panics with the install command if the runtime or the program is missing or out of date.
fn check_installed(program: Program, dll: &Path) {
    let framework = dotnet_root()
        .join("shared/Microsoft.NETCore.App")
        .join(RUNTIME_VERSION);
    for needed in [TestTarget::dotnet_path(), framework, dll.to_path_buf()] {
        assert!(
            needed.exists(),
            "the .NET test target is not installed: {} is missing; {INSTALL_HINT} \
             (cache: $DIAGMON_TEST_CACHE or <repo>/.cache/test-target)",
            needed.display()
        );
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("targets")
        .join(format!("{}.cs", program.name()));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(src), Some(bin)) = (modified(&source), modified(dll)) {
        assert!(
            src <= bin,
            "{} is older than {}; {INSTALL_HINT} to recompile it",
            dll.display(),
            source.display()
        );
    }
}

/// The socket `dotnet-diagnostic-{pid}-*-socket` in `dir`, if it exists.
fn find_socket(dir: &Path, pid: u32) -> Option<PathBuf> {
    let prefix = format!("dotnet-diagnostic-{pid}-");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with("-socket"))
        })
}

/// Reads the child's stdout on a thread until it closes, collecting the lines, so that the
/// program never blocks on a full pipe.
fn drain(stdout: ChildStdout, program: Program, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::Builder::new()
        .name(format!("{}-stdout", program.name()))
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        })
        .expect("spawn the stdout reader thread");
}

//! The real `diagmon collect` binary, started for one test on a free loopback port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running monitor process; killed when dropped.
pub struct Monitor {
    child: Child,
    base_url: String,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The thread that collects `stderr`; it ends when the monitor's stderr closes.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    _config_dir: tempfile::TempDir,
}

/// The `diagmon` binary next to the test or bench binary (`cargo build -p diagmon`, with
/// `--release` for benches, puts it there).
pub fn monitor_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let binary = dir.join("diagmon");
    // Benches run from target/release, tests from target/debug.
    let build = if dir.ends_with("release") {
        "`cargo build --release -p diagmon`"
    } else {
        "`cargo build -p diagmon` (tests/run does)"
    };
    assert!(
        binary.is_file(),
        "{} is missing: run {build} first",
        binary.display()
    );
    binary
}

/// Collects `stream`'s lines as they come, on a thread of its own.
fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (lines, reader)
}

impl Monitor {
    /// Starts `diagmon collect --config <file with config_toml> --urls http://127.0.0.1:0 <args>`
    /// and waits (≤ 120 s: it compiles its egress providers first) until it listens.
    pub fn start(config_toml: &str, args: &[&str]) -> Monitor {
        Self::start_with_env(config_toml, args, &[])
    }

    /// The same, with extra environment variables.
    pub fn start_with_env(config_toml: &str, args: &[&str], env: &[(&str, &str)]) -> Monitor {
        let config_dir = tempfile::tempdir().expect("a temporary directory");
        let config = config_dir.path().join("diagmon.toml");
        std::fs::write(&config, config_toml).expect("write the config file");
        let mut command = Command::new(monitor_binary());
        command
            .arg("collect")
            .arg("--config")
            .arg(&config)
            .args(["--urls", "http://127.0.0.1:0"])
            .args(args)
            .env("DIAGMON_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start diagmon");
        let (stdout, _) = collect_lines(child.stdout.take().expect("piped stdout"));
        let (stderr, stderr_reader) = collect_lines(child.stderr.take().expect("piped stderr"));
        let mut monitor = Monitor {
            child,
            base_url: String::new(),
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
            _config_dir: config_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let listening = monitor.stdout_lines().iter().find_map(|line| {
                line.strip_prefix("diagmon listening on ")
                    .map(str::to_owned)
            });
            if let Some(url) = listening {
                monitor.base_url = url;
                return monitor;
            }
            if let Ok(Some(status)) = monitor.child.try_wait() {
                panic!(
                    "diagmon exited with {status} before listening; stderr:\n{}",
                    monitor.stderr_lines().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "diagmon did not listen within 120 s; stderr:\n{}",
                monitor.stderr_lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The config file the monitor was started with (rewrite it to test reloads).
    pub fn config_path(&self) -> PathBuf {
        self._config_dir.path().join("diagmon.toml")
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// What the monitor printed on stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// What the monitor logged on stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The monitor's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the monitor.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let result = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(result, 0, "kill({}, {signal})", self.child.id());
    }

    /// Waits for the monitor to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Monitor {
    /// Kills the monitor. When the test is failing, then prints what the monitor logged (its last
    /// 400 lines), so that a failure seen only in CI carries the monitor's side of the story.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The last lines matter most: let the reader reach the end of the closed pipe (a
            // program the monitor started may hold it open, hence the bound).
            let deadline = Instant::now() + Duration::from_secs(2);
            if let Some(reader) = self.stderr_reader.take() {
                while !reader.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let lines = self
                .stderr
                .lock()
                .map(|lines| lines.clone())
                .unwrap_or_default();
            eprintln!("--- diagmon's log ({} lines) ---", lines.len());
            for line in lines.iter().rev().take(400).rev() {
                eprintln!("{line}");
            }
        }
    }
}

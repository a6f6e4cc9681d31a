//! What the benchmarks share: the simulated runtime as a process of its own, and readings of a
//! process's memory and CPU from `/proc`.

use std::process::{Child, Command, Stdio};

use diagmon::diagnostics::endpoint::Endpoint;
use diagmon::diagnostics::eventpipe::Rundown;
use diagmon::diagnostics::{
    DiagnosticsClient, EventPipeSession, EventProvider, SessionConfig, Timeouts,
};

/// The provider the simulated runtime's synthetic trace comes from.
pub const SYNTHETIC_PROVIDER: &str = "Diagmon-Synthetic";

/// How [`SimulatorProcess::start_with`] starts the simulator.
#[derive(Clone, Debug, Default)]
pub struct SimulatorOptions {
    /// The directory of its socket (shared by several simulators, so that one monitor sees them
    /// all); default: a fresh temporary directory.
    pub socket_dir: Option<std::path::PathBuf>,
    /// Where the fresh temporary directory goes; default: the system's.
    pub parent: Option<std::path::PathBuf>,
    /// `--event-bytes`: the average event size; default: the simulator's (about 95 bytes).
    pub event_bytes: Option<usize>,
}

/// The `simulated-runtime` binary, serving full-speed sessions of a given size; killed on drop.
pub struct SimulatorProcess {
    child: Child,
    socket: String,
    _dir: tempfile::TempDir,
}

impl SimulatorProcess {
    /// Starts `simulated-runtime` (the path comes from the bench's `CARGO_BIN_EXE_*`), serving
    /// sessions of `bytes` bytes of synthetic nettrace as fast as they are read.
    pub fn start(binary: &str, bytes: u64) -> SimulatorProcess {
        Self::start_with(binary, bytes, &SimulatorOptions::default())
    }

    /// [`start`](Self::start) with the options of [`SimulatorOptions`].
    pub fn start_with(binary: &str, bytes: u64, options: &SimulatorOptions) -> SimulatorProcess {
        let dir = match &options.parent {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        }
        .expect("tempdir");
        let mut command = Command::new(binary);
        command
            .arg("--dir")
            .arg(options.socket_dir.as_deref().unwrap_or(dir.path()))
            .arg("--full-speed-bytes")
            .arg(bytes.to_string());
        if let Some(event_bytes) = options.event_bytes {
            command.arg("--event-bytes").arg(event_bytes.to_string());
        }
        let child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("start simulated-runtime");
        // Owned from here on, so that a failure below still kills it.
        let mut simulator = SimulatorProcess {
            child,
            socket: String::new(),
            _dir: dir,
        };
        let stdout = simulator.child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("the simulator's socket path");
        simulator.socket = line.trim().to_owned();
        assert!(
            !simulator.socket.is_empty(),
            "simulated-runtime exited without printing its socket path"
        );
        simulator
    }

    /// The diagnostic socket it listens on.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A session of the synthetic provider through diagmon's client, without rundown.
    pub async fn session(&self) -> EventPipeSession {
        let client = DiagnosticsClient::new(
            Endpoint::Socket(self.socket.clone().into()),
            Timeouts::default(),
        );
        let mut config =
            SessionConfig::new(vec![EventProvider::new(SYNTHETIC_PROVIDER, u64::MAX, 5)]);
        config.rundown = Rundown::Off;
        client.start_session(&config).await.expect("session")
    }
}

impl Drop for SimulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resets the peak-RSS counter (`VmHWM`) of `pid` to its current RSS (Linux: 5 into
/// `clear_refs`).
pub fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// A memory field of `/proc/{pid}/status` (`VmRSS`, `VmHWM`) in MiB; NaN if unreadable.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// CPU time (user + system) `pid` has used so far, in seconds; NaN if unreadable.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after the last ')';
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = if per_second > 0 {
        per_second as f64
    } else {
        100.0
    };
    (ticks(11) + ticks(12)) / per_second
}

/// Pins this process, and so every process it starts later, to CPU `cpu`. Strictly, it pins the
/// calling thread, and what it starts later (threads and processes) inherits that.
pub fn pin_to_cpu(cpu: usize) {
    // CPU_SET indexes a fixed-size set.
    assert!(
        cpu < libc::CPU_SETSIZE as usize,
        "BENCH_CPU must be below {}",
        libc::CPU_SETSIZE
    );
    // SAFETY: the set is a zeroed cpu_set_t that CPU_SET fills in; sched_setaffinity only reads it.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if pinned != 0 {
        panic!(
            "cannot pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// CPU time (user + system) the calling thread has used so far, in seconds.
pub fn thread_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills in the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut usage) != 0 {
            return f64::NAN;
        }
        usage
    };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The median of `values` (the upper one of an even count); NaN if there are none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The trace sizes in MiB given as the bench's arguments, or 200 and 2048.
pub fn sizes_mib() -> Vec<u64> {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .collect();
    if sizes.is_empty() {
        vec![200, 2048]
    } else {
        sizes
    }
}

/// How many interleaved rounds to run: `BENCH_ROUNDS`, 5 by default, at least 1.
pub fn rounds() -> usize {
    env_number("BENCH_ROUNDS").unwrap_or(5).max(1)
}

/// The number in the environment variable `name`, if it is set and parses.
pub fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.parse().ok()
}

/// The rows `BENCH_ROWS` picks: a comma list of row keys, every row when it is unset.
/// `BENCH_ROWS=?` prints the keys and ends the bench; a name that is no row's key stops it,
/// naming the keys.
#[derive(Debug)]
pub struct RowChoice(Option<Vec<String>>);

impl RowChoice {
    /// Reads `BENCH_ROWS` against the bench's row `keys`.
    pub fn from_env(keys: &[&str]) -> RowChoice {
        let Ok(list) = std::env::var("BENCH_ROWS") else {
            return RowChoice(None);
        };
        let chosen: Vec<String> = list.split(',').map(|key| key.trim().to_owned()).collect();
        if chosen.iter().any(|key| key == "?") {
            println!("BENCH_ROWS keys: {}", keys.join(","));
            std::process::exit(0);
        }
        let unknown: Vec<&String> = chosen
            .iter()
            .filter(|key| !keys.contains(&key.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "BENCH_ROWS names no row {unknown:?}; the rows are {}",
            keys.join(",")
        );
        RowChoice(Some(chosen))
    }

    /// True when the row `key` runs.
    pub fn includes(&self, key: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|chosen| chosen.iter().any(|wanted| wanted == key))
    }
}

//! Streaming benchmark: a synthetic nettrace from the simulated runtime (a separate process) read
//! by a plain socket copy (the physical limit), by diagmon's client into a null sink and into a
//! file, and through the HTTP API of the real `diagmon` binary. Prints MB/s and peak RSS.
//!
//! `cargo bench -p diagmon-tests --bench streaming [-- SIZE_MIB...]` (default 200 and 2048).
//! The HTTP rows need `cargo build --release -p diagmon` first; they are skipped without it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diagmon::diagnostics::endpoint::Endpoint;
use diagmon::diagnostics::protocol::{
    Command as IpcCommand, HEADER_LEN, PayloadWriter, encode_request,
};
use diagmon::diagnostics::{DiagnosticsClient, EventProvider, SessionConfig, Timeouts};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1 << 20;

/// The simulated runtime, serving full-speed sessions of `bytes` bytes.
struct Simulator {
    child: Child,
    socket: String,
    _dir: tempfile::TempDir,
}

impl Simulator {
    fn start(bytes: u64) -> Simulator {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_simulated-runtime"))
            .arg("--dir")
            .arg(dir.path())
            .arg("--full-speed-bytes")
            .arg(bytes.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start simulated-runtime");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("socket path");
        Simulator {
            child,
            socket: line.trim().to_owned(),
            _dir: dir,
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resets the peak-RSS counter of `pid` (Linux: writing 5 to clear_refs).
fn reset_peak_rss(pid: &str) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Peak RSS of `pid` in MiB since the last reset.
fn peak_rss_mib(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn providers() -> Vec<EventProvider> {
    vec![EventProvider::new("Diagmon-Synthetic", u64::MAX, 5)]
}

/// A plain copy: one CollectTracing2 request by hand, then a read/write loop into `sink`.
async fn plain_copy<W: tokio::io::AsyncWrite + Unpin>(socket: &str, sink: &mut W) -> u64 {
    let mut payload = PayloadWriter::new();
    payload.u32(256).u32(1).bool(false).u32(1);
    payload
        .u64(u64::MAX)
        .u32(5)
        .string("Diagmon-Synthetic")
        .string("");
    let request =
        encode_request(IpcCommand::CollectTracing2, &payload.into_bytes()).expect("request");
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    stream.write_all(&request).await.expect("send");
    let mut reply = [0u8; HEADER_LEN + 8];
    stream.read_exact(&mut reply).await.expect("reply");
    // The same read size as the client's, so that only the client's own work differs.
    let mut buffer = vec![0u8; 256 * 1024];
    let mut copied = 0u64;
    loop {
        let read = stream.read(&mut buffer).await.expect("read");
        if read == 0 {
            return copied;
        }
        sink.write_all(&buffer[..read]).await.expect("write");
        copied += read as u64;
    }
}

async fn client_session(socket: &str) -> diagmon::diagnostics::EventPipeSession {
    let client = DiagnosticsClient::new(Endpoint::Socket(socket.into()), Timeouts::default());
    let mut config = SessionConfig::new(providers());
    config.rundown = diagmon::diagnostics::eventpipe::Rundown::Off;
    client.start_session(&config).await.expect("session")
}

async fn client_to_null(socket: &str) -> u64 {
    let mut session = client_session(socket).await;
    let mut bytes = 0;
    while let Some(chunk) = session.next_chunk().await.expect("complete trace") {
        bytes += chunk.len() as u64;
    }
    bytes
}

async fn client_to_file(socket: &str, dir: &Path) -> u64 {
    let session = client_session(socket).await;
    let path = dir.join("bench.nettrace");
    let mut file = tokio::fs::File::create(&path).await.expect("file");
    let summary = session.copy_to(&mut file).await.expect("complete trace");
    let _ = std::fs::remove_file(&path);
    summary.bytes
}

fn row(label: &str, bytes: u64, elapsed: Duration, rss: f64, baseline: Option<f64>) -> f64 {
    let rate = bytes as f64 / MIB as f64 / elapsed.as_secs_f64();
    let ratio = baseline.map_or(String::new(), |b| format!("{:>6.2}x", rate / b));
    println!(
        "{label:<28} {:>9.1} MiB {:>9.1} MiB/s {ratio:>8} peak RSS {rss:>7.1} MiB",
        bytes as f64 / MIB as f64,
        rate
    );
    rate
}

#[tokio::main]
async fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![200, 2048]
    } else {
        sizes
    };
    let me = std::process::id().to_string();
    let scratch = tempfile::tempdir().expect("tempdir");
    for size in sizes {
        let bytes = size * MIB;
        let simulator = Simulator::start(bytes);
        println!("--- {size} MiB synthetic nettrace ---");

        reset_peak_rss(&me);
        let started = Instant::now();
        let copied = plain_copy(&simulator.socket, &mut tokio::io::sink()).await;
        let plain = row(
            "plain copy -> null",
            copied,
            started.elapsed(),
            peak_rss_mib(&me),
            None,
        );

        reset_peak_rss(&me);
        let path = scratch.path().join("plain.nettrace");
        let mut file = tokio::fs::File::create(&path).await.expect("file");
        let started = Instant::now();
        let copied = plain_copy(&simulator.socket, &mut file).await;
        file.flush().await.expect("flush");
        let plain_file = row(
            "plain copy -> file",
            copied,
            started.elapsed(),
            peak_rss_mib(&me),
            None,
        );
        drop(file);
        let _ = std::fs::remove_file(&path);

        reset_peak_rss(&me);
        let started = Instant::now();
        let read = client_to_null(&simulator.socket).await;
        row(
            "client -> null",
            read,
            started.elapsed(),
            peak_rss_mib(&me),
            Some(plain),
        );

        reset_peak_rss(&me);
        let started = Instant::now();
        let written = client_to_file(&simulator.socket, scratch.path()).await;
        row(
            "client -> file",
            written,
            started.elapsed(),
            peak_rss_mib(&me),
            Some(plain_file),
        );

        http_rows(&simulator, plain).await;
    }
}

/// The same stream through `POST /trace` of the release binary, read by reqwest.
async fn http_rows(simulator: &Simulator, plain: f64) {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("diagmon")));
    if !binary.is_some_and(|binary| binary.is_file()) {
        println!("(HTTP rows skipped: run `cargo build --release -p diagmon` first)");
        return;
    }
    let socket_dir = Path::new(&simulator.socket).parent().expect("socket dir");
    let monitor = diagmon_tests::monitor::Monitor::start(
        &format!("socket_dir = {:?}\n", socket_dir.display().to_string()),
        &["--no-auth"],
    );
    let monitor_pid = monitor.pid().to_string();
    let client = reqwest::Client::new();
    let url = monitor.url("/trace?durationSeconds=-1");
    let body =
        serde_json::json!({"providers": [{"name": "Diagmon-Synthetic"}], "requestRundown": false});
    reset_peak_rss(&monitor_pid);
    let started = Instant::now();
    let response = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("response");
    let mut stream = response.bytes_stream();
    let mut bytes = 0u64;
    let mut first_byte = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("complete body");
        first_byte.get_or_insert_with(|| started.elapsed());
        bytes += chunk.len() as u64;
    }
    row(
        "HTTP POST /trace (monitor)",
        bytes,
        started.elapsed(),
        peak_rss_mib(&monitor_pid),
        Some(plain),
    );
    if let Some(first_byte) = first_byte {
        println!(
            "  time from request to first streamed byte: {:.1} ms",
            first_byte.as_secs_f64() * 1000.0
        );
    }
}

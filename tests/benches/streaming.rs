//! Streaming benchmark: a synthetic nettrace from the simulated runtime (a separate process) read
//! by a plain socket copy (the physical limit), by diagmon's client into a null sink and into a
//! file, by the client with the summary every operation computes (every event validated, the
//! bytes hashed), by the client with the summary sending the bytes over loopback TCP to a reader
//! in the bench (what delivering them to a client costs, without HTTP), and through `POST /trace`
//! of the real `diagmon` binary, read by reqwest (what a client application pays) and by the same
//! raw 256 KiB reads as the TCP row's reader (so that the two differ only on the sending side).
//! Prints MiB/s, peak RSS and the CPU each process used; asserts only that the TCP row's reader
//! received every byte the session produced and that each HTTP body was whole (for the raw
//! reader: a 200, then chunked framing that ends with its last chunk).
//!
//! `cargo bench -p diagmon-tests --bench streaming [-- SIZE_MIB...]` (default 200 and 2048).
//! The HTTP rows need `cargo build --release -p diagmon` first; they are skipped without it.
//!
//! The machine is shared by the simulator, the reader and (for HTTP) the monitor, so one run of
//! a row can land on a busy core. Every row therefore runs `BENCH_ROUNDS` times (5 by default),
//! the rows interleaved, and the table shows each row's best and median rate. Ratios are given
//! best against best, and as the median of the rounds' own ratios (a round runs both rows one
//! after the other, so a slow stretch of the machine hits both). `BENCH_ROWS=client-null,http`
//! runs only those rows (the keys are printed by `BENCH_ROWS=?`).
//!
//! Where the scheduler puts the simulator and the reader changes a plain copy by up to 2x on a
//! small VM (a wake-up across cores costs more than a switch on one). `BENCH_CPU=N` pins the
//! bench, the simulator and the monitor to CPU N: the rates then measure the work per byte of
//! each side, run after run.

use std::path::Path;
use std::time::{Duration, Instant};

use diagmon::diagnostics::protocol::{Command, HEADER_LEN, PayloadWriter, encode_request};
use diagmon::diagnostics::summary::TraceSummarizer;
use diagmon_tests::bench::{
    RowChoice, SYNTHETIC_PROVIDER, SimulatorProcess, cpu_seconds, env_number, median, pin_to_cpu,
    reset_peak_rss, rounds, sizes_mib, status_mib,
};
use diagmon_tests::monitor::Monitor;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1 << 20;

/// A plain copy: one CollectTracing2 request by hand, then a read/write loop into `sink`.
async fn plain_copy<W: tokio::io::AsyncWrite + Unpin>(socket: &str, sink: &mut W) -> u64 {
    let mut payload = PayloadWriter::new();
    payload.u32(256).u32(1).bool(false).u32(1);
    payload
        .u64(u64::MAX)
        .u32(5)
        .string(SYNTHETIC_PROVIDER)
        .string("");
    let request = encode_request(Command::CollectTracing2, &payload.into_bytes()).expect("request");
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
            sink.flush().await.expect("flush");
            return copied;
        }
        sink.write_all(&buffer[..read]).await.expect("write");
        copied += read as u64;
    }
}

/// Reads everything a loopback TCP connection to `listener` sends, in 256 KiB reads, as a client
/// of the streamed body would; returns the bytes read.
async fn tcp_reader(listener: tokio::net::TcpListener) -> u64 {
    let (mut socket, _) = listener.accept().await.expect("accept");
    let mut buffer = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let read = socket.read(&mut buffer).await.expect("read");
        if read == 0 {
            return bytes;
        }
        bytes += read as u64;
    }
}

/// The same stream through `POST /trace` of the monitor, read by reqwest. Returns the bytes
/// and the time to the first byte.
async fn http_trace(client: &reqwest::Client, monitor: &Monitor) -> (u64, Duration) {
    let body =
        serde_json::json!({"providers": [{"name": SYNTHETIC_PROVIDER}], "requestRundown": false});
    let started = Instant::now();
    let response = client
        .post(monitor.url("/trace?durationSeconds=-1"))
        .json(&body)
        .send()
        .await
        .expect("response");
    assert!(response.status().is_success(), "{}", response.status());
    let mut stream = response.bytes_stream();
    let mut bytes = 0u64;
    let mut first_byte = Duration::ZERO;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("complete body");
        if bytes == 0 {
            first_byte = started.elapsed();
        }
        bytes += chunk.len() as u64;
    }
    (bytes, first_byte)
}

/// The same stream through `POST /trace`, read as [`tcp_reader`] reads: a request written by
/// hand, then 256 KiB reads of the response, whose chunked framing is decoded as it passes.
/// Panics unless the response is a 200 whose body ends with its last chunk (a body cut short
/// has none). Returns the body's bytes and the time to the first of them.
async fn raw_http_trace(monitor: &Monitor) -> (u64, Duration) {
    let url = reqwest::Url::parse(&monitor.url("/trace?durationSeconds=-1")).expect("url");
    let address = url.socket_addrs(|| None).expect("address")[0];
    let json =
        serde_json::json!({"providers": [{"name": SYNTHETIC_PROVIDER}], "requestRundown": false})
            .to_string();
    let request = format!(
        "POST {}?{} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
        url.path(),
        url.query().unwrap_or_default(),
        json.len()
    );
    let started = Instant::now();
    let mut socket = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    socket.write_all(request.as_bytes()).await.expect("request");
    let mut buffer = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let mut in_body = false;
    let mut body = ChunkedBody::default();
    let mut first_byte = Duration::ZERO;
    loop {
        let read = socket.read(&mut buffer).await.expect("read");
        if read == 0 {
            break;
        }
        let mut input = &buffer[..read];
        if !in_body {
            head.extend_from_slice(input);
            let Some(end) = head.windows(4).position(|window| window == b"\r\n\r\n") else {
                continue;
            };
            let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            assert!(text.starts_with("http/1.1 200"), "{text}");
            assert!(text.contains("\r\ntransfer-encoding: chunked"), "{text}");
            in_body = true;
            body.feed(&head[end + 4..]);
            input = &[];
        }
        body.feed(input);
        if first_byte.is_zero() && body.data > 0 {
            first_byte = started.elapsed();
        }
    }
    assert!(in_body, "the connection closed before the response head");
    assert!(body.is_complete(), "the body ended before its last chunk");
    (body.data, first_byte)
}

/// An HTTP/1.1 chunked body decoded as it arrives, strictly as the monitor writes it (no chunk
/// extensions, no trailers): its data bytes are counted, its framing checked.
#[derive(Default)]
struct ChunkedBody {
    state: Chunk,
    /// Data bytes so far.
    data: u64,
}

/// Where a [`ChunkedBody`] is.
#[derive(Default, Clone, Copy, PartialEq, Debug)]
enum Chunk {
    /// At the start of a chunk's size line.
    #[default]
    Size,
    /// In a chunk's size, with its value so far.
    SizeValue(u64),
    /// After the size's CR.
    SizeEnd(u64),
    /// In a chunk's data, with what is left of it.
    Data(u64),
    /// After a chunk's data: its CR, then its LF.
    DataEnd(bool),
    /// After the last chunk's size line: the body's final CR, then its LF.
    LastEnd(bool),
    /// The last chunk was read.
    Done,
}

impl ChunkedBody {
    fn is_complete(&self) -> bool {
        self.state == Chunk::Done
    }

    fn feed(&mut self, mut input: &[u8]) {
        while let Some((&byte, rest)) = input.split_first() {
            if let Chunk::Data(left) = self.state {
                let taken = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                self.data += taken as u64;
                input = &input[taken..];
                let left = left - taken as u64;
                self.state = if left == 0 {
                    Chunk::DataEnd(false)
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            input = rest;
            self.state = match (self.state, byte) {
                (Chunk::Size, b'\r') => panic!("a chunk size with no digits"),
                (Chunk::Size, _) => Chunk::SizeValue(hex_digit(byte)),
                (Chunk::SizeValue(value), b'\r') => Chunk::SizeEnd(value),
                (Chunk::SizeValue(value), _) => Chunk::SizeValue(
                    value
                        .checked_mul(16)
                        .and_then(|value| value.checked_add(hex_digit(byte)))
                        .expect("a chunk size that fits in 64 bits"),
                ),
                (Chunk::SizeEnd(0), b'\n') => Chunk::LastEnd(false),
                (Chunk::SizeEnd(size), b'\n') => Chunk::Data(size),
                (Chunk::DataEnd(false), b'\r') => Chunk::DataEnd(true),
                (Chunk::DataEnd(true), b'\n') => Chunk::Size,
                (Chunk::LastEnd(false), b'\r') => Chunk::LastEnd(true),
                (Chunk::LastEnd(true), b'\n') => Chunk::Done,
                (state, byte) => {
                    panic!("unexpected byte {byte:#04x} in the chunked body ({state:?})")
                }
            };
        }
    }
}

fn hex_digit(byte: u8) -> u64 {
    u64::from(
        char::from(byte)
            .to_digit(16)
            .unwrap_or_else(|| panic!("{byte:#04x} in a chunk size")),
    )
}

/// The ways of reading the stream that the table compares.
#[derive(Clone, Copy, PartialEq)]
enum Row {
    PlainNull,
    PlainFile,
    ClientNull,
    ClientFile,
    ClientSummaryNull,
    ClientSummaryTcp,
    Http,
    HttpRaw,
}

impl Row {
    const ALL: [Row; 8] = [
        Row::PlainNull,
        Row::PlainFile,
        Row::ClientNull,
        Row::ClientFile,
        Row::ClientSummaryNull,
        Row::ClientSummaryTcp,
        Row::Http,
        Row::HttpRaw,
    ];

    /// The row's name in `BENCH_ROWS`.
    fn key(self) -> &'static str {
        match self {
            Row::PlainNull => "plain-null",
            Row::PlainFile => "plain-file",
            Row::ClientNull => "client-null",
            Row::ClientFile => "client-file",
            Row::ClientSummaryNull => "client-summary-null",
            Row::ClientSummaryTcp => "client-summary-tcp",
            Row::Http => "http",
            Row::HttpRaw => "http-raw",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Row::PlainNull => "plain copy -> null",
            Row::PlainFile => "plain copy -> file",
            Row::ClientNull => "client -> null",
            Row::ClientFile => "client -> file",
            Row::ClientSummaryNull => "client + summary -> null",
            Row::ClientSummaryTcp => "client + summary -> TCP",
            Row::Http => "HTTP POST /trace -> reqwest",
            Row::HttpRaw => "HTTP POST /trace -> raw reads",
        }
    }

    /// The rows this one is compared with: the same reads with less work.
    fn baselines(self) -> &'static [Row] {
        match self {
            Row::PlainNull | Row::PlainFile => &[],
            Row::ClientNull => &[Row::PlainNull],
            Row::ClientFile => &[Row::PlainFile],
            Row::ClientSummaryNull | Row::ClientSummaryTcp => &[Row::ClientNull],
            // The bare client; the client doing the same work as an operation; and the client
            // doing it and delivering the bytes over loopback TCP, as HTTP must, minus HTTP.
            Row::Http => &[
                Row::ClientNull,
                Row::ClientSummaryNull,
                Row::ClientSummaryTcp,
            ],
            // The same reader as the TCP row's: the two differ only in what sends the bytes.
            Row::HttpRaw => &[Row::ClientSummaryNull, Row::ClientSummaryTcp],
        }
    }

    /// True for the rows that need the monitor.
    fn is_http(self) -> bool {
        matches!(self, Row::Http | Row::HttpRaw)
    }
}

/// One run of one row.
#[derive(Clone, Copy)]
struct Sample {
    rate: f64,
    /// Peak RSS of the process doing the reading (the monitor for HTTP).
    rss: f64,
    /// Cores used on average by the simulator, the bench process and the monitor.
    cores: [f64; 3],
    first_byte: Duration,
}

struct Bench<'a> {
    /// Built once: building a client (its TLS set-up) takes milliseconds.
    http: reqwest::Client,
    simulator: &'a SimulatorProcess,
    monitor: Option<&'a Monitor>,
    scratch: &'a Path,
}

impl Bench<'_> {
    /// One session read by the client, every chunk fed to the summary, as an operation does,
    /// and written to `delivery` if given (then shut down). Returns the bytes the session produced.
    async fn client_with_summary(&self, mut delivery: Option<tokio::net::TcpStream>) -> u64 {
        let mut session = self.simulator.session().await;
        let mut summarizer = TraceSummarizer::start().expect("summarizer");
        let mut produced = 0u64;
        while let Some(chunk) = session.next_chunk().await.expect("complete trace") {
            produced += chunk.len() as u64;
            summarizer.feed(chunk.clone()).await.expect("valid trace");
            if let Some(delivery) = delivery.as_mut() {
                delivery.write_all(&chunk).await.expect("deliver");
            }
        }
        let summarized = summarizer.finish().await.expect("summary").nettrace.bytes;
        assert_eq!(summarized, produced, "every byte summarized");
        if let Some(delivery) = delivery.as_mut() {
            delivery.shutdown().await.expect("shutdown");
        }
        produced
    }

    async fn run(&self, row: Row) -> Option<Sample> {
        let me = std::process::id();
        let monitor_pid = self.monitor.map(Monitor::pid);
        if row.is_http() && monitor_pid.is_none() {
            return None;
        }
        let reader = if row.is_http() { monitor_pid? } else { me };
        let pids = [Some(self.simulator.pid()), Some(me), monitor_pid];
        let cpu_before = pids.map(|pid| pid.map_or(0.0, cpu_seconds));
        reset_peak_rss(reader);
        let path = self.scratch.join("bench.nettrace");
        let started = Instant::now();
        let socket = self.simulator.socket();
        let mut first_byte = Duration::ZERO;
        let bytes = match row {
            Row::PlainNull => plain_copy(socket, &mut tokio::io::sink()).await,
            Row::PlainFile => {
                let mut file = tokio::fs::File::create(&path).await.expect("file");
                plain_copy(socket, &mut file).await
            }
            Row::ClientNull => {
                let mut session = self.simulator.session().await;
                let mut bytes = 0;
                while let Some(chunk) = session.next_chunk().await.expect("complete trace") {
                    bytes += chunk.len() as u64;
                }
                bytes
            }
            Row::ClientFile => {
                let mut session = self.simulator.session().await;
                let mut file = tokio::fs::File::create(&path).await.expect("file");
                let mut bytes = 0;
                while let Some(chunk) = session.next_chunk().await.expect("complete trace") {
                    file.write_all(&chunk).await.expect("write");
                    bytes += chunk.len() as u64;
                }
                file.flush().await.expect("flush");
                bytes
            }
            Row::ClientSummaryNull => self.client_with_summary(None).await,
            Row::ClientSummaryTcp => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("listen");
                let address = listener.local_addr().expect("address");
                let reader = tokio::spawn(tcp_reader(listener));
                let delivery = tokio::net::TcpStream::connect(address)
                    .await
                    .expect("connect");
                let produced = self.client_with_summary(Some(delivery)).await;
                let delivered = reader.await.expect("reader");
                assert_eq!(delivered, produced, "every byte delivered");
                delivered
            }
            Row::Http => {
                let (bytes, first) = http_trace(&self.http, self.monitor?).await;
                first_byte = first;
                bytes
            }
            Row::HttpRaw => {
                let (bytes, first) = raw_http_trace(self.monitor?).await;
                first_byte = first;
                bytes
            }
        };
        let elapsed = started.elapsed();
        let rss = status_mib(reader, "VmHWM");
        if matches!(row, Row::PlainFile | Row::ClientFile) {
            // Untimed: write the file back now, so that the kernel's writeback does not run
            // during the next row.
            // SAFETY: sync has no preconditions.
            unsafe { libc::sync() };
        }
        let _ = std::fs::remove_file(&path);
        let mut cores = [0.0; 3];
        for (index, pid) in pids.iter().enumerate() {
            if let Some(pid) = pid {
                cores[index] = (cpu_seconds(*pid) - cpu_before[index]) / elapsed.as_secs_f64();
            }
        }
        Some(Sample {
            rate: bytes as f64 / MIB as f64 / elapsed.as_secs_f64(),
            rss,
            cores,
            first_byte,
        })
    }
}

#[tokio::main]
async fn main() {
    let sizes = sizes_mib();
    let rounds = rounds();
    if let Some(cpu) = env_number("BENCH_CPU") {
        pin_to_cpu(cpu);
        println!("(pinned to CPU {cpu}, with the simulator and the monitor)");
    }
    let chosen = RowChoice::from_env(&Row::ALL.map(Row::key));
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("diagmon")));
    let have_monitor = binary.is_some_and(|binary| binary.is_file());
    let scratch = tempfile::tempdir().expect("tempdir");
    for size in sizes {
        let simulator =
            SimulatorProcess::start(env!("CARGO_BIN_EXE_simulated-runtime"), size * MIB);
        let socket_dir = Path::new(simulator.socket()).parent().expect("socket dir");
        let monitor = have_monitor.then(|| {
            // Without its background counter sessions: the simulator serves every session a
            // full-speed trace, which would run beside the HTTP row and share its CPU.
            Monitor::start(
                &format!(
                    "socket_dir = {:?}\n[metrics]\nenabled = false\n",
                    socket_dir.display().to_string()
                ),
                &["--no-auth"],
            )
        });
        let bench = Bench {
            http: reqwest::Client::new(),
            simulator: &simulator,
            monitor: monitor.as_ref(),
            scratch: scratch.path(),
        };
        // Untimed warm-up: the first session of a fresh simulator faults its buffers in.
        plain_copy(simulator.socket(), &mut tokio::io::sink()).await;
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); Row::ALL.len()];
        for _ in 0..rounds {
            for (index, row) in Row::ALL.into_iter().enumerate() {
                if !chosen.includes(row.key()) {
                    continue;
                }
                if let Some(sample) = bench.run(row).await {
                    samples[index].push(sample);
                }
            }
        }
        println!("--- {size} MiB synthetic nettrace, best of {rounds} interleaved rounds ---");
        println!(
            "{:<28} {:>10} {:>8} {:>9}  {:<18} vs baseline",
            "", "best MiB/s", "median", "peak RSS", "cores sim/bench/mon"
        );
        let best = |row: Row| {
            let index = Row::ALL.iter().position(|candidate| *candidate == row)?;
            samples[index]
                .iter()
                .copied()
                .max_by(|a, b| a.rate.total_cmp(&b.rate))
        };
        for (index, row) in Row::ALL.into_iter().enumerate() {
            let Some(top) = best(row) else {
                if row.is_http() && !have_monitor {
                    println!(
                        "{:<28} (skipped: run `cargo build --release -p diagmon` first)",
                        row.label()
                    );
                }
                continue;
            };
            let runs = &samples[index];
            let versus: Vec<String> = row
                .baselines()
                .iter()
                .filter_map(|base| {
                    let base_top = best(*base)?;
                    let base_runs = &samples[Row::ALL.iter().position(|row| row == base)?];
                    // Each round's ratio, so that a slow stretch of the machine hits both sides.
                    let paired = median(
                        runs.iter()
                            .zip(base_runs)
                            .map(|(run, base_run)| run.rate / base_run.rate)
                            .collect(),
                    );
                    Some(format!(
                        "{:.2}x best, {paired:.2}x per round: {}",
                        top.rate / base_top.rate,
                        base.label()
                    ))
                })
                .collect();
            println!(
                "{:<28} {:>10.0} {:>8.0} {:>5.1} MiB  {:.2} / {:.2} / {:.2}   {}",
                row.label(),
                top.rate,
                median(runs.iter().map(|sample| sample.rate).collect()),
                runs.iter().map(|sample| sample.rss).fold(0.0, f64::max),
                top.cores[0],
                top.cores[1],
                top.cores[2],
                versus.join(", "),
            );
            if row.is_http() {
                let first_bytes = runs
                    .iter()
                    .map(|sample| sample.first_byte.as_secs_f64() * 1000.0)
                    .collect();
                println!(
                    "  time from request to first streamed byte: median {:.1} ms",
                    median(first_bytes)
                );
            }
        }
    }
}

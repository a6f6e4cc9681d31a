//! The server's defences end to end, against the real `diagmon collect` binary over real
//! sockets: the connection cap and timeouts (slow and idle clients, half-closed clients), the
//! Host and Origin screen with authentication off, the shutdown deadline with a client that
//! stops reading a streamed trace of a real .NET Core 3.1 target, configuration errors that
//! name the key, and provider settings (redacted by `config show`, read from env or files).
//!
//! Raw TCP is used where a client library would hide what is tested (a partial request head, a
//! half-close, a forged Host, a client that never reads).

use std::process::Command;
use std::time::{Duration, Instant};

use diagmon_tests::monitor::{Monitor, monitor_binary};
use diagmon_tests::target::{Program, TestTarget};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `host:port` of the monitor.
fn address(monitor: &Monitor) -> String {
    monitor
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Sends `request` on a fresh connection, half-closes, and returns everything the server sent
/// before closing (≤ 10 s).
async fn exchange(address: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    stream.shutdown().await.expect("half-close");
    read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("the server answers and closes within 10 s")
}

/// Reads until the peer closes; `None` if it has not closed within `limit`.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut received)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
        Err(_) => None,
    }
}

/// The status line's code and the body of a raw HTTP/1.1 response.
fn status_and_body(response: &str) -> (u16, String) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response
        .split_once("\r\n\r\n")
        .map_or(response, |(head, _)| head);
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Asserts a refusal: `status`, `application/problem+json`, and a detail naming `field`.
fn assert_problem(response: &str, status: u16, field: &str) {
    let (code, body) = status_and_body(response);
    assert_eq!(code, status, "{response}");
    assert_eq!(
        header(response, "content-type"),
        Some("application/problem+json"),
        "{response}"
    );
    let problem: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(field), "the detail names {field}: {detail}");
    assert!(
        header(response, "access-control-allow-origin").is_none(),
        "no CORS headers: {response}"
    );
}

#[tokio::test]
async fn without_auth_only_loopback_hosts_and_same_origin_requests_get_through() {
    let monitor = Monitor::start(
        "[http]\nallowed_hosts = [\"monitor.internal\"]\n",
        &["--no-auth"],
    );
    let address = address(&monitor);
    let port = address.rsplit(':').next().expect("a port").to_owned();

    // DNS rebinding: the page's own name, now resolving to 127.0.0.1, arrives as the Host.
    for path in ["/processes", "/env", "/healthz"] {
        let response = exchange(
            &address,
            &format!("GET {path} HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n"),
        )
        .await;
        assert_problem(&response, 403, "Host");
    }
    // A cross-site POST that would start a trace, and a cross-origin read of /env.
    for (method, path) in [
        ("POST", "/trace"),
        ("GET", "/env"),
        ("DELETE", "/operations/x"),
    ] {
        let response = exchange(
            &address,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\n\
                 Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
            ),
        )
        .await;
        assert_problem(&response, 403, "Origin");
    }
    // Fetch Metadata: a cross-site page that sends no Origin (an <img src>).
    let response = exchange(
        &address,
        &format!(
            "GET /trace?pid=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nSec-Fetch-Site: cross-site\r\n\r\n"
        ),
    )
    .await;
    assert_problem(&response, 403, "Sec-Fetch-Site");

    // Loopback names, an allowed name, and the server's own origin work.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("monitor.internal:{port}"),
    ] {
        let response = exchange(
            &address,
            &format!(
                "GET /processes HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nSec-Fetch-Site: same-origin\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(status_and_body(&response).0, 200, "{host}: {response}");
    }
    // A same-origin POST /trace reaches the handler (which finds no process to trace here).
    let response = exchange(
        &address,
        &format!(
            "POST /trace?pid=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        ),
    )
    .await;
    let (status, body) = status_and_body(&response);
    assert!(
        ![401, 403].contains(&status),
        "same-origin is not refused: {response}"
    );
    assert!(!body.contains("Origin"), "{body}");
}

#[tokio::test]
async fn slow_and_idle_clients_are_closed_and_the_cap_holds() {
    const CAP: usize = 16;
    let monitor = Monitor::start(
        &format!("[http]\nheader_read_timeout_seconds = 2\nmax_connections = {CAP}\n"),
        &["--no-auth"],
    );
    let address = address(&monitor);
    let open_files = || {
        std::fs::read_dir(format!("/proc/{}/fd", monitor.pid()))
            .map(|entries| entries.count())
            .unwrap_or(0)
    };
    let baseline = open_files();

    // Three times the cap: half-requests (a head that never ends) and clients that send nothing.
    let mut clients = Vec::new();
    for index in 0..3 * CAP {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        if index % 2 == 0 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n")
                .await
                .expect("send half a request");
        }
        clients.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = open_files();
    assert!(
        held <= baseline + CAP + 2,
        "at most {CAP} connections are held: {held} open files, {baseline} before"
    );

    // Every client is closed: the first CAP after ~2 s, the next ones as slots free.
    let started = Instant::now();
    for (index, client) in clients.iter_mut().enumerate() {
        let received = read_to_close(client, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("client {index} is still open after 15 s"));
        assert!(
            received.is_empty() || received.starts_with("HTTP/1.1 408"),
            "client {index} got {received:?}"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(12),
        "{} idle clients, cap {CAP}, 2 s timeout: all closed in {elapsed:?}",
        3 * CAP
    );
    assert!(open_files() <= baseline + 2, "the descriptors are released");
}

#[tokio::test]
async fn past_the_cap_a_fresh_request_is_answered_once_old_connections_time_out() {
    const CAP: usize = 8;
    let monitor = Monitor::start(
        &format!("[http]\nheader_read_timeout_seconds = 2\nmax_connections = {CAP}\n"),
        &["--no-auth"],
    );
    let address = address(&monitor);
    let mut idle = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("send half a request");
        idle.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let response = exchange(
        &address,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(status_and_body(&response), (200, "ok".to_owned()));
    assert!(
        waited < Duration::from_secs(6),
        "answered once the idle connections timed out (2 s), not hung: {waited:?}"
    );
}

#[tokio::test]
async fn every_complete_request_is_answered_even_after_a_half_close() {
    let monitor = Monitor::start("", &["--no-auth"]);
    let address = address(&monitor);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let address = address.clone();
        clients.spawn(async move {
            exchange(&address, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await
        });
    }
    let mut answered = 0;
    while let Some(response) = clients.join_next().await {
        let response = response.expect("the client task");
        assert_eq!(
            status_and_body(&response),
            (200, "ok".to_owned()),
            "{response}"
        );
        answered += 1;
    }
    assert_eq!(answered, 200);
}

/// The sample body of a CPU trace: samples plus the runtime's default keywords.
fn trace_body() -> String {
    json!({
        "providers": [
            {"name": "Microsoft-DotNETCore-SampleProfiler", "eventLevel": "Informational"},
            {"name": "Microsoft-Windows-DotNETRuntime", "keywords": "0x14C14FCCBD", "eventLevel": "Verbose"}
        ],
        "requestRundown": true,
        "bufferSizeInMB": 64
    })
    .to_string()
}

/// Starts an endless streamed trace of `pid` on a socket with a tiny receive buffer, reads its
/// response head and then never reads again; returns the socket and the operation's URL once
/// the capture has stalled (its `bytesCaptured` stopped growing).
async fn stalled_stream(monitor: &Monitor, pid: u32) -> (TcpStream, String) {
    let address = address(monitor);
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("a small receive buffer");
    let mut stream = socket
        .connect(address.parse().expect("a socket address"))
        .await
        .expect("connect");
    let body = trace_body();
    stream
        .write_all(
            format!(
                "POST /trace?pid={pid}&durationSeconds=-1 HTTP/1.1\r\nHost: {address}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .expect("send the request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream
            .read_exact(&mut byte)
            .await
            .expect("the response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let location = header(&head, "location")
        .expect("a Location header")
        .to_owned();

    let client = reqwest::Client::new();
    let mut last = (0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let operation: Value = client
            .get(&location)
            .send()
            .await
            .expect("the operation")
            .json()
            .await
            .expect("JSON");
        let bytes = operation["bytesCaptured"].as_u64().unwrap_or(0);
        if bytes != last.0 {
            last = (bytes, Instant::now());
        } else if bytes > 0 && last.1.elapsed() > Duration::from_secs(3) {
            eprintln!("the capture stalled at {bytes} bytes");
            return (stream, location);
        }
        assert!(
            Instant::now() < deadline,
            "the capture never stalled: {operation}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_shutdown_drops_a_stalled_stream_at_its_deadline_and_refuses_new_traces() {
    let target = TestTarget::start(Program::Worker, &[]);
    let mut monitor = Monitor::start(
        &format!(
            "socket_dir = {:?}\n[http]\nshutdown_timeout_seconds = 5\n",
            target.tmpdir().display().to_string()
        ),
        &["--no-auth"],
    );
    let (_stalled, _location) = stalled_stream(&monitor, target.pid()).await;

    let signalled = Instant::now();
    monitor.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = reqwest::Client::new()
        .post(monitor.url(&format!("/trace?pid={}", target.pid())))
        .header("content-type", "application/json")
        .body(trace_body())
        .send()
        .await
        .expect("the monitor still answers during the shutdown");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok()),
        Some("application/problem+json")
    );

    let status = monitor
        .wait_exit(Duration::from_secs(15))
        .expect("the monitor exits after its shutdown deadline");
    let took = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "exits at the 5 s deadline, not before and not much after: {took:?}"
    );
    let logs = monitor.stderr_lines().join("\n");
    assert!(logs.contains("the shutdown deadline passed"), "{logs}");
    assert!(logs.contains("operation cancelled"), "{logs}");
    assert!(!logs.contains("operation succeeded"), "{logs}");
}

#[tokio::test]
async fn a_second_stop_signal_exits_at_once() {
    let target = TestTarget::start(Program::Worker, &[]);
    let mut monitor = Monitor::start(
        &format!(
            "socket_dir = {:?}\n[http]\nshutdown_timeout_seconds = 120\n",
            target.tmpdir().display().to_string()
        ),
        &["--no-auth"],
    );
    let (_stalled, _location) = stalled_stream(&monitor, target.pid()).await;
    monitor.signal(libc::SIGTERM);
    assert!(
        monitor.wait_exit(Duration::from_secs(2)).is_none(),
        "the first signal waits for the stalled stream"
    );
    let second = Instant::now();
    monitor.signal(libc::SIGINT);
    let status = monitor
        .wait_exit(Duration::from_secs(3))
        .expect("the second signal exits at once");
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{status}");
    assert!(second.elapsed() < Duration::from_secs(3));
}

/// Runs `diagmon collect` with `config_toml` and `env`, expecting it to exit on its own
/// (≤ 60 s); returns its exit code and stderr.
fn collect_fails(config_toml: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("diagmon.toml");
    std::fs::write(&config, config_toml).expect("write the config");
    let mut child = Command::new(monitor_binary())
        .args([
            "collect",
            "--no-auth",
            "--urls",
            "http://127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start diagmon");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(
                &mut child.stderr.take().expect("piped stderr"),
                &mut stderr,
            )
            .expect("read stderr");
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("diagmon did not stop on its own with {config_toml}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn out_of_range_limits_and_bad_urls_stop_start_up_naming_the_key() {
    for (config, key) in [
        (
            "[limits]\nmax_concurrent_traces = 9223372036854775807\n",
            "limits.max_concurrent_traces",
        ),
        ("[http]\nmax_connections = 0\n", "http.max_connections"),
        (
            "urls = [\"http://127.0.0.1:0\", \"tcp://0.0.0.0:1\"]\n",
            "urls[1]",
        ),
    ] {
        // `--urls` on the command line would replace the file's; pass none for the URL case.
        let (code, stderr) = if config.starts_with("urls") {
            collect_without_urls(config)
        } else {
            collect_fails(config, &[])
        };
        assert_eq!(code, Some(1), "{config}: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "{config}: {stderr}");
        assert!(!stderr.contains("panicked"), "{config}: {stderr}");
    }
}

/// Like [`collect_fails`] but with the URLs of the file.
fn collect_without_urls(config_toml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("diagmon.toml");
    std::fs::write(&config, config_toml).expect("write the config");
    let output = Command::new(monitor_binary())
        .args(["collect", "--no-auth", "--config"])
        .arg(&config)
        .output()
        .expect("run diagmon");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn config_show_redacts_provider_settings_secrets() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("diagmon.toml");
    std::fs::write(
        &config,
        "[egress.providers.hook]\ncomponent = \"/opt/hook.wasm\"\n\
         allowed_outbound_hosts = [\"https://hooks.example.com\"]\n\
         [egress.providers.hook.settings]\nurl = \"https://hooks.example.com/t\"\n\
         authorization = \"Bearer hunter2\"\nx-api-key = \"hunter3\"\n\
         password = \"hunter4\"\nheaders = \"Authorization: Bearer hunter5\"\n\
         token = { env = \"HOOK_TOKEN\" }\n",
    )
    .expect("write the config");
    let output = Command::new(monitor_binary())
        .args(["config", "show", "--config"])
        .arg(&config)
        .output()
        .expect("run diagmon config show");
    assert!(output.status.success(), "{output:?}");
    let shown = String::from_utf8_lossy(&output.stdout);
    for secret in ["hunter2", "hunter3", "hunter4", "hunter5"] {
        assert!(!shown.contains(secret), "{secret} is shown:\n{shown}");
    }
    assert!(shown.contains("https://hooks.example.com/t"), "{shown}");
    assert!(
        shown.contains("HOOK_TOKEN"),
        "references stay visible:\n{shown}"
    );
}

#[test]
fn provider_settings_can_come_from_the_environment_or_a_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let traces = dir.path().join("traces");
    let provider = |setting: &str| {
        format!(
            "[egress.providers.files]\ncomponent = \"filesystem\"\ndirectory = {:?}\n\
             [egress.providers.files.settings]\nname_template = {setting}\n",
            traces.display().to_string()
        )
    };

    // An unset variable stops start-up naming the setting and the variable.
    let (code, stderr) = collect_fails(
        &provider("{ env = \"E2E_NAME_TEMPLATE_SURELY_UNSET\" }"),
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("name_template") && stderr.contains("E2E_NAME_TEMPLATE_SURELY_UNSET"),
        "{stderr}"
    );
    // The variable's value reaches the provider: an invalid template is refused by it.
    let (code, stderr) = collect_fails(
        &provider("{ env = \"E2E_NAME_TEMPLATE\" }"),
        &[("E2E_NAME_TEMPLATE", "{no_such_placeholder}")],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no_such_placeholder"), "{stderr}");

    // A file with a valid template: the monitor starts.
    let template = dir.path().join("template");
    std::fs::write(&template, "{pid}_{file_name}\n").expect("write the template file");
    let monitor = Monitor::start(
        &provider(&format!(
            "{{ file = {:?} }}",
            template.display().to_string()
        )),
        &["--no-auth"],
    );
    assert!(
        monitor
            .stderr_lines()
            .join("\n")
            .contains("egress providers loaded")
    );
}

//! A small HTTP/1.1 server on loopback for egress tests: it records every request (and whether
//! its body ended properly) and answers 201, or 403 under `/forbidden/`.

use std::time::{Duration, Instant};

/// What the test HTTP server received in one request.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended properly (the last chunk, or all of Content-Length).
    pub complete: bool,
}

/// A small HTTP/1.1 server on loopback that records every request and answers 201 (or 403 for
/// paths under `/forbidden/`).
pub struct TestHttpServer {
    address: std::net::SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestHttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestHttpServer {
    /// Starts the server on a free loopback port.
    pub async fn start() -> TestHttpServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve_one(stream, log).await;
                });
            }
        });
        TestHttpServer {
            address,
            received,
            task,
        }
    }

    /// The address it listens on.
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:PORT`, for `allowed_outbound_hosts`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (≤ 10 s) until `count` requests arrived, and returns them.
    pub async fn wait_for_requests(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.requests().len() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.requests()
    }
}

async fn serve_one(
    stream: tokio::net::TcpStream,
    log: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    let complete = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut complete = false;
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                break;
            }
            let Ok(size) = usize::from_str_radix(line.trim(), 16) else {
                break;
            };
            if size == 0 {
                complete = true;
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            if reader.read_exact(&mut body[start..]).await.is_err() {
                body.truncate(start);
                break;
            }
            line.clear();
            reader.read_line(&mut line).await?;
        }
        complete
    } else {
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        body.resize(length, 0);
        reader.read_exact(&mut body).await.is_ok()
    };
    let status = if path.starts_with("/forbidden/") {
        "403 Forbidden"
    } else {
        "201 Created"
    };
    log.lock().unwrap().push(Received {
        method,
        path,
        headers,
        body,
        complete,
    });
    if complete {
        let mut stream = reader.into_inner();
        stream
            .write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        stream.shutdown().await?;
    }
    Ok(())
}

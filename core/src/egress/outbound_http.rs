//! Outbound HTTP for providers granted `allowed_outbound_hosts`: `wasi:http` (wasmtime-wasi-http)
//! with diagmon sending the requests itself, so that each one is checked against the provider's
//! allow-list before any connection is made.
//!
//! An allow-list entry is `scheme://host[:port]`:
//! - `scheme` is `http`, `https` or `*` (either);
//! - `host` is a name or an IP address, `*.example.com` (any subdomain, not `example.com` itself)
//!   or `*` (any host);
//! - `port` is a number or `*`; without one, only the scheme's default port (80, 443) is allowed.
//!
//! The check is on the request's URL, before DNS: a host name that resolves to an internal
//! address is still reached, so grant names you control. HTTPS verifies servers against the
//! system's root certificates, with rustls and aws-lc-rs (set explicitly: no process-wide
//! default provider is needed).
//!
//! Every wait is bounded: connecting and the first byte of the response by the request's own
//! timeouts or else the provider's call deadline, and each later read of the response body by its
//! between-bytes timeout (the same default), so that a peer that stops sending is cut even when
//! the provider never waits on the body itself. The connection ends with the response: nothing
//! outlives the instance.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    /// `None` for `*`.
    scheme: Option<String>,
    host: HostPattern,
    port: PortRule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    /// The scheme's default port.
    Default,
    Exact(u16),
    Any,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl Origin {
    fn parse(entry: &str) -> Result<Origin, String> {
        let expected = "expected scheme://host[:port], for example https://hooks.example.com";
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| format!("`{entry}`: {expected}"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "*" => None,
            s @ ("http" | "https") => Some(s.to_owned()),
            other => {
                return Err(format!(
                    "`{entry}`: unsupported scheme `{other}` (http, https or *)"
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(format!(
                "`{entry}`: only an origin is allowed, no path or credentials; {expected}"
            ));
        }
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("`{entry}`: unclosed `[`"))?;
            (host.to_owned(), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (rest.to_owned(), None),
            }
        };
        let port = match port {
            None => PortRule::Default,
            Some("*") => PortRule::Any,
            Some(port) => PortRule::Exact(
                port.parse()
                    .map_err(|_| format!("`{entry}`: invalid port `{port}`"))?,
            ),
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            HostPattern::Suffix(format!(".{suffix}"))
        } else if host.is_empty() || host.contains('*') {
            return Err(format!("`{entry}`: invalid host `{host}`; {expected}"));
        } else {
            HostPattern::Exact(host)
        };
        Ok(Origin { scheme, host, port })
    }

    fn permits(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self
            .scheme
            .as_ref()
            .is_some_and(|allowed| allowed != scheme)
        {
            return false;
        }
        let host_ok = match &self.host {
            HostPattern::Exact(exact) => exact == host,
            HostPattern::Suffix(suffix) => host.ends_with(suffix.as_str()),
            HostPattern::Any => true,
        };
        let port_ok = match self.port {
            PortRule::Any => true,
            PortRule::Exact(allowed) => allowed == port,
            PortRule::Default => default_port(scheme) == Some(port),
        };
        host_ok && port_ok
    }
}

/// A provider's `allowed_outbound_hosts`, parsed.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowList(Vec<Origin>);

impl AllowList {
    /// Parses the entries; the error names the bad entry.
    pub(crate) fn parse(entries: &[String]) -> Result<AllowList, String> {
        entries
            .iter()
            .map(|e| Origin::parse(e.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(AllowList)
    }

    /// True when the list grants anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a request to `uri` is allowed.
    fn permits(&self, uri: &http::Uri) -> bool {
        let Some(scheme) = uri.scheme_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let Some(port) = uri.port_u16().or_else(|| default_port(&scheme)) else {
            return false;
        };
        self.0.iter().any(|o| o.permits(&scheme, &host, port))
    }
}

/// The `wasi:http` hooks of one instance: the allow-list check and the sending.
pub(crate) struct HttpHooks {
    pub(crate) allowed: Arc<AllowList>,
    pub(crate) provider: Arc<str>,
    /// How long to wait for a connection, for the first byte of a response and between two
    /// reads of its body when the guest sets no timeout: the provider's call deadline.
    pub(crate) default_timeout: Duration,
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        drop(fut);
        let allowed = self.allowed.permits(request.uri());
        let provider = self.provider.clone();
        let default_timeout = self.default_timeout;
        Box::new(async move {
            if !allowed {
                tracing::warn!(
                    provider = %provider,
                    "refused an outbound request to {}: not in allowed_outbound_hosts",
                    request.uri()
                );
                return Err(Error::HttpRequestDenied);
            }
            send(request, options, default_timeout).await
        })
    }
}

/// rustls with aws-lc-rs and the system's roots, built once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for certificate in found.certs {
                let _ = roots.add(certificate);
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| {
                    Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
                })
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| Error::InternalError(Some(e)))
}

/// Sends one request over a fresh HTTP/1.1 connection.
async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    default_timeout: Duration,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let uri = request.uri().clone();
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    let use_tls = uri.scheme_str() == Some("https");
    let port = authority
        .port_u16()
        .unwrap_or(if use_tls { 443 } else { 80 });
    let host = authority.host().to_owned();
    let address = format!("{host}:{port}");
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(default_timeout);
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(default_timeout);
    let between_bytes_timeout = options
        .and_then(|o| o.between_bytes_timeout)
        .unwrap_or(default_timeout)
        .max(Duration::from_millis(1));

    let stream = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(&address))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let io: Box<dyn Stream> = if use_tls {
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let connector = tokio_rustls::TlsConnector::from(tls_config()?);
        let tls = tokio::time::timeout(connect_timeout, connector.connect(server_name, stream))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(wasmtime_wasi_http::io::TokioIo::new(io))
        .await
        .map_err(Error::from)?;
    let mut driver = AbortOnDrop(tokio::spawn(connection));

    // Over a direct connection the request line carries only the path and query.
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?;
    let response = response.map(|body| {
        BetweenBytes::new(body.map_err(Error::from), between_bytes_timeout).boxed_unsync()
    });
    let io_done: IoFuture = Box::new(async move {
        match (&mut driver.0).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Error::from(error)),
            Err(_) => Err(Error::ConnectionTerminated),
        }
    });
    Ok((response, io_done))
}

/// A spawned task aborted when its handle is dropped: the connection driver ends with the
/// instance that made the request.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A response body that fails with `connection-read-timeout` when no frame arrives within the
/// between-bytes timeout.
struct BetweenBytes<B> {
    body: B,
    timeout: Duration,
    /// When the current wait for a frame ends; `None` between reads.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> BetweenBytes<B> {
    fn new(body: B, timeout: Duration) -> Self {
        BetweenBytes {
            body,
            timeout,
            sleep: None,
        }
    }
}

impl<B> Body for BetweenBytes<B>
where
    B: Body<Error = Error> + Unpin,
{
    type Data = B::Data;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.sleep = None;
                        Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn permits(list: &AllowList, url: &str) -> bool {
        list.permits(&url.parse().unwrap())
    }

    #[test]
    fn an_origin_without_a_port_allows_only_the_default_port() {
        let l = list(&["https://hooks.example.com"]);
        assert!(permits(&l, "https://hooks.example.com/a?b"));
        assert!(permits(&l, "https://HOOKS.example.com:443/"));
        assert!(!permits(&l, "https://hooks.example.com:8443/"));
        assert!(!permits(&l, "http://hooks.example.com/"));
        assert!(!permits(&l, "https://evil.com/"));
        assert!(!permits(&l, "https://hooks.example.com.evil.com/"));
    }

    #[test]
    fn wildcards_cover_subdomains_ports_and_schemes() {
        let l = list(&[
            "*://*.example.com:*",
            "http://127.0.0.1:8080",
            "http://[::1]:9000",
        ]);
        assert!(permits(&l, "http://a.example.com:1234/"));
        assert!(permits(&l, "https://b.c.example.com/"));
        assert!(!permits(&l, "https://example.com/"));
        assert!(permits(&l, "http://127.0.0.1:8080/x"));
        assert!(!permits(&l, "http://127.0.0.1:8081/x"));
        assert!(permits(&l, "http://[::1]:9000/"));
    }

    #[test]
    fn bad_entries_are_named() {
        for entry in [
            "hooks.example.com",
            "ftp://x",
            "https://x/path",
            "https://x:port",
            "https://a*b",
        ] {
            let error = AllowList::parse(&[entry.to_owned()]).unwrap_err();
            assert!(error.contains(entry), "{error}");
        }
    }
}

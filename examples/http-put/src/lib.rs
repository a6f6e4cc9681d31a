//! An example egress provider: PUTs each artifact to an HTTP endpoint, streaming it as it comes
//! (chunked transfer encoding), through `wasi:http`.
//!
//! Build it with (from `examples/`):
//!
//!     cargo build --release --target wasm32-wasip2
//!
//! and configure it in diagmon (the grant and the URL must agree):
//!
//! ```toml
//! [egress.providers.upload]
//! component = "examples/target/wasm32-wasip2/release/http_put_provider.wasm"
//! allowed_outbound_hosts = ["http://127.0.0.1:8080"]
//! [egress.providers.upload.settings]
//! url = "http://127.0.0.1:8080/traces/{file_name}"
//! headers = { "x-api-key" = "..." }   # optional
//! ```
//!
//! Settings:
//! - `url` (required): where to PUT; `{file_name}`, `{pid}`, `{process_name}` and
//!   `{operation_id}` are replaced by the artifact's values, percent-encoded. Its origin must be in `allowed_outbound_hosts`, or every
//!   upload is refused with `denied`.
//! - `headers` (optional): a table of extra request headers.
//!
//! The result's location is the URL without its query string (which may hold a signature).
//! An upload dropped unfinished never completes its request body, so the server sees a cut
//! chunked body and must not store it.

use std::cell::RefCell;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, HeaderError, Method, OutgoingBody, OutgoingRequest,
    Scheme,
};
use wasip2::io::streams::{OutputStream, StreamError};

wit_bindgen::generate!({
    path: "../../wit/diagmon-egress@0.1.0",
    world: "egress-provider",
});

use diagmon::egress::log::{Level, log};
use diagmon::egress::types::{Artifact, EgressResult, Error};
use exports::diagmon::egress::provider::{Guest, GuestUpload, Upload};

/// The settings, as `configure` validated them.
struct Settings {
    url: String,
    headers: Vec<(String, String)>,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

/// A URL split the way `wasi:http` wants it.
struct Target {
    scheme: Scheme,
    authority: String,
    path_and_query: String,
}

fn split_url(url: &str) -> Result<Target, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not an absolute http(s) URL"))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(format!("unsupported scheme `{other}` in `{url}`")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok(Target {
        scheme,
        authority: authority.to_owned(),
        path_and_query: path.to_owned(),
    })
}

/// Parses the `headers` setting: a JSON object of strings (diagmon passes tables as JSON text).
fn parse_headers(json: &str) -> Result<Vec<(String, String)>, String> {
    // A tiny parser for {"name": "value", ...}: enough for an example, no dependency.
    let inner = json
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or_else(|| "`headers` must be a table of strings".to_owned())?;
    let mut headers = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let (name, after) = json_string(rest)?;
        let after = after
            .trim_start()
            .strip_prefix(':')
            .ok_or_else(|| "`headers`: expected `:`".to_owned())?;
        let (value, after) = json_string(after.trim_start())?;
        headers.push((name, value));
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(headers)
}

fn json_string(text: &str) -> Result<(String, &str), String> {
    let body = text
        .strip_prefix('"')
        .ok_or_else(|| "`headers` values must be strings".to_owned())?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, c)) => out.push(c),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("`headers`: unterminated string".to_owned())
}

/// The URL for one artifact: the placeholders replaced by the artifact's values, each
/// percent-encoded (a process or file name may hold spaces, `/`, `?` or any unicode).
fn render(template: &str, artifact: &Artifact) -> String {
    template
        .replace("{file_name}", &percent_encode(&artifact.file_name))
        .replace("{pid}", &artifact.pid.to_string())
        .replace("{process_name}", &percent_encode(&artifact.process_name))
        .replace("{operation_id}", &percent_encode(&artifact.operation_id))
}

/// Percent-encodes every byte but RFC 3986's unreserved characters.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn http_error(what: &str, code: ErrorCode) -> Error {
    match code {
        ErrorCode::HttpRequestDenied => Error::Denied(format!(
            "{what}: the request was refused by diagmon; add its origin to `allowed_outbound_hosts`"
        )),
        ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTimeout
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationNotFound
        | ErrorCode::DnsTimeout => Error::Unavailable(format!("{what}: {code:?}")),
        other => Error::Io(format!("{what}: {other:?}")),
    }
}

fn stream_error(what: &str, error: StreamError) -> Error {
    match error {
        StreamError::Closed => Error::Io(format!("{what}: the connection was closed")),
        StreamError::LastOperationFailed(e) => {
            Error::Io(format!("{what}: {}", e.to_debug_string()))
        }
    }
}

struct Component;

impl Guest for Component {
    type Upload = HttpUpload;

    fn configure(settings: Vec<(String, String)>) -> Result<(), Error> {
        let mut url = None;
        let mut headers = Vec::new();
        for (key, value) in settings {
            match key.as_str() {
                "url" => {
                    split_url(&value).map_err(Error::InvalidSettings)?;
                    url = Some(value);
                }
                "headers" => headers = parse_headers(&value).map_err(Error::InvalidSettings)?,
                other => {
                    return Err(Error::InvalidSettings(format!(
                        "unknown setting `{other}`; this provider knows `url` and `headers`"
                    )));
                }
            }
        }
        let url = url.ok_or_else(|| Error::InvalidSettings("`url` is required".to_owned()))?;
        SETTINGS.with(|s| *s.borrow_mut() = Some(Settings { url, headers }));
        Ok(())
    }

    fn begin(artifact: Artifact) -> Result<Upload, Error> {
        let (url, extra_headers) = SETTINGS.with(|s| {
            let s = s.borrow();
            let s = s.as_ref().expect("configure runs before begin");
            (render(&s.url, &artifact), s.headers.clone())
        });
        let target = split_url(&url).map_err(Error::InvalidSettings)?;

        let mut header_list = vec![(
            "content-type".to_owned(),
            artifact.content_type.clone().into_bytes(),
        )];
        header_list.extend(
            extra_headers
                .into_iter()
                .map(|(name, value)| (name, value.into_bytes())),
        );
        let headers = Fields::from_list(&header_list).map_err(|e| {
            Error::InvalidSettings(match e {
                HeaderError::Forbidden => {
                    "`headers` names a header the host sets itself (such as `host` or \
                         `content-length`); remove it"
                        .to_owned()
                }
                _ => "`headers` holds a name or value that is not a valid HTTP header".to_owned(),
            })
        })?;
        let request = OutgoingRequest::new(headers);
        let invalid = |what: &str| Error::InvalidSettings(format!("invalid {what} in `{url}`"));
        request
            .set_method(&Method::Put)
            .map_err(|_| invalid("method"))?;
        request
            .set_scheme(Some(&target.scheme))
            .map_err(|_| invalid("scheme"))?;
        request
            .set_authority(Some(&target.authority))
            .map_err(|_| invalid("host"))?;
        request
            .set_path_with_query(Some(&target.path_and_query))
            .map_err(|_| invalid("path"))?;
        let body = request
            .body()
            .map_err(|_| Error::Other("the request body was already taken".to_owned()))?;
        let stream = body
            .write()
            .map_err(|_| Error::Other("the body stream was already taken".to_owned()))?;
        // Send now: the body streams while diagmon writes chunks.
        let response = outgoing_handler::handle(request, None)
            .map_err(|code| http_error(&format!("PUT {url}"), code))?;
        log(Level::Debug, &format!("PUT {url} started"));
        let location = match url.split_once('?') {
            Some((base, _)) => base.to_owned(),
            None => url.clone(),
        };
        Ok(Upload::new(HttpUpload {
            url,
            location,
            stream: RefCell::new(Some(stream)),
            body: RefCell::new(Some(body)),
            response: RefCell::new(Some(response)),
        }))
    }
}

/// One artifact being PUT.
struct HttpUpload {
    url: String,
    location: String,
    stream: RefCell<Option<OutputStream>>,
    body: RefCell<Option<OutgoingBody>>,
    response: RefCell<Option<FutureIncomingResponse>>,
}

impl HttpUpload {
    /// Why the body stream failed: the request was refused or the server answered early, and
    /// the response says which; only without one is the stream's own error the cause.
    fn stream_failure(&self, error: StreamError) -> Error {
        if let Some(response) = self.response.borrow().as_ref() {
            response.subscribe().block();
        }
        self.early_failure()
            .unwrap_or_else(|| stream_error(&format!("PUT {}", self.url), error))
    }

    /// The response, if it already arrived with an error: a server that answers before the body
    /// ends (401, 413) makes later writes fail with a useless "closed".
    fn early_failure(&self) -> Option<Error> {
        let response = self.response.borrow();
        let response = response.as_ref()?;
        match response.get()? {
            Ok(Ok(response)) if !(200..300).contains(&response.status()) => {
                Some(Error::Denied(format!(
                    "PUT {}: the server answered {}",
                    self.url,
                    response.status()
                )))
            }
            Ok(Err(code)) => Some(http_error(&format!("PUT {}", self.url), code)),
            _ => None,
        }
    }
}

impl GuestUpload for HttpUpload {
    fn write(&self, chunk: Vec<u8>) -> Result<(), Error> {
        let stream = self.stream.borrow();
        let stream = stream
            .as_ref()
            .ok_or_else(|| Error::Other("the upload is closed".to_owned()))?;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let permitted = match stream.check_write() {
                Ok(n) => n as usize,
                Err(e) => return Err(self.stream_failure(e)),
            };
            if permitted == 0 {
                stream.subscribe().block();
                continue;
            }
            let n = permitted.min(rest.len());
            stream
                .write(&rest[..n])
                .map_err(|e| self.stream_failure(e))?;
            rest = &rest[n..];
        }
        Ok(())
    }

    fn finish(this: Upload) -> Result<EgressResult, Error> {
        let upload: HttpUpload = this.into_inner();
        let what = format!("PUT {}", upload.url);
        if let Some(stream) = upload.stream.borrow_mut().take() {
            stream
                .blocking_flush()
                .map_err(|e| upload.stream_failure(e))?;
        }
        if let Some(body) = upload.body.borrow_mut().take() {
            OutgoingBody::finish(body, None).map_err(|code| http_error(&what, code))?;
        }
        let response = upload
            .response
            .borrow_mut()
            .take()
            .ok_or_else(|| Error::Other("no response".to_owned()))?;
        response.subscribe().block();
        let response = match response.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(http_error(&what, code)),
            _ => return Err(Error::Io(format!("{what}: no response"))),
        };
        let status = response.status();
        match status {
            200..=299 => {
                log(Level::Info, &format!("{what}: {status}"));
                Ok(EgressResult {
                    location: upload.location.clone(),
                })
            }
            401 | 403 => Err(Error::Denied(format!(
                "{what}: the server answered {status}"
            ))),
            500..=599 => Err(Error::Unavailable(format!(
                "{what}: the server answered {status}"
            ))),
            _ => Err(Error::Io(format!("{what}: the server answered {status}"))),
        }
    }

    fn abort(this: Upload) -> Result<(), Error> {
        // Dropping the body without `finish` tells the host the request body is incomplete:
        // the connection is cut and the server never sees a complete request.
        drop(this.into_inner::<HttpUpload>());
        Ok(())
    }
}

impl Drop for HttpUpload {
    fn drop(&mut self) {
        if self.body.borrow().is_some() {
            log(Level::Debug, &format!("PUT {} aborted", self.url));
        }
        self.stream.borrow_mut().take();
        self.body.borrow_mut().take();
        self.response.borrow_mut().take();
    }
}

export!(Component);

//! Reads an HTTP response in `write`: a GET of the `url` setting (`http://host:port/path`),
//! whose whole body it reads with blocking reads. With `between_bytes_ms` it asks for that
//! between-bytes timeout. Against a peer that trickles its body without end, the host must stop
//! the call at its deadline; against one that stops sending, the read must fail by the
//! between-bytes timeout.

wit_bindgen::generate!({ path: "../../../wit/diagmon-egress@0.1.0", world: "egress-provider" });

use std::cell::RefCell;

use diagmon::egress::types::{Artifact, EgressResult, Error};
use exports::diagmon::egress::provider::{Guest, GuestUpload, Upload};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingRequest, RequestOptions, Scheme};
use wasip2::io::streams::StreamError;

thread_local! {
    static SETTINGS: RefCell<(String, Option<u64>)> = const { RefCell::new((String::new(), None)) };
}

struct Component;

impl Guest for Component {
    type Upload = Reader;
    fn configure(settings: Vec<(String, String)>) -> Result<(), Error> {
        let mut url = String::new();
        let mut between_bytes = None;
        for (key, value) in settings {
            match key.as_str() {
                "url" => url = value,
                "between_bytes_ms" => {
                    between_bytes = Some(value.parse().map_err(|_| {
                        Error::InvalidSettings(format!("between_bytes_ms `{value}`"))
                    })?)
                }
                _ => return Err(Error::InvalidSettings(format!("unknown setting `{key}`"))),
            }
        }
        SETTINGS.with(|s| *s.borrow_mut() = (url, between_bytes));
        Ok(())
    }
    fn begin(_artifact: Artifact) -> Result<Upload, Error> {
        Ok(Upload::new(Reader))
    }
}

/// `http://authority/path` as (authority, path).
fn split(url: &str) -> Result<(String, String), Error> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::InvalidSettings(format!("`{url}` is not an http:// URL")))?;
    Ok(match rest.find('/') {
        Some(at) => (rest[..at].to_owned(), rest[at..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    })
}

/// GETs the URL and reads the whole body; returns its length.
fn read_all() -> Result<usize, Error> {
    let (url, between_bytes) = SETTINGS.with(|s| s.borrow().clone());
    let (authority, path) = split(&url)?;
    let request = OutgoingRequest::new(Fields::new());
    let refused = |what: &str| Error::Other(format!("the request refused its {what}"));
    request
        .set_method(&Method::Get)
        .map_err(|()| refused("method"))?;
    request
        .set_scheme(Some(&Scheme::Http))
        .map_err(|()| refused("scheme"))?;
    request
        .set_authority(Some(&authority))
        .map_err(|()| refused("authority"))?;
    request
        .set_path_with_query(Some(&path))
        .map_err(|()| refused("path"))?;
    let options = RequestOptions::new();
    if let Some(ms) = between_bytes {
        options
            .set_between_bytes_timeout(Some(ms * 1_000_000))
            .map_err(|()| refused("between-bytes timeout"))?;
    }
    let response = outgoing_handler::handle(request, Some(options))
        .map_err(|e| Error::Unavailable(format!("sending: {e:?}")))?;
    response.subscribe().block();
    let response = response
        .get()
        .ok_or_else(|| Error::Other("no response after the wait".to_owned()))?
        .map_err(|()| Error::Other("the response was taken".to_owned()))?
        .map_err(|e| Error::Unavailable(format!("the response failed: {e:?}")))?;
    let body = response.consume().map_err(|()| refused("body"))?;
    let stream = body.stream().map_err(|()| refused("body stream"))?;
    let mut total = 0;
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(bytes) => total += bytes.len(),
            Err(StreamError::Closed) => return Ok(total),
            Err(StreamError::LastOperationFailed(error)) => {
                return Err(Error::Unavailable(format!(
                    "reading the response body failed after {total} bytes: {}",
                    error.to_debug_string()
                )));
            }
        }
    }
}

struct Reader;

impl GuestUpload for Reader {
    fn write(&self, _chunk: Vec<u8>) -> Result<(), Error> {
        let total = read_all()?;
        Err(Error::Other(format!("READ ALL {total} bytes")))
    }
    fn finish(_this: Upload) -> Result<EgressResult, Error> {
        Err(Error::Other("unreachable".to_owned()))
    }
    fn abort(_this: Upload) -> Result<(), Error> {
        Ok(())
    }
}

export!(Component);

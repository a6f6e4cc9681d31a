//! What every request passes before routing ([`screen`], one middleware around the whole
//! router, so that an unknown method or route is refused like any other request):
//!
//! 1. with authentication off, the `Host` must be a loopback name (`localhost`, `127.0.0.1`,
//!    `[::1]`) or one of `http.allowed_hosts`: a web page that rebinds its own DNS name to
//!    127.0.0.1 reaches the port, but not with a Host the server accepts;
//! 2. a request from a browser page of another origin (an `Origin` that is not this server's
//!    own, or `Sec-Fetch-Site: cross-site`/`same-site`) is refused; diagmon sends no CORS
//!    headers, so browsers cannot read its answers either;
//! 3. every route but `/healthz`, `/openapi.json`, `/metrics` (unless `[metrics] require_auth`)
//!    and the console's static files (`/`, `/ui`, `/ui/...`) needs an API key (when authentication is on): a refusal is a 401 problem that
//!    says how to get a key, with `WWW-Authenticate`;
//! 4. while the server shuts down, `/trace` (which starts a trace) answers 503.
//!
//! Every refusal is `application/problem+json` naming the header at fault.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN, WWW_AUTHENTICATE};
use axum::http::uri::Authority;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use super::ListenerScheme;
use super::problem::Problem;
use crate::auth::{Authenticator, Unauthorized};
use crate::config::{HttpConfig, Scheme};

/// Routes that need no API key: liveness, the API description and the web console's static
/// files (which call the API with a key of their own).
const PUBLIC_PATHS: &[&str] = &["/healthz", "/openapi.json", "/", "/ui"];

/// Prometheus' scrape route, public unless `[metrics] require_auth`.
const METRICS_PATH: &str = "/metrics";

/// The route that starts traces.
const TRACE_PATH: &str = "/trace";

/// `Sec-Fetch-Site`, which browsers send with every request (Fetch Metadata).
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// The state of [`screen`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Screen {
    authenticator: Authenticator,
    /// Host names accepted besides loopback ones, lower-case; checked only with
    /// authentication off.
    allowed_hosts: Arc<[String]>,
    shutting_down: CancellationToken,
    /// Whether `/metrics` is served without an API key.
    public_metrics: bool,
}

impl Screen {
    /// The screen for `authenticator` and the `[http]` allow-list.
    pub fn new(authenticator: Authenticator, http: &HttpConfig) -> Screen {
        Screen {
            authenticator,
            allowed_hosts: http
                .allowed_hosts
                .iter()
                .map(|host| host.to_ascii_lowercase())
                .collect(),
            shutting_down: CancellationToken::new(),
            public_metrics: false,
        }
    }

    /// The same screen, with `/metrics` served without an API key when `public` (dotnet-monitor
    /// never asks one for it).
    #[must_use]
    pub fn with_public_metrics(mut self, public: bool) -> Screen {
        self.public_metrics = public;
        self
    }

    /// Whether `path` needs no API key and no same-origin check.
    fn is_public(&self, path: &str) -> bool {
        PUBLIC_PATHS.contains(&path)
            || path.starts_with("/ui/")
            || (self.public_metrics && path == METRICS_PATH)
    }

    /// From now on, requests that would start a trace get 503.
    pub fn start_shutdown(&self) {
        self.shutting_down.cancel();
    }

    /// Whether `authority` (a Host header's value) is loopback or allowed.
    fn host_is_allowed(&self, authority: &Authority) -> bool {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        loopback
            || self.allowed_hosts.iter().any(|allowed| {
                *allowed == authority.as_str().to_ascii_lowercase()
                    || (!allowed.contains(':') && *allowed == host)
            })
    }
}

/// The middleware: `axum::middleware::from_fn_with_state(screen, guard::screen)`, outermost.
pub async fn screen(State(screen): State<Screen>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let public = screen.is_public(path);
    let scheme = request
        .extensions()
        .get::<ListenerScheme>()
        .map_or(Scheme::Http, |scheme| scheme.0);
    let authority = request_authority(&request);

    if !screen.authenticator.is_enabled() {
        match &authority {
            Some(authority) if screen.host_is_allowed(authority) => {}
            Some(authority) => {
                tracing::warn!(host = %authority, "refused a request for a Host that is not allowed");
                return Problem::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "The Host header `{authority}` is not allowed: with authentication off, \
                         diagmon answers only requests for localhost, 127.0.0.1, [::1] or a name \
                         in `http.allowed_hosts`."
                    ),
                )
                .into_response();
            }
            None => {
                return Problem::bad_request("The request has no valid Host header.")
                    .into_response();
            }
        }
    }
    if !public && let Some(refusal) = cross_origin(&request, scheme, authority.as_ref()) {
        tracing::warn!(%refusal, "refused a cross-origin request");
        return Problem::new(StatusCode::FORBIDDEN, refusal).into_response();
    }
    if !public && let Err(refusal) = screen.authenticator.authorize(request.headers()) {
        return unauthorized(refusal);
    }
    if path == TRACE_PATH && screen.shutting_down.is_cancelled() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "diagmon is shutting down and starts no new traces.",
        )
        .into_response();
    }
    next.run(request).await
}

/// The 401 problem for `refusal`, with its `WWW-Authenticate` challenge.
fn unauthorized(refusal: Unauthorized) -> Response {
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, refusal.detail()).into_response();
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(refusal.challenge()),
    );
    response
}

/// The authority the request names: its Host header (HTTP/1.1) or URI authority (HTTP/2).
fn request_authority(request: &Request) -> Option<Authority> {
    match request.headers().get(HOST) {
        Some(host) => host.to_str().ok()?.parse().ok(),
        None => request.uri().authority().cloned(),
    }
}

/// Why the request comes from a page of another origin, if it does.
fn cross_origin(
    request: &Request,
    scheme: Scheme,
    authority: Option<&Authority>,
) -> Option<String> {
    let headers = request.headers();
    if let Some(site) = headers.get(SEC_FETCH_SITE) {
        let site = site.to_str().unwrap_or_default();
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Some(format!(
                "Cross-origin requests are refused (`Sec-Fetch-Site: {site}`)."
            ));
        }
    }
    let origin = headers.get(ORIGIN)?;
    let text = origin.to_str().unwrap_or_default();
    let same = authority.is_some_and(|authority| is_same_origin(text, scheme, authority));
    (!same).then(|| {
        format!("Cross-origin requests are refused: the `Origin` `{text}` is not this server's.")
    })
}

/// Whether `origin` (`scheme://host[:port]`) is `scheme://authority`, default ports implied.
fn is_same_origin(origin: &str, scheme: Scheme, authority: &Authority) -> bool {
    let Ok(origin) = origin.parse::<axum::http::Uri>() else {
        return false;
    };
    let default_port = |scheme: &str| match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    let Some(origin_scheme) = origin.scheme_str() else {
        return false;
    };
    let (Some(origin_host), Some(origin_port)) = (
        origin.host(),
        origin.port_u16().or(default_port(origin_scheme)),
    ) else {
        return false;
    };
    origin_scheme.eq_ignore_ascii_case(scheme.as_str())
        && origin_host.eq_ignore_ascii_case(authority.host())
        && Some(origin_port) == authority.port_u16().or(default_port(scheme.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_compares_scheme_host_and_port() {
        let local: Authority = "127.0.0.1:52323".parse().unwrap();
        assert!(is_same_origin(
            "http://127.0.0.1:52323",
            Scheme::Http,
            &local
        ));
        assert!(!is_same_origin(
            "https://127.0.0.1:52323",
            Scheme::Http,
            &local
        ));
        assert!(!is_same_origin(
            "http://evil.example:52323",
            Scheme::Http,
            &local
        ));
        assert!(!is_same_origin("http://127.0.0.1", Scheme::Http, &local));
        assert!(!is_same_origin("null", Scheme::Http, &local));
        let default_port: Authority = "localhost".parse().unwrap();
        assert!(is_same_origin(
            "http://LOCALHOST:80",
            Scheme::Http,
            &default_port
        ));
    }

    #[test]
    fn hosts_are_loopback_or_allowed() {
        let http = HttpConfig {
            allowed_hosts: vec!["monitor.internal".into(), "box:8080".into()],
            ..HttpConfig::default()
        };
        let screen = Screen::new(Authenticator::disabled(), &http);
        for (host, allowed) in [
            ("127.0.0.1:52323", true),
            ("127.1.2.3", true),
            ("[::1]:52323", true),
            ("LocalHost:1", true),
            ("monitor.internal:52323", true),
            ("box:8080", true),
            ("box:8081", false),
            ("evil.example:52323", false),
            ("localhost.evil.example", false),
            ("10.0.0.1:52323", false),
        ] {
            let authority: Authority = host.parse().unwrap();
            assert_eq!(screen.host_is_allowed(&authority), allowed, "{host}");
        }
    }
}

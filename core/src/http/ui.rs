//! The web console: one page (`GET /ui`, and `/` redirects there) and its ES modules, stylesheet
//! and icon, compiled into the binary from `core/ui/`.
//!
//! These assets are the only thing the console adds without authentication: they hold no data, and
//! the page reaches processes and operations through the public API with the user's own API key
//! (see `docs/console.md`). Every asset is served with a strict `Content-Security-Policy` (only
//! this origin's scripts, styles and fetches; no inline code; no framing), `nosniff`, no referrer,
//! and an `ETag` so that browsers revalidate cheaply (`Cache-Control: no-cache`) and never run a
//! stale console against a newer server.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::problem::Problem;

/// The console's policy: everything from this origin only, nothing inline, no plugins, no
/// framing, forms post nowhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One file of the console.
struct Asset {
    /// Its name under `/ui/` (the page itself is `index.html`, served at `/ui`).
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file of the console, as compiled in.
const ASSETS: [Asset; 6] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../ui/index.html"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/console.js"),
    },
    Asset {
        name: "boot.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/boot.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/api.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../ui/console.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../ui/icon.svg"),
    },
];

/// The entity tag of each asset (a quoted prefix of its SHA-256), in the order of [`ASSETS`].
static ENTITY_TAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.body);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"\""))
        })
        .collect()
});

/// The console's routes, unauthenticated: `/`, `/ui` and `/ui/{file}`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(page))
        .route("/ui/{file}", get(file))
}

/// `GET /ui`: the page.
async fn page(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

/// `GET /ui/{file}`: a module, the stylesheet or the icon.
async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|asset| asset.name == name) {
        Some(index) => serve(index, &headers),
        None => {
            Problem::new(StatusCode::NOT_FOUND, "The console has no such file.").into_response()
        }
    }
}

/// The asset at `index` of [`ASSETS`], or 304 when the browser's copy is current.
fn serve(index: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let tag = &ENTITY_TAGS[index];
    let current = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|candidate| candidate.trim().trim_start_matches("W/") == tag);
    let mut response = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let headers = response.headers_mut();
    if !current {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
    }
    headers.insert(header::ETAG, tag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_refers_only_to_assets_that_are_served() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        for reference in page
            .split("/ui/")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap_or_default())
        {
            assert!(
                ASSETS.iter().any(|asset| asset.name == reference),
                "index.html refers to /ui/{reference}, which is not served"
            );
        }
    }

    #[test]
    fn modules_import_only_served_modules() {
        for asset in ASSETS.iter().filter(|asset| asset.name.ends_with(".js")) {
            let source = std::str::from_utf8(asset.body).unwrap();
            for import in source.split("from \"./").skip(1) {
                let name = import.split('"').next().unwrap_or_default();
                assert!(
                    ASSETS.iter().any(|asset| asset.name == name),
                    "{} imports ./{name}, which is not served",
                    asset.name
                );
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!page.contains("<style"), "inline <style> in index.html");
        assert!(
            !page.contains(" style="),
            "inline style attribute in index.html"
        );
        let handler = page.match_indices(" on").find(|(at, _)| {
            let attribute: String = page[at + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            !attribute.is_empty() && page[at + 3 + attribute.len()..].starts_with('=')
        });
        assert!(handler.is_none(), "inline event handler in index.html");
        for script in page.split("<script").skip(1) {
            assert!(
                script
                    .split('>')
                    .next()
                    .unwrap_or_default()
                    .contains("src="),
                "inline <script> in index.html"
            );
        }
    }
}

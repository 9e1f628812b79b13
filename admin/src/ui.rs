//! The web console at `/ui/`: three static files built into the binary.
//!
//! The page holds no data, so it is served without the token; it asks for the
//! token and calls `/admin/v1/*` with it like any other client. Every answer
//! carries a strict Content-Security-Policy (no inline script or style, no
//! other origin) so that a value shown in the page (a route name, an error
//! message) can never run as script, and the console can load nothing from
//! outside the admin listener.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// Same-origin only; `connect-src 'self'` lets the page call the admin API
/// it came from and nothing else; no framing (clickjacking of the buttons).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// The console's routes, merged into the admin router outside the token layer.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/index.html",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The assets change with the binary; a stale cached app.js after an
    // upgrade would talk to the new API with old assumptions.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::{APP_CSS, APP_JS, INDEX_HTML};

    /// The console must work without network access: no asset may name
    /// another origin (a CDN script, a web font, an image). The SVG
    /// namespace is a name, never fetched; `url(#id)` is in-document.
    #[test]
    fn assets_reference_no_outside_url() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
        ] {
            let text = text.replace("'http://www.w3.org/2000/svg'", "");
            for bad in [
                "http://",
                "https://",
                "//cdn",
                "@import",
                "src=\"//",
                "href=\"//",
            ] {
                assert!(!text.contains(bad), "{name} contains {bad:?}");
            }
            for (at, _) in text.match_indices("url(") {
                assert!(
                    text[at..].starts_with("url(#"),
                    "{name}: url() other than an in-document #id"
                );
            }
        }
    }

    /// The CSP forbids inline script and style: the page must not need them.
    #[test]
    fn index_has_no_inline_script_or_style() {
        assert!(!INDEX_HTML.contains("<style"), "inline <style>");
        assert!(!INDEX_HTML.contains("style="), "inline style attribute");
        // Inline event handlers (onclick=, onload=, ...).
        let handler = INDEX_HTML.split(|c: char| c.is_whitespace()).any(|w| {
            w.strip_prefix("on")
                .and_then(|rest| rest.split_once('='))
                .is_some_and(|(name, _)| {
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase())
                })
        });
        assert!(!handler, "inline event handler");
        let scripts: Vec<&str> = INDEX_HTML
            .match_indices("<script")
            .map(|(i, _)| &INDEX_HTML[i..])
            .collect();
        assert_eq!(scripts.len(), 1, "one script element");
        assert!(scripts[0].starts_with("<script src=\"app.js\"></script>"));
    }
}

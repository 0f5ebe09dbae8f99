//! The console page at `GET /`: static HTML, CSS and JS compiled into the binary (no build
//! step, no CDN), so a browser pointed at the daemon can start streams, send records and
//! watch results over Server-Sent Events. It calls the same public API as any client.
//!
//! The page is locked down by its headers: a Content-Security-Policy that allows only this
//! origin's own script, style and connections; no framing; and no Referer, so a token in an
//! `EventSource` URL is never sent to another site.

use warp::filters::BoxedFilter;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::routes::{self, on};

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

/// `GET /`, `/console.js` and `/console.css`.
pub fn routes() -> BoxedFilter<(Response,)> {
    let index = on(&routes::CONSOLE).map(index);
    let script =
        on(&routes::CONSOLE_SCRIPT).map(|| asset(SCRIPT, "text/javascript; charset=utf-8"));
    let style = on(&routes::CONSOLE_STYLE).map(|| asset(STYLE, "text/css; charset=utf-8"));
    index.or(script).unify().or(style).unify().boxed()
}

/// The console page.
#[utoipa::path(
    get, path = routes::CONSOLE.path, tag = "operations", operation_id = "console", security(()),
    responses((status = 200, description = "HTML.", content_type = "text/html", body = String))
)]
pub fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    let static_header = warp::http::HeaderValue::from_static;
    headers.insert(CONTENT_TYPE, static_header(content_type));
    headers.insert(CACHE_CONTROL, static_header("no-cache"));
    headers.insert("content-security-policy", static_header(POLICY));
    headers.insert("x-content-type-options", static_header("nosniff"));
    headers.insert("x-frame-options", static_header("DENY"));
    headers.insert("referrer-policy", static_header("no-referrer"));
    resp
}

//! The console page at `GET /`: static HTML, CSS and JS compiled into the binary (no CDN),
//! so a browser pointed at the daemon can start streams, send records and watch every
//! stream's results live. It runs on the TypeScript client library, whose browser bundle
//! (`clients/typescript/dist/streamgate.browser.js`, built by `npm run build` and checked
//! byte for byte by that package's tests) is compiled in too and served at
//! `/streamgate.browser.js`: every stream of the page over one `/api/connect` WebSocket, as
//! any application would do it.
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
const LIBRARY: &str = include_str!("../../clients/typescript/dist/streamgate.browser.js");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

/// `GET /`, `/console.js`, `/console.css` and `/streamgate.browser.js`.
pub fn routes() -> BoxedFilter<(Response,)> {
    const JS: &str = "text/javascript; charset=utf-8";
    let index = on(&routes::CONSOLE).map(index);
    let script = on(&routes::CONSOLE_SCRIPT).map(|| asset(SCRIPT, JS));
    let style = on(&routes::CONSOLE_STYLE).map(|| asset(STYLE, "text/css; charset=utf-8"));
    let library = on(&routes::CONSOLE_LIBRARY).map(|| asset(LIBRARY, JS));
    index
        .or(script)
        .unify()
        .or(style)
        .unify()
        .or(library)
        .unify()
        .boxed()
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

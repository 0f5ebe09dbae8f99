//! The route table: every route's method and path, declared once. The warp filters match
//! requests against it ([`on`], [`on_stream`]), the OpenAPI operations take their paths from
//! it (`path = routes::SEND.path` on the handlers), a 405's `Allow` header lists the methods
//! of the path it names ([`allowed_methods`]), and the request log labels each request with
//! the route it matched ([`label`]). A test checks that the OpenAPI document has exactly
//! these operations.

use warp::filters::path::FullPath;
use warp::http::Method;
use warp::{Filter, Rejection};

/// One route: a method and a path pattern whose `{name}` segments match any one segment.
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
}

const fn route(method: Method, path: &'static str) -> Route {
    Route { method, path }
}

pub static START: Route = route(Method::POST, "/api/stream/start");
pub static SEND: Route = route(Method::POST, "/api/stream/{id}/send");
pub static TOKENS: Route = route(Method::POST, "/api/stream/{id}/tokens");
/// One token for several streams.
pub static TOKENS_FOR_STREAMS: Route = route(Method::POST, "/api/tokens");
/// One WebSocket for many streams.
pub static CONNECT: Route = route(Method::GET, "/api/connect");
/// Server-Sent Events of several streams.
pub static EVENTS: Route = route(Method::GET, "/api/events");
/// WebSocket, or Server-Sent Events with `Accept: text/event-stream`.
pub static RESULTS: Route = route(Method::GET, "/api/stream/{id}/results");
pub static DESCRIBE: Route = route(Method::GET, "/api/stream/{id}");
pub static END: Route = route(Method::DELETE, "/api/stream/{id}");
pub static LIST: Route = route(Method::GET, "/api/streams");
pub static STATS: Route = route(Method::GET, "/api/stats");
pub static STATS_LIVE: Route = route(Method::GET, "/api/stats/live");
pub static HEALTHZ: Route = route(Method::GET, "/healthz");
pub static READYZ: Route = route(Method::GET, "/readyz");
pub static METRICS: Route = route(Method::GET, "/metrics");
pub static OPENAPI: Route = route(Method::GET, "/api/openapi.json");
pub static ASYNCAPI: Route = route(Method::GET, "/api/asyncapi.json");
pub static CONSOLE: Route = route(Method::GET, "/");
/// The console page's assets (not API operations: not in the OpenAPI document).
pub static CONSOLE_SCRIPT: Route = route(Method::GET, "/console.js");
pub static CONSOLE_STYLE: Route = route(Method::GET, "/console.css");
/// The TypeScript client library's browser bundle, which the console page runs on.
pub static CONSOLE_LIBRARY: Route = route(Method::GET, "/streamgate.browser.js");

/// Every route.
pub static ALL: &[&Route] = &[
    &START,
    &SEND,
    &TOKENS,
    &TOKENS_FOR_STREAMS,
    &CONNECT,
    &EVENTS,
    &RESULTS,
    &DESCRIBE,
    &END,
    &LIST,
    &STATS,
    &STATS_LIVE,
    &HEALTHZ,
    &READYZ,
    &METRICS,
    &OPENAPI,
    &ASYNCAPI,
    &CONSOLE,
    &CONSOLE_SCRIPT,
    &CONSOLE_STYLE,
    &CONSOLE_LIBRARY,
];

impl Route {
    /// The values of the pattern's `{name}` segments in `path`, if `path` matches.
    fn captures<'p>(&self, path: &'p str) -> Option<Vec<&'p str>> {
        let mut pattern = self.path.split('/');
        let mut actual = path.split('/');
        let mut captured = Vec::new();
        loop {
            match (pattern.next(), actual.next()) {
                (None, None) => return Some(captured),
                (Some(p), Some(a)) if p.starts_with('{') && !a.is_empty() => captured.push(a),
                (Some(p), Some(a)) if p == a => {}
                _ => return None,
            }
        }
    }

    /// Whether `path` is this route's.
    #[cfg(test)]
    fn matches(&self, path: &str) -> bool {
        self.captures(path).is_some()
    }
}

/// Matches requests for `route` (method and path); rejects others as not found, so the
/// next route is tried.
pub fn on(route: &'static Route) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    matched(route).map(|_| ()).untuple_one()
}

/// [`on`] for a route about one stream: extracts the stream id as the client wrote it.
pub fn on_stream(
    route: &'static Route,
) -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    matched(route).and_then(|captures: Vec<String>| async move {
        captures
            .into_iter()
            .next()
            .ok_or_else(warp::reject::not_found)
    })
}

fn matched(
    route: &'static Route,
) -> impl Filter<Extract = (Vec<String>,), Error = Rejection> + Clone {
    warp::method().and(warp::path::full()).and_then(
        move |method: Method, path: FullPath| async move {
            if method != route.method {
                return Err(warp::reject::not_found());
            }
            route
                .captures(path.as_str())
                .map(|c| c.into_iter().map(str::to_string).collect())
                .ok_or_else(warp::reject::not_found)
        },
    )
}

/// The methods `path` is routed for, as a 405's `Allow` header lists them; `None` for a
/// path no route has. The most specific routes of the path speak for it (`/api/stream/start`
/// is `START`'s, though `{id}` would match `start` too).
pub fn allowed_methods(path: &str) -> Option<String> {
    let matching: Vec<(usize, &Route)> = ALL
        .iter()
        .filter_map(|r| r.captures(path).map(|c| (c.len(), *r)))
        .collect();
    let fewest = matching.iter().map(|(n, _)| *n).min()?;
    let mut methods: Vec<&str> = Vec::new();
    for (_, r) in matching.iter().filter(|(n, _)| *n == fewest) {
        if !methods.contains(&r.method.as_str()) {
            methods.push(r.method.as_str());
        }
    }
    Some(methods.join(", "))
}

/// The route a request for `method` and `path` matched, and the stream id in it, for the
/// request log.
pub fn label<'p>(method: &Method, path: &'p str) -> (Option<&'static str>, Option<&'p str>) {
    for r in ALL {
        if r.method == *method {
            if let Some(captures) = r.captures(path) {
                return (Some(r.path), captures.first().copied());
            }
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_one_segment_per_name() {
        assert!(SEND.matches("/api/stream/abc/send"));
        assert!(!SEND.matches("/api/stream//send"));
        assert!(!SEND.matches("/api/stream/abc/send/x"));
        assert!(CONSOLE.matches("/") && !CONSOLE.matches("/x"));
        assert_eq!(
            label(&Method::DELETE, "/api/stream/6f1c"),
            (Some("/api/stream/{id}"), Some("6f1c"))
        );
        assert_eq!(
            label(&Method::POST, "/api/stream/start"),
            (Some(START.path), None)
        );
        assert_eq!(label(&Method::PUT, "/api/stream/start"), (None, None));
    }

    #[test]
    fn allow_lists_every_method_of_a_path() {
        assert_eq!(
            allowed_methods("/api/stream/x").as_deref(),
            Some("GET, DELETE")
        );
        assert_eq!(
            allowed_methods("/api/stream/start").as_deref(),
            Some("POST")
        );
        assert_eq!(
            allowed_methods("/api/stream/x/send").as_deref(),
            Some("POST")
        );
        assert_eq!(allowed_methods("/nothing"), None);
    }
}

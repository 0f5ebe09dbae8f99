//! Serving connections: the accept loop in front of the routes, where a client is held to the
//! limits that no handler can enforce. A connection must send its request head within
//! `limits.header_read_timeout_ms` (which also ends idle keep-alive connections), a head
//! larger than `limits.max_header_bytes` gets 431, and past `limits.max_connections` in all or
//! `limits.max_connections_per_ip` from one address a new connection is answered 503 at once
//! and closed. Shutdown waits for in-flight requests at most `limits.shutdown_timeout_ms`.
//!
//! Serving starts before the broker is connected: until the routes are set in [`App`], `/healthz`
//! answers 200 `{"status":"starting"}` and everything else 503 `not_ready`, so a supervisor
//! sees a live process, and a client a clear reason, while start-up waits for the broker.
//!
//! HTTP/1.1 only: WebSockets and the request/response API need nothing else, and h2c (HTTP/2
//! without TLS) would be a second protocol to harden. A client that opens with the HTTP/2
//! preface gets 505.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus::IntGauge;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::routes::allowed_methods;
use super::stalled::StallBound;
use super::tls::TlsEdge;
use super::{log_request, starting, RequestLine, Routes};
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::wire::{ErrorBody, ErrorCode, ErrorObject};

/// The daemon's routes: set once start-up is done, and again by a reload (requests already
/// being served keep the routes they started with).
#[derive(Clone, Default)]
pub struct App(Arc<std::sync::RwLock<Option<Routes>>>);

impl App {
    pub fn set(&self, routes: Routes) {
        *self.0.write().expect("routes lock") = Some(routes);
    }

    pub fn current(&self) -> Option<Routes> {
        self.0.read().expect("routes lock").clone()
    }
}

/// The connection a request came on, put on every request: its address (for the per-IP
/// limits and the request log) and its place under the connection caps, which an upgraded
/// WebSocket keeps for as long as it is open.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    _place: Arc<Admitted>,
    /// The key name the request authenticated as (for the request log), per request.
    key: Arc<std::sync::OnceLock<String>>,
    /// With mutual TLS: the subject of the certificate the client presented.
    subject: Option<Arc<str>>,
}

impl Client {
    /// The client certificate's subject (`CN=alice,O=Example`), with mutual TLS.
    pub fn cert_subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// Records the key name the request authenticated as.
    pub fn authenticated_as(&self, name: &str) {
        let _ = self.key.set(name.to_string());
    }

    /// The key name, once authenticated.
    pub fn key_name(&self) -> Option<&str> {
        self.key.get().map(String::as_str)
    }
}

/// Serves `listener` with `app`'s routes (the start-up routes until they are set) until
/// `shutdown` resolves, then lets in-flight requests finish within the shutdown bound.
pub async fn serve(
    limits: Limits,
    metrics: Arc<Metrics>,
    app: App,
    tls: Option<Arc<TlsEdge>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let admission = Arc::new(Admission::new(
        limits.server.max_connections,
        limits.server.max_connections_per_ip,
        metrics.http.connections.clone(),
    ));
    let starting = starting();
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors (or a connection reset before accept): keep
                // serving the connections we have; try again shortly.
                tracing::warn!(error = %e, "cannot accept a connection");
                metrics.http.connections_refused.inc();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admitted) = admission.admit(addr.ip()) else {
            metrics.http.connections_refused.inc();
            tokio::spawn(answer(
                stream,
                ErrorCode::TooManyConnections,
                "too many connections (limits.max_connections, limits.max_connections_per_ip); \
                 retry shortly",
            ));
            continue;
        };
        let place = Arc::new(admitted);
        let connection = Connection {
            addr,
            place,
            app: app.clone(),
            starting: starting.clone(),
            metrics: metrics.clone(),
            watcher: graceful.watcher(),
            header_timeout: Duration::from_millis(limits.server.header_read_timeout_ms),
            handshake_timeout: Duration::from_millis(limits.server.tls_handshake_timeout_ms),
            max_head: limits.server.max_header_bytes.max(8192),
            write_stall: limits.websocket.idle_timeout(),
        };
        connections.spawn(connection.serve(stream, tls.as_ref().map(|t| t.acceptor())));
    }
    drop(listener);
    let bound = Duration::from_millis(limits.shutdown.shutdown_timeout_ms);
    if tokio::time::timeout(bound, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            timeout_ms = limits.shutdown.shutdown_timeout_ms,
            "shutdown: dropping connections still open after limits.shutdown_timeout_ms"
        );
    }
    connections.shutdown().await;
}

/// One accepted connection and what serving it needs.
struct Connection {
    addr: SocketAddr,
    /// Its place under the caps, held until it (or the WebSocket it became) ends.
    place: Arc<Admitted>,
    app: App,
    starting: Routes,
    metrics: Arc<Metrics>,
    watcher: hyper_util::server::graceful::Watcher,
    header_timeout: Duration,
    handshake_timeout: Duration,
    max_head: usize,
    write_stall: Duration,
}

impl Connection {
    /// Serves it: over TLS when the listener has an acceptor (the handshake held to its own
    /// bound), else in plain HTTP/1.1.
    async fn serve(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        // hyper's header timer starts at the first byte of a request; a connection that never
        // sends one is held to the same bound here (to the handshake's, with TLS). And
        // hyper-util serves HTTP/2 to a client that opens with its preface, whatever the
        // builder says: refused.
        let mut first = [0u8; 4];
        let wait = match tls {
            Some(_) => self.handshake_timeout,
            None => self.header_timeout,
        };
        let n = match tokio::time::timeout(wait, stream.peek(&mut first)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        let Some(tls) = tls else {
            if first[..n.min(3)] == *b"PRI" {
                answer(stream, ErrorCode::HttpVersionNotSupported, "HTTP/1.1 only").await;
                return;
            }
            return self.http(stream, None).await;
        };
        // A TLS record starts with its content type (22, a handshake); plain HTTP with a
        // method's letters: told, in plain HTTP, where to go instead.
        if first[0] != 22 {
            answer(
                stream,
                ErrorCode::InvalidInput,
                "this port speaks HTTPS (TLS); use https:// or wss://",
            )
            .await;
            return;
        }
        let handshake = tokio::time::timeout(self.handshake_timeout, tls.accept(stream)).await;
        let stream = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(client = %self.addr, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(client = %self.addr, "TLS handshake timed out");
                return;
            }
        };
        let subject = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(super::tls::subject)
            .map(Arc::from);
        self.http(stream, subject).await
    }

    /// HTTP/1.1 (and its upgrades) on an established stream.
    async fn http<S>(self, stream: S, subject: Option<Arc<str>>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            addr,
            place,
            app,
            starting,
            metrics,
            watcher,
            header_timeout,
            max_head,
            write_stall,
            ..
        } = self;
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let client = Client {
                addr,
                _place: place.clone(),
                key: Default::default(),
                subject: subject.clone(),
            };
            req.extensions_mut().insert(client.clone());
            let line = RequestLine {
                method: req.method().clone(),
                path: req.uri().path().to_string(),
                started: std::time::Instant::now(),
            };
            let routes = app.current().unwrap_or_else(|| starting.clone());
            let answer = hyper::service::Service::call(
                &TowerToHyperService::new(warp::service(routes)),
                req,
            );
            let metrics = metrics.clone();
            async move {
                let mut response = answer.await;
                if let Ok(r) = &mut response {
                    if r.status() == hyper::StatusCode::METHOD_NOT_ALLOWED {
                        // RFC 9110: a 405 says which methods the path has.
                        let allow = allowed_methods(&line.path)
                            .and_then(|m| hyper::header::HeaderValue::from_str(&m).ok());
                        if let Some(allow) = allow {
                            r.headers_mut().insert(hyper::header::ALLOW, allow);
                        }
                    }
                    log_request(&metrics, &line, r.status().as_u16(), &client);
                }
                response
            }
        });
        // The connection borrows its builder: both live in this task.
        let mut http = auto::Builder::new(TokioExecutor::new()).http1_only();
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(max_head);
        let stream = StallBound::new(stream, write_stall);
        let conn = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Answers a connection that will not be served (over a cap, or not HTTP/1) with a JSON
/// error and closes it, spending at most a second on it.
async fn answer(mut stream: TcpStream, code: ErrorCode, message: &str) {
    let status = super::status_of(&code);
    let body = serde_json::to_string(&ErrorBody {
        error: ErrorObject::new(code, message),
    })
    .unwrap_or_default()
        + "\n";
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Counts open connections, in all and per client address.
struct Admission {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// `connections_open`, the gauge.
    gauge: IntGauge,
}

/// An admitted connection; dropping it (when the connection, or the WebSocket it was
/// upgraded to, ends) frees its place.
struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    fn new(max_total: usize, max_per_ip: usize, gauge: IntGauge) -> Self {
        Self {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
            gauge,
        }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let mut open = self.open.lock().expect("admission lock");
        let (total, per_ip) = &mut *open;
        let mine = per_ip.entry(ip).or_insert(0);
        if *total >= self.max_total || *mine >= self.max_per_ip {
            if *mine == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        self.gauge.inc();
        Some(Admitted {
            admission: self.clone(),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.admission.open.lock().expect("admission lock");
        let (total, per_ip) = &mut *open;
        *total -= 1;
        self.admission.gauge.dec();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_per_ip_and_in_all_and_frees_on_drop() {
        let gauge = IntGauge::new("g", "open").unwrap();
        let a = Arc::new(Admission::new(3, 2, gauge.clone()));
        let (x, y): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let x1 = a.admit(x).unwrap();
        let _x2 = a.admit(x).unwrap();
        assert!(a.admit(x).is_none(), "per-ip cap");
        let _y1 = a.admit(y).unwrap();
        assert!(a.admit(y).is_none(), "total cap");
        drop(x1);
        assert!(a.admit(y).is_some(), "a freed place is reusable");
        assert_eq!(a.open.lock().unwrap().1.len(), 2);
        assert_eq!(gauge.get(), 2, "x2 and y1 are open");
    }
}

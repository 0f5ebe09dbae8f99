//! What the client's integration tests share: a TCP proxy that cuts every connection it
//! carries, a proxy that records every HTTP request and answer (to count attempts and check
//! `Retry-After` waits), a daemon that is still waiting for its broker, and waiting on
//! conditions. Everything started here stops when dropped.

#![allow(dead_code)] // each test file uses its own part

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamgate::config::Config;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

/// Waits until `done()` holds, checking every 20 ms; fails naming `what` after `within`.
pub async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a test that needs tansu runs: only with `TANSU_BIN` set (as scripts/test does);
/// otherwise it says so on stderr (past the test harness's capture) and the test passes.
pub fn tansu_or_skip(test: &str) -> bool {
    if std::env::var_os("TANSU_BIN").is_some_and(|p| !p.is_empty()) {
        return true;
    }
    let _ = writeln!(
        std::io::stderr(),
        "note: {test} skipped: TANSU_BIN is not set (scripts/test sets it)"
    );
    false
}

/// A connection to `addr` with a small receive buffer, so that what is not read backs the
/// sender up after a few KiB.
async fn connect_small(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    socket.connect(addr).await
}

/// A TCP proxy to `target` that cuts every connection it carries every `every`; for `hold`
/// before each cut it stops passing on what the daemon writes, so the answers to records
/// stored meanwhile are surely lost with the connection.
pub struct CuttingProxy {
    pub url: String,
    /// Cuts that cut at least one connection.
    pub cuts: Arc<AtomicUsize>,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl CuttingProxy {
    pub async fn start(target: SocketAddr, every: Duration, hold: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cuts = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (flowing_tx, flowing) = watch::channel(true);
        let acceptor = tokio::spawn({
            let (accepted, links) = (accepted.clone(), links.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let Ok(upstream) = connect_small(target).await else {
                        continue;
                    };
                    let link = tokio::spawn(pipe(client, upstream, flowing.clone()));
                    links.lock().unwrap().push(link.abort_handle());
                }
            }
        });
        let cutter = tokio::spawn({
            let (cuts, links) = (cuts.clone(), links.clone());
            async move {
                loop {
                    tokio::time::sleep(every - hold).await;
                    let _ = flowing_tx.send(false);
                    tokio::time::sleep(hold).await;
                    let cut: Vec<AbortHandle> = std::mem::take(&mut *links.lock().unwrap());
                    let live = cut.iter().filter(|l| !l.is_finished()).count();
                    for link in cut {
                        link.abort();
                    }
                    let _ = flowing_tx.send(true);
                    if live > 0 {
                        cuts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Self {
            url,
            cuts,
            accepted,
            links,
            tasks: vec![acceptor, cutter],
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

/// Carries one connection both ways until either side ends; the daemon's side only while
/// `flowing`.
async fn pipe(client: TcpStream, upstream: TcpStream, mut flowing: watch::Receiver<bool>) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut upstream_rx, mut upstream_tx) = upstream.into_split();
    let up = tokio::io::copy(&mut client_rx, &mut upstream_tx);
    let down = async {
        let mut buf = vec![0u8; 4096];
        loop {
            if flowing.wait_for(|f| *f).await.is_err() {
                return;
            }
            match upstream_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if client_tx.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// One thing a [`Recorder`] saw.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A request's head came from the client (its first line).
    Request { at: Instant, line: String },
    /// An answer's head came from the daemon.
    Answer {
        at: Instant,
        status: u16,
        retry_after: Option<u64>,
    },
}

/// A proxy to `target` that reads the HTTP it carries and records when each request went and
/// each answer came (a WebSocket handshake is a request too; after a `101` the bytes just
/// pass).
pub struct Recorder {
    pub url: String,
    log: Arc<Mutex<Vec<Seen>>>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    acceptor: JoinHandle<()>,
}

impl Recorder {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let acceptor = tokio::spawn({
            let (log, links) = (log.clone(), links.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let Ok(upstream) = TcpStream::connect(target).await else {
                        continue;
                    };
                    let link = tokio::spawn(relay(client, upstream, log.clone()));
                    links.lock().unwrap().push(link.abort_handle());
                }
            }
        });
        Self {
            url,
            log,
            links,
            acceptor,
        }
    }

    pub fn log(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// Requests whose path starts with `path`.
    pub fn requests(&self, path: &str) -> usize {
        self.log()
            .iter()
            .filter(|s| matches!(s, Seen::Request { line, .. } if line.split(' ').nth(1).is_some_and(|p| p.starts_with(path))))
            .count()
    }

    /// Answers with `status`.
    pub fn answers(&self, status: u16) -> usize {
        self.log()
            .iter()
            .filter(|s| matches!(s, Seen::Answer { status: st, .. } if *st == status))
            .count()
    }

    /// Checks that after each 429 or 503 the next request came no sooner than its
    /// `Retry-After` said (and that it said one); the number of such waits.
    pub fn assert_waited_as_told(&self) -> usize {
        let log = self.log();
        let mut waits = 0;
        for (i, seen) in log.iter().enumerate() {
            let Seen::Answer {
                at,
                status,
                retry_after,
            } = seen
            else {
                continue;
            };
            if *status != 429 && *status != 503 {
                continue;
            }
            let told = retry_after.unwrap_or_else(|| panic!("a {status} without Retry-After"));
            let next = log[i + 1..].iter().find_map(|s| match s {
                Seen::Request { at, .. } => Some(*at),
                Seen::Answer { .. } => None,
            });
            if let Some(next) = next {
                let waited = next - *at;
                assert!(
                    waited >= Duration::from_secs(told),
                    "a request came {waited:?} after a {status} that said Retry-After: {told}: {log:#?}"
                );
                waits += 1;
            }
        }
        waits
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.acceptor.abort();
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

/// Carries one connection both ways, recording requests and answers.
async fn relay(client: TcpStream, upstream: TcpStream, log: Arc<Mutex<Vec<Seen>>>) {
    let (client_rx, client_tx) = client.into_split();
    let (upstream_rx, upstream_tx) = upstream.into_split();
    let up = carry(BufReader::new(client_rx), upstream_tx, log.clone(), true);
    let down = carry(BufReader::new(upstream_rx), client_tx, log, false);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Passes HTTP messages on from `from` to `to`, recording each head; after an upgrade, bytes.
async fn carry<R, W>(
    mut from: BufReader<R>,
    mut to: W,
    log: Arc<Mutex<Vec<Seen>>>,
    requests: bool,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let mut head = Vec::new();
        loop {
            let before = head.len();
            if from.read_until(b'\n', &mut head).await? == 0 {
                return Ok(()); // the other side closed
            }
            if &head[before..] == b"\r\n" {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).to_string();
        let header = |name: &str| {
            text.lines().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let first = text.lines().next().unwrap_or_default().to_string();
        let at = Instant::now();
        let raw;
        if requests {
            raw = header("upgrade").is_some();
            log.lock().unwrap().push(Seen::Request { at, line: first });
        } else {
            let status: u16 = first
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            raw = status == 101;
            let retry_after = header("retry-after").and_then(|v| v.parse().ok());
            log.lock().unwrap().push(Seen::Answer {
                at,
                status,
                retry_after,
            });
        }
        to.write_all(&head).await?;
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let length = header("content-length").and_then(|v| v.parse::<u64>().ok());
        if raw || (!requests && !chunked && length.is_none()) {
            tokio::io::copy(&mut from, &mut to).await?;
            return Ok(());
        }
        if chunked {
            loop {
                let mut line = Vec::new();
                from.read_until(b'\n', &mut line).await?;
                to.write_all(&line).await?;
                let size = String::from_utf8_lossy(&line);
                let size = size.trim().split(';').next().unwrap_or_default();
                let size = u64::from_str_radix(size, 16).unwrap_or(0);
                if size == 0 {
                    let mut end = Vec::new();
                    from.read_until(b'\n', &mut end).await?;
                    to.write_all(&end).await?;
                    break;
                }
                tokio::io::copy(&mut (&mut from).take(size + 2), &mut to).await?;
            }
        } else if let Some(length) = length {
            tokio::io::copy(&mut (&mut from).take(length), &mut to).await?;
        }
        to.flush().await?;
    }
}

/// A daemon still starting: its broker is not there (yet), so it answers everything but
/// `/healthz` with 503 `not_ready` and `Retry-After: 1`.
pub struct Starting {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), streamgate::Error>>>,
}

impl Starting {
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(streamgate::server::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            let ready = http.get(format!("{}/readyz", self.url())).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "the daemon never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the daemon did not stop in time")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

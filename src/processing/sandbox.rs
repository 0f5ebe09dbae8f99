//! User code (jq filters and window expressions) runs in child processes, so that no filter
//! can take the daemon down or keep a core busy: a worker that runs past
//! `processing.max_record_ms` is killed, one that recurses past its stack or allocates past
//! `processing.max_memory_mb` (its address-space limit) dies alone, and either way the record
//! gets an error frame and a fresh worker serves the next one.
//!
//! Why processes and not threads: jaq cannot be interrupted, a stack overflow aborts the whole
//! process whatever thread it happens on, and one `"x" * 1e12` is a single allocation that no
//! in-process check can stop before it fails (and a failed allocation aborts too). A process
//! boundary bounds time, CPU, stack and memory at once, for every filter jq can express.
//!
//! The worker is the daemon's own executable run as `streamctl __processor-worker` (or the
//! `streamgate-worker` binary of this crate); requests and replies are one JSON line each on
//! its stdin and stdout. Workers are kept and reused (each keeps its compiled filters), and at
//! most `processing.workers` run at once. A new worker says `ready` once it has started, and
//! only then does a record's clock start: starting a process on a busy machine can take longer
//! than the record may, and is not the record's doing.

use std::borrow::Cow;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use super::jq;
use crate::config;
use crate::error::Error;

/// The argument that makes `streamctl` a worker.
pub const WORKER_ARG: &str = "__processor-worker";
/// Environment variable that carries the worker's address-space limit in bytes.
const MEMORY_ENV: &str = "STREAMGATE_WORKER_MAX_MEMORY";
/// Executables that can act as a worker, looked for beside the running one in this order:
/// `streamgate-worker` first, as cargo builds it with this crate (and its tests), while a
/// `streamctl` beside them may be older.
const WORKER_NAMES: [&str; 2] = ["streamgate-worker", "streamctl"];
/// The line a worker writes once it has limited itself and can take requests.
const READY: &str = "ready";
/// How long a new worker may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What a worker is asked: run `code` on `input`, with at most `max` results.
#[derive(Debug, Serialize, Deserialize)]
struct Request<'a> {
    code: Cow<'a, str>,
    input: Cow<'a, Value>,
    max: usize,
}

/// A worker's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Reply {
    Ok(Vec<Value>),
    Err(String),
}

/// Why user code gave no results.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The code failed on this input (a jq error, too many results).
    #[error("{0}")]
    Code(String),
    #[error("ran longer than {limit_ms} ms")]
    TimedOut { limit_ms: u64 },
    /// The worker died: out of memory, stack overflow (deep recursion), or killed.
    #[error("the processor died running it ({0}): deep recursion or more than the memory limit")]
    Crashed(String),
    #[error("cannot start a processor worker: {0}")]
    Unavailable(String),
}

/// The pool of workers.
pub struct Sandbox {
    program: PathBuf,
    max_memory_bytes: u64,
    limit: Duration,
    /// Workers waiting for work.
    idle: Mutex<Vec<Worker>>,
    /// Bounds the workers alive at once.
    slots: Semaphore,
}

impl Sandbox {
    /// A pool running `program` (`processing.worker`, or found beside the running executable).
    pub fn new(config: &config::Processing) -> Result<Self, Error> {
        let program = match &config.worker {
            Some(path) => path.clone(),
            None => find_worker().ok_or_else(|| Error::Config {
                message: format!(
                    "processing.worker: no `{}` found beside {}; set processing.worker to \
                     the streamctl executable",
                    WORKER_NAMES.join("` or `"),
                    std::env::current_exe()
                        .map_or("the daemon".into(), |p| p.display().to_string())
                ),
            })?,
        };
        Ok(Self {
            program,
            max_memory_bytes: config.max_memory_mb * 1024 * 1024,
            limit: Duration::from_millis(config.max_record_ms),
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(config.workers.max(1)),
        })
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Runs `code` on `input` in a worker: its results (at most `max`), or why there are none.
    pub async fn run(
        &self,
        code: &str,
        input: &Value,
        max: usize,
    ) -> Result<Vec<Value>, SandboxError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| SandboxError::Unavailable(e.to_string()))?;
        let idle = self.idle.lock().expect("sandbox lock").pop();
        let mut worker = match idle {
            Some(w) => w,
            None => Worker::start(&self.program, self.max_memory_bytes)
                .await
                .map_err(|e| {
                    SandboxError::Unavailable(format!("{}: {e}", self.program.display()))
                })?,
        };
        let request = Request {
            code: Cow::Borrowed(code),
            input: Cow::Borrowed(input),
            max,
        };
        let line =
            serde_json::to_string(&request).map_err(|e| SandboxError::Code(e.to_string()))?;
        match tokio::time::timeout(self.limit, worker.call(&line)).await {
            Ok(Ok(reply)) => {
                self.idle.lock().expect("sandbox lock").push(worker);
                match reply {
                    Reply::Ok(results) => Ok(results),
                    Reply::Err(message) => Err(SandboxError::Code(message)),
                }
            }
            Ok(Err(_)) => Err(SandboxError::Crashed(worker.end().await)),
            Err(_) => {
                worker.end().await;
                Err(SandboxError::TimedOut {
                    limit_ms: self.limit.as_millis() as u64,
                })
            }
        }
    }
}

/// One worker process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts a worker and waits until it says it is ready.
    async fn start(program: &Path, max_memory_bytes: u64) -> std::io::Result<Self> {
        let mut worker = Self::spawn(program, max_memory_bytes)?;
        let mut line = String::new();
        match tokio::time::timeout(START_TIMEOUT, worker.stdout.read_line(&mut line)).await {
            Ok(Ok(_)) if line.trim_end() == READY => Ok(worker),
            Ok(Ok(_)) => Err(std::io::Error::other(format!(
                "the worker exited before it was ready ({})",
                worker.end().await
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                worker.end().await;
                Err(std::io::Error::other(format!(
                    "the worker was not ready within {} s",
                    START_TIMEOUT.as_secs()
                )))
            }
        }
    }

    fn spawn(program: &Path, max_memory_bytes: u64) -> std::io::Result<Self> {
        let mut child = Command::new(program)
            .arg(WORKER_ARG)
            .env(MEMORY_ENV, max_memory_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // A dying worker's last words (stack overflow, allocation failure) are noise in
            // the daemon's log; the record's error frame says what happened.
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("worker has no stdin or stdout"));
        };
        Ok(Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    async fn call(&mut self, request: &str) -> std::io::Result<Reply> {
        self.stdin.write_all(request.as_bytes()).await?;
        self.stdin.write_all(b"\n").await?;
        self.stdin.flush().await?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }

    /// Kills the worker (if it still runs) and says how it ended.
    async fn end(mut self) -> String {
        let _ = self.child.start_kill();
        match self.child.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        }
    }
}

/// A worker executable beside the running one (or one directory up, where cargo puts binaries
/// next to test executables).
fn find_worker() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    if exe
        .file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| WORKER_NAMES.contains(&s))
    {
        return Some(exe);
    }
    let dir = exe.parent()?;
    let found = [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .flat_map(|d| WORKER_NAMES.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file());
    found
}

/// The worker's main loop: limits itself, then answers one request line after another until
/// its stdin closes. Called by `streamctl __processor-worker` and `streamgate-worker`.
pub fn worker_main() -> ExitCode {
    if let Some(bytes) = std::env::var(MEMORY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        if rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes).is_err() {
            return ExitCode::FAILURE;
        }
    }
    let _ = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0);
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{READY}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    for line in stdin.lines() {
        let Ok(line) = line else {
            return ExitCode::FAILURE;
        };
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(r) => match jq::run(&r.code, &r.input, r.max) {
                Ok(results) => Reply::Ok(results),
                Err(e) => Reply::Err(e.to_string()),
            },
            Err(e) => Reply::Err(format!("unreadable request: {e}")),
        };
        let written = serde_json::to_writer(&mut stdout, &reply)
            .map_err(std::io::Error::other)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
        if written.is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

//! `streamctl send`: every stdin line becomes one record, sent in order in NDJSON batches.
//!
//! A line that is valid JSON is sent as that JSON, any other line as a JSON string (`--strict`
//! refuses it instead). Lines are batched while more are waiting (up to `--batch-bytes`), so a
//! pipe of a million lines takes a few requests and an interactive line goes out at once.
//!
//! Delivery is exactly once: every batch is sent with an idempotency key that names its
//! lines (`PREFIX-FIRST-LAST`, stdin line numbers), and any failure that may pass (no answer,
//! a connection refused or cut, a 429 or 503) is retried with the same key by the client
//! library, waiting as `Retry-After` says; the daemon stores and processes each line once
//! whatever happened. A line reported as sent was stored exactly once, in order.
//!
//! With `--idempotency-prefix` given, the batches are cut only by size (`--batch-records`,
//! `--batch-bytes`) and at the end of input, never by timing, so running the same input
//! again with the same prefix (after the command gave up, or was killed) makes the same
//! batches under the same keys: what was stored before is answered `replayed` and stored
//! nothing twice. (One key per batch rather than per line: a key costs a record in the key
//! index and a place under `limits.idempotency_keys_per_stream`, and a million-line input
//! would otherwise outgrow both.)

use std::collections::VecDeque;
use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde::de::IgnoredAny;
use tokio::sync::mpsc;

use uuid::Uuid;

use crate::client::{Client, ClientError, ConnectionArgs};
use streamgate::wire::ErrorCode;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("target").required(true))]
pub struct Args {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// Stream to send to.
    #[arg(group = "target")]
    pub stream_id: Option<String>,
    /// Start a new stream first and print its id on stdout.
    #[arg(long, group = "target")]
    pub new: bool,
    /// Processor of the new stream (with --new).
    #[arg(long, requires = "new")]
    pub processor: Option<String>,
    /// Refuse lines that are not valid JSON instead of sending them as strings.
    #[arg(long)]
    pub strict: bool,
    /// Largest NDJSON request body; keep it under the daemon's limits.max_body_bytes.
    #[arg(long, default_value_t = 512 * 1024, value_name = "BYTES")]
    pub batch_bytes: usize,
    /// Most lines in one request; keep it under the daemon's limits.max_records_per_request.
    #[arg(long, default_value_t = 50_000, value_name = "N")]
    pub batch_records: usize,
    /// Give up (exit 1) when the daemon cannot be reached for this long, e.g. 30s, 5m.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Start of each batch's idempotency key (`PREFIX-FIRST-LAST`, its stdin line numbers);
    /// given, batches are cut by size only (not by timing), so running the same input again
    /// with the same prefix stores nothing twice [default: a random one per run].
    #[arg(long, value_name = "PREFIX")]
    pub idempotency_prefix: Option<String>,
    /// W3C trace context (`00-TRACE_ID-SPAN_ID-01`) the records are sent under: with the
    /// daemon's `telemetry` on, their trace goes on through processing to the result frames
    /// (`tail --format '{trace_id} {data}'`).
    #[arg(long, value_name = "TRACEPARENT", value_parser = traceparent_arg)]
    pub traceparent: Option<String>,
}

/// One stdin line, ready to send.
struct Line {
    number: u64,
    record: String,
}

/// How long a partial batch waits for more lines before it is sent.
const LINGER: Duration = Duration::from_millis(20);

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        let client = crate::client::connect(&self.conn)?;
        let stream_id = match (&self.stream_id, self.new) {
            (Some(id), _) => id.clone(),
            (None, _) => {
                let created =
                    crate::start::start_stream(&client, self.processor.as_deref()).await?;
                let id = created.stream_id.to_string();
                println!("{id}");
                std::io::stdout().flush()?;
                id
            }
        };
        let (tx, mut rx) = mpsc::channel::<std::io::Result<String>>(64 * 1024);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if tx.blocking_send(line).is_err() {
                    return;
                }
            }
        });

        let started = Instant::now();
        let progress = std::io::stderr().is_terminal();
        let Ok(stream) = Uuid::parse_str(&stream_id) else {
            bail!("stream_not_found: stream {stream_id} not found");
        };
        // A given prefix promises the same keys for the same input: batches wait to be full.
        let by_size_only = self.idempotency_prefix.is_some();
        let prefix = self
            .idempotency_prefix
            .clone()
            .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
        let mut sender = Sender {
            client,
            stream,
            prefix,
            batch_bytes: self.batch_bytes.max(1),
            batch_records: self.batch_records.max(1),
            acknowledged: 0,
            connect_timeout: self.connect_timeout,
            traceparent: self.traceparent,
        };
        let mut pending: VecDeque<Line> = VecDeque::new();
        let mut pending_size = 0;
        let mut lines: u64 = 0;
        let mut input_done = false;
        let mut refused = None;
        while !input_done || !pending.is_empty() {
            // Gather what is waiting; when nothing is, wait a little for more, then send.
            while !input_done
                && pending_size < sender.batch_bytes
                && pending.len() < sender.batch_records
            {
                let next = if pending.is_empty() || by_size_only {
                    rx.recv().await
                } else {
                    match tokio::time::timeout(LINGER, rx.recv()).await {
                        Ok(line) => line,
                        Err(_) => break,
                    }
                };
                match next {
                    Some(line) => {
                        lines += 1;
                        let text =
                            line.with_context(|| format!("reading line {lines} of stdin"))?;
                        let record = match to_record(&text, self.strict) {
                            Ok(r) => r,
                            Err(e) => {
                                // Lines before the refused one still go out, in order.
                                refused = Some(anyhow::anyhow!("line {lines}: {e}"));
                                input_done = true;
                                break;
                            }
                        };
                        pending_size += record.len() + 1;
                        pending.push_back(Line {
                            number: lines,
                            record,
                        });
                    }
                    None => input_done = true,
                }
            }
            if !pending.is_empty() {
                sender.send_batch(&mut pending).await?;
                pending_size = pending_bytes(&pending);
                if progress {
                    eprint!("\r{} records acknowledged", sender.acknowledged);
                }
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        if progress {
            eprint!("\r");
        }
        eprintln!(
            "{lines} lines read, {} records acknowledged in {elapsed:.2}s ({:.0}/s)",
            sender.acknowledged,
            sender.acknowledged as f64 / elapsed.max(1e-9)
        );
        refused.map_or(Ok(()), Err)
    }
}

/// A stdin line as a JSON record: itself when it is JSON, else a JSON string.
fn to_record(line: &str, strict: bool) -> Result<String, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    match serde_json::from_str::<IgnoredAny>(line) {
        Ok(_) => Ok(line.trim().to_string()),
        Err(e) if strict => Err(format!("not valid JSON ({e}); --strict refuses it")),
        Err(_) => Ok(serde_json::to_string(line).expect("strings serialize")),
    }
}

fn pending_bytes(pending: &VecDeque<Line>) -> usize {
    pending.iter().map(|l| l.record.len() + 1).sum()
}

struct Sender {
    client: Client,
    stream: Uuid,
    /// Of every batch's idempotency key (`--idempotency-prefix`).
    prefix: String,
    batch_bytes: usize,
    batch_records: usize,
    acknowledged: u64,
    /// `--connect-timeout`.
    connect_timeout: Duration,
    /// `--traceparent`.
    traceparent: Option<String>,
}

/// `--traceparent`: W3C trace context, `00-` then 32 and 16 hex digits and the flags. The
/// daemon ignores a malformed one; here it is refused, since it is surely a typo.
fn traceparent_arg(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [version, trace, span, flags]
            if hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2) =>
        {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "`{s}` is not W3C trace context: write 00-TRACE_ID-SPAN_ID-FLAGS (32 and 16 hex \
             digits, flags 01 for sampled)"
        )),
    }
}

impl Sender {
    /// Sends the lines at the front of `pending` that fit in one batch, removing them once
    /// the daemon acknowledged them. The batch is named by an idempotency key made of the
    /// run's prefix and its lines, and the client library sends it again with that key
    /// after any failure that may pass: stored and processed once, whatever happened.
    async fn send_batch(&mut self, pending: &mut VecDeque<Line>) -> anyhow::Result<()> {
        loop {
            let mut body = Vec::new();
            let mut count = 0;
            for l in pending.iter() {
                let full = count == self.batch_records
                    || body.len() + l.record.len() + 1 > self.batch_bytes;
                if count > 0 && full {
                    break;
                }
                body.extend_from_slice(l.record.as_bytes());
                body.push(b'\n');
                count += 1;
            }
            let first = pending[0].number;
            let last = first + count as u64 - 1;
            let key = format!("{}-{first}-{last}", self.prefix);
            let answer = self
                .client
                .send_batch_traced(
                    self.stream,
                    body,
                    &key,
                    self.connect_timeout,
                    self.traceparent.as_deref(),
                )
                .await;
            match answer {
                Ok(answer) => {
                    let stored = answer.records;
                    if stored != count {
                        bail!(
                            "the daemon acknowledged {stored} of {count} records (lines {first}..)"
                        );
                    }
                    self.take(pending, count);
                    return Ok(());
                }
                Err(ClientError::Server {
                    status: Some(StatusCode::PAYLOAD_TOO_LARGE),
                    ..
                }) if count > 1 => {
                    // Smaller batches until they fit (in bytes and in records).
                    self.batch_bytes = (self.batch_bytes / 2).max(1);
                    self.batch_records = (count / 2).max(1);
                }
                Err(ClientError::Server {
                    status: Some(StatusCode::PAYLOAD_TOO_LARGE),
                    message,
                    ..
                }) => bail!("line {first}: {message}"),
                Err(ClientError::Server {
                    code: ErrorCode::SchemaViolation,
                    message,
                    violations,
                    ..
                }) => {
                    // Each violation on its line of stdin (the daemon names the batch's).
                    for v in &violations {
                        let line = v.line.map_or(first, |n| first + n as u64 - 1);
                        let at = if v.pointer.is_empty() {
                            "(the record)"
                        } else {
                            &v.pointer
                        };
                        eprintln!(
                            "streamctl: line {line}: {at}: {} ({})",
                            v.message, v.keyword
                        );
                    }
                    bail!(
                        "schema_violation: {message} ({} records acknowledged before this batch)",
                        self.acknowledged
                    );
                }
                Err(ClientError::Server {
                    status: Some(StatusCode::BAD_REQUEST),
                    code,
                    message,
                    line,
                    ..
                }) => {
                    // The daemon names the line of the batch; translate it to stdin's.
                    let line = line.map_or(first, |n| first + n as u64 - 1);
                    bail!(
                        "line {line}: {code}: {message} ({} records acknowledged before it)",
                        self.acknowledged
                    );
                }
                Err(e) if e.is_transient() => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "gave up after --connect-timeout {}: lines {first}..={last} were sent \
                         with idempotency key {key}; send them again with the same \
                         --idempotency-prefix to store them exactly once; {} records \
                         acknowledged before them",
                        humantime::format_duration(self.connect_timeout),
                        self.acknowledged
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn take(&mut self, pending: &mut VecDeque<Line>, n: usize) {
        pending.drain(..n);
        self.acknowledged += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_stay_json_and_others_become_strings() {
        assert_eq!(to_record("42", false).unwrap(), "42");
        assert_eq!(to_record(" {\"a\":1} ", false).unwrap(), "{\"a\":1}");
        assert_eq!(to_record("hello world", false).unwrap(), "\"hello world\"");
        assert_eq!(to_record("", false).unwrap(), "\"\"");
        assert_eq!(to_record("1\r", false).unwrap(), "1");
        assert!(to_record("hello", true).unwrap_err().contains("--strict"));
    }
}

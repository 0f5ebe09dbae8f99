//! `streamctl tail`: prints a stream's results as they arrive.
//!
//! When the connection drops (daemon restart, network, too slow a reader), tail reconnects
//! with `from=<last printed cursor + 1>`, so the daemon replays exactly what was missed: no
//! gap, no duplicate. A closed stdout (`| head`) ends it successfully.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use futures_util::StreamExt;
use streamgate::wire::{Close, Frame, Outcome};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::client::{
    retry_after, server_error, waiting_notice, Client, ClientError, ConnectionArgs,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// The stream's id, as `streamctl start` printed it.
    #[arg(value_name = "STREAM_ID")]
    pub stream_id: String,
    /// json (whole frames), data (only the data), or a template with placeholders {data},
    /// {cursor}, {input_offset}, {input_partition}, {received_ms}, {processed_ms},
    /// {stream_id}, {type} and the escapes \n and \t; each result ends with one newline.
    #[arg(long, short, default_value = "json", value_parser = Format::parse_checked,
          value_hint = clap::ValueHint::Other)]
    pub format: Format,
    /// Where to start: earliest, latest, a cursor (inclusive), or -N for the last N results.
    /// kcat's words work too: `-o beginning`, `-o end`, `-o -10`.
    #[arg(long, short = 'o', default_value = "latest", value_parser = from_arg,
          allow_hyphen_values = true)]
    pub from: String,
    /// Exit after printing this many results.
    #[arg(short = 'c', long = "count", value_name = "N")]
    pub count: Option<u64>,
    /// Exit after the results that exist now (kcat's -e), or at the stream's end frame if
    /// that comes first; without it, tail follows live results.
    #[arg(short = 'e', long = "exit-on-end")]
    pub exit_on_end: bool,
    /// Exit 1 at the first gap (results the broker no longer holds, so they cannot be
    /// printed) instead of warning and going on.
    #[arg(long)]
    pub no_gaps: bool,
}

/// `--from` / `-o`, with kcat's `beginning` and `end` as words for earliest and latest.
fn from_arg(s: &str) -> Result<String, String> {
    match s {
        "beginning" | "earliest" => Ok("earliest".into()),
        "end" | "latest" => Ok("latest".into()),
        cursor if cursor.parse::<u64>().is_ok() => Ok(cursor.into()),
        // The last N results: the daemon finds where they start.
        last if last
            .strip_prefix('-')
            .is_some_and(|n| n.parse::<u64>().is_ok()) =>
        {
            Ok(last.into())
        }
        other => Err(format!(
            "`{other}` is not earliest (beginning), latest (end), a cursor, or -N (the last N \
             results)"
        )),
    }
}

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a frame is printed.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Json,
    Data,
    Template(String),
}

/// The placeholders a template may use.
const PLACEHOLDERS: [&str; 8] = [
    "data",
    "cursor",
    "input_offset",
    "input_partition",
    "received_ms",
    "processed_ms",
    "stream_id",
    "type",
];

impl Format {
    pub fn parse(s: &str) -> Self {
        match s {
            "json" => Format::Json,
            "data" => Format::Data,
            t => {
                let t = t.replace("\\n", "\n").replace("\\t", "\t");
                // Each result is printed with its own newline: a template's trailing `\n`
                // (as in printf habits) would double it.
                Format::Template(t.strip_suffix('\n').unwrap_or(&t).to_string())
            }
        }
    }

    /// `--format`: refuses a template with an unknown placeholder (a typo such as `{dta}`
    /// would print itself), naming the ones there are.
    pub fn parse_checked(s: &str) -> Result<Self, String> {
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else { break };
            let name = &after[..close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "unknown placeholder {{{name}}}; use json, data, or a template with {}",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                ));
            }
            rest = &after[close + 1..];
        }
        Ok(Self::parse(s))
    }

    /// The text for one result or error frame (without the trailing newline).
    pub fn render(&self, raw: &str, frame: &Outcome) -> String {
        // For an error frame, `{data}` is its error object.
        let data = || match (&frame.data, &frame.error) {
            (Some(data), _) => data.to_string(),
            (None, Some(error)) => serde_json::to_string(error).unwrap_or_default(),
            (None, None) => "null".to_string(),
        };
        match self {
            Format::Json => raw.to_string(),
            Format::Data => data(),
            Format::Template(t) => {
                let kind = if frame.error.is_some() {
                    "error"
                } else {
                    "result"
                };
                let fields: [(&str, String); 8] = [
                    ("data", data()),
                    (
                        "cursor",
                        frame.cursor.map(|c| c.to_string()).unwrap_or_default(),
                    ),
                    ("input_offset", frame.input_offset.to_string()),
                    ("input_partition", frame.input_partition.to_string()),
                    ("received_ms", frame.received_ms.to_string()),
                    ("processed_ms", frame.processed_ms.to_string()),
                    ("stream_id", frame.stream_id.to_string()),
                    ("type", kind.to_string()),
                ];
                let mut out = t.clone();
                for (name, value) in fields {
                    out = out.replace(&format!("{{{name}}}"), &value);
                }
                out
            }
        }
    }
}

/// Why a connection ended.
enum Ended {
    /// Done: the count was reached or the stream ended.
    Finished,
    /// Try again from the last cursor.
    Reconnect(String),
}

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        let client = Client::new(&self.conn)?;
        let format = self.format.clone();
        let mut state = TailState {
            printed: 0,
            gaps: 0,
            next_from: self.from.clone(),
        };
        let mut backoff = Duration::from_millis(100);
        let mut connected_once = false;
        loop {
            let path = format!(
                "/api/stream/{}/results?from={}{}",
                self.stream_id,
                state.next_from,
                if self.exit_on_end { "&until=now" } else { "" }
            );
            let request = client.ws_request(&path)?;
            let ws = match tokio_tungstenite::connect_async_with_config(request, None, true).await {
                Ok((ws, _)) => ws,
                Err(tungstenite::Error::Http(resp)) => {
                    let body = resp.body().as_deref().unwrap_or_default();
                    let retry_after = retry_after(resp.headers());
                    let err = server_error(resp.status(), body, retry_after);
                    // Refusals (auth, unknown stream, bad cursor) will not get better; a 429
                    // or 503 might: wait as the daemon asks, saying so once.
                    if !matches!(resp.status().as_u16(), 429 | 503) {
                        return Err(err.into());
                    }
                    let wait = retry_after.unwrap_or(backoff);
                    match &err {
                        ClientError::Server { code, .. } => waiting_notice(code, wait),
                        _ => eprintln!("streamctl: {err}; retrying in {wait:?}"),
                    }
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(e) if connected_once => {
                    eprintln!("streamctl: reconnecting: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(e) => bail!("cannot connect to {}: {e}", client.url("")),
            };
            connected_once = true;
            backoff = Duration::from_millis(100);
            match self.follow(ws, &format, &mut state).await? {
                Ended::Finished => {
                    if state.gaps > 0 {
                        eprintln!(
                            "streamctl: printed {} results; {} cursors were missing (see above)",
                            state.printed, state.gaps
                        );
                    }
                    return Ok(());
                }
                Ended::Reconnect(why) => {
                    eprintln!(
                        "streamctl: connection closed ({why}); resuming from {}",
                        state.next_from
                    );
                }
            }
        }
    }

    /// Prints frames from one connection until it ends.
    async fn follow(
        &self,
        mut ws: tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        format: &Format,
        state: &mut TailState,
    ) -> anyhow::Result<Ended> {
        let stdout = std::io::stdout();
        while let Some(msg) = ws.next().await {
            let text = match msg {
                Ok(Message::Text(t)) => t,
                Ok(Message::Close(frame)) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    if matches!(Close::parse(code, &reason), Close::Ended | Close::CaughtUp) {
                        return Ok(Ended::Finished);
                    }
                    return Ok(Ended::Reconnect(format!("{code} {reason}")));
                }
                Ok(_) => continue,
                Err(e) => return Ok(Ended::Reconnect(e.to_string())),
            };
            let frame: Frame = serde_json::from_str(&text)?;
            match &frame {
                Frame::Result(outcome) | Frame::Error(outcome) => {
                    let mut out = stdout.lock();
                    writeln!(out, "{}", format.render(&text, outcome))?;
                    out.flush()?;
                    if let Some(c) = outcome.cursor {
                        state.next_from = (c + 1).to_string();
                    }
                    state.printed += 1;
                    if self.count.is_some_and(|n| state.printed >= n) {
                        return Ok(Ended::Finished);
                    }
                }
                Frame::Gap(gap) => {
                    let last = gap.from_cursor + gap.skipped as i64 - 1;
                    eprintln!(
                        "streamctl: results at cursors {}..={last} are no longer held by the broker \
                         and were not printed",
                        gap.from_cursor
                    );
                    state.gaps += gap.skipped;
                    state.next_from = (last + 1).to_string();
                    if self.no_gaps {
                        bail!("a gap in the stream's results (--no-gaps)");
                    }
                }
                Frame::End(_) => {
                    if !self.exit_on_end {
                        eprintln!("streamctl: stream {} has ended", self.stream_id);
                    }
                    return Ok(Ended::Finished);
                }
                _ => {}
            }
        }
        Ok(Ended::Reconnect("connection lost".into()))
    }
}

struct TailState {
    printed: u64,
    /// Cursors reported missing by gap frames.
    gaps: u64,
    /// The `from` of the next connection: after the last printed cursor.
    next_from: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let raw = r#"{"cursor":7,"type":"result","stream_id":"00000000-0000-0000-0000-000000000001","input_partition":0,"input_offset":3,"received_ms":1,"processed_ms":2,"data":{"t":1}}"#;
        let Frame::Result(frame) = serde_json::from_str(raw).unwrap() else {
            panic!("a result frame")
        };
        assert_eq!(Format::parse("json").render(raw, &frame), raw);
        assert_eq!(Format::parse("data").render(raw, &frame), r#"{"t":1}"#);
        assert_eq!(
            Format::parse("{cursor}\\t{input_offset} {data}").render(raw, &frame),
            "7\t3 {\"t\":1}"
        );
        let err = r#"{"type":"error","stream_id":"00000000-0000-0000-0000-000000000001","input_partition":0,"input_offset":3,"received_ms":1,"processed_ms":2,"error":{"code":"processing_failed","message":"boom"}}"#;
        let Frame::Error(err) = serde_json::from_str(err).unwrap() else {
            panic!("an error frame")
        };
        assert!(Format::Data.render("", &err).contains("boom"));
    }

    #[test]
    fn templates_are_checked_and_do_not_double_newlines() {
        let err = Format::parse_checked("{dta}").unwrap_err();
        assert!(err.contains("{dta}") && err.contains("{data}"), "{err}");
        assert_eq!(
            Format::parse_checked("{cursor}\\n").unwrap(),
            Format::Template("{cursor}".into())
        );
        assert_eq!(Format::parse_checked("json").unwrap(), Format::Json);
    }
}

//! `streamctl tail`: prints streams' results as they arrive, one stream or several over one
//! connection.
//!
//! The connection is the client library's: when it drops (daemon restart, network, too slow
//! a reader), it reconnects and resumes every stream after its last printed cursor, so the
//! daemon replays exactly what was missed: no gap, no duplicate. A closed stdout (`| head`)
//! ends it successfully.

use std::io::Write;

use anyhow::bail;
use futures_util::StreamExt;
use streamgate::wire::{Frame, Outcome, StartFrom};
use streamgate_client::Subscribe;
use uuid::Uuid;

use crate::client::ConnectionArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// The streams' ids, as `streamctl start` printed them: several are followed over one
    /// connection, each from its own cursor.
    #[arg(value_name = "STREAM_ID", required = true, num_args = 1..)]
    pub stream_ids: Vec<String>,
    /// json (whole frames), data (only the data; with several streams, the stream id, a tab,
    /// then the data), or a template with placeholders {data}, {cursor}, {input_offset},
    /// {input_partition}, {received_ms}, {processed_ms}, {stream_id}, {type},
    /// {idempotency_key}, {traceparent}, {trace_id} (of a traced record's result) and the
    /// escapes \n and \t; each result ends with one newline.
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

/// How a frame is printed.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Json,
    Data,
    Template(String),
}

/// The placeholders a template may use.
const PLACEHOLDERS: [&str; 11] = [
    "data",
    "cursor",
    "input_offset",
    "input_partition",
    "received_ms",
    "processed_ms",
    "stream_id",
    "type",
    "idempotency_key",
    "traceparent",
    "trace_id",
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
    pub fn render(&self, frame: &Outcome, several: bool) -> String {
        // For an error frame, `{data}` is its error object.
        let data = || match (&frame.data, &frame.error) {
            (Some(data), _) => data.to_string(),
            (None, Some(error)) => serde_json::to_string(error).unwrap_or_default(),
            (None, None) => "null".to_string(),
        };
        let kind = if frame.error.is_some() {
            "error"
        } else {
            "result"
        };
        match self {
            // The frame as the daemon sent it: `cursor` first, then `type`.
            Format::Json => {
                let fields = serde_json::to_string(frame).unwrap_or_default();
                let rest = fields.strip_prefix('{').unwrap_or("}");
                match frame.cursor {
                    Some(c) => {
                        let rest = rest
                            .strip_prefix(&format!("\"cursor\":{c},"))
                            .unwrap_or(rest);
                        format!("{{\"cursor\":{c},\"type\":\"{kind}\",{rest}")
                    }
                    None => format!("{{\"type\":\"{kind}\",{rest}"),
                }
            }
            Format::Data if several => format!("{}\t{}", frame.stream_id, data()),
            Format::Data => data(),
            Format::Template(t) => {
                let fields: [(&str, String); PLACEHOLDERS.len()] = [
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
                    (
                        "idempotency_key",
                        frame.idempotency_key.clone().unwrap_or_default(),
                    ),
                    ("traceparent", frame.traceparent.clone().unwrap_or_default()),
                    (
                        "trace_id",
                        frame
                            .traceparent
                            .as_deref()
                            .and_then(|t| t.split('-').nth(1))
                            .unwrap_or_default()
                            .to_string(),
                    ),
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

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        let client = crate::client::connect(&self.conn)?;
        let mut ids = Vec::with_capacity(self.stream_ids.len());
        for id in &self.stream_ids {
            match Uuid::parse_str(id) {
                Ok(uuid) => ids.push(uuid),
                Err(_) => bail!("stream_not_found: stream {id} not found"),
            }
        }
        let options = Subscribe {
            from: Some(StartFrom::Named(self.from.clone())),
            until_now: self.exit_on_end,
            ..Subscribe::default()
        };
        let several = ids.len() > 1;
        let mut frames = futures_util::stream::select_all(
            ids.iter()
                .map(|id| client.subscribe(*id, options.clone()).boxed()),
        );
        let stdout = std::io::stdout();
        let (mut printed, mut gaps) = (0u64, 0u64);
        while let Some(frame) = frames.next().await {
            match frame? {
                Frame::Result(outcome) | Frame::Error(outcome) => {
                    let mut out = stdout.lock();
                    writeln!(out, "{}", self.format.render(&outcome, several))?;
                    out.flush()?;
                    printed += 1;
                    if self.count.is_some_and(|n| printed >= n) {
                        break;
                    }
                }
                Frame::Gap(gap) => {
                    let last = gap.from_cursor + gap.skipped as i64 - 1;
                    eprintln!(
                        "streamctl: results at cursors {}..={last}{} are no longer held by the \
                         broker and were not printed",
                        gap.from_cursor,
                        if several {
                            format!(" of {}", gap.stream_id)
                        } else {
                            String::new()
                        },
                    );
                    gaps += gap.skipped;
                    if self.no_gaps {
                        bail!("a gap in the stream's results (--no-gaps)");
                    }
                }
                Frame::End(end) if !self.exit_on_end => {
                    eprintln!("streamctl: stream {} has ended", end.stream_id);
                }
                _ => {}
            }
        }
        if gaps > 0 {
            eprintln!(
                "streamctl: printed {printed} results; {gaps} cursors were missing (see above)"
            );
        }
        Ok(())
    }
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
        assert_eq!(Format::parse("json").render(&frame, false), raw);
        assert_eq!(Format::parse("data").render(&frame, false), r#"{"t":1}"#);
        assert_eq!(
            Format::parse("data").render(&frame, true),
            "00000000-0000-0000-0000-000000000001\t{\"t\":1}"
        );
        assert_eq!(
            Format::parse("{cursor}\\t{input_offset} {data}").render(&frame, false),
            "7\t3 {\"t\":1}"
        );
        let traced = r#"{"cursor":8,"type":"result","stream_id":"00000000-0000-0000-0000-000000000001","input_partition":0,"input_offset":4,"received_ms":1,"processed_ms":2,"data":1,"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#;
        let Frame::Result(traced) = serde_json::from_str(traced).unwrap() else {
            panic!("a result frame")
        };
        assert_eq!(
            Format::parse("{trace_id} {data}").render(&traced, false),
            "4bf92f3577b34da6a3ce929d0e0e4736 1"
        );
        assert_eq!(Format::parse("[{trace_id}]").render(&frame, false), "[]");
        let err = r#"{"type":"error","stream_id":"00000000-0000-0000-0000-000000000001","input_partition":0,"input_offset":3,"received_ms":1,"processed_ms":2,"error":{"code":"processing_failed","message":"boom"}}"#;
        let Frame::Error(err) = serde_json::from_str(err).unwrap() else {
            panic!("an error frame")
        };
        assert!(Format::Data.render(&err, false).contains("boom"));
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

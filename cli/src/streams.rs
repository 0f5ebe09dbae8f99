//! `streamctl streams`: list streams, show one, end one. Tables for people, `--json` for
//! scripts.

use std::fmt::Write as _;

use reqwest::Method;
use streamgate::kafka::now_ms;
use streamgate::wire::{StreamList, StreamView};

use crate::client::ConnectionArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print stream ids only, one per line (for scripts: `streamctl streams -q | xargs ...`).
    #[arg(long, short, conflicts_with = "json")]
    pub quiet: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List your streams (all streams for an admin key), newest first (the default).
    List,
    /// Show one stream: owner, processor, state, counters.
    Info { stream_id: String },
    /// End a stream: later sends are refused, subscribers get an end frame.
    End { stream_id: String },
}

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        let client = crate::client::connect(&self.conn)?;
        let path = |id: &str| format!("/api/stream/{id}");
        let out = match self.command.unwrap_or(Command::List) {
            Command::List => {
                let list: StreamList = client
                    .http()
                    .call(Method::GET, "/api/streams", None)
                    .await?;
                match (self.json, self.quiet) {
                    (true, _) => pretty(&list)?,
                    (_, true) => list
                        .streams
                        .iter()
                        .map(|s| format!("{}\n", s.stream_id))
                        .collect(),
                    _ => table(&list.streams),
                }
            }
            Command::Info { stream_id } => {
                let view = client
                    .http()
                    .call(Method::GET, &path(&stream_id), None)
                    .await?;
                show(&view, self.json)?
            }
            Command::End { stream_id } => {
                let view = client
                    .http()
                    .call(Method::DELETE, &path(&stream_id), None)
                    .await?;
                show(&view, self.json)?
            }
        };
        print!("{out}");
        Ok(())
    }
}

fn pretty(body: &impl serde::Serialize) -> anyhow::Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(body)?))
}

fn show(view: &StreamView, json: bool) -> anyhow::Result<String> {
    match json {
        true => pretty(view),
        false => Ok(details(view)),
    }
}

/// "3s", "5m", "2h", "4d": how long ago `ms` was.
pub fn ago(ms: i64, now: i64) -> String {
    let s = ((now - ms).max(0)) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn table(streams: &[StreamView]) -> String {
    let now = now_ms();
    let mut out = format!(
        "{:<36}  {:<6}  {:<10}  {:>9}  {:>9}  {:>4}  {:>7}  {:>6}\n",
        "STREAM", "STATE", "PROCESSOR", "IN", "OUT", "SUBS", "CREATED", "ACTIVE"
    );
    for s in streams {
        let _ = writeln!(
            out,
            "{:<36}  {:<6}  {:<10}  {:>9}  {:>9}  {:>4}  {:>7}  {:>6}",
            s.stream_id.to_string(),
            s.state.as_str(),
            s.processor.name(),
            s.records_in,
            s.records_out,
            s.subscribers,
            ago(s.created_ms, now),
            ago(s.last_activity_ms, now),
        );
    }
    if streams.is_empty() {
        out.push_str("(no streams)\n");
    }
    out
}

fn details(s: &StreamView) -> String {
    let now = now_ms();
    let mut out = String::new();
    let rows = [
        ("stream", s.stream_id.to_string()),
        ("owner", s.owner.clone()),
        ("state", s.state.as_str().to_string()),
        (
            "processor",
            serde_json::to_string(&s.processor).unwrap_or_default(),
        ),
        ("records in", s.records_in.to_string()),
        ("records out", s.records_out.to_string()),
        ("subscribers", s.subscribers.to_string()),
        ("created", format!("{} ago", ago(s.created_ms, now))),
        (
            "last activity",
            format!("{} ago", ago(s.last_activity_ms, now)),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<14} {v}");
    }
    for (k, schema) in [("schema", &s.schema), ("result schema", &s.result_schema)] {
        if let Some(schema) = schema {
            let _ = writeln!(out, "{k:<14} {schema}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(ago(0, 59_000), "59s");
        assert_eq!(ago(0, 61_000), "1m");
        assert_eq!(ago(0, 7_200_000), "2h");
        assert_eq!(ago(0, 200_000_000), "2d");
    }

    #[test]
    fn table_has_a_row_per_stream() {
        let view = StreamView {
            stream_id: uuid::Uuid::from_u128(1),
            owner: "alice".into(),
            processor: streamgate::wire::ProcessorSpec::Identity,
            schema: None,
            result_schema: None,
            state: streamgate::wire::StreamState::Open,
            created_ms: 0,
            ended_ms: None,
            records_in: 3,
            records_out: 2,
            subscribers: 1,
            last_activity_ms: 0,
        };
        let t = table(&[view]);
        assert_eq!(t.lines().count(), 2);
        assert!(t.contains("00000000-0000-0000-0000-000000000001") && t.contains("identity"));
    }
}

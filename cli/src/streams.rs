//! `streamctl streams`: list streams, show one, end one. Tables for people, `--json` for
//! scripts.

use std::fmt::Write as _;

use reqwest::Method;
use serde_json::Value;
use streamgate::kafka::now_ms;

use crate::client::{Client, ConnectionArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
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
        let client = Client::new(&self.conn)?;
        let (value, single) = match self.command.unwrap_or(Command::List) {
            Command::List => (client.call(Method::GET, "/api/streams", None).await?, false),
            Command::Info { stream_id } => (
                client
                    .call(Method::GET, &format!("/api/stream/{stream_id}"), None)
                    .await?,
                true,
            ),
            Command::End { stream_id } => (
                client
                    .call(Method::DELETE, &format!("/api/stream/{stream_id}"), None)
                    .await?,
                true,
            ),
        };
        let out = match (self.json, single) {
            (true, _) => format!("{value:#}\n"),
            (false, true) => details(&value),
            (false, false) => table(value["streams"].as_array().map_or(&[][..], |v| v)),
        };
        print!("{out}");
        Ok(())
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

/// A processor spec in one word: `identity`, `uppercase`, or its type.
pub fn processor_name(spec: &Value) -> String {
    spec["type"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| spec.to_string())
}

fn table(streams: &[Value]) -> String {
    let now = now_ms();
    let mut out = format!(
        "{:<36}  {:<6}  {:<10}  {:>9}  {:>9}  {:>4}  {:>7}  {:>6}\n",
        "STREAM", "STATE", "PROCESSOR", "IN", "OUT", "SUBS", "CREATED", "ACTIVE"
    );
    for s in streams {
        let _ = writeln!(
            out,
            "{:<36}  {:<6}  {:<10}  {:>9}  {:>9}  {:>4}  {:>7}  {:>6}",
            s["stream_id"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            processor_name(&s["processor"]),
            s["records_in"].to_string(),
            s["records_out"].to_string(),
            s["subscribers"].to_string(),
            ago(s["created_ms"].as_i64().unwrap_or(now), now),
            ago(s["last_activity_ms"].as_i64().unwrap_or(now), now),
        );
    }
    if streams.is_empty() {
        out.push_str("(no streams)\n");
    }
    out
}

fn details(s: &Value) -> String {
    let now = now_ms();
    let mut out = String::new();
    let rows = [
        ("stream", s["stream_id"].as_str().unwrap_or("").to_string()),
        ("owner", s["owner"].as_str().unwrap_or("").to_string()),
        ("state", s["state"].as_str().unwrap_or("").to_string()),
        ("processor", s["processor"].to_string()),
        ("records in", s["records_in"].to_string()),
        ("records out", s["records_out"].to_string()),
        ("subscribers", s["subscribers"].to_string()),
        (
            "created",
            format!("{} ago", ago(s["created_ms"].as_i64().unwrap_or(now), now)),
        ),
        (
            "last activity",
            format!(
                "{} ago",
                ago(s["last_activity_ms"].as_i64().unwrap_or(now), now)
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<14} {v}");
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
        let t = table(&[serde_json::json!({
            "stream_id": "s1", "state": "open", "processor": {"type": "identity"},
            "records_in": 3, "records_out": 2, "subscribers": 1,
            "created_ms": 0, "last_activity_ms": 0
        })]);
        assert_eq!(t.lines().count(), 2);
        assert!(t.contains("s1") && t.contains("identity"));
    }
}

//! `streamctl start`: opens a stream and prints its id alone, so `ID=$(streamctl start)` works.

use reqwest::Method;
use serde_json::{json, Value};
use streamgate::wire::Started;

use crate::client::{Client, ConnectionArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// Processor: a name (identity, uppercase) or a JSON spec such as '{"type":"uppercase"}'.
    #[arg(long, short, value_parser = processor_arg, value_hint = clap::ValueHint::Other)]
    pub processor: Option<String>,
    /// Print the daemon's whole JSON answer instead of the id.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        let client = crate::client::connect(&self.conn)?;
        let created = start_stream(&client, self.processor.as_deref()).await?;
        if self.json {
            println!("{}", serde_json::to_string(&created)?);
        } else {
            println!("{}", created.stream_id);
        }
        Ok(())
    }
}

/// `--processor`: a spec that is not JSON is a usage error (exit 2), caught before any
/// request.
pub fn processor_arg(p: &str) -> Result<String, String> {
    if p.trim_start().starts_with('{') {
        serde_json::from_str::<Value>(p).map_err(|e| format!("not valid JSON: {e}"))?;
    }
    Ok(p.to_string())
}

/// Starts a stream (also used by `send --new`); returns the daemon's answer.
pub async fn start_stream(client: &Client, processor: Option<&str>) -> anyhow::Result<Started> {
    let body = match processor {
        None => json!({}),
        Some(p) if p.trim_start().starts_with('{') => {
            let spec: Value = serde_json::from_str(p)
                .map_err(|e| anyhow::anyhow!("--processor: not valid JSON: {e}"))?;
            json!({ "processor": spec })
        }
        Some(name) => json!({ "processor": name }),
    };
    let created = client
        .http()
        .call(
            Method::POST,
            "/api/stream/start",
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await?;
    Ok(created)
}

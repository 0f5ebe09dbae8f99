//! `streamctl start`: opens a stream and prints its id alone, so `ID=$(streamctl start)` works.
//! `--schema FILE` (and `--result-schema FILE`) give it a JSON Schema its records (results)
//! must match.

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
    /// A JSON Schema file every record must match (checked before anything is stored), or
    /// `ref:NAME` for a schema named in the daemon's config.
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub schema: Option<String>,
    /// A JSON Schema file every result must match (one that does not becomes an error frame).
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub result_schema: Option<String>,
    /// Print the daemon's whole JSON answer instead of the id.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        let client = crate::client::connect(&self.conn)?;
        let schemas = Schemas {
            input: self
                .schema
                .as_deref()
                .map(|s| schema_arg("--schema", s))
                .transpose()?,
            result: self
                .result_schema
                .as_deref()
                .map(|s| schema_arg("--result-schema", s))
                .transpose()?,
        };
        let created = start_stream_with(&client, self.processor.as_deref(), &schemas).await?;
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

/// The schemas a stream is started with.
#[derive(Debug, Default)]
pub struct Schemas {
    pub input: Option<Value>,
    pub result: Option<Value>,
}

/// `--schema` / `--result-schema`: a JSON file, or `ref:NAME` of a schema the daemon names.
fn schema_arg(flag: &str, given: &str) -> anyhow::Result<Value> {
    if let Some(name) = given.strip_prefix("ref:") {
        return Ok(json!({ "$ref": name }));
    }
    let text = std::fs::read_to_string(given)
        .map_err(|e| anyhow::anyhow!("{flag}: cannot read {given}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{flag}: {given} is not JSON: {e}"))
}

/// Starts a stream (also used by `send --new`); returns the daemon's answer.
pub async fn start_stream(client: &Client, processor: Option<&str>) -> anyhow::Result<Started> {
    start_stream_with(client, processor, &Schemas::default()).await
}

/// Starts a stream with a processor and schemas.
pub async fn start_stream_with(
    client: &Client,
    processor: Option<&str>,
    schemas: &Schemas,
) -> anyhow::Result<Started> {
    let mut body = match processor {
        None => json!({}),
        Some(p) if p.trim_start().starts_with('{') => {
            let spec: Value = serde_json::from_str(p)
                .map_err(|e| anyhow::anyhow!("--processor: not valid JSON: {e}"))?;
            json!({ "processor": spec })
        }
        Some(name) => json!({ "processor": name }),
    };
    if let Some(schema) = &schemas.input {
        body["schema"] = schema.clone();
    }
    if let Some(schema) = &schemas.result {
        body["result_schema"] = schema.clone();
    }
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

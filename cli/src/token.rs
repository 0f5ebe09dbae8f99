//! `streamctl token`: asks the daemon for a scoped stream token and prints it alone, so
//! `TOKEN=$(streamctl token $ID)` works; hand it to a web page or a pipeline instead of the key.
//! With several streams, one token for all of them (`POST /api/tokens`), for one
//! `/api/connect` or `/api/events` connection.

use reqwest::Method;
use streamgate::wire::{Scope, TokenIssued, TokenRequest};

use crate::client::ConnectionArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// The streams the token is for (1 to 100).
    #[arg(value_name = "STREAM_ID", value_hint = clap::ValueHint::Other, required = true,
          num_args = 1..)]
    pub streams: Vec<String>,
    /// What the token may do; repeat or separate with commas for both.
    #[arg(
        long,
        short,
        value_enum,
        value_delimiter = ',',
        default_value = "subscribe"
    )]
    pub scope: Vec<ScopeArg>,
    /// Lifetime in seconds (the daemon caps it at limits.max_token_ttl_s).
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// Print the daemon's whole JSON answer (with `expires_at`) instead of the token.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    /// Read the stream's results (WebSocket or Server-Sent Events).
    Subscribe,
    /// Send records into the stream.
    Send,
}

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        let client = crate::client::connect(&self.conn)?;
        let mut scope: Vec<Scope> = self
            .scope
            .iter()
            .map(|s| match s {
                ScopeArg::Subscribe => Scope::Subscribe,
                ScopeArg::Send => Scope::Send,
            })
            .collect();
        scope.dedup();
        let issued: TokenIssued = match &self.streams[..] {
            [one] => {
                let request = TokenRequest {
                    scope,
                    ttl_s: Some(self.ttl),
                };
                client
                    .http()
                    .call(
                        Method::POST,
                        &format!("/api/stream/{one}/tokens"),
                        Some(("application/json", serde_json::to_vec(&request)?)),
                    )
                    .await?
            }
            several => {
                let mut streams = Vec::with_capacity(several.len());
                for id in several {
                    match uuid::Uuid::parse_str(id) {
                        Ok(id) => streams.push(id),
                        Err(_) => anyhow::bail!("stream_not_found: stream {id} not found"),
                    }
                }
                client.token(&streams, &scope, Some(self.ttl)).await?
            }
        };
        if self.json {
            println!("{}", serde_json::to_string(&issued)?);
        } else {
            println!("{}", issued.token);
        }
        Ok(())
    }
}

//! `streamctl token`: asks the daemon for a scoped stream token and prints it alone, so
//! `TOKEN=$(streamctl token $ID)` works; hand it to a web page or a pipeline instead of the key.

use reqwest::Method;
use streamgate::wire::{Scope, TokenIssued, TokenRequest};

use crate::client::{Client, ConnectionArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// The stream the token is for.
    #[arg(value_name = "STREAM_ID", value_hint = clap::ValueHint::Other)]
    pub stream: String,
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
        let client = Client::new(&self.conn)?;
        let mut scope: Vec<Scope> = self
            .scope
            .iter()
            .map(|s| match s {
                ScopeArg::Subscribe => Scope::Subscribe,
                ScopeArg::Send => Scope::Send,
            })
            .collect();
        scope.dedup();
        let request = TokenRequest {
            scope,
            ttl_s: Some(self.ttl),
        };
        let issued: TokenIssued = client
            .call(
                Method::POST,
                &format!("/api/stream/{}/tokens", self.stream),
                Some(("application/json", serde_json::to_vec(&request)?)),
            )
            .await?;
        if self.json {
            println!("{}", serde_json::to_string(&issued)?);
        } else {
            println!("{}", issued.token);
        }
        Ok(())
    }
}

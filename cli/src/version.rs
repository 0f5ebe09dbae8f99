//! `streamctl version`: this client's version and the daemon's (from `/healthz`), so a
//! version skew is one command away.

use reqwest::Method;
use streamgate::wire::Status;

use crate::client::ConnectionArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub conn: ConnectionArgs,
}

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        println!("streamctl {}", env!("CARGO_PKG_VERSION"));
        let client = crate::client::connect(&self.conn)?;
        match client
            .http()
            .call::<Status>(Method::GET, "/healthz", None)
            .await
        {
            Ok(status) => println!(
                "daemon    {} at {}",
                status
                    .version
                    .as_deref()
                    .unwrap_or("unknown (older than 0.1)"),
                client.http().url("")
            ),
            // The client's version is still worth printing; the reason goes to stderr.
            Err(e) => eprintln!("streamctl: daemon version unknown: {e}"),
        }
        Ok(())
    }
}

//! The `streamctl` commands as a library, so tests can call them and `main.rs` stays thin.
//!
//! # Layout
//!
//! - [`serve`]: runs the daemon.
//! - [`exit`]: exit codes and the one place errors are printed.

pub mod exit;
pub mod serve;

use clap::{Parser, Subcommand};

/// Run the Streamgate daemon and talk to it.
#[derive(Debug, Parser)]
#[command(name = "streamctl", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (zero config: embedded broker on 127.0.0.1:8080 with a local key).
    Serve(serve::Args),
}

/// Runs one command on a fresh tokio runtime.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => args.run().await,
        }
    })
}

//! The `streamctl` commands as a library, so tests can call them and `main.rs` stays thin.
//!
//! # Layout
//!
//! - [`serve`]: runs the daemon.
//! - [`client`]: connection settings, made into the `streamgate-client` library's client
//!   (its HTTP calls, its one connection for many streams, its retries) every other command
//!   uses.
//! - [`start`], [`send`], [`tail`], [`streams`], [`token`], [`bench`], [`top`]: one module per client
//!   command.
//! - [`version`]: client and daemon versions.
//! - [`completions`]: shell completions and the man page, from the clap definition.
//! - [`exit`]: exit codes and the one place errors are printed.

pub mod bench;
pub mod client;
pub mod completions;
pub mod exit;
pub mod send;
pub mod serve;
pub mod start;
pub mod streams;
pub mod tail;
pub mod token;
pub mod top;
pub mod version;

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
    /// Open a stream and print its id.
    Start(start::Args),
    /// Send stdin lines into a stream, one record per line.
    Send(send::Args),
    /// Print a stream's results as they arrive.
    Tail(tail::Args),
    /// Measure the whole path, open loop: latency percentiles, rates, and every record accounted for.
    Bench(bench::Args),
    /// Live view of the daemon's streams: rates, subscribers, latency, a stream's results.
    Top(top::Args),
    /// List, show or end streams.
    Streams(streams::Args),
    /// Print a scoped token for one stream (subscribe and/or send), to use instead of the key.
    Token(token::Args),
    /// Print this client's version and the daemon's.
    Version(version::Args),
    /// Print a shell completion script.
    Completions(completions::Args),
    /// Print a man page (roff): streamctl's, or a subcommand's (streamctl man tail).
    Man {
        /// The subcommand whose page to print.
        subcommand: Option<String>,
    },
}

/// Runs one command on a fresh tokio runtime.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => args.run().await,
            Command::Start(args) => args.run().await,
            Command::Send(args) => args.run().await,
            Command::Tail(args) => args.run().await,
            Command::Streams(args) => args.run().await,
            Command::Token(args) => args.run().await,
            Command::Bench(args) => args.run().await,
            Command::Top(args) => args.run().await,
            Command::Version(args) => args.run().await,
            Command::Completions(args) => args.run(),
            Command::Man { subcommand } => {
                let page = completions::man_page(subcommand.as_deref())?;
                std::io::Write::write_all(&mut std::io::stdout(), &page)?;
                Ok(())
            }
        }
    })
}

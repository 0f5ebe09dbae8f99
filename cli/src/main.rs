//! `streamctl`: parse the command line, run it, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = streamctl::Cli::parse();
    streamctl::exit::report(streamctl::run(cli))
}

//! `streamctl`: parse the command line, run it, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use streamgate::{worker_main, WORKER_ARG};

fn main() -> ExitCode {
    // The daemon runs user code in copies of this executable (not a subcommand for people).
    if std::env::args_os().nth(1).is_some_and(|a| a == WORKER_ARG) {
        return worker_main();
    }
    let cli = streamctl::Cli::parse();
    streamctl::exit::report(streamctl::run(cli))
}

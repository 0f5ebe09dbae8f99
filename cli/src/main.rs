//! `streamctl`: parse the command line, run it, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use streamgate::processing::sandbox;

fn main() -> ExitCode {
    // The daemon runs user code in copies of this executable (not a subcommand for people).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == sandbox::WORKER_ARG)
    {
        return sandbox::worker_main();
    }
    let cli = streamctl::Cli::parse();
    streamctl::exit::report(streamctl::run(cli))
}

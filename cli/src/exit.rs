//! Exit codes, ripgrep style, and the one place an error is printed.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (also when stdout was closed early, as by `| head`) |
//! | 1 | the command failed (the message says why) |
//! | 2 | usage error (printed by clap) |

use std::process::ExitCode;

/// Prints an error once, with its causes, and picks the exit code.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

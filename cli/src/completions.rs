//! `streamctl completions SHELL` and `streamctl man [SUBCOMMAND]`: generated from the clap
//! definition, so they never drift from the real flags. One man page per subcommand, each
//! with its flags, environment and exit codes. The copies in `completions/` are checked by a
//! test.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::Cli;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

impl Args {
    pub fn run(self) -> anyhow::Result<()> {
        std::io::Write::write_all(&mut std::io::stdout(), &completion(self.shell))?;
        Ok(())
    }
}

/// The completion script for `shell`.
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "streamctl", &mut out);
    out
}

/// What every page ends with: exit codes and environment.
const EXIT_AND_ENVIRONMENT: &str = "\
Exit status: 0 success (also when stdout was closed early, as by `| head`); 1 the command \
failed, with one message on stderr naming the daemon's error code; 2 a usage error.

Environment: STREAMCTL_URL (the daemon, default http://127.0.0.1:8080), STREAMCTL_API_KEY \
(default: the key file `streamctl serve` writes), STREAMGATE_CONFIG (serve's config file), \
RUST_LOG (serve's log filter).";

/// The command tree with the exit codes and environment on every page.
fn command() -> clap::Command {
    let mut cmd = Cli::command().after_long_help(EXIT_AND_ENVIRONMENT);
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |s| s.after_long_help(EXIT_AND_ENVIRONMENT));
    }
    cmd
}

/// The man page (roff) of `streamctl`, or of one subcommand (`streamctl-tail(1)`, ...).
pub fn man_page(subcommand: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut cmd = command();
    cmd.build();
    let man = match subcommand {
        None => clap_mangen::Man::new(cmd),
        Some(name) => {
            let sub = cmd
                .find_subcommand(name)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no subcommand `{name}`"))?;
            clap_mangen::Man::new(sub).title(format!("streamctl-{name}"))
        }
    };
    let mut out = Vec::new();
    man.render(&mut out)?;
    Ok(out)
}

/// Subcommands with a page of their own (every one people run).
pub fn man_subcommands() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect()
}

/// File name under `completions/` for each shell's script.
pub fn file_name(shell: Shell) -> &'static str {
    match shell {
        Shell::Bash => "streamctl.bash",
        Shell::Zsh => "_streamctl",
        Shell::Fish => "streamctl.fish",
        Shell::Elvish => "streamctl.elv",
        Shell::PowerShell => "_streamctl.ps1",
        _ => "streamctl.unknown",
    }
}

/// Every shell we ship a script for.
pub const SHELLS: [Shell; 5] = [
    Shell::Bash,
    Shell::Zsh,
    Shell::Fish,
    Shell::Elvish,
    Shell::PowerShell,
];

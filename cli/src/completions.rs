//! `streamctl completions SHELL` and `streamctl man`: generated from the clap definition, so
//! they never drift from the real flags. The copies in `completions/` are checked by a test.

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

/// The man page (roff).
pub fn man_page() -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    Ok(out)
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

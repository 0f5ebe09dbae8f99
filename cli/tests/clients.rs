//! The client libraries' own test suites (clients/typescript: `npm test`, clients/python:
//! `pytest`), run from here so that the README's one test command runs them too, against
//! the streamctl this build just made. Each suite starts its own daemons (and tansu, found
//! through `TANSU_BIN` as scripts/test exports it) and stops them; a failing suite fails this
//! test with its output.

use std::path::{Path, PathBuf};
use std::process::Command;

fn clients() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients")
}

/// Runs `program args` in `dir` with `STREAMCTL_BIN` set; panics with the output on failure.
fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("STREAMCTL_BIN", env!("CARGO_BIN_EXE_streamctl"))
        .output()
        .unwrap_or_else(|e| panic!("{program} {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{program} {} in {} failed ({}):\n{}\n{}",
        args.join(" "),
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

#[test]
fn the_typescript_client_passes_its_tests() {
    let dir = clients().join("typescript");
    // `npm ci` is a no-op in effect when node_modules already matches the lock file.
    if !dir.join("node_modules").is_dir() {
        run(
            &dir,
            "npm",
            &["ci", "--no-audit", "--no-fund", "--loglevel=error"],
        );
    }
    run(&dir, "npm", &["test", "--silent"]);
}

#[test]
fn the_python_client_passes_its_tests() {
    let dir = clients().join("python");
    run(
        &dir,
        "python3",
        &["-m", "pytest", "-q", "-p", "no:cacheprovider"],
    );
}

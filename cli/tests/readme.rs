//! The README's streamctl command list, run as written against a fresh daemon with the
//! default config's rate limits (1 request/s per address, burst 5): every command exits 0.
//! The list is read from the README itself, so the two cannot drift.

use std::process::{Output, Stdio};
use std::time::Duration;

use streamgate::config::RateLimits;
use streamgate_testkit::*;
use tokio::process::Command;

/// The shell block after "in place of `streamctl`):" in README.md: one command per line,
/// comments dropped.
fn readme_commands() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("in place of `streamctl`):")
        .expect("the README's command list");
    let block = readme[start..]
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```sh block");
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Runs `script` in bash with the built streamctl first on PATH, talking to `d` as alice;
/// `out` is `$OUT`. Fails the test after `limit`.
async fn run_bash(d: &Daemon, script: &str, out: &std::path::Path, limit: Duration) -> Output {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_streamctl"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .env("OUT", out)
        .env("STREAMCTL_URL", d.url(""))
        .env("STREAMCTL_API_KEY", ALICE)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(limit, run)
        .await
        .expect("the script finished")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_command_list_runs_as_written_under_the_default_limits() {
    let commands = readme_commands();
    assert_eq!(
        commands.first().map(String::as_str),
        Some("streamctl serve &"),
        "the list starts the daemon; this test runs its own"
    );
    let mut config = test_config();
    config.rate_limits = RateLimits::default();
    let d = Daemon::start(config).await;

    let mut script = String::from("set -e\n");
    for command in &commands[1..] {
        // Each line, checked on its own: `set -e` does not see a failing `$(...)`.
        script.push_str(&format!(
            "{command} > \"$OUT/$(printf %s \"{n}\")\" || {{ echo \"failed: {n}\" >&2; exit 1; }}\n",
            n = script.lines().count()
        ));
    }
    let out = tempfile::tempdir().unwrap();
    let run = run_bash(&d, &script, out.path(), Duration::from_secs(180)).await;
    assert!(
        run.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    d.stop().await.unwrap();
}

/// Commands faster than the rate limit wait as the daemon's `Retry-After` says, saying so
/// once, and succeed: eight `streams` and a `start` in a row against a burst of 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_over_the_rate_limit_wait_and_succeed() {
    let mut config = test_config();
    config.rate_limits = RateLimits::default();
    let d = Daemon::start(config).await;
    // tail too: it waits as Retry-After says instead of retrying every 100 ms.
    let script = "set -e\n\
        for i in 1 2 3 4 5 6 7 8; do streamctl streams > /dev/null; done\n\
        ID=$(streamctl start)\n\
        for i in 1 2 3; do streamctl tail $ID -e; done\n\
        echo $ID";
    let out = tempfile::tempdir().unwrap();
    let run = run_bash(&d, script, out.path(), Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim().len(),
        36,
        "a stream id"
    );
    assert!(
        stderr.contains("waiting on the daemon's rate limit"),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .all(|l| l.contains("waiting on the daemon's rate limit")),
        "one notice per command that waited, nothing else: {stderr}"
    );
    d.stop().await.unwrap();
}

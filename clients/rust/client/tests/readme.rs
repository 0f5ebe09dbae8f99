//! The README's Rust program is `examples/quickstart.rs`, word for word, and it runs as
//! written against a daemon (only its address, through `STREAMGATE_URL`, differs).

use std::path::{Path, PathBuf};

use streamgate_testkit::{test_config, Daemon, ALICE};

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The example, built now (a test filtered with `--test` does not build examples), beside
/// this test's `deps/` directory.
fn example_binary() -> PathBuf {
    let built = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "streamgate-client",
            "--example",
            "quickstart",
        ])
        .status()
        .expect("cargo runs");
    assert!(built.success(), "the example builds");
    let test = std::env::current_exe().unwrap();
    let profile = test.parent().unwrap().parent().unwrap();
    profile.join("examples").join("quickstart")
}

#[test]
fn the_readme_shows_the_example_as_it_is() {
    let example = std::fs::read_to_string(crate_dir().join("examples/quickstart.rs")).unwrap();
    let readme = std::fs::read_to_string(crate_dir().join("../../../README.md")).unwrap();
    assert!(
        readme.contains(&format!("```rust\n{example}```")),
        "README.md's rust block is not examples/quickstart.rs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_runs_as_written() {
    let d = Daemon::start(test_config()).await;
    let out = tokio::process::Command::new(example_binary())
        .env("STREAMGATE_URL", d.url(""))
        .env("STREAMGATE_KEY", ALICE)
        .output()
        .await
        .expect("the example was built");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert!(lines[0].starts_with("stored at offset "), "{printed}");
    assert_eq!(lines[1..], [r#"{"greeting":"HELLO"}"#], "{printed}");
    d.stop().await.unwrap();
}

//! More than the embedded broker keeps, sent right after start (before the processing group
//! has even joined): the daemon refuses what its backlog cannot hold (429 `backlog_full`),
//! `streamctl send` waits and goes on, and every acknowledged record is processed exactly
//! once. Before the backlog gate, thousands of acknowledged records were dropped by the
//! broker's retention before processing ever saw them.

use std::process::Stdio;
use std::time::{Duration, Instant};

use streamgate_testkit::*;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The embedded broker keeps about 5 MiB per partition: send six times that (30 MiB) into one
/// stream (one partition).
const BYTES: usize = 30 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_the_broker_keeps_is_processed_whole() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let line = |n: usize| format!("{{\"n\":{n},\"pad\":\"{}\"}}\n", "x".repeat(180));
    let lines: String = (0..).map(line).take_while_inclusive_bytes(BYTES);
    let count = lines.lines().count() as u64;

    let mut send = Command::new(env!("CARGO_BIN_EXE_streamctl"))
        .env("STREAMCTL_URL", d.url(""))
        .env("STREAMCTL_API_KEY", ALICE)
        .args(["send", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = send.stdin.take().unwrap();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(240), send.wait_with_output())
        .await
        .expect("send finished")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .matches("waiting on the daemon's processing backlog")
            .count(),
        1,
        "send says once that it waits on the backlog: {stderr}"
    );

    // Every line was acknowledged, and every acknowledged record gives exactly one result.
    let deadline = Instant::now() + Duration::from_secs(120);
    let view = loop {
        let view = d.describe(ALICE, &id).await;
        if view["records_out"].as_u64() >= Some(count) || Instant::now() > deadline {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(view["records_in"].as_u64(), Some(count), "{view}");
    assert_eq!(view["records_out"].as_u64(), Some(count), "{view}");
    let metrics = d.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("streamgate_backlog_refused_records_total") && !l.ends_with(" 0")
        ),
        "the gate refused something along the way: {metrics}"
    );
    d.stop().await.unwrap();
}

trait TakeBytes {
    fn take_while_inclusive_bytes(self, bytes: usize) -> String;
}

impl<I: Iterator<Item = String>> TakeBytes for I {
    /// Concatenates items until at least `bytes` bytes.
    fn take_while_inclusive_bytes(self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes + 256);
        for item in self {
            out.push_str(&item);
            if out.len() >= bytes {
                break;
            }
        }
        out
    }
}

//! The built `streamctl` binary against a live daemon: send and tail keep every line in
//! order, under the default rate limit and across a daemon restart; `| head` is success.

use std::process::Stdio;
use std::time::Duration;

use streamgate::config::{Brokers, Rate};
use streamgate_testkit::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

fn streamctl(d: &Daemon) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_streamctl"));
    c.env("STREAMCTL_URL", d.url(""))
        .env("STREAMCTL_API_KEY", ALICE)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

async fn send_lines(d: &Daemon, id: &str, lines: String, extra: &[&str]) -> std::process::Output {
    let mut cmd = streamctl(d);
    cmd.arg("send")
        .arg(id)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("send did not finish")
        .unwrap()
}

async fn tail_all(d: &Daemon, id: &str, count: usize) -> Vec<String> {
    let out = tokio::time::timeout(
        WAIT,
        streamctl(d)
            .args([
                "tail",
                id,
                "--from",
                "earliest",
                "--format",
                "data",
                "-c",
                &count.to_string(),
            ])
            .output(),
    )
    .await
    .expect("tail did not finish")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn numbers(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_through_send_and_tail_prints_every_line_in_order() {
    let d = Daemon::start(test_config()).await;
    let out = streamctl(&d).arg("start").output().await.unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(id.len(), 36, "start prints the id alone: {id:?}");

    let lines: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    let out = send_lines(&d, &id, lines, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1000 records acknowledged"));
    assert_eq!(tail_all(&d, &id, 1000).await, numbers(1..=1000));

    // Text lines become JSON strings; --strict refuses them, naming the line.
    let out = send_lines(&d, &id, "plain text\n".into(), &[]).await;
    assert!(out.status.success());
    let out = send_lines(&d, &id, "1\n2\nthree\n".into(), &["--strict"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = tail_all(&d, &id, 1003).await;
    assert_eq!(got[1000], "\"plain text\"");
    assert_eq!(got[1001..], ["1".to_string(), "2".to_string()]);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_under_the_default_rate_limit_delivers_every_line() {
    let mut config = test_config();
    config.rate_limits.per_ip = Some(Rate {
        per_second: 1,
        burst: 5,
    });
    let d = Daemon::start(config).await;
    let id = d.start_stream(ALICE, None).await;
    // Tiny batches force many requests: most are refused with 429 and retried.
    let lines: String = (1..=40).map(|i| format!("{i}\n")).collect();
    let out = send_lines(&d, &id, lines, &["--batch-bytes", "20"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tail_all(&d, &id, 40).await, numbers(1..=40));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_into_head_exits_zero() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    d.send_ndjson(ALICE, &id, "1\n2\n".into()).await;
    let script = format!(
        "set -o pipefail; '{}' tail {id} --from earliest | head -n 1",
        env!("CARGO_BIN_EXE_streamctl")
    );
    let mut pipeline = Command::new("bash")
        .args(["-c", &script])
        .env("STREAMCTL_URL", d.url(""))
        .env("STREAMCTL_API_KEY", ALICE)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(pipeline.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("no line")
        .unwrap();
    assert!(first.unwrap().contains("\"data\":1"));
    // Like `tail -f | head`, tail learns that head is gone at its next write.
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        d.send_json(ALICE, &id, &serde_json::json!(3)).await;
        if let Ok(status) = tokio::time::timeout(Duration::from_millis(500), pipeline.wait()).await
        {
            break status.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tail did not exit after head"
        );
    };
    assert!(status.success(), "{status:?}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_survives_a_daemon_restart_without_gap_or_duplicate() {
    let tansu = Tansu::start();
    let mut config = test_config();
    config.brokers = Brokers::Bootstrap(tansu.bootstrap());
    let d = Daemon::start(config.clone()).await;
    let addr = d.addr;
    let id = d.start_stream(ALICE, None).await;

    let mut tail = streamctl(&d)
        .args([
            "tail", &id, "--format", "data", "-c", "20", "--from", "earliest",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    d.send_ndjson(ALICE, &id, (1..=10).map(|i| format!("{i}\n")).collect())
        .await;
    let mut got = Vec::new();
    while got.len() < 10 {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("tail stalled")
            .unwrap();
        got.push(line.expect("tail ended early"));
    }
    // The daemon goes away (tail's socket is closed) and comes back on the same address.
    d.stop().await.unwrap();
    let d = Daemon::start_on(config, addr).await;
    d.send_ndjson(ALICE, &id, (11..=20).map(|i| format!("{i}\n")).collect())
        .await;
    while let Some(line) = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("tail stalled")
        .unwrap()
    {
        got.push(line);
    }
    let status = tokio::time::timeout(WAIT, tail.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(got, numbers(1..=20));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_warns_about_results_the_broker_no_longer_holds() {
    let d = Daemon::start(test_config()).await;
    let id = stream_with_expired_results(&d).await;
    let run = |extra: &'static [&'static str]| {
        let mut cmd = streamctl(&d);
        cmd.args(["tail", &id, "--from", "0", "-c", "3"])
            .args(extra);
        cmd.output()
    };
    let out = tokio::time::timeout(Duration::from_secs(60), run(&[]))
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    assert!(stderr.contains("results at cursors 0..="), "{stderr}");
    assert!(stderr.contains("cursors were missing"), "{stderr}");
    let out = tokio::time::timeout(Duration::from_secs(60), run(&["--no-gaps"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 0, "nothing printed before the gap");
    d.stop().await.unwrap();
}

/// A `tail -c N` whose reader stops reading (its stdout is not drained) while a faster
/// `send` puts more than the embedded broker keeps into the stream: tail is detached, resumes
/// from a cursor the broker no longer holds, and still ends (once enough results came),
/// having printed every result up to its last or warned about exactly the missing range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_beside_a_faster_send_of_more_than_the_broker_keeps_accounts_for_every_result() {
    const SENT: usize = 60_000;
    const TAILED: usize = 45_000;
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let mut tail = streamctl(&d)
        .args(["tail", &id, "--from", "earliest", "--format", "{cursor}"])
        .args(["-c", &TAILED.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // About 14 MB of results, nearly three times what the broker keeps.
    let lines: String = (0..SENT)
        .map(|n| format!("{{\"n\":{n},\"pad\":\"{}\"}}\n", "x".repeat(200)))
        .collect();
    let sent = send_lines(&d, &id, lines, &[]).await;
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !d
        .metrics()
        .await
        .contains(&format!("streamgate_records_processed_total {SENT}"))
    {
        assert!(std::time::Instant::now() < deadline, "not all processed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Only now is tail's output read.
    let (mut stdout, stderr) = (tail.stdout.take().unwrap(), tail.stderr.take().unwrap());
    let warnings = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            all.push(l);
        }
        all
    });
    let reading = tokio::spawn(async move {
        let mut printed = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut printed)
            .await
            .unwrap();
        printed
    });
    // More results until tail has printed its count (`-c` counts printed ones, and a tail
    // that lags again on a loaded machine misses more of them).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut next = SENT;
    while !reading.is_finished() {
        assert!(std::time::Instant::now() < deadline, "tail did not end");
        let more: String = (next..next + 5_000)
            .map(|n| format!("{{\"n\":{n}}}\n"))
            .collect();
        next += 5_000;
        assert!(send_lines(&d, &id, more, &[]).await.status.success());
    }
    let printed = reading.await.unwrap();
    let status = tail.wait().await.unwrap();
    let warnings = warnings.await.unwrap();
    assert!(status.success(), "{warnings:?}");

    let printed: Vec<i64> = printed.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(printed.len(), TAILED, "{warnings:?}");
    // Cursors reported missing: "results at cursors A..=B are no longer held".
    let missing: Vec<(i64, i64)> = warnings
        .iter()
        .filter_map(|w| w.split("results at cursors ").nth(1))
        .map(|r| {
            let range = r.split_whitespace().next().unwrap();
            let (a, b) = range.split_once("..=").unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    let mut accounted: Vec<i64> = printed.clone();
    for (a, b) in &missing {
        accounted.extend(*a..=*b);
    }
    accounted.sort_unstable();
    let last = *printed.last().unwrap();
    assert_eq!(
        accounted,
        (0..=last).collect::<Vec<_>>(),
        "every cursor up to the last printed was printed or reported missing, once: {warnings:?}"
    );
    assert!(
        !missing.is_empty(),
        "the stalled reader lost results the broker dropped: {warnings:?}"
    );
    d.stop().await.unwrap();
}

/// `tail -e` as kcat's: exits after what exists now, on an open stream too, and at once on an
/// ended stream read from `latest`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_e_exits_at_the_end_of_what_exists_now() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let sent = send_lines(&d, &id, "1\n2\n3\n".into(), &[]).await;
    assert!(sent.status.success());
    let deadline = std::time::Instant::now() + WAIT;
    while d.describe(ALICE, &id).await["records_out"] != 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "results did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tail = |args: &'static [&'static str]| {
        let mut cmd = streamctl(&d);
        cmd.args(["tail", &id, "--format", "data", "-e"]).args(args);
        tokio::time::timeout(Duration::from_secs(30), cmd.output())
    };
    let open = tail(&["--from", "earliest"]).await.expect("exits").unwrap();
    assert!(
        open.status.success(),
        "{}",
        String::from_utf8_lossy(&open.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&open.stdout), "1\n2\n3\n");

    assert_eq!(d.end_stream(ALICE, &id).await, 200);
    let ended_latest = tail(&[]).await.expect("exits at once").unwrap();
    assert!(ended_latest.status.success());
    assert_eq!(ended_latest.stdout.len(), 0);
    let ended_all = tail(&["--from", "earliest"]).await.expect("exits").unwrap();
    assert_eq!(String::from_utf8_lossy(&ended_all.stdout), "1\n2\n3\n");
    // kcat's -o -N: the last N results.
    let last_two = tail(&["-o", "-2"]).await.expect("exits").unwrap();
    assert_eq!(String::from_utf8_lossy(&last_two.stdout), "2\n3\n");
    let beginning = tail(&["-o", "beginning"]).await.expect("exits").unwrap();
    assert_eq!(String::from_utf8_lossy(&beginning.stdout), "1\n2\n3\n");
    d.stop().await.unwrap();
}

/// `--idempotency-prefix`: a run killed part-way, then the same input sent again with the
/// same prefix, stores every line once. The first run's lines come slowly (pauses longer
/// than send's linger), the second's all at once: batches cut by timing would differ between
/// the runs and store the first run's lines twice under other keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_the_same_input_again_with_its_prefix_stores_each_line_once() {
    const LINES: u64 = 1_000;
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let input: Vec<String> = (1..=LINES).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let args = ["--idempotency-prefix", "load-1", "--batch-records", "100"];

    let mut first = streamctl(&d);
    first
        .arg("send")
        .arg(&id)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut first = first.spawn().unwrap();
    let mut stdin = first.stdin.take().unwrap();
    // 650 lines, 30 at a time, then the run is killed while its input is still open.
    for chunk in input[..650].chunks(30) {
        stdin.write_all(chunk.concat().as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = std::time::Instant::now() + WAIT;
    while d.describe(ALICE, &id).await["records_in"] != 600 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run stored {}",
            d.describe(ALICE, &id).await["records_in"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().await.unwrap();

    let again = send_lines(&d, &id, input.concat(), &args).await;
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let deadline = std::time::Instant::now() + WAIT;
    while d.describe(ALICE, &id).await["records_out"] != LINES {
        assert!(
            std::time::Instant::now() < deadline,
            "results did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let printed = tail_all(&d, &id, LINES as usize).await;
    let expected: Vec<String> = (1..=LINES).map(|n| format!("{{\"n\":{n}}}")).collect();
    assert_eq!(printed, expected, "each line once, in order");
    assert_eq!(d.describe(ALICE, &id).await["records_in"], LINES);
    d.stop().await.unwrap();
}

/// `streamctl tail ID1 ID2 ID3`: three streams over one connection, each line `id<TAB>data`;
/// the daemon restarted mid-way on the same address, every stream resumes from its own
/// cursor (or from `earliest`, for the one with nothing printed yet): each result once, in
/// order per stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_of_three_streams_survives_a_daemon_restart_without_gap_or_duplicate() {
    use std::collections::HashMap;

    let tansu = Tansu::start();
    let mut config = test_config();
    config.brokers = Brokers::Bootstrap(tansu.bootstrap());
    let d = Daemon::start(config.clone()).await;
    let addr = d.addr;
    let ids = [
        d.start_stream(ALICE, None).await,
        d.start_stream(ALICE, None).await,
        d.start_stream(ALICE, None).await,
    ];
    // Before the restart: 1..=10 into the first two streams, nothing into the third.
    // After it: 11..=20 into all three (1..=10 too into the third).
    let mut tail = streamctl(&d)
        .arg("tail")
        .args(&ids)
        .args(["--format", "data", "-c", "60", "--from", "earliest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    for id in &ids[..2] {
        let (status, _) = d
            .send_ndjson(ALICE, id, (1..=10).map(|i| format!("{i}\n")).collect())
            .await;
        assert_eq!(status, 202);
    }
    let mut got: HashMap<String, Vec<String>> = HashMap::new();
    let mut printed = 0;
    let record = |line: String, got: &mut HashMap<String, Vec<String>>| {
        let (id, data) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("not `id<TAB>data`: {line:?}"));
        assert!(ids.iter().any(|i| i == id), "unknown stream in {line:?}");
        got.entry(id.to_string())
            .or_default()
            .push(data.to_string());
    };
    while printed < 20 {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("tail stalled")
            .unwrap()
            .expect("tail ended early");
        record(line, &mut got);
        printed += 1;
    }

    // The daemon goes away (tail's connection is closed) and comes back on the same address.
    d.stop().await.unwrap();
    let d = Daemon::start_on(config, addr).await;
    let (status, _) = d
        .send_ndjson(ALICE, &ids[2], (1..=10).map(|i| format!("{i}\n")).collect())
        .await;
    assert_eq!(status, 202);
    for id in &ids {
        let (status, _) = d
            .send_ndjson(ALICE, id, (11..=20).map(|i| format!("{i}\n")).collect())
            .await;
        assert_eq!(status, 202);
    }
    // tail exits after its 60th line: a duplicate would take the place of a later result.
    while let Some(line) = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("tail stalled")
        .unwrap()
    {
        record(line, &mut got);
    }
    let status = tokio::time::timeout(WAIT, tail.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    for id in &ids {
        assert_eq!(got.get(id.as_str()), Some(&numbers(1..=20)), "stream {id}");
    }
    d.stop().await.unwrap();
}

/// `streamctl start --schema FILE`, then `send`: a batch with records that do not match is
/// refused whole, each violation printed on its stdin line with its pointer, exit 1; the
/// lines before the batch were stored. `streams info` shows the schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_with_a_schema_and_send_prints_each_violation_on_its_line() {
    let d = Daemon::start(test_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("reading.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": 0}}}"#,
    )
    .unwrap();
    let started = streamctl(&d)
        .args(["start", "--schema", schema.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let id = String::from_utf8(started.stdout)
        .unwrap()
        .trim()
        .to_string();
    let info = streamctl(&d)
        .args(["streams", "info", &id])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("\"minimum\":0"));

    // One batch of the three lines (cut by size only, with a prefix).
    let one_batch = ["--idempotency-prefix", "p", "--batch-records", "3"];
    let sent = send_lines(
        &d,
        &id,
        "{\"n\":1}\n{\"n\":-2}\n{\"m\":3}\n".into(),
        &one_batch,
    )
    .await;
    assert_eq!(sent.status.code(), Some(1));
    let said = String::from_utf8_lossy(&sent.stderr);
    assert!(
        said.contains("line 2: /n:") && said.contains("(minimum)"),
        "{said}"
    );
    assert!(
        said.contains("line 3: (the record):") && said.contains("(required)"),
        "{said}"
    );
    assert!(said.contains("schema_violation"), "{said}");
    assert_eq!(
        d.describe(ALICE, &id).await["records_in"],
        0,
        "the batch was refused whole"
    );
    let bad = streamctl(&d)
        .args([
            "start",
            "--schema",
            dir.path().join("none.json").to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--schema: cannot read"));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_traceparent_reaches_tail_s_trace_id() {
    // Tracing on, exporting to an address where nothing listens: spans are dropped, frames
    // still name their trace.
    let mut config = test_config();
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.telemetry.otlp_endpoint = Some(format!("http://{}", nobody.local_addr().unwrap()));
    drop(nobody);
    let d = Daemon::start(config).await;
    let out = streamctl(&d).arg("start").output().await.unwrap();
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let out = send_lines(&d, &id, "1\n".into(), &["--traceparent", &traceparent]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = send_lines(&d, &id, "2\n".into(), &[]).await;
    assert!(out.status.success());
    let out = send_lines(&d, &id, "3\n".into(), &["--traceparent", "00-nonsense"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("W3C trace context"));
    let out = tokio::time::timeout(
        WAIT,
        streamctl(&d)
            .args(["tail", &id, "-o", "beginning", "-c", "2"])
            .args(["--format", "{trace_id}|{data}"])
            .output(),
    )
    .await
    .expect("tail did not finish")
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{trace}|1\n|2\n")
    );
    d.stop().await.unwrap();
}

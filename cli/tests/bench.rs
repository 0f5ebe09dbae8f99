//! `streamctl bench` against live daemons: a short run accounts for every record and its JSON
//! report has the documented fields; records deliberately dropped (the hidden test-only fault
//! hook) are reported as lost and fail the run; `--embedded --baseline` compares both paths.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use streamgate_testkit::*;
use tokio::process::Command;

async fn bench(args: &[&str], env: &[(&str, String)]) -> (std::process::ExitStatus, Value, String) {
    let (status, stdout, stderr) = bench_output(&[&["--json"], args].concat(), env).await;
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}); stderr: {stderr}"));
    (status, report, stderr)
}

/// `streamctl bench ARGS`: its exit status, stdout and stderr.
async fn bench_output(
    args: &[&str],
    env: &[(&str, String)],
) -> (std::process::ExitStatus, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamctl"));
    cmd.arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("bench did not finish")
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status, text(&out.stdout), text(&out.stderr))
}

fn daemon_env(d: &Daemon) -> Vec<(&'static str, String)> {
    vec![
        ("STREAMCTL_URL", d.url("")),
        ("STREAMCTL_API_KEY", ALICE.to_string()),
    ]
}

/// The documented fields of one run, and that every record was accounted for.
fn assert_clean_run(run: &Value, transport: &str, expected: u64) {
    assert_eq!(run["target"]["transport"], transport);
    assert_eq!(run["target"]["streams"], 4);
    let records = &run["records"];
    for field in ["sent", "acked", "received"] {
        assert_eq!(records[field], expected, "{field} in {run}");
    }
    for field in [
        "failed",
        "lost",
        "duplicated",
        "reordered",
        "received_unacked",
    ] {
        assert_eq!(records[field], 0, "{field} in {run}");
    }
    for kind in ["end_to_end", "ack"] {
        let l = &run["latency_ms"][kind];
        assert_eq!(l["count"], expected, "{kind} in {run}");
        for p in ["p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(
                l[p].as_f64().is_some_and(|v| v > 0.0),
                "{kind}.{p} in {run}"
            );
        }
        assert!(l["p50"].as_f64() <= l["p99"].as_f64());
    }
    assert!(run["rates"]["send_per_s"].as_f64().unwrap() > 0.0);
    assert!(run["rates"]["receive_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(run["errors"], serde_json::json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_bench_accounts_for_every_record_over_http_and_ws() {
    let d = Daemon::start(test_config()).await;
    let env = daemon_env(&d);
    let load: Vec<&str> = "--streams 4 --rate 200 --duration 2s --batch 2"
        .split_whitespace()
        .collect();
    let (status, report, stderr) = bench(&load, &env).await;
    assert!(status.success(), "{stderr}");
    assert_clean_run(&report["gateway"], "http", 400);
    assert_eq!(report["baseline"], Value::Null);
    // The run's CPU, from the daemon's own metrics.
    let cost = &report["cost"];
    assert!(
        cost["daemon_cpu_ms_per_1000_records"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "{cost}"
    );

    let mut ws = load.clone();
    ws.extend(["--transport", "ws"]);
    let (status, report, stderr) = bench(&ws, &env).await;
    assert!(status.success(), "{stderr}");
    assert_clean_run(&report["gateway"], "ws", 400);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_results_are_reported_lost_and_fail_the_run() {
    let d = Daemon::start(test_config()).await;
    let args: Vec<&str> =
        "--streams 4 --rate 200 --duration 1s --drain-timeout 3s --fault-drop-every 10"
            .split_whitespace()
            .collect();
    let (status, report, stderr) = bench(&args, &daemon_env(&d)).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    // 50 results per stream, every 10th ignored: 5 per stream.
    assert_eq!(report["gateway"]["records"]["lost"], 20, "{report}");
    assert_eq!(report["gateway"]["records"]["received"], 180);
    assert!(
        stderr.contains("20 acknowledged records were lost"),
        "{stderr}"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_bench_with_baseline_reports_both_and_their_ratio() {
    let args: Vec<&str> = "--embedded --baseline --streams 4 --rate 200 --duration 1s"
        .split_whitespace()
        .collect();
    let (status, report, stderr) = bench(&args, &[]).await;
    assert!(status.success(), "{stderr}");
    assert_clean_run(&report["gateway"], "http", 200);
    assert_clean_run(&report["baseline"], "kafka", 200);
    assert_eq!(
        report["cost"]["daemon_includes_bench"], true,
        "one process: {report}"
    );
    for field in ["receive_rate", "p50", "p99", "kafka_requests_per_record"] {
        assert!(
            report["ratio"][field].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {report}"
        );
    }
    // Requests to the broker, from librdkafka's statistics: the daemon's (its /metrics) and
    // the baseline's clients' own, each per acknowledged record.
    let requests = report["cost"]["daemon_kafka_requests"].as_f64().unwrap();
    let per_record = report["cost"]["daemon_kafka_requests_per_record"]
        .as_f64()
        .unwrap();
    assert!(requests >= 1.0, "{report}");
    assert!((per_record - requests / 200.0).abs() < 1e-9, "{report}");
    let baseline = report["baseline"]["kafka_requests_per_record"].as_f64();
    assert!(baseline.is_some_and(|b| b > 0.0), "{report}");
    let ratio = report["ratio"]["kafka_requests_per_record"]
        .as_f64()
        .unwrap();
    assert!(
        (ratio - per_record / baseline.unwrap()).abs() < 1e-9,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_max_stops_at_the_first_rate_that_breaks_the_bound() {
    let d = Daemon::start(test_config()).await;
    // No real run keeps p99 under a microsecond: the first step fails and ends the search.
    let args: Vec<&str> = "--streams 2 --rate 100 --duration 1s --find-max --max-p99-ms 0.001"
        .split_whitespace()
        .collect();
    let (status, report, stderr) = bench(&args, &daemon_env(&d)).await;
    assert!(status.success(), "no record was lost: {stderr}");
    let find_max = &report["find_max"];
    assert_eq!(find_max["max_p99_ms"], 0.001);
    assert_eq!(find_max["max_sustainable_rate"], Value::Null, "{report}");
    let steps = find_max["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{report}");
    assert_eq!(steps[0]["rate"], 100.0);
    assert_eq!(steps[0]["passed"], false);
    assert_eq!(steps[0]["lost"], 0);
    assert!(steps[0]["p99_ms"].as_f64().unwrap() > 0.001);
    // The report's run is that first step.
    assert_eq!(report["gateway"]["target"]["rate"], 100.0);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_max_with_baseline_climbs_both_paths() {
    // The same impossible bound for both: one failing step each, and no ratio of maxima.
    let args: Vec<&str> =
        "--embedded --baseline --streams 2 --rate 100 --duration 1s --find-max --max-p99-ms 0.001"
            .split_whitespace()
            .collect();
    let (status, report, stderr) = bench(&args, &[]).await;
    assert!(status.success(), "no record was lost: {stderr}");
    for which in ["find_max", "baseline_find_max"] {
        let steps = report[which]["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 1, "{which}: {report}");
        assert_eq!(steps[0]["passed"], false, "{which}: {report}");
        assert_eq!(steps[0]["lost"], 0, "{which}: {report}");
    }
    assert_eq!(report["baseline"]["target"]["transport"], "kafka");
    assert_eq!(report["ratio"]["max_rate"], Value::Null, "{report}");
    // The two climbed to different rates: their requests per record do not compare.
    assert_eq!(
        report["ratio"]["kafka_requests_per_record"],
        Value::Null,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_expects_every_record_on_every_subscriber() {
    let d = Daemon::start(test_config()).await;
    let args: Vec<&str> = "--streams 2 --subscribers 3 --rate 100 --duration 1s"
        .split_whitespace()
        .collect();
    let (status, report, stderr) = bench(&args, &daemon_env(&d)).await;
    assert!(status.success(), "{stderr}");
    let run = &report["gateway"];
    assert_eq!(run["target"]["subscribers"], 3);
    let records = &run["records"];
    assert_eq!(records["acked"], 100, "{run}");
    assert_eq!(
        records["received"], 300,
        "each record on each subscriber: {run}"
    );
    for field in ["failed", "lost", "duplicated", "reordered"] {
        assert_eq!(records[field], 0, "{field} in {run}");
    }
    assert_eq!(run["latency_ms"]["end_to_end"]["count"], 300, "{run}");

    // A subscriber that misses results is caught: every 7th result is dropped on arrival.
    let mut faulty = args.clone();
    faulty.extend(["--fault-drop-every", "7", "--drain-timeout", "3s"]);
    let (status, report, _) = bench(&faulty, &daemon_env(&d)).await;
    assert!(!status.success(), "lost deliveries fail the run: {report}");
    assert!(report["gateway"]["records"]["lost"].as_u64() > Some(0));
    d.stop().await.unwrap();
}

/// `--processor` opens the bench streams with it: a jq filter that keeps `q` (here, adding a
/// field) is measured like identity, every record accounted for, and the report names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_streams_take_the_given_processor() {
    let d = Daemon::start(test_config()).await;
    let env = daemon_env(&d);
    let spec = r#"{"type":"jq","filter":". + {seen: true}"}"#;
    let args = [
        "--streams",
        "4",
        "--rate",
        "200",
        "--duration",
        "1s",
        "--processor",
        spec,
    ];
    let (status, report, stderr) = bench(&args, &env).await;
    assert!(status.success(), "{stderr}");
    assert_clean_run(&report["gateway"], "http", 200);
    assert_eq!(report["gateway"]["target"]["processor"], spec);
    let streams = d.get_json(ALICE, "/api/streams").await;
    let with_filter = streams["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["processor"]["filter"] == ". + {seen: true}")
        .count();
    assert_eq!(with_filter, 4, "{streams}");
    d.stop().await.unwrap();
}

/// `--mux`: the four streams over two `/api/connect` connections, results only (sends over
/// HTTP), then sends too (`send` frames on the same connections): every record accounted
/// for both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mux_bench_accounts_for_every_record_over_api_connect() {
    let d = Daemon::start(test_config()).await;
    let env = daemon_env(&d);
    let load: Vec<&str> = "--streams 4 --rate 200 --duration 2s --mux 2"
        .split_whitespace()
        .collect();
    let (status, report, stderr) = bench(&load, &env).await;
    assert!(status.success(), "{stderr}");
    assert_clean_run(
        &report["gateway"],
        "http, results over /api/connect (2 streams each)",
        400,
    );
    let mut ws = load.clone();
    ws.extend(["--transport", "ws"]);
    let (status, report, stderr) = bench(&ws, &env).await;
    assert!(status.success(), "{stderr}");
    assert_clean_run(
        &report["gateway"],
        "ws: sends and results over /api/connect (2 streams each)",
        400,
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traced_bench_sends_a_sampled_traceparent_with_its_share_of_requests() {
    // Tracing on, exporting where nothing listens: the spans the daemon made are counted as
    // dropped, so their number shows the bench's requests were traced.
    let mut config = test_config();
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.telemetry.otlp_endpoint = Some(format!("http://{}", nobody.local_addr().unwrap()));
    drop(nobody);
    let d = Daemon::start(config).await;
    let load: Vec<&str> = "--streams 4 --rate 200 --duration 2s --traced 1"
        .split_whitespace()
        .collect();
    let (status, report, stderr) = bench(&load, &daemon_env(&d)).await;
    assert!(status.success(), "{stderr}");
    assert_clean_run(&report["gateway"], "http, 100% of sends traced", 400);
    let spans = || async {
        let metrics = d.metrics().await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("streamgate_spans_dropped_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Six spans per traced record (send, broker ack, end fence, process, results write,
    // deliver); the warm-up records are not traced.
    tokio::time::timeout(WAIT, async {
        while spans().await < 400 * 6 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the traced requests' spans are counted");
    // A share is between 0 and 1.
    let out = Command::new(env!("CARGO_BIN_EXE_streamctl"))
        .args(["bench", "--traced", "2"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--traced"));
    d.stop().await.unwrap();
}

/// `--subscribers` with `--baseline` compares the gateway's fan-out with a raw WebSocket
/// broadcaster's on the same machine: both deliver every record to every subscriber, and
/// `ratio.fan_out` is their deliveries/s within the p99 bound (absent when the broadcaster
/// broke it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_baseline_is_a_raw_broadcaster_and_the_ratio_counts_deliveries_within_the_bound() {
    let args = |bound: &str| {
        format!("--embedded --baseline --streams 2 --subscribers 3 --rate 100 --duration 1s --max-p99-ms {bound}")
    };
    let (status, report, stderr) =
        bench(&args("60000").split_whitespace().collect::<Vec<_>>(), &[]).await;
    assert!(status.success(), "{stderr}");
    for (run, transport) in [
        (&report["gateway"], "http"),
        (&report["baseline"], "raw WebSocket broadcaster"),
    ] {
        assert_eq!(run["target"]["transport"], transport, "{report}");
        assert_eq!(run["target"]["subscribers"], 3, "{report}");
        let records = &run["records"];
        assert_eq!(records["acked"], 100, "{run}");
        assert_eq!(
            records["received"], 300,
            "each record on each subscriber: {run}"
        );
        for field in ["failed", "lost", "duplicated", "reordered"] {
            assert_eq!(records[field], 0, "{field} in {run}");
        }
        assert_eq!(run["errors"], serde_json::json!({}), "{run}");
    }
    let within = |run: &Value| run["rates"]["receive_per_s"].as_f64().unwrap();
    let fan_out = report["ratio"]["fan_out"].as_f64().expect("fan_out");
    let expected = within(&report["gateway"]) / within(&report["baseline"]);
    assert!((fan_out - expected).abs() < 1e-9, "{report}");

    // No run keeps p99 under a microsecond: the broadcaster held no rate, so no ratio.
    let (status, report, stderr) =
        bench(&args("0.001").split_whitespace().collect::<Vec<_>>(), &[]).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(report["ratio"]["fan_out"], Value::Null, "{report}");
}

/// One client address may hold only so many connections (here 8): `--source-addresses`
/// spreads the results sockets over 127.0.0.1, .2, … so a bench can hold more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_addresses_spread_the_sockets_past_the_per_address_cap() {
    let mut config = test_config();
    config.limits.server.max_connections_per_ip = 8;
    let d = Daemon::start(config).await;
    let args = "--streams 1 --subscribers 12 --rate 20 --duration 1s";
    let plain: Vec<&str> = args.split_whitespace().collect();
    let (status, _, stderr) = bench_output(&plain, &daemon_env(&d)).await;
    assert!(!status.success(), "12 sockets from one address: {stderr}");
    assert!(stderr.contains("503"), "{stderr}");

    let spread = format!("{args} --source-addresses 3");
    let spread: Vec<&str> = spread.split_whitespace().collect();
    let (status, report, stderr) = bench(&spread, &daemon_env(&d)).await;
    assert!(status.success(), "{stderr}");
    let records = &report["gateway"]["records"];
    assert_eq!(records["received"], 240, "every record on all 12: {report}");
    assert_eq!(records["lost"], 0, "{report}");
    d.stop().await.unwrap();
}

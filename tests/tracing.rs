//! One trace per record across the Kafka hop, exported over OTLP to a collector written
//! here: a record sent with a `traceparent` through one instance and subscribed on another
//! gives spans from both, linked parent to child in the order of the record's path, and a
//! frame that names its trace. A collector that fails or never answers costs spans (counted),
//! never a record. Nothing secret is exported.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::{json, Value};
use streamgate::config::{Brokers, Config};
use streamgate_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A span as the collector got it.
#[derive(Debug, Clone)]
struct Got {
    instance: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    start_ns: u64,
    end_ns: u64,
    /// The status message of a failed span.
    status: String,
    attributes: Vec<(String, String)>,
}

/// An OTLP/HTTP (protobuf) collector: keeps what it is sent, answers 500 while `failing`,
/// and answers nothing at all while `silent`.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Got>>>,
    /// Every request body, to look for what must not be there.
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    failing: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicBool::new(false));
        let (s, b, f, q) = (
            spans.clone(),
            bodies.clone(),
            failing.clone(),
            silent.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (s, b, f, q) = (s.clone(), b.clone(), f.clone(), q.clone());
                tokio::spawn(async move {
                    let mut socket = socket;
                    while let Some(body) = read_request(&mut socket).await {
                        if q.load(Ordering::SeqCst) {
                            // Holds the connection open and never answers.
                            std::future::pending::<()>().await;
                        }
                        let status = if f.load(Ordering::SeqCst) {
                            "500 Internal Server Error"
                        } else {
                            let request = ExportTraceServiceRequest::decode(&body[..]).unwrap();
                            s.lock().unwrap().extend(spans_of(&request));
                            b.lock().unwrap().push(body);
                            "200 OK"
                        };
                        let answer = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\n\
                             content-length: 0\r\n\r\n"
                        );
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            url,
            spans,
            bodies,
            failing,
            silent,
            task,
        }
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until the spans of `trace` satisfy `complete`, and returns them.
    async fn trace(&self, trace: &str, complete: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        tokio::time::timeout(WAIT, async {
            loop {
                let spans: Vec<Got> = self
                    .spans()
                    .into_iter()
                    .filter(|s| s.trace_id == trace)
                    .collect();
                if complete(&spans) {
                    return spans;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the spans of {trace}; got {:#?}", self.spans()))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/1.1 request's body, or `None` once the connection closes.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf[head_end..head_end + length].to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn spans_of(request: &ExportTraceServiceRequest) -> Vec<Got> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let instance = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.instance.id")
            .map(|kv| text(&kv.value))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                out.push(Got {
                    instance: instance.clone(),
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                    status: span
                        .status
                        .as_ref()
                        .map(|s| s.message.clone())
                        .unwrap_or_default(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(&kv.value)))
                        .collect(),
                });
            }
        }
    }
    out
}

fn traced(tansu: &Tansu, collector: &Collector) -> Config {
    let mut c = test_config();
    c.brokers = Brokers::Bootstrap(tansu.bootstrap());
    c.telemetry.otlp_endpoint = Some(collector.url.clone());
    c
}

async fn send_traced(d: &Daemon, id: &str, traceparent: &str, value: &Value) -> u16 {
    d.http
        .post(d.url(&format!("/api/stream/{id}/send")))
        .header("x-api-key", ALICE)
        .header("traceparent", traceparent)
        .json(value)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn one<'a>(spans: &'a [Got], name: &str) -> &'a Got {
    let named: Vec<&Got> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(named.len(), 1, "one {name} span: {spans:#?}");
    named[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_record_is_one_trace_across_two_instances() {
    let tansu = Tansu::start();
    let collector = Collector::start().await;
    let a = Daemon::start(traced(&tansu, &collector)).await;
    let b = Daemon::start(traced(&tansu, &collector)).await;
    let spec = json!({"processor": {"type": "jq", "filter": "{n: (.n + 1)}"}});
    let id = a.start_stream(ALICE, Some(spec)).await;
    let mut ws = b.subscribe(ALICE, &id).await;
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let secret = "payload-never-exported";
    let status = send_traced(&a, &id, &traceparent, &json!({"n": 1, "s": secret})).await;
    assert_eq!(status, 202);
    let frame = next_frame(&mut ws).await;
    assert_eq!(frame["data"]["n"], 2, "{frame}");
    let given = frame["traceparent"]
        .as_str()
        .expect("a traced frame names its trace");
    assert!(given.starts_with(&format!("00-{TRACE_ID}-")), "{given}");

    // The processing whose result was delivered is the one the frame names. (A partition
    // handed over mid-record is processed again by its new owner, which writes nothing more:
    // a second `process` span under the same send.)
    let named = given.split('-').nth(2).unwrap().to_string();
    let under = |spans: &[Got], name: &str| -> usize {
        spans
            .iter()
            .filter(|s| s.name == name && s.parent == named)
            .count()
    };
    let spans = collector
        .trace(TRACE_ID, |spans| {
            ["send", "broker ack", "end fence"]
                .iter()
                .all(|n| spans.iter().any(|s| s.name == *n))
                && spans.iter().any(|s| s.span_id == named)
                && ["sandbox", "results write", "deliver"]
                    .iter()
                    .all(|n| under(spans, n) > 0)
        })
        .await;
    for name in ["sandbox", "results write", "deliver"] {
        assert_eq!(under(&spans, name), 1, "one {name} span: {spans:#?}");
    }
    let child = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.parent == named)
            .unwrap()
    };
    let (send, ack, sandbox, write, deliver) = (
        one(&spans, "send"),
        one(&spans, "broker ack"),
        child("sandbox"),
        child("results write"),
        child("deliver"),
    );
    let process = spans.iter().find(|s| s.span_id == named).unwrap();
    assert_eq!(process.name, "process");
    if std::env::var_os("PRINT_TRACE").is_some() {
        let mut sorted = spans.clone();
        sorted.sort_by_key(|s| s.start_ns);
        let t0 = sorted[0].start_ns;
        for s in &sorted {
            eprintln!(
                "TRACE|{}|{}|{}|{}|{:.2}|{:.2}|{:?}",
                s.name,
                &s.instance[..8],
                s.span_id,
                s.parent,
                (s.start_ns - t0) as f64 / 1e6,
                (s.end_ns - s.start_ns) as f64 / 1e6,
                s.attributes
            );
        }
    }
    // The record's path, parent to child: the caller's span, the send on A, its ack; the
    // processing (on whichever instance owns the partition) from the stored context; the
    // delivery on B from the context stored with the result.
    assert_eq!(send.parent, CALLER_SPAN);
    assert_eq!(ack.parent, send.span_id);
    assert_eq!(one(&spans, "end fence").parent, send.span_id);
    assert_eq!(process.parent, send.span_id);
    assert_eq!(sandbox.parent, process.span_id);
    assert_eq!(write.parent, process.span_id);
    assert_eq!(deliver.parent, process.span_id);
    assert_eq!(given, format!("00-{TRACE_ID}-{}-01", process.span_id));
    assert!(send.start_ns <= process.start_ns && process.start_ns <= deliver.start_ns);
    // Two instances: the send was taken on A, the frame delivered on B.
    assert!(!send.instance.is_empty() && !deliver.instance.is_empty());
    assert_ne!(send.instance, deliver.instance, "{spans:#?}");
    // What a span says of the record: its stream and coordinates.
    for span in [send, process, deliver] {
        assert!(
            span.attributes.contains(&("stream.id".into(), id.clone())),
            "{span:?}"
        );
    }
    // A refused send is traced too, failed with its error code, never its message (which
    // would quote the record).
    let refused_trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let status = a
        .http
        .post(a.url(&format!("/api/stream/{id}/send")))
        .header("x-api-key", ALICE)
        .header(
            "traceparent",
            format!("00-{refused_trace}-{CALLER_SPAN}-01"),
        )
        .header("content-type", "application/x-ndjson")
        .body(format!("{{\"s\": \"{secret}\"}}\nnot json {secret}\n"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);
    let refused = collector
        .trace(refused_trace, |spans| {
            spans.iter().any(|s| s.name == "send")
        })
        .await;
    assert_eq!(
        one(&refused, "send").status,
        "invalid_input",
        "{refused:#?}"
    );
    // No key, token or payload anywhere in what was exported.
    for body in collector.bodies.lock().unwrap().iter() {
        let body = String::from_utf8_lossy(body);
        for secret in [ALICE, secret] {
            assert!(!body.contains(secret), "{secret} exported");
        }
    }

    // A send without a context (and `sample_ratio: 0`), or with a malformed one, is taken
    // as always and not traced: its frame names no trace.
    for traceparent in [
        None,
        Some("00-nonsense-01"),
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
    ] {
        let mut request = a
            .http
            .post(a.url(&format!("/api/stream/{id}/send")))
            .header("x-api-key", ALICE)
            .json(&json!({"n": 10}));
        if let Some(t) = traceparent {
            request = request.header("traceparent", t);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            202,
            "{traceparent:?}"
        );
        let frame = next_frame(&mut ws).await;
        assert_eq!(frame["data"]["n"], 11);
        assert!(
            frame.get("traceparent").is_none(),
            "{traceparent:?}: {frame}"
        );
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_silent_collector_costs_spans_counted_never_records() {
    let tansu = Tansu::start();
    let collector = Collector::start().await;
    collector.failing.store(true, Ordering::SeqCst);
    let mut config = traced(&tansu, &collector);
    config.telemetry.max_queue = 8;
    let d = Daemon::start(config).await;
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.subscribe(ALICE, &id).await;
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let dropped = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("streamgate_spans_dropped_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    for (phase, n) in [("failing", 5), ("silent", 40)] {
        if phase == "silent" {
            collector.failing.store(false, Ordering::SeqCst);
            collector.silent.store(true, Ordering::SeqCst);
        }
        let before = dropped(&d.metrics().await);
        for i in 0..n {
            assert_eq!(send_traced(&d, &id, &traceparent, &json!(i)).await, 202);
            assert_eq!(next_frame(&mut ws).await["data"], i, "{phase}");
        }
        // Every span of the failing phase was refused; the silent collector holds one export
        // and the rest overflow the queue of 8.
        tokio::time::timeout(WAIT, async {
            while dropped(&d.metrics().await) <= before {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{phase}: spans dropped are counted"));
    }
    assert!(collector.spans().is_empty());
    d.stop().await.unwrap();
}

//! One trace per record, across the Kafka hop. W3C trace context comes in with a send (the
//! `traceparent` and `tracestate` headers of an HTTP send, or a send frame's `traceparent`),
//! is stored as headers of the input record, is continued by whichever instance processes the
//! record, is stored on its results and reaches subscribers on their frames. Spans are
//! exported over OTLP (`telemetry.otlp_endpoint`); without an endpoint nothing is traced and
//! nothing is stored.
//!
//! Why the OpenTelemetry API and not `tracing-opentelemetry` over the log's spans: a record's
//! spans begin on one instance and go on on another, with parents read from Kafka headers
//! rather than from whatever task runs; and each daemon in a process (the tests run several)
//! needs its own exporter and instance id, which one process-wide subscriber cannot give.
//!
//! Why a queue of our own in front of the exporter and not the SDK's batch processor: that one
//! drops spans when full without saying how many. Here a bounded queue
//! (`telemetry.max_queue`) takes each ended span without waiting; one that does not fit is
//! dropped and counted (`streamgate_spans_dropped_total`), as are the spans of a batch the
//! collector refused or did not answer in time. One task exports batches, so a dead or slow
//! collector never holds up the data path.
//!
//! What spans carry: stream ids, partitions, offsets, counts. Never a key, a token or a
//! record's payload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
pub use opentelemetry::trace::SpanKind;
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;
use tokio::sync::mpsc;

use crate::config::{self, OtlpProtocol};
use crate::error::Error;
use crate::metrics::Metrics;

/// The W3C header (and send-frame field) that carries a trace context.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header of vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";
/// Spans in one export request, at most.
const BATCH: usize = 512;
/// How long ended spans gather before a batch goes, unless it fills first.
const LINGER: Duration = Duration::from_millis(200);
/// How long one export may take before its spans count as dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed export, spans are dropped without trying for this long, doubling while
/// the collector keeps failing, up to `PAUSE_MAX`.
const PAUSE_FIRST: Duration = Duration::from_secs(1);
const PAUSE_MAX: Duration = Duration::from_secs(30);

/// A trace context as W3C writes it: a `traceparent`, and a `tracestate` if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub parent: String,
    pub state: Option<String>,
}

impl TraceContext {
    /// A context from its header values; `None` without a `traceparent`. Whether it is well
    /// formed is decided where it is used: a malformed one is ignored, never refused.
    pub fn from_headers(parent: Option<&str>, state: Option<&str>) -> Option<Self> {
        Some(Self {
            parent: parent?.trim().to_string(),
            state: state
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        })
    }

    /// The OpenTelemetry context it names: empty for a malformed `traceparent`.
    fn extract(&self) -> Context {
        let mut carrier = HashMap::with_capacity(2);
        carrier.insert(TRACEPARENT.to_string(), self.parent.clone());
        if let Some(state) = &self.state {
            carrier.insert(TRACESTATE.to_string(), state.clone());
        }
        TraceContextPropagator::new().extract(&carrier)
    }
}

/// The tracer of one daemon instance; [`Telemetry::off`] traces nothing at no cost.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tracer: SdkTracer,
    /// Whether records that come without a context may start a trace (`sample_ratio > 0`).
    starts_traces: bool,
    /// Kept so that the last copy shuts the pipeline down.
    _provider: SdkTracerProvider,
}

impl Telemetry {
    /// Traces nothing.
    pub fn off() -> Self {
        Self::default()
    }

    /// The tracer `config` asks for, exporting from a task on the current runtime; off
    /// without `telemetry.otlp_endpoint`.
    pub fn start(
        config: &config::Telemetry,
        instance: &str,
        metrics: &Metrics,
    ) -> Result<Self, Error> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(Self::off());
        };
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.instance.id", instance.to_string()))
            .build();
        let mut exporter = exporter(config.protocol, endpoint)?;
        exporter.set_resource(&resource);
        let (tx, rx) = mpsc::channel(config.max_queue.max(1));
        let counts = &metrics.telemetry;
        tokio::spawn(export(
            exporter,
            rx,
            counts.spans_exported.clone(),
            counts.spans_dropped.clone(),
        ));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Queue {
                tx,
                dropped: counts.spans_dropped.clone(),
            })
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        Ok(Self {
            inner: Some(Arc::new(Inner {
                tracer: provider.tracer("streamgate"),
                starts_traces: config.sample_ratio > 0.0,
                _provider: provider,
            })),
        })
    }

    /// Whether anything is traced.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The span of a send: a child of the context it came with (if that is sampled), or a
    /// new trace for a sampled share of the sends that came without one. `None`: not traced.
    pub fn send(&self, incoming: Option<&TraceContext>) -> Option<Span> {
        let inner = self.inner.as_ref()?;
        let parent = incoming.map(TraceContext::extract).unwrap_or_default();
        let remote = parent.span().span_context().is_valid();
        if !remote && !inner.starts_traces {
            return None;
        }
        Span::start(&inner.tracer, &parent, "send", SpanKind::Server)
    }

    /// A span that goes on from a context stored with a record (processing, delivery).
    pub fn resume(
        &self,
        stored: Option<&TraceContext>,
        name: &'static str,
        kind: SpanKind,
    ) -> Option<Span> {
        let inner = self.inner.as_ref()?;
        let parent = stored?.extract();
        if !parent.span().span_context().is_sampled() {
            return None;
        }
        Span::start(&inner.tracer, &parent, name, kind)
    }
}

/// A recording span of a traced record. Ends when dropped.
pub struct Span {
    handle: Handle,
}

/// What can be done with a span by whoever holds it (the span itself, or a handle to it that
/// does not end it): note attributes, start children.
#[derive(Clone)]
pub struct Handle {
    tracer: SdkTracer,
    cx: Context,
}

impl Span {
    fn start(
        tracer: &SdkTracer,
        parent: &Context,
        name: &'static str,
        kind: SpanKind,
    ) -> Option<Self> {
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(tracer, parent);
        let cx = parent.with_span(span);
        cx.span().span_context().is_sampled().then(|| Self {
            handle: Handle {
                tracer: tracer.clone(),
                cx,
            },
        })
    }

    /// A handle to note things on this span from elsewhere; it does not end the span.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

impl std::ops::Deref for Span {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.handle.cx.span().end();
    }
}

impl Handle {
    /// A span under this one.
    pub fn child(&self, name: &'static str, kind: SpanKind) -> Span {
        Span::start(&self.tracer, &self.cx, name, kind).expect("a sampled span's child is sampled")
    }

    /// Sets an attribute: ids and numbers only, never a key, a token or a payload.
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        self.cx.span().set_attribute(KeyValue::new(key, value));
    }

    /// Notes where a record (or the first of several) was stored.
    pub fn stored(&self, partition: i32, offsets: &[i64]) {
        self.set("messaging.kafka.partition", i64::from(partition));
        if let Some(first) = offsets.first() {
            self.set("messaging.kafka.offset", *first);
        }
        self.set("records", offsets.len() as i64);
    }

    /// Marks the span failed, saying why in a few words (never a message that quotes input).
    pub fn fail(&self, why: impl Into<std::borrow::Cow<'static, str>>) {
        self.cx
            .span()
            .set_status(opentelemetry::trace::Status::error(why));
    }

    /// This span as W3C trace context: what is stored with a record and given to subscribers.
    pub fn context(&self) -> TraceContext {
        let mut carrier = HashMap::with_capacity(2);
        TraceContextPropagator::new().inject_context(&self.cx, &mut carrier);
        TraceContext {
            parent: carrier.remove(TRACEPARENT).unwrap_or_default(),
            state: carrier.remove(TRACESTATE).filter(|s| !s.is_empty()),
        }
    }
}

/// Hands ended spans to the export task without waiting; counts those that do not fit.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<SpanData>,
    dropped: IntCounter,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Exports batches of ended spans until every sender is gone. A batch the collector refuses
/// or does not take within `EXPORT_TIMEOUT` is counted as dropped, and so is everything that
/// ends while export is paused after a failure (`PAUSE_FIRST`, doubling up to `PAUSE_MAX`):
/// a collector that is down costs spans, not the CPU to encode them again and again.
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    exported: IntCounter,
    dropped: IntCounter,
) {
    let mut paused: Option<(tokio::time::Instant, Duration)> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(BATCH);
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        if let Some((until, _)) = paused {
            if tokio::time::Instant::now() < until {
                dropped.inc_by(n);
                continue;
            }
        }
        let failure = match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} s", EXPORT_TIMEOUT.as_secs())),
        };
        match failure {
            None => {
                exported.inc_by(n);
                if paused.take().is_some() {
                    tracing::info!("span export works again");
                }
            }
            Some(why) => {
                dropped.inc_by(n);
                let pause = paused.map_or(PAUSE_FIRST, |(_, p)| (p * 2).min(PAUSE_MAX));
                if paused.is_none() {
                    tracing::warn!(error = %why, "span export failed: spans are dropped (and counted) until the collector takes them again");
                }
                paused = Some((tokio::time::Instant::now() + pause, pause));
            }
        }
    }
}

/// The OTLP exporter for `endpoint` (the collector's base address).
fn exporter(
    protocol: OtlpProtocol,
    endpoint: &str,
) -> Result<opentelemetry_otlp::SpanExporter, Error> {
    let bad = |e: &dyn std::fmt::Display| Error::Config {
        message: format!("telemetry.otlp_endpoint: {endpoint}: {e}"),
    };
    let built = match protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(HttpClient(
                crate::crypto::http_client(EXPORT_TIMEOUT).map_err(|e| bad(&e))?,
            ))
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
    };
    built.map_err(|e| bad(&e))
}

/// The daemon's HTTP client (`crypto::http_client`: one TLS stack) carrying OTLP over HTTP.
#[derive(Debug)]
struct HttpClient(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for HttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let response = self.0.execute(request).await?.error_for_status()?;
        let status = response.status();
        let body = response.bytes().await?;
        Ok(http::Response::builder().status(status).body(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn telemetry(sample_ratio: f64) -> Telemetry {
        let config = config::Telemetry {
            // Nothing listens there: spans are dropped, which these tests do not look at.
            otlp_endpoint: Some("http://127.0.0.1:9".into()),
            sample_ratio,
            ..config::Telemetry::default()
        };
        Telemetry::start(&config, "test", &Metrics::new()).unwrap()
    }

    fn context(parent: &str) -> TraceContext {
        TraceContext::from_headers(Some(parent), None).unwrap()
    }

    #[tokio::test]
    async fn sampled_contexts_are_continued_and_others_are_not() {
        let t = telemetry(0.0);
        let span = t
            .send(Some(&context(SAMPLED)))
            .expect("a sampled context is traced");
        let stored = span.context();
        assert!(stored
            .parent
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(stored.parent.ends_with("-01") && stored.parent != SAMPLED);
        // What processing reads back goes on in the same trace.
        let process = t
            .resume(Some(&stored), "process", SpanKind::Consumer)
            .unwrap();
        assert_eq!(process.context().parent[..36], stored.parent[..36]);
        for ignored in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", // not sampled
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // invalid trace id
            "nonsense",
            "",
        ] {
            assert!(t.send(Some(&context(ignored))).is_none(), "{ignored}");
            assert!(t
                .resume(Some(&context(ignored)), "p", SpanKind::Consumer)
                .is_none());
        }
        // Without a context, only a sample ratio starts traces.
        assert!(t.send(None).is_none());
        assert!(telemetry(1.0).send(None).is_some());
        assert!(Telemetry::off().send(Some(&context(SAMPLED))).is_none());
    }

    #[tokio::test]
    async fn grpc_export_starts_too() {
        let config = config::Telemetry {
            otlp_endpoint: Some("http://127.0.0.1:9".into()),
            protocol: config::OtlpProtocol::Grpc,
            ..config::Telemetry::default()
        };
        let t = Telemetry::start(&config, "test", &Metrics::new()).unwrap();
        assert!(t.send(Some(&context(SAMPLED))).is_some());
    }

    #[test]
    fn header_values_are_trimmed_and_an_empty_state_is_none() {
        assert_eq!(TraceContext::from_headers(None, Some("a=1")), None);
        assert_eq!(
            TraceContext::from_headers(Some(" x "), Some(" ")),
            Some(TraceContext {
                parent: "x".into(),
                state: None
            })
        );
    }
}

//! `telemetry`: where a record's trace spans go (OTLP) and which records are traced. Without
//! `otlp_endpoint` nothing is traced, stored or exported.

use serde::{Deserialize, Serialize};

use super::{at_least, invalid};
use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// The OTLP collector's base address (`http://host:4318` for HTTP, `http://host:4317`
    /// for gRPC); `/v1/traces` is added for HTTP. `null`: no tracing.
    pub otlp_endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of records sent without a trace context that start a trace (0 to 1). At 0, only
    /// records that come with a sampled `traceparent` are traced.
    pub sample_ratio: f64,
    /// Ended spans waiting for export, at most; past it spans are dropped and counted
    /// (`streamgate_spans_dropped_total`), never waited for.
    pub max_queue: usize,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            protocol: OtlpProtocol::HttpProtobuf,
            service_name: "streamgate".into(),
            sample_ratio: 0.0,
            max_queue: 4096,
        }
    }
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

impl Telemetry {
    pub(super) fn validate(&self) -> Result<(), Error> {
        if let Some(endpoint) = &self.otlp_endpoint {
            let rest = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"));
            if rest.is_none_or(|host| host.is_empty() || host.starts_with('/')) {
                return Err(invalid(
                    "telemetry.otlp_endpoint",
                    endpoint,
                    "is not an address: write it as http://host:port or https://host:port",
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(invalid(
                "telemetry.sample_ratio",
                &self.sample_ratio,
                "must be from 0 to 1",
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(invalid(
                "telemetry.service_name",
                &self.service_name,
                "must not be empty",
            ));
        }
        at_least("telemetry.max_queue", self.max_queue as u64, 1)
    }
}

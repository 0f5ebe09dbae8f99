//! Snapshots for the tests of `app` and `ui`.

use streamgate::wire::{
    BrokerView, Percentiles, ProcessorSpec, Stats, StatsRow, StreamState, StreamView, Totals,
};
use uuid::Uuid;

/// A stream id that sorts like `name` (its bytes, zero-padded).
pub fn id(name: &str) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    Uuid::from_bytes(bytes)
}

/// The name behind a fixture id.
pub fn name(id: &str) -> String {
    let bytes = Uuid::parse_str(id).expect("a fixture id").into_bytes();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('\0')
        .to_string()
}

pub fn row(name: &str, owner: &str, records_in: u64, records_out: u64) -> StatsRow {
    StatsRow {
        stream: StreamView {
            stream_id: id(name),
            owner: owner.into(),
            processor: ProcessorSpec::Jq { filter: ".".into() },
            schema: None,
            result_schema: None,
            state: StreamState::Open,
            created_ms: 0,
            ended_ms: None,
            records_in,
            records_out,
            subscribers: 2,
            last_activity_ms: 1_000,
        },
        backlog: 7,
    }
}

pub fn snapshot(streams: Vec<StatsRow>) -> Stats {
    Stats {
        now_ms: 61_000,
        version: "0.1.0".into(),
        uptime_s: 3_725,
        broker: BrokerView {
            bootstrap: "127.0.0.1:9092".into(),
            embedded: false,
            reachable: true,
        },
        totals: Totals {
            streams: streams.len() as u64,
            subscribers: streams.iter().map(|s| s.stream.subscribers).sum(),
            records_in: streams.iter().map(|s| s.stream.records_in).sum(),
            records_out: streams.iter().map(|s| s.stream.records_out).sum(),
            latency_ms: Percentiles {
                count: 100,
                p50: 12.5,
                p99: 48.0,
            },
        },
        streams,
    }
}

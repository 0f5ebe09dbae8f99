//! Load through the daemon: open the streams, subscribe to each over a WebSocket (or, with
//! `--mux`, over shared `/api/connect` connections), send on the schedule over HTTP (NDJSON
//! batches) or on those sockets (`send` frames on `/api/connect`), and record every
//! acknowledgement and result.
//!
//! Sending never waits for the daemon: each HTTP batch is its own task (at most
//! `max_in_flight` at once), and latency counts from the schedule's intended time, so a slow
//! daemon shows up as latency instead of a politely slower load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use reqwest::Method;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::HashMap;

use streamgate::wire::{Accepted, ClientFrame, Frame, Kind, Outcome};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use super::drive::{drive, InFlight};
use super::recorder::Recorder;
use super::report::RunReport;
use super::schedule::Batch;
use super::{Load, Transport};
use crate::client::{Client, ClientError};
use crate::start::start_stream;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Stream starts and WebSocket handshakes in flight at once while setting up.
const SETUP_CONCURRENCY: usize = 32;
/// Batches queued for one WebSocket writer.
const WS_QUEUE: usize = 1024;
/// The record each stream gets before the measurement starts.
pub const WARM_UP: &str = r#"{"warmup":true}"#;
/// How long the warm-up may take (a consumer group joining takes seconds).
pub const WARM_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// Read buffer of one results socket: what the daemon gives its own sockets.
pub const READ_BUFFER: usize = 4 * 1024;
/// Time between setting up and the first batch being due.
const LEAD: Duration = Duration::from_millis(200);

/// The part of a record's data the bench reads: its sequence number in the stream.
#[derive(Deserialize)]
struct Data {
    q: Option<u64>,
}

/// The bench sequence number a result carries.
fn sequence(outcome: &Outcome) -> Option<u64> {
    let data = outcome.data.as_ref()?;
    Data::deserialize(data).ok()?.q
}

/// One run through the daemon, on fresh streams with `processor` (identity by default).
pub async fn run(
    client: &Client,
    load: &Load,
    processor: Option<&str>,
    progress: bool,
) -> anyhow::Result<RunReport> {
    let schedule = load.schedule;
    let ids: Vec<String> = futures_util::stream::iter(0..schedule.streams)
        .map(|_| async {
            let created = start_stream(client, processor).await?;
            anyhow::Ok(created.stream_id.to_string())
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
        .context("open the bench streams")?;
    // Per stream, its subscribers' sockets; the first also carries `--transport ws` sends.
    // With --mux, the streams' subscriptions share connections instead.
    let per_stream = load.mux.is_none();
    let sockets: Vec<Vec<Ws>> = futures_util::stream::iter(ids.iter().filter(|_| per_stream))
        .enumerate()
        .map(|(stream, id)| async move {
            let mut sockets = Vec::with_capacity(load.subscribers);
            for k in 0..load.subscribers {
                let from = source(load, stream * load.subscribers + k);
                sockets.push(connect(client, id, from).await?);
            }
            warm_up(client, id, &mut sockets).await?;
            anyhow::Ok(sockets)
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    let muxed: Vec<(Ws, HashMap<Uuid, usize>)> = match load.mux {
        Some(per) => {
            let groups: Vec<Vec<(usize, Uuid)>> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| (i, Uuid::parse_str(id).expect("stream ids are UUIDs")))
                .collect::<Vec<_>>()
                .chunks(per)
                .map(<[_]>::to_vec)
                .collect();
            futures_util::stream::iter(groups)
                .enumerate()
                .map(|(i, group)| connect_mux(client, group, source(load, i)))
                .buffered(SETUP_CONCURRENCY)
                .try_collect()
                .await?
        }
        None => Vec::new(),
    };

    let start = Instant::now() + LEAD;
    let rec = Arc::new(Recorder::new(schedule, start, load.subscribers));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    // Per stream, where its `--transport ws` records are written.
    let mut writers: Vec<Option<mpsc::Sender<Writing>>> = vec![None; ids.len()];
    for (ws, streams) in muxed {
        let (sink, source) = ws.split();
        if load.transport == Transport::Ws {
            let (tx, rx) = mpsc::channel(WS_QUEUE);
            for index in streams.values() {
                writers[*index] = Some(tx.clone());
            }
            let by_index: HashMap<usize, Uuid> = streams.iter().map(|(id, i)| (*i, *id)).collect();
            let send = move |stream: usize, seq: u64, record: String| {
                let id = by_index[&stream];
                format!(r#"{{"type":"send","stream_id":"{id}","seq":{seq},"data":{record}}}"#)
            };
            tasks.spawn(write(sink, rx, send, rec.clone()));
        }
        tasks.spawn(subscribe_mux(source, streams, rec.clone(), stop_rx.clone()));
    }
    for (stream, sockets) in sockets.into_iter().enumerate() {
        for (subscriber, ws) in sockets.into_iter().enumerate() {
            let (sink, source) = ws.split();
            tasks.spawn(subscribe(
                source,
                (stream, subscriber),
                rec.clone(),
                stop_rx.clone(),
                load.fault_drop_every,
            ));
            if load.transport == Transport::Ws && subscriber == 0 {
                let (tx, rx) = mpsc::channel(WS_QUEUE);
                tasks.spawn(write(sink, rx, |_, _, record| record, rec.clone()));
                writers[stream] = Some(tx);
            }
        }
    }
    let sent = drive(
        load,
        &rec,
        "gateway",
        progress,
        async |batch: Batch, in_flight: &InFlight| {
            let Batch {
                stream,
                first,
                records,
            } = batch;
            match load.transport {
                Transport::Http => {
                    let path = format!("/api/stream/{}/send", ids[stream]);
                    let (client, rec) = (client.clone(), rec.clone());
                    let key = load
                        .idempotency
                        .then(|| format!("bench-{}-{first}", ids[stream]));
                    let trace = (fastrand::f64() < load.traced).then(traceparent);
                    in_flight
                        .spawn(async move {
                            let sent = (path.as_str(), key.as_deref(), trace.as_deref());
                            send_http(&client, sent, records, stream, first, &rec).await
                        })
                        .await
                }
                Transport::Ws => {
                    let n = records.len() as u64;
                    let writer = writers[stream].as_ref().expect("a writer per stream");
                    if writer.send((stream, first, records)).await.is_err() {
                        rec.error("ws writer closed", n);
                        rec.refused(n);
                    }
                    Ok(())
                }
            }
        },
    )
    .await;
    // Writers end when their queues close; subscribers when told to stop.
    drop(writers);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    end_streams(client, &ids).await;
    sent?;
    let mut transport = match (load.mux, load.idempotency) {
        (Some(per), _) if load.transport == Transport::Ws => {
            format!("ws: sends and results over /api/connect ({per} streams each)")
        }
        (Some(per), _) => format!("http, results over /api/connect ({per} streams each)"),
        (None, true) => "http with idempotency keys".to_string(),
        (None, false) => load.transport.as_str().to_string(),
    };
    if load.traced > 0.0 {
        transport = format!("{transport}, {}% of sends traced", load.traced * 100.0);
    }
    let mut report = rec.report(&transport, load.payload_bytes);
    report.target.processor = processor.map(str::to_string);
    Ok(report)
}

/// The loopback address the `n`-th results socket connects from, with `--source-addresses`
/// above 1 (127.0.0.1, .2, … in turn); else the system's choice.
fn source(load: &Load, n: usize) -> Option<std::net::IpAddr> {
    let spread = usize::from(load.source_addresses);
    (spread > 1).then(|| std::net::Ipv4Addr::new(127, 0, 0, 1 + (n % spread) as u8).into())
}

/// Opens a WebSocket for `request`, from `from` when given.
async fn open(
    client: &Client,
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    config: WebSocketConfig,
    from: Option<std::net::IpAddr>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let http = client.http();
    let (ws, _) = match from {
        Some(from) => http.ws_connect_from(request, Some(config), from).await?,
        None => http.ws_connect(request, Some(config)).await?,
    };
    Ok(ws)
}

/// Opens one results WebSocket, with buffers sized as the daemon sizes its own (a frame the
/// bench reads is a few hundred bytes; tungstenite's default 128 KiB read buffer per socket
/// would take 1.3 GB for 10 000 subscribers).
async fn connect(client: &Client, id: &str, from: Option<std::net::IpAddr>) -> anyhow::Result<Ws> {
    let request = client
        .http()
        .ws_request(&format!("/api/stream/{id}/results"))
        .await?;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    open(client, request, config, from)
        .await
        .with_context(|| format!("subscribe to stream {id}"))
}

/// Opens one `/api/connect` socket for `streams` (bench index, id), subscribes to each and
/// warms each up (a record each, its result awaited on the socket); returns the socket and
/// which index each stream id is.
async fn connect_mux(
    client: &Client,
    streams: Vec<(usize, Uuid)>,
    from: Option<std::net::IpAddr>,
) -> anyhow::Result<(Ws, HashMap<Uuid, usize>)> {
    let request = client.http().ws_request("/api/connect").await?;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    let mut ws = open(client, request, config, from)
        .await
        .context("open /api/connect")?;
    for (_, id) in &streams {
        let frame = ClientFrame::Subscribe {
            stream_id: *id,
            from: None,
            on_lag: Default::default(),
            until: None,
        };
        ws.feed(Message::text(serde_json::to_string(&frame)?))
            .await?;
    }
    ws.flush().await?;
    let mut waiting: std::collections::HashSet<Uuid> = streams.iter().map(|(_, id)| *id).collect();
    let subscribed = async {
        let mut left = waiting.len();
        while left > 0 {
            let Some(msg) = ws.next().await else {
                anyhow::bail!("/api/connect closed while subscribing")
            };
            if let Message::Text(text) = msg? {
                match serde_json::from_str::<Frame>(&text) {
                    Ok(Frame::Subscribed(_)) => left -= 1,
                    Ok(Frame::Refused(r)) => anyhow::bail!("subscription refused: {:?}", r.error),
                    _ => {}
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(WARM_UP_TIMEOUT, subscribed)
        .await
        .context("subscribing over /api/connect")??;
    for (_, id) in &streams {
        client
            .http()
            .call::<Accepted>(
                Method::POST,
                &format!("/api/stream/{id}/send"),
                Some(("application/json", WARM_UP.as_bytes().to_vec())),
            )
            .await
            .with_context(|| format!("warm-up send to stream {id}"))?;
    }
    let warmed = async {
        while !waiting.is_empty() {
            let Some(msg) = ws.next().await else {
                anyhow::bail!("/api/connect closed while warming up")
            };
            if let Message::Text(text) = msg? {
                if let Ok(Frame::Result(r)) = serde_json::from_str::<Frame>(&text) {
                    waiting.remove(&r.stream_id);
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(WARM_UP_TIMEOUT, warmed)
        .await
        .context("warm-up over /api/connect")??;
    Ok((ws, streams.into_iter().map(|(i, id)| (id, i)).collect()))
}

/// Reads one `/api/connect` socket's frames until told to stop, each result recorded for
/// the stream it names.
async fn subscribe_mux(
    mut ws: SplitStream<Ws>,
    streams: HashMap<Uuid, usize>,
    rec: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => return,
            msg = ws.next() => msg,
        };
        let at = Instant::now();
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                rec.error("/api/connect closed", 1);
                return;
            }
            Some(Ok(_)) => continue,
        };
        match serde_json::from_str::<Frame>(&text) {
            Ok(Frame::Result(outcome)) => {
                if let (Some(q), Some(stream)) =
                    (sequence(&outcome), streams.get(&outcome.stream_id))
                {
                    rec.received(*stream, 0, q, outcome.input_offset, at);
                }
            }
            // `seq` of a `send` frame is its stream's sequence number + 1.
            Ok(Frame::Ack(ack)) if ack.seq > 0 => {
                if let Some(stream) = ack.stream_id.and_then(|id| streams.get(&id)) {
                    rec.acked(*stream, ack.seq - 1, 1, at);
                }
            }
            Ok(Frame::Nack(nack)) => {
                rec.error(format!("ws nack {}", nack.error.code), 1);
                rec.refused(1);
            }
            Ok(Frame::End(_)) => {}
            Ok(other) => rec.error(format!("{} frame", other.kind().as_str()), 1),
            Err(_) => rec.error("frame the bench cannot read", 1),
        }
    }
}

/// A batch to write: the stream (bench index), its first sequence number, the records.
type Writing = (usize, u64, Vec<String>);

/// Sends one record that is not part of the measurement and waits for its result on every
/// subscriber, so the run starts with every stream's path working end to end (the
/// processing group joined, connections open) instead of timing start-up.
async fn warm_up(client: &Client, id: &str, sockets: &mut [Ws]) -> anyhow::Result<()> {
    client
        .http()
        .call::<Accepted>(
            Method::POST,
            &format!("/api/stream/{id}/send"),
            Some(("application/json", WARM_UP.as_bytes().to_vec())),
        )
        .await
        .with_context(|| format!("warm-up send to stream {id}"))?;
    let wait = async {
        for ws in sockets {
            let mut warmed = false;
            while let Some(msg) = ws.next().await {
                if let Message::Text(text) = msg? {
                    if serde_json::from_str::<Frame>(&text).is_ok_and(|f| f.kind() == Kind::Result)
                    {
                        warmed = true;
                        break;
                    }
                }
            }
            if !warmed {
                anyhow::bail!("the daemon closed the subscription")
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(WARM_UP_TIMEOUT, wait)
        .await
        .with_context(|| {
            format!(
                "warm-up: no result on stream {id} within {WARM_UP_TIMEOUT:?}; is the daemon's processing running?"
            )
        })?
}

/// A sampled W3C trace context of a new trace.
fn traceparent() -> String {
    format!(
        "00-{}-{:016x}-01",
        uuid::Uuid::new_v4().simple(),
        fastrand::u64(1..)
    )
}

async fn send_http(
    client: &Client,
    (path, key, trace): (&str, Option<&str>, Option<&str>),
    records: Vec<String>,
    stream: usize,
    first: u64,
    rec: &Recorder,
) {
    let n = records.len() as u64;
    let body = records.join("\n").into_bytes();
    let headers: Vec<(&str, &str)> = key
        .map(|k| ("idempotency-key", k))
        .into_iter()
        .chain(trace.map(|t| ("traceparent", t)))
        .collect();
    let result = client
        .http()
        .call_with::<Accepted>(
            Method::POST,
            path,
            Some(("application/x-ndjson", body)),
            &headers,
        )
        .await;
    let at = Instant::now();
    match result {
        Ok(_) => rec.acked(stream, first, n, at),
        Err(e) => {
            let (stored, kind) = match e {
                ClientError::Server {
                    status,
                    code,
                    acknowledged,
                    ..
                } => (
                    acknowledged.unwrap_or(0) as u64,
                    format!("http {} {code}", status.map_or(0, |s| s.as_u16())),
                ),
                ClientError::Connect { .. } => (0, "connect".to_string()),
                ClientError::Transport { .. } => (0, "http transport".to_string()),
                // The daemon answered 2xx: every record was stored.
                ClientError::Unreadable { .. } => (n, "unreadable answer".to_string()),
                ClientError::Closed | ClientError::Token(_) => (0, "client".to_string()),
            };
            rec.partly_stored(stream, first, n, stored, at, kind);
        }
    }
}

/// Reads one subscriber's frames until told to stop: results, and the acks of records sent
/// on this socket (`seq` counts from 1 per socket, so it is the stream sequence number + 1).
pub async fn subscribe(
    mut source: SplitStream<Ws>,
    (stream, subscriber): (usize, usize),
    rec: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
    drop_every: Option<u64>,
) {
    let mut results = 0u64;
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => return,
            msg = source.next() => msg,
        };
        let at = Instant::now();
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                let kind = match frame {
                    Some(f) => format!("ws close {} {}", u16::from(f.code), f.reason),
                    None => "ws close".to_string(),
                };
                rec.error(kind, 1);
                return;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                rec.error(format!("ws error: {e}"), 1);
                return;
            }
            None => {
                rec.error("ws closed without a close frame", 1);
                return;
            }
        };
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
            rec.error("frame the bench cannot read", 1);
            continue;
        };
        match &frame {
            Frame::Result(outcome) if sequence(outcome).is_some() => {
                results += 1;
                // Test-only fault: pretend this result never arrived.
                if drop_every.is_some_and(|n| results.is_multiple_of(n)) {
                    continue;
                }
                let q = sequence(outcome).unwrap_or_default();
                rec.received(stream, subscriber, q, outcome.input_offset, at);
            }
            Frame::Ack(ack) if ack.seq > 0 => rec.acked(stream, ack.seq - 1, 1, at),
            Frame::Nack(nack) => {
                rec.error(format!("ws nack {}", nack.error.code), 1);
                rec.refused(1);
            }
            Frame::End(_) => {}
            other => rec.error(format!("{} frame", other.kind().as_str()), 1),
        }
    }
}

/// Writes the batches queued for one socket, each record as `frame(stream, seq, record)`
/// (`seq` the record's stream sequence number + 1): the record itself on a stream's own
/// socket, a `send` frame on `/api/connect`.
async fn write(
    mut sink: SplitSink<Ws, Message>,
    mut batches: mpsc::Receiver<Writing>,
    frame: impl Fn(usize, u64, String) -> String,
    rec: Arc<Recorder>,
) {
    while let Some((stream, first, batch)) = batches.recv().await {
        let n = batch.len() as u64;
        let mut written = Ok(());
        for (i, record) in batch.into_iter().enumerate() {
            let text = frame(stream, first + i as u64 + 1, record);
            written = sink.feed(Message::text(text)).await;
            if written.is_err() {
                break;
            }
        }
        if let Err(e) = written.and(sink.flush().await) {
            tracing::debug!(stream, error = %e, "bench WebSocket send failed");
            rec.error("ws send failed", n);
            rec.refused(n);
            return;
        }
    }
}

/// Ends the bench's streams so they do not linger as active (best effort).
async fn end_streams(client: &Client, ids: &[String]) {
    futures_util::stream::iter(ids)
        .for_each_concurrent(SETUP_CONCURRENCY, |id| async move {
            let _ = client
                .http()
                .call::<IgnoredAny>(Method::DELETE, &format!("/api/stream/{id}"), None)
                .await;
        })
        .await;
}

//! `--baseline` with `--subscribers`: a raw broadcaster, the fan-out the machine can do with
//! no gateway and no Kafka. A minimal tokio-tungstenite server in this process holds every
//! subscriber's socket; each record of the schedule becomes one result frame, serialized
//! once and shaped as the daemon's, written to every socket of its stream (one task per
//! socket, frames that queued up written with one flush). The bench's subscribers read it
//! exactly as they read the daemon, so gateway ÷ broadcaster is what delivering through
//! Streamgate costs next to the least a WebSocket fan-out can cost on this machine.
//!
//! A record is "acknowledged" once it is handed to the broadcaster; a socket that falls more
//! than [`QUEUE`] frames behind is closed, as the daemon closes a subscriber past its queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use uuid::Uuid;

use super::drive::{drive, InFlight};
use super::gateway::{subscribe, READ_BUFFER, WARM_UP_TIMEOUT};
use super::recorder::Recorder;
use super::report::RunReport;
use super::schedule::Batch;
use super::Load;

/// Frames one socket may fall behind before it is closed: the daemon's default
/// `limits.subscriber_queue`.
const QUEUE: usize = 1024;
/// Handshakes in flight at once while setting up.
const SETUP_CONCURRENCY: usize = 32;

/// The broadcaster's streams: one channel each, every subscriber socket a receiver.
struct Streams {
    channels: Vec<broadcast::Sender<Utf8Bytes>>,
    ids: Vec<Uuid>,
}

impl Streams {
    fn new(count: usize) -> Self {
        Self {
            channels: (0..count).map(|_| broadcast::channel(QUEUE).0).collect(),
            ids: (0..count).map(|_| Uuid::new_v4()).collect(),
        }
    }

    /// The result frame of `data` at `offset` of `stream`, as the daemon writes it.
    fn frame(&self, stream: usize, offset: u64, data: &str) -> Utf8Bytes {
        let now = streamgate::kafka::now_ms();
        Utf8Bytes::from(format!(
            r#"{{"type":"result","cursor":{offset},"stream_id":"{}","input_partition":0,"input_offset":{offset},"received_ms":{now},"processed_ms":{now},"data":{data}}}"#,
            self.ids[stream]
        ))
    }

    /// Writes `frame` to every socket of `stream`.
    fn publish(&self, stream: usize, frame: Utf8Bytes) {
        // No receiver (every socket closed) is the subscribers' loss, counted there.
        let _ = self.channels[stream].send(frame);
    }
}

/// One run through the raw broadcaster.
pub async fn run(load: &Load, progress: bool) -> anyhow::Result<RunReport> {
    let schedule = load.schedule;
    let streams = Arc::new(Streams::new(schedule.streams));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind the raw broadcaster")?;
    let url = format!("ws://{}", listener.local_addr()?);
    let server = tokio::spawn(serve(listener, streams.clone()));

    let targets: Vec<usize> = (0..schedule.streams)
        .flat_map(|s| std::iter::repeat_n(s, load.subscribers))
        .collect();
    let sockets: Vec<_> = futures_util::stream::iter(targets)
        .map(|stream| {
            let url = format!("{url}/{stream}");
            async move {
                let config = WebSocketConfig::default()
                    .read_buffer_size(READ_BUFFER)
                    .write_buffer_size(0);
                let (mut ws, _) =
                    tokio_tungstenite::connect_async_with_config(&url, Some(config), true)
                        .await
                        .with_context(|| format!("connect to the raw broadcaster at {url}"))?;
                // Its writer follows the stream once it said so.
                let hello = tokio::time::timeout(WARM_UP_TIMEOUT, ws.next()).await;
                if !matches!(hello, Ok(Some(Ok(Message::Text(_))))) {
                    anyhow::bail!("the raw broadcaster did not open {url}");
                }
                anyhow::Ok((stream, ws))
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;

    let start = Instant::now() + Duration::from_millis(200);
    let rec = Arc::new(Recorder::new(schedule, start, load.subscribers));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut subscriber = vec![0usize; schedule.streams];
    for (stream, ws) in sockets {
        let (_sink, source) = ws.split();
        let k = subscriber[stream];
        subscriber[stream] += 1;
        tasks.spawn(subscribe(
            source,
            (stream, k),
            rec.clone(),
            stop_rx.clone(),
            None,
        ));
    }
    let sent = drive(
        load,
        &rec,
        "raw broadcaster",
        progress,
        async |batch: Batch, _: &InFlight| {
            let n = batch.records.len() as u64;
            for (i, record) in batch.records.iter().enumerate() {
                let seq = batch.first + i as u64;
                streams.publish(batch.stream, streams.frame(batch.stream, seq, record));
            }
            rec.acked(batch.stream, batch.first, n, Instant::now());
            Ok(())
        },
    )
    .await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    server.abort();
    sent?;
    Ok(rec.report("raw WebSocket broadcaster", load.payload_bytes))
}

/// What the broadcaster says on a socket once it follows its stream: the socket is ready.
const HELLO: &str = "ready";

/// Accepts subscribers: the request path names the stream (`/{index}`).
// The handshake callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
async fn serve(listener: TcpListener, streams: Arc<Streams>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let streams = streams.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let mut path = String::new();
            let callback = |req: &Request, resp: Response| {
                path = req.uri().path().to_string();
                Ok(resp)
            };
            let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
            let Ok(ws) =
                tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)).await
            else {
                return;
            };
            let Some(frames) = path
                .trim_start_matches('/')
                .parse::<usize>()
                .ok()
                .and_then(|i| streams.channels.get(i))
                .map(broadcast::Sender::subscribe)
            else {
                return;
            };
            // Only the run holds the senders: once it ends, every writer sees its channel
            // closed and closes its socket (a find-max climb would keep them all open).
            drop(streams);
            write(ws, frames).await;
        });
    }
}

/// One socket's writer: every frame of its stream, those already queued with one flush.
async fn write(
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    mut frames: broadcast::Receiver<Utf8Bytes>,
) {
    let (mut sink, _source) = ws.split();
    if sink.send(Message::text(HELLO)).await.is_err() {
        return;
    }
    loop {
        let first = match frames.recv().await {
            Ok(frame) => frame,
            // Fell behind, or the run is over: close as the daemon would.
            Err(_) => break,
        };
        if sink.feed(Message::Text(first)).await.is_err() {
            return;
        }
        while let Ok(frame) = frames.try_recv() {
            if sink.feed(Message::Text(frame)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

//! The client's duties on `/api/connect`, each against a scripted stand-in for the daemon
//! that does exactly what a test needs (repeats, gaps, lost answers, `nack`, `lagged`,
//! `refused`, `4401`, refused handshakes), so each edge is checked even where the real
//! daemon rarely shows it. The same scenarios as the Python (tests/test_duties.py) and
//! TypeScript (test/protocol.test.ts) clients' tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use streamgate_client::retry::FIRST_BACKOFF;
use streamgate_client::wire::{Ack, ErrorCode, Frame, StartFrom};
use streamgate_client::{Client, Credential, Error, Subscribe, Subscription, TokenSource};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderMap;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

const SID: Uuid = Uuid::from_u128(0xc1);
/// Longest any step of a script waits.
const STEP: Duration = Duration::from_secs(10);
/// Frames the client queues for one subscription before it pauses it
/// (`connection::QUEUE`); it resumes it once its consumer read half of them.
const CLIENT_QUEUE: i64 = 1024;

/// Answers the n-th handshake (from 1) with a refusal, or `None` to accept it.
type Refuse = Box<dyn Fn(usize) -> Option<ErrorResponse> + Send + Sync>;

/// A stand-in for the daemon: accepts WebSocket handshakes on 127.0.0.1:0 (or refuses them as
/// `refuse` says) and hands each accepted connection to the test, which scripts it.
struct Fake {
    url: String,
    conns: mpsc::UnboundedReceiver<Conn>,
    /// When each handshake came, with its headers.
    handshakes: Arc<Mutex<Vec<(Instant, HeaderMap)>>>,
    acceptor: JoinHandle<()>,
}

impl Fake {
    async fn start(
        refuse: impl Fn(usize) -> Option<ErrorResponse> + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, conns) = mpsc::unbounded_channel();
        let handshakes: Arc<Mutex<Vec<(Instant, HeaderMap)>>> = Arc::default();
        let refuse: Arc<Refuse> = Arc::new(Box::new(refuse));
        let acceptor = tokio::spawn({
            let handshakes = handshakes.clone();
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (tx, handshakes, refuse) = (tx.clone(), handshakes.clone(), refuse.clone());
                    tokio::spawn(async move {
                        let mut n = 0;
                        // The refusal's type is tungstenite's.
                        #[allow(clippy::result_large_err)]
                        let callback = |req: &Request, resp: Response| {
                            let mut seen = handshakes.lock().unwrap();
                            seen.push((Instant::now(), req.headers().clone()));
                            n = seen.len();
                            match refuse(n) {
                                Some(refusal) => Err(refusal),
                                None => Ok(resp),
                            }
                        };
                        if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await {
                            let _ = tx.send(Conn { ws, n });
                        }
                    });
                }
            }
        });
        Self {
            url,
            conns,
            handshakes,
            acceptor,
        }
    }

    async fn accepting() -> Self {
        Self::start(|_| None).await
    }

    /// The next accepted connection.
    async fn next(&mut self) -> Conn {
        tokio::time::timeout(STEP, self.conns.recv())
            .await
            .expect("the client did not connect")
            .expect("the fake daemon stopped")
    }

    fn handshakes(&self) -> usize {
        self.handshakes.lock().unwrap().len()
    }

    fn handshake_times(&self) -> Vec<Instant> {
        self.handshakes
            .lock()
            .unwrap()
            .iter()
            .map(|h| h.0)
            .collect()
    }

    /// Header `name` of the n-th handshake (from 1).
    fn header(&self, n: usize, name: &str) -> Option<String> {
        let handshakes = self.handshakes.lock().unwrap();
        let value = handshakes[n - 1].1.get(name)?;
        Some(value.to_str().unwrap().to_string())
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// One accepted connection, scripted by the test.
struct Conn {
    ws: WebSocketStream<TcpStream>,
    /// Which handshake it was (from 1).
    n: usize,
}

impl Conn {
    /// The client's next frame.
    async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(STEP, self.ws.next())
                .await
                .expect("no frame from the client")
                .expect("the client closed")
                .expect("a socket error");
            match msg {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The client's next frame, which must be of `kind`.
    async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["type"], kind, "{frame}");
        frame
    }

    async fn put(&mut self, frames: impl IntoIterator<Item = Value>) {
        for frame in frames {
            self.ws
                .feed(Message::text(frame.to_string()))
                .await
                .unwrap();
        }
        self.ws.flush().await.unwrap();
    }

    /// Closes with `code`, as the daemon does.
    async fn close(mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = self.ws.close(Some(frame)).await;
        let _ = tokio::time::timeout(STEP, async { while self.ws.next().await.is_some() {} }).await;
    }
}

/// A refused handshake: `status` with the daemon's error body, and `Retry-After` if given.
fn refusal(status: u16, code: &str, retry_after: Option<u64>) -> ErrorResponse {
    let mut builder = tokio_tungstenite::tungstenite::http::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(secs) = retry_after {
        builder = builder.header("retry-after", secs.to_string());
    }
    let body = json!({"error": {"code": code, "message": "no"}}).to_string();
    builder.body(Some(body)).unwrap()
}

fn outcome(kind: &str, cursor: i64) -> Value {
    let mut frame = json!({"type": kind, "cursor": cursor, "stream_id": SID,
        "input_partition": 0, "input_offset": cursor, "received_ms": 1, "processed_ms": 2});
    if kind == "result" {
        frame["data"] = json!(cursor);
    }
    frame
}

fn results(cursors: impl IntoIterator<Item = i64>) -> Vec<Value> {
    cursors.into_iter().map(|c| outcome("result", c)).collect()
}

fn subscribed() -> Value {
    json!({"type": "subscribed", "stream_id": SID})
}

fn nack(seq: &Value, code: &str) -> Value {
    json!({"type": "nack", "stream_id": SID, "seq": seq, "error": {"code": code, "message": "no"}})
}

fn ack(seq: &Value, offset: i64) -> Value {
    json!({"type": "ack", "stream_id": SID, "seq": seq, "offset": offset})
}

fn from(cursor: i64) -> Subscribe {
    Subscribe {
        from: Some(StartFrom::Cursor(cursor)),
        ..Default::default()
    }
}

fn earliest() -> Subscribe {
    Subscribe {
        from: Some(StartFrom::Named("earliest".into())),
        ..Default::default()
    }
}

/// Every frame of a subscription until it ends.
async fn rest(sub: Subscription) -> Vec<Result<Frame, Error>> {
    tokio::time::timeout(STEP, sub.collect())
        .await
        .expect("the subscription did not end")
}

/// The next frame of a subscription.
async fn next(sub: &mut Subscription) -> Frame {
    tokio::time::timeout(STEP, sub.next())
        .await
        .expect("no frame")
        .expect("the subscription ended")
        .expect("an error")
}

/// A frame as `kind@cursor` (a gap as `gap@first+skipped`).
fn at(frame: &Frame) -> String {
    match frame {
        Frame::Result(o) => format!("result@{}", o.cursor.unwrap()),
        Frame::Error(o) => format!("error@{}", o.cursor.unwrap()),
        Frame::End(o) => format!("end@{}", o.cursor.unwrap()),
        Frame::Gap(g) => format!("gap@{}+{}", g.from_cursor, g.skipped),
        other => format!("{other:?}"),
    }
}

fn all_at(frames: &[Result<Frame, Error>]) -> Vec<String> {
    frames
        .iter()
        .map(|f| at(f.as_ref().expect("a frame, not an error")))
        .collect()
}

fn client(fake: &Fake) -> Client {
    Client::new(&fake.url, "k-0123456789").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_the_last_cursor_drops_repeats_and_yields_gaps() {
    let mut fake = Fake::accepting().await;
    let client = client(&fake);
    let mut sub = client.subscribe(SID, earliest());
    let mut c1 = fake.next().await;
    let first = c1.expect("subscribe").await;
    assert_eq!(first["from"], "earliest");
    c1.put([subscribed()]).await;
    c1.put(results(0..3)).await;
    let mut got: Vec<String> = Vec::new();
    for _ in 0..3 {
        got.push(at(&next(&mut sub).await));
    }
    drop(c1); // cut, without a close frame

    let mut c2 = fake.next().await;
    assert_eq!(c2.expect("subscribe").await["from"], 3, "last cursor + 1");
    c2.put([subscribed()]).await;
    // A daemon replaying too much: 1 and 2 were delivered already; 6 is inside the gap.
    c2.put(results([1, 2, 3, 4])).await;
    c2.put([json!({"type": "gap", "stream_id": SID, "from_cursor": 5, "skipped": 2})])
        .await;
    c2.put([
        outcome("result", 6),
        outcome("result", 7),
        outcome("end", 8),
    ])
    .await;
    got.extend(all_at(&rest(sub).await));
    assert_eq!(
        got,
        [
            "result@0", "result@1", "result@2", "result@3", "result@4", "gap@5+2", "result@7",
            "end@8"
        ]
    );
    assert_eq!(fake.header(1, "x-api-key").as_deref(), Some("k-0123456789"));
}

/// A consumer that stopped reading is paused: unsubscribed. The daemon ends the old
/// subscription (`lagged`, or `caught_up` with `until_now`) before it reads the unsubscribe;
/// the client dropped frames meanwhile, so that end is not true of what its consumer got. It
/// subscribes again from the consumer's cursor + 1, and only once `unsubscribed` came.
async fn paused_subscription_ending_with(ending: &str) {
    let until_now = ending == "caught_up";
    let mut fake = Fake::accepting().await;
    let client = client(&fake);
    let options = Subscribe {
        until_now,
        ..from(0)
    };
    let mut sub = client.subscribe(SID, options);
    let mut c1 = fake.next().await;
    let first = c1.expect("subscribe").await;
    assert_eq!(
        (first["from"].clone(), first.get("until")),
        (json!(0), until_now.then_some(&json!("now")))
    );
    c1.put([subscribed()]).await;
    // Nothing is read: the queue fills at CLIENT_QUEUE, and the next frame pauses it.
    c1.put(results(0..=CLIENT_QUEUE)).await;
    assert_eq!(c1.expect("unsubscribe").await["stream_id"], json!(SID));
    // Sent before the daemon read the unsubscribe: dropped by the paused client.
    c1.put(results([CLIENT_QUEUE + 1])).await;
    let end_of_old = match ending {
        "lagged" => json!({"type": "lagged", "stream_id": SID, "resume_from": CLIENT_QUEUE + 2}),
        _ => json!({"type": "caught_up", "stream_id": SID}),
    };
    c1.put([end_of_old]).await;

    // The consumer reads everything queued: it has room again, so the client would resume.
    let mut got = Vec::new();
    for _ in 0..CLIENT_QUEUE {
        got.push(at(&next(&mut sub).await));
    }
    // Not before the unsubscribe's answer: the client's next frame is this record's.
    let (acked, ()) = tokio::join!(client.send(SID, &"sync"), async {
        let send = c1.expect("send").await;
        c1.put([ack(&send["seq"], 0)]).await;
    });
    acked.unwrap();
    c1.put([json!({"type": "unsubscribed", "stream_id": SID})])
        .await;
    let again = c1.expect("subscribe").await;
    assert_eq!(again["from"], CLIENT_QUEUE, "the consumer's cursor + 1");
    assert_eq!(again.get("until"), until_now.then_some(&json!("now")));
    c1.put([subscribed()]).await;
    c1.put(results([CLIENT_QUEUE, CLIENT_QUEUE + 1])).await;
    let last = match ending {
        "lagged" => outcome("end", CLIENT_QUEUE + 2),
        _ => json!({"type": "caught_up", "stream_id": SID}),
    };
    c1.put([last]).await;
    got.extend(all_at(&rest(sub).await));
    let mut expected: Vec<String> = (0..CLIENT_QUEUE + 2)
        .map(|c| format!("result@{c}"))
        .collect();
    if ending == "lagged" {
        expected.push(format!("end@{}", CLIENT_QUEUE + 2));
    }
    assert_eq!(got, expected, "each result once, in order, none dropped");
    assert_eq!(fake.handshakes(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagged_of_a_paused_subscription_is_not_believed() {
    paused_subscription_ending_with("lagged").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_up_of_a_paused_subscription_is_not_believed() {
    paused_subscription_ending_with("caught_up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_again_waits_for_the_last_unsubscribe_to_be_answered() {
    let mut fake = Fake::accepting().await;
    let client = client(&fake);
    let mut first = client.subscribe(SID, from(0));
    let mut c1 = fake.next().await;
    c1.expect("subscribe").await;
    c1.put([subscribed(), outcome("result", 0)]).await;
    assert_eq!(at(&next(&mut first).await), "result@0");
    drop(first);
    c1.expect("unsubscribe").await;
    let second = client.subscribe(SID, from(0));
    // No subscribe yet: the next frame is this record's.
    let (acked, ()) = tokio::join!(client.send(SID, &"sync"), async {
        let send = c1.expect("send").await;
        c1.put([ack(&send["seq"], 0)]).await;
    });
    acked.unwrap();
    // The old subscription lagged before the daemon read the unsubscribe; then its answer.
    c1.put([
        json!({"type": "lagged", "stream_id": SID, "resume_from": 1}),
        json!({"type": "unsubscribed", "stream_id": SID}),
    ])
    .await;
    assert_eq!(c1.expect("subscribe").await["from"], 0);
    c1.put([subscribed(), outcome("result", 0), outcome("end", 1)])
        .await;
    assert_eq!(all_at(&rest(second).await), ["result@0", "end@1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_refusal_lagged_and_a_daemon_ended_subscription_subscribe_again() {
    let mut fake = Fake::accepting().await;
    let client = client(&fake);
    let sub = client.subscribe(SID, earliest());
    let mut c1 = fake.next().await;
    assert_eq!(c1.expect("subscribe").await["from"], "earliest");
    c1.put([json!({"type": "refused", "stream_id": SID,
                   "error": {"code": "not_ready", "message": "starting"}})])
        .await;
    let refused = Instant::now();
    assert_eq!(c1.expect("subscribe").await["from"], "earliest");
    assert!(
        refused.elapsed() >= FIRST_BACKOFF,
        "subscribed again without a back-off"
    );
    c1.put([
        subscribed(),
        outcome("result", 0),
        json!({"type": "lagged", "stream_id": SID, "resume_from": 5}),
    ])
    .await;
    assert_eq!(c1.expect("subscribe").await["from"], 5, "from resume_from");
    c1.put([
        subscribed(),
        outcome("result", 5),
        json!({"type": "unsubscribed", "stream_id": SID,
               "error": {"code": "internal", "message": "replay failed"}}),
    ])
    .await;
    let ended = Instant::now();
    assert_eq!(c1.expect("subscribe").await["from"], 6);
    assert!(
        ended.elapsed() >= FIRST_BACKOFF,
        "subscribed again without a back-off"
    );
    c1.put([subscribed(), outcome("end", 6)]).await;
    assert_eq!(all_at(&rest(sub).await), ["result@0", "result@5", "end@6"]);
    assert_eq!(fake.handshakes(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_will_not_pass_ends_the_subscription_with_its_error() {
    let mut fake = Fake::accepting().await;
    let client = client(&fake);
    let sub = client.subscribe(SID, earliest());
    let mut c1 = fake.next().await;
    c1.expect("subscribe").await;
    c1.put([json!({"type": "refused", "stream_id": SID,
                   "error": {"code": "stream_not_found", "message": "no such stream"}})])
        .await;
    let frames = rest(sub).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    match &frames[0] {
        Err(e) => assert_eq!(e.code(), Some(&ErrorCode::StreamNotFound), "{e}"),
        Ok(f) => panic!("a frame instead of the refusal: {f:?}"),
    }
    // Not subscribed again: the client's next frame is this record's.
    let (acked, ()) = tokio::join!(client.send(SID, &1), async {
        let send = c1.expect("send").await;
        c1.put([ack(&send["seq"], 0)]).await;
    });
    acked.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_nacked_for_now_are_sent_again_with_their_keys_in_order() {
    let mut fake = Fake::accepting().await;
    let client = client(&fake);
    let (first, second, sends) = tokio::join!(
        client.send(SID, &"first"),
        client.send(SID, &"second"),
        async {
            let mut c1 = fake.next().await;
            let a = c1.expect("send").await;
            let b = c1.expect("send").await;
            c1.put([
                nack(&a["seq"], "not_ready"),
                nack(&b["seq"], "backlog_full"),
            ])
            .await;
            let nacked = Instant::now();
            let a2 = c1.expect("send").await;
            assert!(
                nacked.elapsed() >= FIRST_BACKOFF,
                "sent again without a back-off"
            );
            let b2 = c1.expect("send").await;
            c1.put([ack(&a2["seq"], 0), ack(&b2["seq"], 1)]).await;
            [a, b, a2, b2]
        }
    );
    assert_eq!([first.unwrap().offset, second.unwrap().offset], [0, 1]);
    let data: Vec<&Value> = sends.iter().map(|s| &s["data"]).collect();
    assert_eq!(
        data,
        ["first", "second", "first", "second"],
        "in their order"
    );
    let keys: Vec<&str> = sends
        .iter()
        .map(|s| s["idempotency_key"].as_str().unwrap())
        .collect();
    assert_eq!((keys[0], keys[1]), (keys[2], keys[3]), "the same keys");
    assert_ne!(keys[0], keys[1], "a key per record");
    let mut seqs: Vec<u64> = sends.iter().map(|s| s["seq"].as_u64().unwrap()).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), 4, "each attempt numbered anew");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_answer_was_lost_is_sent_again_with_its_key() {
    let mut fake = Fake::accepting().await;
    let client = client(&fake);
    let record = json!({"b": 1.5, "a": [1, "x"]});
    let (answer, sends) = tokio::join!(client.send(SID, &record), async {
        let mut c1 = fake.next().await;
        let lost = c1.expect("send").await;
        drop(c1); // cut before its answer
        let mut c2 = fake.next().await;
        let again = c2.expect("send").await;
        c2.put([nack(&again["seq"], "shutting_down")]).await;
        let last = c2.expect("send").await;
        c2.put([
            json!({"type": "ack", "stream_id": SID, "seq": last["seq"], "offset": 41,
                       "replayed": true}),
        ])
        .await;
        (c2, [lost, again, last])
    });
    let (mut c2, sends) = sends;
    let seq = sends[2]["seq"].as_u64().unwrap();
    let expected = Ack {
        stream_id: Some(SID),
        seq,
        offset: 41,
        replayed: true,
    };
    assert_eq!(answer.unwrap(), expected);
    for send in &sends {
        assert_eq!(send["idempotency_key"], sends[0]["idempotency_key"]);
        assert_eq!(send["data"], record);
    }
    // A refusal that will not pass is the caller's error, at once.
    let (refused, next_send) = tokio::join!(client.send(SID, &2), async {
        let send = c2.expect("send").await;
        c2.put([nack(&send["seq"], "record_too_large")]).await;
        send
    });
    let e = refused.unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::RecordTooLarge), "{e}");
    assert_ne!(next_send["idempotency_key"], sends[0]["idempotency_key"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4401_asks_the_token_source_again_and_resumes() {
    let mut fake = Fake::accepting().await;
    let asked = Arc::new(AtomicUsize::new(0));
    let source: TokenSource = Arc::new({
        let asked = asked.clone();
        move || {
            let n = asked.fetch_add(1, Ordering::SeqCst);
            Box::pin(
                async move { Ok(["first-token", "second-token", "third-token"][n].to_string()) },
            )
        }
    });
    let client = Client::with_credential(&fake.url, Credential::TokenSource(source)).unwrap();
    let mut sub = client.subscribe(SID, Subscribe::default());
    let mut c1 = fake.next().await;
    let first = c1.expect("subscribe").await;
    assert!(first.get("from").is_none(), "{first}");
    c1.put([subscribed(), outcome("result", 10)]).await;
    assert_eq!(at(&next(&mut sub).await), "result@10");
    c1.close(4401, "token expired").await;

    let mut c2 = fake.next().await;
    assert_eq!(c2.expect("subscribe").await["from"], 11, "last cursor + 1");
    c2.put([subscribed(), outcome("result", 11), outcome("end", 12)])
        .await;
    assert_eq!(all_at(&rest(sub).await), ["result@11", "end@12"]);
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    assert_eq!(c2.n, 2);
    assert_eq!(
        [
            fake.header(1, "authorization"),
            fake.header(2, "authorization")
        ],
        [
            Some("Bearer first-token".into()),
            Some("Bearer second-token".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_are_waited_out_as_retry_after_says() {
    let mut fake = Fake::start(|n| match n {
        1 => Some(refusal(429, "rate_limited", Some(1))),
        2 => Some(refusal(503, "not_ready", Some(1))),
        _ => None,
    })
    .await;
    let client = client(&fake);
    let sub = client.subscribe(SID, Subscribe::default());
    let mut c = fake.next().await;
    c.expect("subscribe").await;
    c.put([subscribed(), outcome("end", 0)]).await;
    assert_eq!(all_at(&rest(sub).await), ["end@0"]);
    let at = fake.handshake_times();
    assert_eq!(at.len(), 3, "one handshake per Retry-After, no spinning");
    for pair in at.windows(2) {
        let waited = pair[1] - pair[0];
        assert!(
            waited >= Duration::from_secs(1),
            "tried again after {waited:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_handshake_fails_every_subscription_and_send() {
    let fake = Fake::start(|_| Some(refusal(401, "invalid_api_key", None))).await;
    let client = client(&fake);
    let frames = rest(client.subscribe(SID, Subscribe::default())).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    let Err(Error::Server { status, code, .. }) = &frames[0] else {
        panic!("{frames:?}");
    };
    assert_eq!(
        (status.map(|s| s.as_u16()), code),
        (Some(401), &ErrorCode::InvalidApiKey)
    );
    let sent = tokio::time::timeout(STEP, client.send(SID, &1))
        .await
        .unwrap();
    let Err(Error::Server { status, .. }) = sent else {
        panic!("{sent:?}");
    };
    assert_eq!(status.map(|s| s.as_u16()), Some(401));
    // Once for each, and not again on its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.handshakes(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_back_off_and_never_spin() {
    let mut fake = Fake::accepting().await;
    let client = client(&fake);
    let sub = client.subscribe(SID, Subscribe::default());
    let until = Instant::now() + Duration::from_secs(2);
    // Every connection dropped at once, before a word.
    while let Ok(conn) = tokio::time::timeout_at(until, fake.next()).await {
        drop(conn);
    }
    drop(sub);
    // 100 ms doubling with up to 20 % jitter: 0.1 + 0.2 + 0.4 + 0.8 = 1.5 s, so 5
    // connections within 2 s, and never more than 6.
    let n = fake.handshakes();
    assert!((3..=6).contains(&n), "{n} connections in 2 s");
}

//! One connection, many streams: `/api/connect` (subscribe, unsubscribe and send over one
//! WebSocket, every frame naming its stream) and `/api/events` (several streams as one
//! Server-Sent Events response), against a real daemon on the embedded broker, and on tansu
//! for a restart.

use std::collections::HashMap;

use serde_json::{json, Value};
use streamgate::config::Brokers;
use streamgate_testkit::*;

fn subscribe(id: &str, from: &str) -> Value {
    json!({"type": "subscribe", "stream_id": id, "from": from})
}

/// Reads frames until `n` results arrived, collecting each stream's data in order (and
/// failing on a duplicate cursor); other frames are returned apart.
async fn results_by_stream(ws: &mut Ws, n: usize) -> (HashMap<String, Vec<i64>>, Vec<Value>) {
    let mut by_stream: HashMap<String, Vec<i64>> = HashMap::new();
    let mut cursors: HashMap<String, i64> = HashMap::new();
    let mut others = Vec::new();
    let mut seen = 0;
    while seen < n {
        let f = next_frame(ws).await;
        if f["type"] != "result" {
            others.push(f);
            continue;
        }
        let stream = f["stream_id"].as_str().unwrap().to_string();
        let cursor = f["cursor"].as_i64().unwrap();
        if let Some(last) = cursors.insert(stream.clone(), cursor) {
            assert!(
                cursor > last,
                "cursors increase per stream: {last} then {cursor}"
            );
        }
        by_stream
            .entry(stream)
            .or_default()
            .push(f["data"]["n"].as_i64().unwrap());
        seen += 1;
    }
    (by_stream, others)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_streams_on_one_socket_each_result_once_in_order() {
    let d = Daemon::start(test_config()).await;
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(d.start_stream(ALICE, None).await);
    }
    let mut ws = d.connect(ALICE).await;
    for id in &ids {
        send_frame(&mut ws, &subscribe(id, "latest")).await;
    }
    let mut subscribed = 0;
    while subscribed < ids.len() {
        let f = next_frame(&mut ws).await;
        assert_eq!(f["type"], "subscribed", "{f}");
        subscribed += 1;
    }
    // Three records into every stream, sent on the same socket, numbered per stream.
    let mut seq = 0;
    for n in 1..=3 {
        for id in &ids {
            seq += 1;
            let frame = json!({"type": "send", "stream_id": id, "seq": seq, "data": {"n": n}});
            send_frame(&mut ws, &frame).await;
        }
    }
    let (by_stream, others) = results_by_stream(&mut ws, 300).await;
    assert_eq!(by_stream.len(), 100);
    for (stream, numbers) in &by_stream {
        assert_eq!(numbers, &vec![1, 2, 3], "stream {stream}");
    }
    // Acks name their stream and come in order per stream.
    let mut acks: Vec<Value> = others.into_iter().filter(|f| f["type"] == "ack").collect();
    while acks.len() < 300 {
        let f = next_frame(&mut ws).await;
        assert_eq!(f["type"], "ack", "{f}");
        acks.push(f);
    }
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for ack in &acks {
        let stream = ack["stream_id"].as_str().unwrap().to_string();
        let seq = ack["seq"].as_u64().unwrap();
        let before = last_seq.insert(stream, seq).unwrap_or(0);
        assert!(seq > before, "acks in order per stream");
    }

    // Unsubscribed mid-way: nothing of that stream after `unsubscribed`.
    let (gone, kept) = (&ids[0], &ids[1]);
    send_frame(&mut ws, &json!({"type": "unsubscribe", "stream_id": gone})).await;
    assert_eq!(d.send_json(ALICE, gone, &json!({"n": 4})).await.0, 202);
    assert_eq!(d.send_json(ALICE, kept, &json!({"n": 4})).await.0, 202);
    let mut unsubscribed = false;
    loop {
        let f = next_frame(&mut ws).await;
        if f["type"] == "unsubscribed" {
            assert_eq!(f["stream_id"], gone.as_str());
            unsubscribed = true;
            continue;
        }
        assert_ne!(
            f["stream_id"],
            gone.as_str(),
            "a frame after unsubscribe: {f}"
        );
        if f["type"] == "result" && f["stream_id"] == kept.as_str() {
            break;
        }
    }
    assert!(unsubscribed);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_keys_stream_and_a_missing_one_are_refused_alike() {
    let d = Daemon::start(test_config()).await;
    let bobs = d.start_stream(BOB, None).await;
    let missing = uuid::Uuid::new_v4().to_string();
    let mut ws = d.connect(ALICE).await;
    let refusal = |f: Value| {
        assert_eq!(f["type"], "refused", "{f}");
        let mut error = f["error"].clone();
        // The same answer but for the id it names.
        error["message"] = Value::from(
            error["message"]
                .as_str()
                .unwrap()
                .replace(f["stream_id"].as_str().unwrap(), "ID"),
        );
        error
    };
    send_frame(&mut ws, &subscribe(&bobs, "earliest")).await;
    let foreign = refusal(next_frame(&mut ws).await);
    send_frame(&mut ws, &subscribe(&missing, "earliest")).await;
    let absent = refusal(next_frame(&mut ws).await);
    assert_eq!(foreign, absent);
    assert_eq!(foreign["code"], "stream_not_found");

    // A send to another key's stream: a nack, and nothing stored.
    send_frame(
        &mut ws,
        &json!({"type": "send", "stream_id": bobs, "seq": 1, "data": 1}),
    )
    .await;
    let nack = next_frame(&mut ws).await;
    assert_eq!(
        (
            nack["type"].as_str(),
            nack["seq"].as_u64(),
            nack["error"]["code"].as_str()
        ),
        (Some("nack"), Some(1), Some("stream_not_found")),
        "{nack}"
    );
    assert_eq!(d.describe(BOB, &bobs).await["records_in"], 0);

    // A frame that means nothing is answered, and the connection goes on.
    send_text(&mut ws, "{\"type\": \"subscrib\"}").await;
    let invalid = next_frame(&mut ws).await;
    assert_eq!(invalid["type"], "invalid", "{invalid}");
    assert_eq!(invalid["error"]["code"], "invalid_input");
    send_frame(&mut ws, &subscribe(&missing, "latest")).await;
    assert_eq!(next_frame(&mut ws).await["type"], "refused");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_two_streams_reaches_those_two_within_its_scope() {
    let d = Daemon::start(test_config()).await;
    let (a, b, c) = (
        d.start_stream(ALICE, None).await,
        d.start_stream(ALICE, None).await,
        d.start_stream(ALICE, None).await,
    );
    let issue = |streams: Vec<&String>, scope: Value| {
        d.http
            .post(d.url("/api/tokens"))
            .header("x-api-key", ALICE)
            .json(&json!({"streams": streams, "scope": scope, "ttl_s": 60}))
            .send()
    };
    let (status, body) =
        status_and_json(issue(vec![&a, &b], json!(["subscribe"])).await.unwrap()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["streams"], json!([a, b]));
    let token = body["token"].as_str().unwrap().to_string();
    // Bob cannot put Alice's streams in a token of his.
    let foreign = d
        .http
        .post(d.url("/api/tokens"))
        .header("x-api-key", BOB)
        .json(&json!({"streams": [a], "scope": ["subscribe"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);

    let mut ws = d.connect(&format!("Bearer {token}")).await;
    send_frame(&mut ws, &subscribe(&a, "latest")).await;
    send_frame(&mut ws, &subscribe(&b, "latest")).await;
    send_frame(&mut ws, &subscribe(&c, "latest")).await;
    let mut answers = HashMap::new();
    for _ in 0..3 {
        let f = next_frame(&mut ws).await;
        answers.insert(f["stream_id"].as_str().unwrap().to_string(), f);
    }
    assert_eq!(answers[&a]["type"], "subscribed");
    assert_eq!(answers[&b]["type"], "subscribed");
    assert_eq!(answers[&c]["type"], "refused");
    assert_eq!(answers[&c]["error"]["code"], "stream_not_found");
    // Without `send` in its scope, a record is refused.
    send_frame(
        &mut ws,
        &json!({"type": "send", "stream_id": a, "seq": 7, "data": 1}),
    )
    .await;
    let nack = next_of(&mut ws, "nack").await;
    assert_eq!(
        (nack["seq"].as_u64(), nack["error"]["code"].as_str()),
        (Some(7), Some("forbidden"))
    );
    // Results of both streams come on the one socket.
    assert_eq!(d.send_json(ALICE, &a, &json!({"n": 1})).await.0, 202);
    assert_eq!(d.send_json(ALICE, &b, &json!({"n": 2})).await.0, 202);
    let (by_stream, _) = results_by_stream(&mut ws, 2).await;
    assert_eq!(by_stream[&a], vec![1]);
    assert_eq!(by_stream[&b], vec![2]);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_stream_gets_exact_gaps_and_the_others_their_results() {
    let mut config = test_config();
    config.limits.delivery.subscriber_queue = 8;
    let d = Daemon::start(config).await;
    let (flooded, quiet) = (
        d.start_stream(ALICE, None).await,
        d.start_stream(ALICE, None).await,
    );
    let mut ws = d.connect(ALICE).await;
    send_frame(
        &mut ws,
        &json!({"type": "subscribe", "stream_id": flooded, "on_lag": "skip"}),
    )
    .await;
    send_frame(&mut ws, &subscribe(&quiet, "latest")).await;
    next_of(&mut ws, "subscribed").await;
    next_of(&mut ws, "subscribed").await;
    let total = 3_000;
    let body: String = (1..=total).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let (status, _) = d.send_ndjson(ALICE, &flooded, body).await;
    assert_eq!(status, 202);
    assert_eq!(d.send_json(ALICE, &quiet, &json!({"n": 1})).await.0, 202);
    // Every result of the flooded stream arrives or is counted in a gap; the quiet one's
    // result arrives too.
    let (mut delivered, mut skipped, mut quiet_seen) = (0u64, 0u64, false);
    while delivered + skipped < total || !quiet_seen {
        let f = next_frame(&mut ws).await;
        match (f["type"].as_str(), f["stream_id"].as_str()) {
            (Some("result"), Some(s)) if s == flooded => delivered += 1,
            (Some("gap"), Some(s)) if s == flooded => skipped += f["skipped"].as_u64().unwrap(),
            (Some("result"), Some(s)) if s == quiet => quiet_seen = true,
            _ => panic!("unexpected {f}"),
        }
    }
    assert_eq!(delivered + skipped, total);
    d.stop().await.unwrap();
}

/// Waits until the daemon has exactly `n` subscribers.
async fn subscribers_settle_at(d: &Daemon, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !d
        .metrics()
        .await
        .contains(&format!("streamgate_subscribers {n}\n"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {n} subscribers"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_and_unsubscribing_in_a_loop_leaves_nothing_behind() {
    let d = Daemon::start(test_config()).await;
    let id = d.start_stream(ALICE, None).await;
    let mut ws = d.connect(ALICE).await;
    for _ in 0..1_000 {
        send_frame(&mut ws, &subscribe(&id, "latest")).await;
        send_frame(&mut ws, &json!({"type": "unsubscribe", "stream_id": id})).await;
    }
    let mut unsubscribed = 0;
    while unsubscribed < 1_000 {
        if next_frame(&mut ws).await["type"] == "unsubscribed" {
            unsubscribed += 1;
        }
    }
    // One subscription left open at the end, then none: the router holds exactly that
    // (subscriptions still opening when their unsubscribe came are dropped as they open).
    send_frame(&mut ws, &subscribe(&id, "latest")).await;
    next_of(&mut ws, "subscribed").await;
    subscribers_settle_at(&d, 1).await;
    drop(ws);
    subscribers_settle_at(&d, 0).await;
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_stream_ends_its_subscription_only() {
    let d = Daemon::start(test_config()).await;
    let (ending, going_on) = (
        d.start_stream(ALICE, None).await,
        d.start_stream(ALICE, None).await,
    );
    let mut ws = d.connect(ALICE).await;
    send_frame(&mut ws, &subscribe(&ending, "latest")).await;
    send_frame(&mut ws, &subscribe(&going_on, "latest")).await;
    next_of(&mut ws, "subscribed").await;
    next_of(&mut ws, "subscribed").await;
    assert_eq!(d.end_stream(ALICE, &ending).await, 200);
    let end = next_of(&mut ws, "end").await;
    assert_eq!(end["stream_id"], ending.as_str());
    assert_eq!(d.send_json(ALICE, &going_on, &json!({"n": 9})).await.0, 202);
    let r = next_of(&mut ws, "result").await;
    assert_eq!(r["stream_id"], going_on.as_str());
    // A record sent over the socket into the ended stream is refused.
    send_frame(
        &mut ws,
        &json!({"type": "send", "stream_id": ending, "seq": 1, "data": 1}),
    )
    .await;
    assert_eq!(
        next_of(&mut ws, "nack").await["error"]["code"],
        "stream_ended"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_stream_for_several_streams_resumes_each_from_last_event_id() {
    let d = Daemon::start(test_config()).await;
    let (a, b) = (
        d.start_stream(ALICE, None).await,
        d.start_stream(ALICE, None).await,
    );
    for n in 1..=2 {
        assert_eq!(d.send_json(ALICE, &a, &json!({"n": n})).await.0, 202);
        assert_eq!(d.send_json(ALICE, &b, &json!({"n": 10 + n})).await.0, 202);
    }
    let url = d.url(&format!(
        "/api/events?stream_id={a}&stream_id={b}&from=earliest"
    ));
    let mut events = Events::request(d.http.get(&url).header("x-api-key", ALICE)).await;
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    let mut last_id = String::new();
    while seen.values().map(Vec::len).sum::<usize>() < 3 {
        let e = events.next().await;
        assert_eq!(e.event, "result", "{e:?}");
        let frame: Value = serde_json::from_str(&e.data).unwrap();
        let stream = frame["stream_id"].as_str().unwrap().to_string();
        seen.entry(stream)
            .or_default()
            .push(frame["data"]["n"].as_i64().unwrap());
        last_id = e.id.expect("results carry an id");
    }
    drop(events);
    assert_eq!(
        last_id.split(',').count(),
        2,
        "one cursor per stream: {last_id}"
    );
    // Reconnect as EventSource does: the same URL and the last id. Each stream resumes
    // after its own cursor: the fourth result, and nothing twice.
    assert_eq!(d.send_json(ALICE, &a, &json!({"n": 3})).await.0, 202);
    let mut again = Events::request(
        d.http
            .get(&url)
            .header("x-api-key", ALICE)
            .header("last-event-id", &last_id),
    )
    .await;
    while seen.values().map(Vec::len).sum::<usize>() < 5 {
        let e = again.next().await;
        let frame: Value = serde_json::from_str(&e.data).unwrap();
        let stream = frame["stream_id"].as_str().unwrap().to_string();
        seen.entry(stream)
            .or_default()
            .push(frame["data"]["n"].as_i64().unwrap());
    }
    assert_eq!(seen[&a], vec![1, 2, 3]);
    assert_eq!(seen[&b], vec![11, 12]);
    // A missing stream among them is refused alone.
    let other = uuid::Uuid::new_v4();
    let mut mixed = Events::request(
        d.http
            .get(d.url(&format!(
                "/api/events?stream_id={other}&stream_id={a}&from=-1"
            )))
            .header("x-api-key", ALICE),
    )
    .await;
    let mut kinds = vec![mixed.next().await.event, mixed.next().await.event];
    kinds.sort();
    assert_eq!(kinds, ["refused", "result"]);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_on_tansu_every_stream_resumes_from_its_own_cursor() {
    let tansu = Tansu::start();
    let mut config = test_config();
    config.brokers = Brokers::Bootstrap(tansu.bootstrap());
    let d = Daemon::start(config.clone()).await;
    let ids = [
        d.start_stream(ALICE, None).await,
        d.start_stream(ALICE, None).await,
        d.start_stream(ALICE, None).await,
    ];
    let mut ws = d.connect(ALICE).await;
    for id in &ids {
        send_frame(&mut ws, &subscribe(id, "earliest")).await;
    }
    for (i, id) in ids.iter().enumerate() {
        let body: String = (1..=3)
            .map(|n| format!("{{\"n\":{}}}\n", i as i64 * 100 + n))
            .collect();
        assert_eq!(d.send_ndjson(ALICE, id, body).await.0, 202);
    }
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut got: HashMap<String, Vec<i64>> = HashMap::new();
    let mut n = 0;
    while n < 9 {
        let f = next_frame(&mut ws).await;
        if f["type"] != "result" {
            continue;
        }
        let s = f["stream_id"].as_str().unwrap().to_string();
        last.insert(s.clone(), f["cursor"].as_i64().unwrap());
        got.entry(s)
            .or_default()
            .push(f["data"]["n"].as_i64().unwrap());
        n += 1;
    }
    drop(ws);
    for (i, id) in ids.iter().enumerate() {
        let body: String = (4..=5)
            .map(|n| format!("{{\"n\":{}}}\n", i as i64 * 100 + n))
            .collect();
        assert_eq!(d.send_ndjson(ALICE, id, body).await.0, 202);
    }
    d.stop().await.unwrap();

    let d = Daemon::start(config).await;
    let mut ws = d.connect(ALICE).await;
    for id in &ids {
        let from = last[id.as_str()] + 1;
        send_frame(
            &mut ws,
            &json!({"type": "subscribe", "stream_id": id, "from": from}),
        )
        .await;
    }
    let (resumed, _) = results_by_stream(&mut ws, 6).await;
    for (i, id) in ids.iter().enumerate() {
        let base = i as i64 * 100;
        let mut all = got[id.as_str()].clone();
        all.extend(&resumed[id.as_str()]);
        assert_eq!(all, (1..=5).map(|n| base + n).collect::<Vec<_>>(), "{id}");
    }
    d.stop().await.unwrap();
}

//! Against a daemon without `/api/connect` (a proxy in front answers its handshake 404), the
//! client falls back to a socket per stream and HTTP sends, with the same guarantees: with
//! every connection cut twice mid-way, each stream's results arrive once, in order, and each
//! record is stored once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use streamgate_client::wire::{Frame, StartFrom};
use streamgate_client::{Client, Subscribe};
use streamgate_testkit::{test_config, Daemon, ALICE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A proxy to `target` that answers `GET /api/connect` with 404 (an older daemon) and can
/// cut every connection it carries.
struct OldDaemon {
    addr: SocketAddr,
    carried: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl OldDaemon {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let carried: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tasks = carried.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    let mut head = vec![0u8; 8192];
                    let n = client.read(&mut head).await.unwrap_or(0);
                    if head[..n].starts_with(b"GET /api/connect") {
                        let body =
                            r#"{"error":{"code":"route_not_found","message":"no such route"}}"#;
                        let answer = format!(
                            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = client.write_all(answer.as_bytes()).await;
                        return;
                    }
                    let Ok(mut daemon) = TcpStream::connect(target).await else {
                        return;
                    };
                    if daemon.write_all(&head[..n]).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut daemon).await;
                    }
                });
                tasks.lock().unwrap().push(task);
            }
        });
        Self {
            addr,
            carried,
            accept,
        }
    }

    /// Drops every connection open now.
    fn cut(&self) {
        for task in self.carried.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for OldDaemon {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_api_connect_a_socket_per_stream_and_http_sends_keep_every_guarantee() {
    const RECORDS: usize = 30;
    let d = Daemon::start(test_config()).await;
    let old = OldDaemon::start(d.addr).await;
    let client = Client::new(&format!("http://{}", old.addr), ALICE).unwrap();
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(client.start(None).await.unwrap().stream_id);
    }
    let readers: Vec<_> = streams
        .iter()
        .map(|id| {
            let from = Subscribe {
                from: Some(StartFrom::Named("earliest".into())),
                ..Default::default()
            };
            let mut frames = client.subscribe(*id, from);
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < RECORDS {
                    match frames.next().await {
                        Some(Ok(Frame::Result(r))) => {
                            got.push(r.data.unwrap()["n"].as_u64().unwrap())
                        }
                        Some(Ok(_)) => {}
                        other => panic!("the subscription ended: {other:?}"),
                    }
                }
                got
            })
        })
        .collect();
    let senders: Vec<_> = streams
        .iter()
        .map(|id| {
            let (client, id) = (client.clone(), *id);
            tokio::spawn(async move {
                for n in 0..RECORDS {
                    client.send(id, &json!({ "n": n })).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        old.cut();
    }
    for s in senders {
        s.await.unwrap();
    }
    for (reader, id) in readers.into_iter().zip(&streams) {
        let got = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("every result arrives")
            .unwrap();
        assert_eq!(got, (0..RECORDS as u64).collect::<Vec<_>>(), "stream {id}");
        let view = client.describe(*id).await.unwrap();
        assert_eq!(view.records_in, RECORDS as u64, "each record stored once");
    }
    d.stop().await.unwrap();
}

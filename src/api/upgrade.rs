//! The WebSocket upgrade, done here rather than with `warp::ws()` so the socket's buffers can
//! be sized: tungstenite's default read buffer is 128 KiB per connection, allocated and touched
//! up front, which made an idle subscriber cost about 137 KiB of RSS. With a 4 KiB read buffer
//! (it grows when a large message arrives) memory follows traffic, not connection count.

use std::future::Future;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use warp::http::{HeaderValue, StatusCode};
use warp::{Filter, Rejection, Reply};

use super::error::{reject, ApiError};
use super::serve::Client;

/// The server side of an upgraded connection.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Longest a socket closed for an oversized message is read (and discarded) after its close
/// frame was sent.
pub const LINGER: Duration = Duration::from_secs(2);

/// After a close sent while the client may still be writing (a message over the limit):
/// reads and discards what it sends until it closes, for at most [`LINGER`]. Closing at
/// once would reset the connection with unread data and the client would lose the close
/// frame, seeing 1006 instead of the 1009 and its reason.
pub async fn linger(sink: SplitSink<Socket, Message>, source: SplitStream<Socket>) {
    let Ok(socket) = sink.reunite(source) else {
        return;
    };
    let mut io = socket.into_inner();
    let mut scrap = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(io.read(&mut scrap).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Initial read buffer per connection.
const READ_BUFFER: usize = 4 * 1024;

/// A request that asked for a WebSocket, ready to be answered with 101.
pub struct Upgrade {
    key: String,
    on_upgrade: Option<OnUpgrade>,
    /// The connection's place under the connection caps, held by the session.
    client: Option<Client>,
}

/// Matches a WebSocket handshake request; anything else is refused with 400.
pub fn websocket() -> impl Filter<Extract = (Upgrade,), Error = Rejection> + Clone {
    warp::header::optional::<String>("connection")
        .and(warp::header::optional::<String>("upgrade"))
        .and(warp::header::optional::<String>("sec-websocket-version"))
        .and(warp::header::optional::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ext::optional::<Client>())
        .and_then(
            |connection: Option<String>,
             upgrade: Option<String>,
             version: Option<String>,
             key: Option<String>,
             on_upgrade: Option<OnUpgrade>,
             client: Option<Client>| async move {
                let has = |v: &Option<String>, want: &str| {
                    v.as_deref()
                        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
                };
                let valid = has(&connection, "upgrade")
                    && has(&upgrade, "websocket")
                    && version.as_deref() == Some("13");
                match key {
                    Some(key) if valid => Ok(Upgrade {
                        key,
                        on_upgrade,
                        client,
                    }),
                    _ => Err(reject(ApiError::InvalidInput(
                        "this endpoint is a WebSocket: send a version 13 upgrade request".into(),
                    ))),
                }
            },
        )
}

impl Upgrade {
    /// Answers 101 and runs `session` on the socket once the upgrade completes.
    pub fn respond<F, Fut>(
        self,
        protocol: Option<String>,
        max_message_bytes: usize,
        session: F,
    ) -> warp::reply::Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(max_message_bytes))
            .max_frame_size(Some(max_message_bytes));
        if let Some(on_upgrade) = self.on_upgrade {
            let client = self.client;
            tokio::spawn(async move {
                let _place = client;
                match on_upgrade.await {
                    Ok(upgraded) => {
                        let socket = WebSocketStream::from_raw_socket(
                            TokioIo::new(upgraded),
                            Role::Server,
                            Some(config),
                        )
                        .await;
                        session(socket).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
                }
            });
        }
        let mut resp = warp::reply::with_status(warp::reply(), StatusCode::SWITCHING_PROTOCOLS)
            .into_response();
        let headers = resp.headers_mut();
        headers.insert("connection", HeaderValue::from_static("upgrade"));
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(self.key.as_bytes())) {
            headers.insert("sec-websocket-accept", accept);
        }
        if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
            headers.insert("sec-websocket-protocol", p);
        }
        resp
    }
}

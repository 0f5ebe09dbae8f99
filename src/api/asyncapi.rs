//! The push channels described as AsyncAPI 3.0: the WebSocket and the Server-Sent Events
//! stream of `GET /api/stream/{id}/results`, and `GET /api/connect`, one WebSocket for many
//! streams; every frame as a message, what a client sends with its replies, the query
//! parameters and the close codes. Served at `/api/asyncapi.json`; `docs/asyncapi.json` is
//! the committed copy.
//!
//! The message payloads are the wire types' own schemas (the same `utoipa` output as the
//! OpenAPI document's components), and the close codes come from `wire::Close`, so neither
//! can drift from the code. The channel's prose is written here.

use serde_json::{json, Value};

use crate::wire::Close;

/// Frames the daemon sends, in the order `docs/api.md` gives them.
const FRAMES: [(&str, &str); 13] = [
    ("result", "One processed result. `cursor` increases per stream; resume after it with `from=cursor+1`."),
    ("error", "Processing failed for one record; the stream goes on."),
    ("end", "The stream ended; every result before it was delivered. The socket closes with 1000."),
    ("gap", "Results from `from_cursor` on were not delivered: skipped for a slow reader (`on_lag=skip`) or no longer held by the broker."),
    ("ack", "The `seq`-th record sent on this socket (1-based) is stored at `offset`."),
    ("nack", "The `seq`-th record sent on this socket was refused; `error` says why."),
    ("subscribed", "/api/connect: the stream's frames follow."),
    ("refused", "/api/connect: the subscription was not made; `error` says why (`stream_not_found` for another key's stream as for a missing one)."),
    ("unsubscribed", "/api/connect: no frame of the stream follows. With `error`, the daemon ended the subscription: subscribe again from the last cursor + 1."),
    ("lagged", "/api/connect: the subscriber read too slowly (`on_lag: close`); subscribe again with `from: resume_from`."),
    ("caught_up", "/api/connect with `until: now`: everything that existed at subscribe was sent."),
    ("invalid", "/api/connect: a frame the daemon could not read (or an `auth` token that did not pass); the connection goes on."),
    ("authenticated", "/api/connect: the token of an `auth` frame was accepted; the connection lives until it expires (`expires_at`)."),
];

/// Frames a client sends on `/api/connect`.
const CLIENT_FRAMES: [(&str, &str); 4] = [
    ("subscribe", "Follow a stream: `{\"type\": \"subscribe\", \"stream_id\", \"from\", \"on_lag\", \"until\"}`; answered by `subscribed` or `refused`."),
    ("unsubscribe", "Stop following a stream; answered by `unsubscribed`, after which nothing of it comes."),
    ("send", "A record: `{\"type\": \"send\", \"stream_id\", \"seq\", \"data\"}`; answered by `ack` or `nack` with the same `stream_id` and `seq`, in order per stream."),
    ("auth", "A fresh token for the same caller, before the connection's expires: `{\"type\": \"auth\", \"token\"}`; answered by `authenticated` (subscriptions it does not cover end with `unsubscribed`), or `invalid` and the old one stays."),
];

/// The document, built around the OpenAPI document's schemas (`openapi` is what
/// `openapi::document()` returns).
pub fn document(openapi: &Value) -> Value {
    let schemas = &openapi["components"]["schemas"];
    let mut messages = serde_json::Map::new();
    for (name, summary) in FRAMES {
        messages.insert(
            name.to_string(),
            json!({
                "name": name,
                "title": name,
                "summary": summary,
                "contentType": "application/json",
                "payload": frame_payload(name, schemas),
            }),
        );
    }
    for (name, summary) in CLIENT_FRAMES {
        messages.insert(
            name.to_string(),
            json!({
                "name": name,
                "title": name,
                "summary": summary,
                "contentType": "application/json",
                "payload": {
                    "allOf": [
                        {"$ref": "#/components/schemas/ClientFrame"},
                        {"type": "object", "required": ["type"], "properties": {"type": {"const": name}}},
                    ]
                },
            }),
        );
    }
    messages.insert(
        "record".into(),
        json!({
            "name": "record",
            "title": "record",
            "summary": "A record sent into the stream on the socket (any JSON value, text or binary frame); on a socket opened with `send=frames`, `{\"data\": RECORD, \"idempotency_key\": KEY}` (RecordFrame: sent again with its key, stored once). Answered in order with `ack` or `nack` (`replayed: true` for a repeated key).",
            "contentType": "application/json",
            "payload": {},
        }),
    );
    let refs = |channel: &str, names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|n| json!({"$ref": format!("#/channels/{channel}/messages/{n}")}))
            .collect()
    };
    let channel_messages = |names: &[&str]| -> serde_json::Map<String, Value> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    json!({"$ref": format!("#/components/messages/{n}")}),
                )
            })
            .collect()
    };
    let stream_frames = ["result", "error", "end", "gap", "ack", "nack"];
    let connect_frames = [
        "result",
        "error",
        "end",
        "gap",
        "ack",
        "nack",
        "subscribed",
        "refused",
        "unsubscribed",
        "lagged",
        "caught_up",
        "invalid",
        "authenticated",
    ];
    let mut results_messages = channel_messages(&stream_frames);
    results_messages.extend(channel_messages(&["record"]));
    let mut connect_messages = channel_messages(&connect_frames);
    connect_messages.extend(channel_messages(&[
        "subscribe",
        "unsubscribe",
        "send",
        "auth",
    ]));
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Streamgate results",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Processed results pushed as they are produced, over a WebSocket or Server-Sent Events (`Accept: text/event-stream`), on the same path. The HTTP routes are in /api/openapi.json.",
        },
        "servers": {
            "websocket": {
                "host": "127.0.0.1:8080",
                "protocol": "ws",
                "description": "The daemon; `wss` behind a TLS proxy.",
                "security": [{"$ref": "#/components/securitySchemes/api_key"}, {"$ref": "#/components/securitySchemes/bearer"}, {"$ref": "#/components/securitySchemes/access_token"}],
            },
            "sse": {
                "host": "127.0.0.1:8080",
                "protocol": "http",
                "description": "Server-Sent Events: each frame is one event, `event:` its type, `id:` its cursor, `data:` its JSON. The last event says why the stream ended: `lagged` with `{resume, reason}`, or `close` with `{code, reason}`.",
                "security": [{"$ref": "#/components/securitySchemes/api_key"}, {"$ref": "#/components/securitySchemes/bearer"}, {"$ref": "#/components/securitySchemes/access_token"}],
            },
        },
        "defaultContentType": "application/json",
        "channels": {
            "results": {
                "address": "/api/stream/{stream_id}/results",
                "title": "A stream's results",
                "description": close_codes_text(),
                "parameters": {
                    "stream_id": {"description": "The stream id (from `POST /api/stream/start`)."},
                },
                "messages": results_messages,
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "properties": {
                                "from": {"type": "string", "description": "`latest` (default), `earliest`, a cursor, or `-N` for the last N results."},
                                "on_lag": {"type": "string", "enum": ["close", "skip"], "description": "What happens to a subscriber that falls `limits.subscriber_queue` results behind."},
                                "until": {"type": "string", "enum": ["now"], "description": "Only what exists at connect, then close 1000 `caught up`."},
                                "access_token": {"type": "string", "description": "A stream token with `subscribe` (and `send` to send on the socket)."},
                            },
                        },
                        "headers": {
                            "type": "object",
                            "properties": {
                                "X-API-Key": {"type": "string"},
                                "Sec-WebSocket-Protocol": {"type": "string", "description": "`streamgate.v1`, plus `apikey.<KEY>` or `token.<TOKEN>` from a browser."},
                            },
                        },
                    },
                },
                "x-close-codes": close_codes(),
            },
            "connect": {
                "address": "/api/connect",
                "title": "Many streams on one WebSocket",
                "description": "One WebSocket for many streams: the client sends `subscribe`, `unsubscribe` and `send` frames naming a `stream_id`; every frame the daemon sends names its stream. Each subscription has its own cursor, lag policy and queue; a stream's `end`, `lagged` or `caught_up` ends that subscription only. Opened with a key (its streams) or a stream token (the streams it names). Close codes as on the results channel; 4401 when the token expires, 1001 when the daemon stops.",
                "messages": connect_messages,
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "headers": {
                            "type": "object",
                            "properties": {
                                "X-API-Key": {"type": "string"},
                                "Sec-WebSocket-Protocol": {"type": "string", "description": "`streamgate.v1`, plus `apikey.<KEY>` or `token.<TOKEN>` from a browser."},
                            },
                        },
                    },
                },
            },
        },
        "operations": {
            "receiveResults": {
                "action": "receive",
                "title": "Receive results",
                "summary": "Frames the daemon pushes: results, errors, the end, gaps, and the answers to records sent on the socket.",
                "channel": {"$ref": "#/channels/results"},
                "messages": refs("results", &stream_frames),
            },
            "sendRecords": {
                "action": "send",
                "title": "Send records on the socket",
                "summary": "Each text or binary frame is one record; at most `limits.ws_max_in_flight` await their acknowledgement at once.",
                "channel": {"$ref": "#/channels/results"},
                "messages": refs("results", &["record"]),
                "reply": {
                    "channel": {"$ref": "#/channels/results"},
                    "messages": refs("results", &["ack", "nack"]),
                },
            },
            "receiveConnect": {
                "action": "receive",
                "title": "Receive frames of many streams",
                "summary": "Every stream's frames, each naming its stream, and the connection's answers.",
                "channel": {"$ref": "#/channels/connect"},
                "messages": refs("connect", &connect_frames),
            },
            "sendConnect": {
                "action": "send",
                "title": "Subscribe, unsubscribe and send",
                "summary": "Client frames of `/api/connect`; at most `limits.ws_max_in_flight` records await their answer at once.",
                "channel": {"$ref": "#/channels/connect"},
                "messages": refs("connect", &["subscribe", "unsubscribe", "send", "auth"]),
            },
        },
        "components": {
            "messages": messages,
            "schemas": schemas,
            "securitySchemes": {
                "api_key": {"type": "httpApiKey", "name": "X-API-Key", "in": "header"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "A stream token from POST /api/tokens, or a JWT from the identity provider of auth.jwt. On /api/connect an `auth` frame replaces it without reconnecting."},
                "access_token": {"type": "httpApiKey", "name": "access_token", "in": "query"},
                "mutual_tls": {"type": "X509", "description": "With http.tls.client_ca: a client certificate signed by one of its CAs."},
            },
        },
    })
}

/// The payload of one frame type: the frame's fields with `type` fixed.
fn frame_payload(name: &str, schemas: &Value) -> Value {
    let body = match name {
        "result" | "error" | "end" => "Outcome",
        "gap" => "Gap",
        "ack" => "Ack",
        "nack" => "Nack",
        "subscribed" | "caught_up" => "StreamRef",
        "refused" | "unsubscribed" => "Refusal",
        "lagged" => "Lagged",
        "authenticated" => "Authenticated",
        _ => "Invalid",
    };
    debug_assert!(schemas.get(body).is_some(), "{body} is in the schemas");
    json!({
        "allOf": [
            {"$ref": format!("#/components/schemas/{body}")},
            {"type": "object", "required": ["type"], "properties": {"type": {"const": name}}},
        ]
    })
}

/// Every close code a results socket may get from the daemon, with its reason.
fn close_codes() -> Value {
    let examples = [
        Close::Ended,
        Close::Bye,
        Close::CaughtUp,
        Close::ShuttingDown,
        Close::Lagged { resume: 42 },
        Close::TooBig { limit: 1_048_576 },
        Close::TokenExpired,
        Close::TokenRevoked,
        Close::CredentialRevoked,
        Close::Internal("…".into()),
    ];
    examples
        .iter()
        .map(|c| json!({"code": c.code(), "reason": c.reason(), "meaning": meaning(c)}))
        .collect()
}

fn meaning(close: &Close) -> &'static str {
    match close {
        Close::Ended => "the stream ended, after its `end` frame",
        Close::Bye => "the client closed and every record it sent was answered",
        Close::CaughtUp => "with `until=now`, everything that existed at connect was sent",
        Close::ShuttingDown => "the daemon is shutting down: reconnect (any instance) and resume",
        Close::Lagged { .. } => "read too slowly: resume with `from=` the cursor in the reason",
        Close::TooBig { .. } => "a message over `limits.ws_max_message_bytes`",
        Close::TokenExpired => "the token expired: reconnect with a new one",
        Close::TokenRevoked => {
            "the token's signing key was removed or rotated: reconnect with a new token"
        }
        Close::CredentialRevoked => "the API key was removed (a reload): it is not accepted again",
        Close::Internal(_) | Close::Other(..) => "an internal error (the reason says what)",
    }
}

fn close_codes_text() -> String {
    let mut text = String::from(
        "A stream's results. A client subscribes before the replay (`from`) is read, so the \
         switch from replay to live has no gap and no duplicate. Close codes: ",
    );
    let codes: Vec<String> = close_codes()
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} ({})", c["code"], c["meaning"].as_str().unwrap_or("")))
        .collect();
    text.push_str(&codes.join("; "));
    text.push('.');
    text
}

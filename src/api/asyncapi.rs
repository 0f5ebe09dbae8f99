//! The results channel described as AsyncAPI 3.0: the WebSocket and the Server-Sent Events
//! stream of `GET /api/stream/{id}/results`, every frame as a message, the records a client
//! sends on the socket with their `ack`/`nack` replies, the query parameters and the close
//! codes. Served at `/api/asyncapi.json`; `docs/asyncapi.json` is the committed copy.
//!
//! The message payloads are the wire types' own schemas (the same `utoipa` output as the
//! OpenAPI document's components), and the close codes come from `wire::Close`, so neither
//! can drift from the code. The channel's prose is written here.

use serde_json::{json, Value};

use crate::wire::Close;

/// Frames the daemon sends, in the order the README's table gives them.
const FRAMES: [(&str, &str); 6] = [
    ("result", "One processed result. `cursor` increases per stream; resume after it with `from=cursor+1`."),
    ("error", "Processing failed for one record; the stream goes on."),
    ("end", "The stream ended; every result before it was delivered. The socket closes with 1000."),
    ("gap", "Results from `from_cursor` on were not delivered: skipped for a slow reader (`on_lag=skip`) or no longer held by the broker."),
    ("ack", "The `seq`-th record sent on this socket (1-based) is stored at `offset`."),
    ("nack", "The `seq`-th record sent on this socket was refused; `error` says why."),
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
    messages.insert(
        "record".into(),
        json!({
            "name": "record",
            "title": "record",
            "summary": "A record sent into the stream on the socket (any JSON value, text or binary frame). Answered in order with `ack` or `nack`.",
            "contentType": "application/json",
            "payload": {},
        }),
    );
    let refs = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|n| json!({"$ref": format!("#/channels/results/messages/{n}")}))
            .collect()
    };
    let channel_messages: serde_json::Map<String, Value> = messages
        .keys()
        .map(|n| {
            (
                n.clone(),
                json!({"$ref": format!("#/components/messages/{n}")}),
            )
        })
        .collect();
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
                "messages": channel_messages,
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
        },
        "operations": {
            "receiveResults": {
                "action": "receive",
                "title": "Receive results",
                "summary": "Frames the daemon pushes: results, errors, the end, gaps, and the answers to records sent on the socket.",
                "channel": {"$ref": "#/channels/results"},
                "messages": refs(&["result", "error", "end", "gap", "ack", "nack"]),
            },
            "sendRecords": {
                "action": "send",
                "title": "Send records on the socket",
                "summary": "Each text or binary frame is one record; at most `limits.ws_max_in_flight` await their acknowledgement at once.",
                "channel": {"$ref": "#/channels/results"},
                "messages": refs(&["record"]),
                "reply": {
                    "channel": {"$ref": "#/channels/results"},
                    "messages": refs(&["ack", "nack"]),
                },
            },
        },
        "components": {
            "messages": messages,
            "schemas": schemas,
            "securitySchemes": {
                "api_key": {"type": "httpApiKey", "name": "X-API-Key", "in": "header"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "access_token": {"type": "httpApiKey", "name": "access_token", "in": "query"},
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
        _ => "Nack",
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
        Close::TokenExpired => "the stream token expired: reconnect with a new one",
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

//! What can go wrong talking to a daemon, typed by the daemon's own error codes.

use std::time::Duration;

use reqwest::StatusCode;
use streamgate_wire::{ErrorBody, ErrorCode, ErrorObject};

/// An error the daemon answered, or a failure to reach it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon refused: an HTTP error, a `nack`, a `refused` subscription.
    #[error("{code}: {message}{}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Server {
        /// The HTTP status, for an HTTP answer.
        status: Option<StatusCode>,
        code: ErrorCode,
        message: String,
        /// From `Retry-After`.
        retry_after: Option<Duration>,
        /// On a 503 from a send: how many leading records were stored.
        acknowledged: Option<usize>,
        /// On a refused NDJSON batch: the line (of the batch) at fault.
        line: Option<usize>,
        /// On `schema_violation`: each violation, with its line and place in the record.
        violations: Vec<streamgate_wire::Violation>,
    },
    /// The request never reached the daemon (nothing can have been stored).
    #[error("cannot connect to {url} ({cause}); is `streamctl serve` running there?")]
    Connect {
        url: String,
        /// The innermost cause only (reqwest's chain repeats the URL at every level).
        cause: String,
    },
    /// The request may or may not have reached the daemon.
    #[error("request to {url} failed: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The daemon answered with something this client cannot read (a version skew).
    #[error("unreadable answer from {url}: {message}")]
    Unreadable { url: String, message: String },
    /// The client was closed, or its connection task is gone.
    #[error("the client is closed")]
    Closed,
    /// A credential from the token source could not be had.
    #[error("no token: {0}")]
    Token(String),
}

impl Error {
    /// The daemon's code, for an answer of the daemon.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// An error object of a frame (`nack`, `refused`) as an error.
    pub fn from_object(error: ErrorObject) -> Self {
        Error::Server {
            status: None,
            code: error.code,
            message: error.message,
            retry_after: None,
            acknowledged: error.acknowledged,
            line: error.line,
            violations: error.violations,
        }
    }

    /// The same error for another waiter (a transport failure's cause as text).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Error::Server {
                status,
                code,
                message,
                retry_after,
                acknowledged,
                line,
                violations,
            } => Error::Server {
                status: *status,
                code: code.clone(),
                message: message.clone(),
                retry_after: *retry_after,
                acknowledged: *acknowledged,
                line: *line,
                violations: violations.clone(),
            },
            Error::Connect { url, cause } => Error::Connect {
                url: url.clone(),
                cause: cause.clone(),
            },
            Error::Transport { url, source } => Error::Connect {
                url: url.clone(),
                cause: source.to_string(),
            },
            Error::Unreadable { url, message } => Error::Unreadable {
                url: url.clone(),
                message: message.clone(),
            },
            Error::Closed => Error::Closed,
            Error::Token(why) => Error::Token(why.clone()),
        }
    }

    /// Whether trying again later may succeed: the daemon or broker is busy, starting,
    /// stopping or away, or the answer never came.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Server { code, .. } => matches!(
                code,
                ErrorCode::RateLimited
                    | ErrorCode::BacklogFull
                    | ErrorCode::NotReady
                    | ErrorCode::ShuttingDown
                    | ErrorCode::BrokerUnavailable
                    | ErrorCode::TooManyConnections
                    | ErrorCode::IdempotencyKeyInFlight
            ),
            Error::Connect { .. } | Error::Transport { .. } => true,
            _ => false,
        }
    }
}

/// The daemon's error body as an [`Error`]; a body that is not one (from a proxy, say)
/// becomes the message.
pub fn server_error(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> Error {
    let error = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => body.error,
        Err(_) => ErrorObject::new(
            ErrorCode::Other("http_error".into()),
            String::from_utf8_lossy(body),
        ),
    };
    Error::Server {
        status: Some(status),
        code: error.code,
        message: error.message,
        retry_after,
        acknowledged: error.acknowledged,
        line: error.line,
        violations: error.violations,
    }
}

/// `Retry-After` in whole seconds, as the daemon sends it.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

//! Errors: `Error` for the daemon's own failures (config, broker, I/O) and `ApiError` for what
//! a client is told. `recover` is the one place where every rejection becomes an HTTP status
//! and a JSON body `{"error": {"code": ..., "message": ...}}`.

use std::convert::Infallible;
use std::time::Duration;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::Rejection;

use crate::wire::{ErrorBody, ErrorObject};

/// Failures of the daemon itself, reported once at the binary's edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid config: {message}")]
    Config { message: String },
    #[error("kafka: {context}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Startup(String),
}

impl Error {
    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Everything a client can be told went wrong. Each variant has one status and one code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidInput(String),
    #[error(
        "missing API key: send it in the X-API-Key header (or a stream token as \
         `Authorization: Bearer <token>`)"
    )]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("invalid stream token (bad signature, issuer or shape, or its key no longer exists)")]
    InvalidToken,
    #[error("the stream token has expired; ask its owner for a new one")]
    TokenExpired,
    /// A stream token used for what its scope does not allow, or where only a key will do.
    #[error("{0}")]
    Forbidden(String),
    #[error("stream {0} not found")]
    StreamNotFound(String),
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("this origin may not call the API (http.allowed_origins)")]
    OriginNotAllowed,
    /// `acknowledged`: leading records of the request stored before the stream's end (they
    /// are the stream's and will be delivered); the rest came after it and are dropped.
    #[error("stream {id} has ended; start a new stream")]
    StreamEnded {
        id: String,
        acknowledged: Option<usize>,
    },
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error(
        "a record of {size} bytes is larger than the broker accepts: at most {limit} bytes \
         (kafka message.max.bytes less 1 KiB for its key and headers)"
    )]
    RecordTooLarge { size: usize, limit: usize },
    #[error(
        "partition {partition} has {records} records ({bytes} bytes) stored and not yet \
         processed (limits.max_unprocessed_records, limits.max_unprocessed_bytes); retry in {} ms",
        retry_after.as_millis()
    )]
    BacklogFull {
        partition: i32,
        records: u64,
        bytes: u64,
        retry_after: Duration,
    },
    #[error("this key has {limit} open streams (limits.max_streams_per_key); end some first")]
    TooManyStreams { limit: usize },
    #[error("this key has {limit} subscribers open here (limits.max_subscribers_per_key)")]
    TooManySubscribers { limit: usize },
    #[error("more than {limit} records in one request (limits.max_records_per_request); split it")]
    TooManyRecords { limit: usize },
    #[error("the request body did not arrive within {} ms (limits.body_read_timeout_ms)", timeout.as_millis())]
    BodyTimeout { timeout: Duration },
    #[error("unsupported content type `{0}`: use application/json or application/x-ndjson{hint}", hint = form_hint(.0))]
    UnsupportedMediaType(String),
    #[error("rate limit exceeded ({scope}); retry in {} ms", retry_after.as_millis())]
    RateLimited {
        scope: &'static str,
        retry_after: Duration,
    },
    /// The broker did not acknowledge in time. `acknowledged` leading records of the request
    /// were stored; the rest were not, so a client may retry exactly those.
    #[error("broker unavailable: {message}")]
    BrokerUnavailable {
        message: String,
        acknowledged: usize,
    },
    /// Not serving yet, or not ready: the reason says which part is missing.
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("the daemon is shutting down; send again (to another instance, or once it is back)")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

impl warp::reject::Reject for ApiError {}

/// `curl -d` sends a form content type by default; say how to fix that.
fn form_hint(content_type: &str) -> &'static str {
    if content_type.starts_with("application/x-www-form-urlencoded") {
        " (curl -d sends a form by default: add -H 'Content-Type: application/json')"
    } else {
        ""
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingKey
            | ApiError::InvalidKey
            | ApiError::InvalidToken
            | ApiError::TokenExpired => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::StreamNotFound(_) | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::OriginNotAllowed => StatusCode::FORBIDDEN,
            ApiError::StreamEnded { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge { .. }
            | ApiError::TooManyRecords { .. }
            | ApiError::RecordTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. }
            | ApiError::BacklogFull { .. }
            | ApiError::TooManyStreams { .. }
            | ApiError::TooManySubscribers { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BrokerUnavailable { .. } | ApiError::NotReady(_) | ApiError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code; documented in the README.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidInput(_) => "invalid_input",
            ApiError::MissingKey => "missing_api_key",
            ApiError::InvalidKey => "invalid_api_key",
            ApiError::InvalidToken => "invalid_token",
            ApiError::TokenExpired => "token_expired",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::StreamNotFound(_) => "stream_not_found",
            ApiError::RouteNotFound => "route_not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::StreamEnded { .. } => "stream_ended",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::TooManyRecords { .. } => "too_many_records",
            ApiError::RecordTooLarge { .. } => "record_too_large",
            ApiError::BodyTimeout { .. } => "request_timeout",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::BacklogFull { .. } => "backlog_full",
            ApiError::TooManyStreams { .. } => "too_many_streams",
            ApiError::TooManySubscribers { .. } => "too_many_subscribers",
            ApiError::BrokerUnavailable { .. } => "broker_unavailable",
            ApiError::NotReady(_) => "not_ready",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The error object of the body, also inside `nack` frames.
    pub fn to_object(&self) -> ErrorObject {
        ErrorObject {
            code: self.code().to_string(),
            message: self.to_string(),
            acknowledged: match self {
                ApiError::BrokerUnavailable { acknowledged, .. } => Some(*acknowledged),
                ApiError::StreamEnded { acknowledged, .. } => *acknowledged,
                _ => None,
            },
        }
    }

    pub fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.to_object(),
        };
        let mut resp = crate::api::json(self.status(), &body);
        let retry_after = match &self {
            ApiError::RateLimited { retry_after, .. }
            | ApiError::BacklogFull { retry_after, .. } => Some(*retry_after),
            ApiError::NotReady(_) | ApiError::ShuttingDown => Some(Duration::from_secs(1)),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            // Retry-After is whole seconds; round up so a client never retries too early.
            let secs = retry_after.as_millis().div_ceil(1000).max(1);
            resp.headers_mut()
                .insert("retry-after", warp::http::HeaderValue::from(secs as u64));
        }
        resp
    }
}

/// Maps every rejection, ours and warp's, to a status and a JSON body.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    Ok(api_error_for(&rejection).into_response())
}

fn api_error_for(rejection: &Rejection) -> ApiError {
    if let Some(e) = rejection.find::<ApiError>() {
        return e.clone();
    }
    if rejection
        .find::<warp::filters::cors::CorsForbidden>()
        .is_some()
    {
        return ApiError::OriginNotAllowed;
    }
    if rejection.is_not_found() {
        return ApiError::RouteNotFound;
    }
    if let Some(e) = rejection.find::<warp::reject::UnsupportedMediaType>() {
        return ApiError::UnsupportedMediaType(e.to_string());
    }
    if let Some(e) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        return ApiError::InvalidInput(format!("invalid JSON body: {e}"));
    }
    if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        return ApiError::InvalidInput(e.to_string());
    }
    if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        return ApiError::InvalidInput(e.to_string());
    }
    if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        return ApiError::InvalidInput(e.to_string());
    }
    if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        return ApiError::MethodNotAllowed;
    }
    if let Some(e) = rejection.find::<warp::reject::LengthRequired>() {
        return ApiError::InvalidInput(e.to_string());
    }
    tracing::error!(?rejection, "unhandled rejection");
    ApiError::Internal("unexpected error".into())
}

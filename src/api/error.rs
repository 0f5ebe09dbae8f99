//! What a client is told went wrong, and the one place where it becomes HTTP. The domain rooms
//! return their own errors (`auth::Denied`, `quota::Limited`, `ingest::Refused`,
//! `RegistryError`, `DeliveryError`, `InvalidParam`, `SignError`, `SpecError`); each becomes an [`ApiError`] through one
//! `From` impl here, every `ApiError` has one [`ErrorCode`], and every code one status
//! ([`status_of`]). [`recover`] maps every rejection, ours and warp's, to a status and a JSON
//! body `{"error": {"code": ..., "message": ...}}`; `nack` frames carry the same object.

use std::convert::Infallible;
use std::time::Duration;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::auth::tokens::SignError;
use crate::auth::Denied;
use crate::delivery::{DeliveryError, InvalidParam};
use crate::ingest::Refused;
use crate::processing::SpecError;
use crate::quota::Limited;
use crate::registry::RegistryError;
use crate::wire::{ErrorBody, ErrorCode, ErrorObject};

/// Everything a client can be told went wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// A credential missing, wrong, expired, or used beyond its scope.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// Over a rate limit.
    #[error(transparent)]
    Limited(#[from] Limited),
    /// What ingest would not store (or could not, with how much of a batch it did).
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("{0}")]
    InvalidInput(String),
    #[error("stream {0} not found")]
    StreamNotFound(String),
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("this origin may not call the API (http.allowed_origins)")]
    OriginNotAllowed,
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body did not arrive within {} ms (limits.body_read_timeout_ms)", timeout.as_millis())]
    BodyTimeout { timeout: Duration },
    #[error("this key has {limit} open streams (limits.max_streams_per_key); end some first")]
    TooManyStreams { limit: usize },
    #[error("this key has {limit} subscribers open here (limits.max_subscribers_per_key)")]
    TooManySubscribers { limit: usize },
    #[error(
        "this connection has {limit} subscriptions (limits.max_subscriptions_per_connection); \
         unsubscribe from some or open another connection"
    )]
    TooManySubscriptions { limit: usize },
    /// The broker could not be reached for something other than storing records (the
    /// registry, a replay, a results partition to read).
    #[error("broker unavailable: {0}")]
    BrokerUnavailable(String),
    /// Not serving yet, or not ready: the reason says which part is missing.
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("the daemon is shutting down; send again (to another instance, or once it is back)")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

impl warp::reject::Reject for ApiError {}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError::BrokerUnavailable(e.to_string())
    }
}

impl From<DeliveryError> for ApiError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::Unavailable(why) => ApiError::BrokerUnavailable(why),
            DeliveryError::Internal(why) => ApiError::Internal(why),
        }
    }
}

impl From<InvalidParam> for ApiError {
    fn from(e: InvalidParam) -> Self {
        ApiError::InvalidInput(e.to_string())
    }
}

impl From<SignError> for ApiError {
    fn from(e: SignError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        ApiError::InvalidInput(e.to_string())
    }
}

/// The status every code is answered with (the errors table of `docs/api.md` is checked
/// against this).
pub fn status_of(code: &ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidInput | ErrorCode::SchemaViolation => StatusCode::BAD_REQUEST,
        ErrorCode::MissingApiKey
        | ErrorCode::InvalidApiKey
        | ErrorCode::InvalidToken
        | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden | ErrorCode::OriginNotAllowed => StatusCode::FORBIDDEN,
        ErrorCode::StreamNotFound | ErrorCode::RouteNotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::StreamEnded | ErrorCode::IdempotencyKeyInFlight => StatusCode::CONFLICT,
        ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::PayloadTooLarge | ErrorCode::RecordTooLarge | ErrorCode::TooManyRecords => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::RateLimited
        | ErrorCode::BacklogFull
        | ErrorCode::TooManyStreams
        | ErrorCode::TooManySubscribers
        | ErrorCode::TooManySubscriptions => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::HttpVersionNotSupported => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        ErrorCode::TooManyConnections
        | ErrorCode::NotReady
        | ErrorCode::ShuttingDown
        | ErrorCode::BrokerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal | ErrorCode::ProcessingFailed | ErrorCode::Other(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// How long a refused client should wait before it tries again, when waiting helps.
const RETRY_SOON: Duration = Duration::from_secs(1);

impl ApiError {
    /// The stable code; documented in `docs/api.md`.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Denied(d) => match d {
                Denied::MissingKey => ErrorCode::MissingApiKey,
                Denied::InvalidKey => ErrorCode::InvalidApiKey,
                Denied::InvalidToken | Denied::InvalidJwt(_) => ErrorCode::InvalidToken,
                Denied::TokenExpired => ErrorCode::TokenExpired,
                Denied::Forbidden(_) => ErrorCode::Forbidden,
            },
            ApiError::Limited(_) => ErrorCode::RateLimited,
            ApiError::Refused(r) => r.code(),
            ApiError::InvalidInput(_) => ErrorCode::InvalidInput,
            ApiError::StreamNotFound(_) => ErrorCode::StreamNotFound,
            ApiError::RouteNotFound => ErrorCode::RouteNotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::OriginNotAllowed => ErrorCode::OriginNotAllowed,
            ApiError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::BodyTimeout { .. } => ErrorCode::RequestTimeout,
            ApiError::TooManyStreams { .. } => ErrorCode::TooManyStreams,
            ApiError::TooManySubscribers { .. } => ErrorCode::TooManySubscribers,
            ApiError::TooManySubscriptions { .. } => ErrorCode::TooManySubscriptions,
            ApiError::BrokerUnavailable(_) => ErrorCode::BrokerUnavailable,
            ApiError::NotReady(_) => ErrorCode::NotReady,
            ApiError::ShuttingDown => ErrorCode::ShuttingDown,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        status_of(&self.code())
    }

    /// When to retry: what the limit says for a rate limit or a full backlog, a second for
    /// what passes by itself (start-up, shutdown, a broker outage), nothing otherwise.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Limited(l) => Some(l.retry_after),
            ApiError::Refused(Refused::BacklogFull { retry_after, .. }) => Some(*retry_after),
            ApiError::Refused(Refused::Unstored { .. } | Refused::KeyInFlight { .. })
            | ApiError::BrokerUnavailable(_)
            | ApiError::NotReady(_)
            | ApiError::ShuttingDown => Some(RETRY_SOON),
            _ => None,
        }
    }

    /// The error object of the body, also inside `nack` frames.
    pub fn to_object(&self) -> ErrorObject {
        let (acknowledged, line) = match self {
            ApiError::Refused(Refused::Unstored { acknowledged, .. }) => {
                (Some(*acknowledged), None)
            }
            ApiError::BrokerUnavailable(_) => (Some(0), None),
            ApiError::Refused(Refused::StreamEnded { acknowledged, .. }) => (*acknowledged, None),
            ApiError::Refused(Refused::Invalid { line, .. }) => (None, *line),
            ApiError::Refused(Refused::SchemaViolation { violations, .. }) => {
                (None, violations.first().and_then(|v| v.line))
            }
            _ => (None, None),
        };
        let violations = match self {
            ApiError::Refused(Refused::SchemaViolation { violations, .. }) => violations.clone(),
            _ => Vec::new(),
        };
        ErrorObject {
            code: self.code(),
            message: self.to_string(),
            acknowledged,
            line,
            violations,
        }
    }

    pub fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.to_object(),
        };
        let mut resp = json(self.status(), &body);
        if let Some(retry_after) = self.retry_after() {
            // Retry-After is whole seconds; round up so a client never retries too early.
            let secs = retry_after.as_millis().div_ceil(1000).max(1);
            resp.headers_mut()
                .insert("retry-after", warp::http::HeaderValue::from(secs as u64));
        }
        resp
    }
}

/// A JSON response: the body ends with a newline, so `curl` output ends its line.
pub fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let mut text = serde_json::to_string(body).unwrap_or_else(|_| "null".into());
    text.push('\n');
    warp::reply::with_status(
        warp::reply::with_header(text, "content-type", "application/json"),
        status,
    )
    .into_response()
}

/// Maps every rejection, ours and warp's, to a status and a JSON body.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    Ok(api_error_for(&rejection).into_response())
}

fn api_error_for(rejection: &Rejection) -> ApiError {
    // A foreign origin is refused whatever else is wrong with its request.
    if rejection
        .find::<warp::filters::cors::CorsForbidden>()
        .is_some()
    {
        return ApiError::OriginNotAllowed;
    }
    if let Some(e) = rejection.find::<ApiError>() {
        return e.clone();
    }
    if rejection.is_not_found() {
        return ApiError::RouteNotFound;
    }
    if let Some(e) = rejection.find::<warp::reject::UnsupportedMediaType>() {
        return Refused::UnsupportedMediaType(e.to_string()).into();
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

/// A domain error as a warp rejection.
pub fn reject(e: impl Into<ApiError>) -> Rejection {
    warp::reject::custom(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_has_a_status_that_is_an_error() {
        for code in ErrorCode::KNOWN {
            let status = status_of(code);
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code}"
            );
        }
    }

    /// The errors table of `docs/api.md`: one row per code, each with the status the daemon
    /// answers it with, and every code the daemon answers over HTTP has its row.
    #[test]
    fn the_documented_errors_table_is_the_one_the_daemon_answers() {
        let doc = include_str!("../../docs/api.md");
        let table = doc
            .split("## Errors")
            .nth(1)
            .expect("an Errors section")
            .lines()
            .skip_while(|l| !l.starts_with("| status"))
            .skip(2)
            .take_while(|l| l.starts_with('|'));
        let mut documented = std::collections::BTreeMap::new();
        for row in table {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (status, code) = (cells[1], cells[2]);
            let Some(code) = code.strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
                continue; // `(no body)`
            };
            let code = ErrorCode::parse(code);
            assert!(!matches!(code, ErrorCode::Other(_)), "{row}: no such code");
            assert_eq!(
                status,
                status_of(&code).as_str(),
                "{row}: the daemon answers {code} with {}",
                status_of(&code)
            );
            assert!(
                documented.insert(code.to_string(), row).is_none(),
                "{row}: twice"
            );
        }
        for code in ErrorCode::KNOWN {
            // Only inside `error` frames, documented with the frames.
            if *code == ErrorCode::ProcessingFailed {
                continue;
            }
            assert!(
                documented.contains_key(code.as_str()),
                "docs/api.md has no row for {code}"
            );
        }
    }

    #[test]
    fn the_results_path_says_503_when_the_broker_is_gone() {
        let e = ApiError::from(DeliveryError::Unavailable("no broker".into()));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code(), ErrorCode::BrokerUnavailable);
        assert!(e.retry_after().is_some());
    }
}

//! Errors the HTTP routes answer with. Each maps to a status and a plain-text body a backend
//! developer can act on; internal details go to the log, never to the client.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use twine_store::StoreError;

use crate::room::RoomError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    #[error("Missing API key: send it in the Authorization header.")]
    MissingApiKey,
    #[error("Invalid API Key.")]
    InvalidApiKey,
    #[error("Payload Too Large: the request body is over {0} bytes.")]
    TooLarge(u64),
    #[error(
        "Payload Too Large: the token would be {0} bytes, more than a handshake may carry (--max-payload {1}); name fewer rooms."
    )]
    TokenTooLarge(usize, u64),
    #[error("Request Timeout: the request body did not arrive in time.")]
    BodyTimeout,
    /// A body the original server also refused; the text is the original's where it had one.
    #[error("Malformed Request: {0}")]
    Malformed(&'static str),
    /// A room name outside the rule every entry point shares ([`crate::room`]).
    #[error("Malformed Request: {0}.")]
    BadRoom(#[from] RoomError),
    #[error("Too Many Requests: over the publish rate; retry after {} s.", .0.as_secs())]
    RateLimited(Duration),
    #[error(
        "Service Unavailable: live delivery on this node is {} ms behind, so the message was not accepted; retry later.",
        .0.as_millis()
    )]
    Overloaded(Duration),
    #[error("{}", match .0 {
        StoreError::Full(_) => "Service Unavailable: the archive backlog is full, so the message was not accepted; retry later.",
        StoreError::KeyReused => "Unprocessable: this Idempotency-Key was used for a different message.",
        StoreError::Unconfirmed(_) => "Gateway Timeout: the message was stored, but not confirmed by --redis-min-replicas replicas in time: it is lost if Redis fails over now. Retry with the same Idempotency-Key to settle it.",
        StoreError::Unanswered(_) => "Gateway Timeout: the store did not answer in time, so the message may or may not have been stored. Retry with the same Idempotency-Key to settle it.",
        _ => "Service Unavailable: the message was not stored; retry later.",
    })]
    Store(#[from] StoreError),
    /// A route turned off by the configuration.
    #[error("Not Found")]
    NotFound,
    /// A read (history, presence) the store did not answer.
    #[error("Service Unavailable: the store did not answer; retry later.")]
    StoreRead(StoreError),
    /// A node's Admin UI request refused ([`crate::admin::relay`]).
    #[error(transparent)]
    Relay(#[from] crate::admin::relay::Refusal),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::MissingApiKey | AppError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            AppError::TooLarge(_) | AppError::TokenTooLarge(..) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Relay(refusal) => refusal.status(),
            AppError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            AppError::Malformed(_) | AppError::BadRoom(_) => StatusCode::BAD_REQUEST,
            AppError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Store(StoreError::KeyReused) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Store(StoreError::Unconfirmed(_) | StoreError::Unanswered(_)) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            AppError::Overloaded(_) | AppError::Store(_) | AppError::StoreRead(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// When a client refused for load may try again.
    fn retry_after(&self) -> Option<u64> {
        match self {
            AppError::RateLimited(wait) => Some(wait.as_secs().max(1)),
            AppError::Overloaded(_) => Some(1),
            AppError::Store(e) | AppError::StoreRead(e) if e.is_unavailable() => Some(1),
            _ => None,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            AppError::Store(e) => tracing::error!("publish refused, store failed: {e}"),
            AppError::StoreRead(e) => tracing::error!("read refused, store failed: {e}"),
            other => tracing::debug!(%status, "request refused: {other}"),
        }
        let retry_after = self.retry_after();
        let mut response = (status, self.to_string()).into_response();
        let headers = response.headers_mut();
        if matches!(self, AppError::MissingApiKey | AppError::InvalidApiKey) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(self, AppError::TooLarge(_) | AppError::BodyTimeout) {
            // The rest of the body is not read: close rather than wait for it to end.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

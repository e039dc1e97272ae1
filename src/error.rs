//! Errors the HTTP routes answer with. Each maps to a status and a plain-text body a backend
//! developer can act on; internal details go to the log, never to the client.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use twine_store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    #[error("Missing API key: send it in the Authorization header.")]
    MissingApiKey,
    #[error("Invalid API Key.")]
    InvalidApiKey,
    #[error("Payload Too Large: the request body is over {0} bytes.")]
    TooLarge(u64),
    /// A body the original server also refused; the text is the original's where it had one.
    #[error("Malformed Request: {0}")]
    Malformed(&'static str),
    #[error("{}", match .0 {
        StoreError::Full(_) => "Service Unavailable: the archive backlog is full, so the message was not accepted; retry later.",
        _ => "Service Unavailable: the message was not stored; retry later.",
    })]
    Store(#[from] StoreError),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::MissingApiKey | AppError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Malformed(_) => StatusCode::BAD_REQUEST,
            AppError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            AppError::Store(e) => {
                tracing::error!("publish refused, store failed: {e}");
                self.to_string()
            }
            other => {
                tracing::debug!(%status, "request refused: {other}");
                other.to_string()
            }
        };
        let mut response = (status, body).into_response();
        if matches!(self, AppError::MissingApiKey | AppError::InvalidApiKey) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

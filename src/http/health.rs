//! `GET /`: the health check load balancers were configured against: `201 ok` while the node
//! can store messages, `503` with the reason while its store is unreachable (connected clients
//! stay connected meanwhile; publishing is refused rather than lost).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;

use crate::state::AppState;

/// A store slower than this to answer counts as unavailable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn health(State(app): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    match tokio::time::timeout(CHECK_TIMEOUT, app.history.check()).await {
        Ok(Ok(())) => (StatusCode::CREATED, "ok"),
        Ok(Err(e)) => {
            tracing::warn!("health check: store unavailable: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "degraded: store unavailable",
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "degraded: store not answering",
        ),
    }
}

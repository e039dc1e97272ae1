//! `GET /` (liveness: the original's health check, `201 ok` while the node serves) and
//! `GET /ready` (readiness: `200 ready` while the node can store and deliver messages, else `503`
//! with the reason: draining before it stops, at capacity (`--max-sockets`), the store
//! unavailable, delivery behind; connected
//! clients stay connected meanwhile and publishing is refused rather than lost).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;

use crate::state::AppState;

/// A store slower than this to answer counts as unavailable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn live() -> (StatusCode, &'static str) {
    (StatusCode::CREATED, "ok")
}

pub async fn ready(State(app): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    if app.draining.is_on() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: draining");
    }
    if app.fleet.at_capacity(app.sockets()) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: at --max-sockets");
    }
    match tokio::time::timeout(CHECK_TIMEOUT, app.history.check()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!("readiness: store unavailable: {e}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: store unavailable",
            );
        }
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: store not answering",
            );
        }
    }
    if app.fanout.delay() > app.config.max_delivery_lag {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: live delivery is behind",
        );
    }
    (StatusCode::OK, "ready")
}

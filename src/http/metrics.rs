//! `GET /metrics`: the node's figures in the Prometheus text format (see [`crate::metrics`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::state::AppState;

pub async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let metrics = &app.metrics;
    metrics
        .store_up
        .set(i64::from(app.history.check().await.is_ok()));
    if let Ok(Some(backlog)) = app.history.backlog().await {
        metrics.archive_backlog.set(backlog as i64);
    }
    metrics
        .delivery_lag_seconds
        .set(app.fanout.delay().as_secs_f64());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

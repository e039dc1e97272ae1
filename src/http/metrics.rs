//! `GET /metrics`: the node's figures in the Prometheus text format (see [`crate::metrics`]),
//! public, behind the API key, or not served (`--metrics`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;

use crate::config::MetricsAccess;
use crate::error::AppError;
use crate::state::AppState;

pub async fn metrics(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    match app.config.metrics {
        MetricsAccess::Public => {}
        MetricsAccess::ApiKey => app.api_key.check(&headers)?,
        MetricsAccess::Off => return Err(AppError::NotFound),
    }
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
    metrics.feed(&app.fanout.budget().stats);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    ))
}

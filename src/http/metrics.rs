//! `GET /metrics`: node figures in the Prometheus text format, for dashboards and alerts.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::state::AppState;

pub async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let mut out = String::new();
    let up = app.history.check().await.is_ok();
    let _ = writeln!(
        out,
        "# HELP twine_store_up Whether the store answers (1) or not (0)."
    );
    let _ = writeln!(out, "# TYPE twine_store_up gauge");
    let _ = writeln!(out, "twine_store_up {}", u8::from(up));
    if let Ok(Some(backlog)) = app.history.backlog().await {
        let _ = writeln!(
            out,
            "# HELP twine_archive_backlog Messages accepted but not yet written to the archive."
        );
        let _ = writeln!(out, "# TYPE twine_archive_backlog gauge");
        let _ = writeln!(out, "twine_archive_backlog {backlog}");
    }
    let lag = app.fanout.delay().as_secs_f64();
    let _ = writeln!(
        out,
        "# HELP twine_delivery_lag_seconds How far live delivery on this node runs behind."
    );
    let _ = writeln!(out, "# TYPE twine_delivery_lag_seconds gauge");
    let _ = writeln!(out, "twine_delivery_lag_seconds {lag}");
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

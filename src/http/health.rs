//! `GET /`: the health check load balancers were configured against (201 `ok`).

use axum::http::StatusCode;

pub async fn health() -> (StatusCode, &'static str) {
    (StatusCode::CREATED, "ok")
}

//! The HTTP routes beside Socket.IO, the CORS policy that covers them and the Engine.IO
//! endpoint alike, and the timeouts every request is held to.

pub mod auth;
mod cookie;
mod demo;
mod health;
mod metrics;
mod publish;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::routing::{get, post};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

use crate::state::AppState;

/// The routes, each held to `request_timeout` (Socket.IO is not a route here: its long-polling
/// requests wait by design).
pub fn routes(app: Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .route("/set-cookie", get(cookie::set_cookie))
        .route("/api/twine", post(publish::publish));
    let router = if app.config.demo {
        router.merge(demo::routes(&app.config.demo_dir))
    } else {
        router
    };
    let timeout = app.config.request_timeout;
    router.with_state(app).layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        timeout,
    ))
}

/// Credentialed CORS: an allowed `Origin` is echoed back with
/// `Access-Control-Allow-Credentials: true` (never `*`, which browsers refuse with credentials);
/// with no list every origin is allowed.
pub fn cors(allowed: Option<Vec<String>>) -> CorsLayer {
    let allowed: Option<Vec<HeaderValue>> = allowed.map(|list| {
        list.iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect()
    });
    let origin = AllowOrigin::predicate(move |origin, _| match &allowed {
        None => true,
        Some(list) => list
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(origin.as_bytes())),
    });
    CorsLayer::new()
        .allow_origin(origin)
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(Duration::from_secs(600))
}

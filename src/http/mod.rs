//! The HTTP routes beside Socket.IO, the CORS policy that covers them and the Engine.IO
//! endpoint alike, and the timeouts every request is held to.

mod cookie;
mod demo;
mod health;
mod history;
mod metrics;
mod presence;
mod publish;
mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::routing::{get, post};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

use crate::error::AppError;
use crate::socket::MAX_ROOM_BYTES;
use crate::state::AppState;

/// The routes, each held to `request_timeout` (Socket.IO is not a route here: its long-polling
/// requests wait by design).
pub fn routes(app: Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/", get(health::live))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/set-cookie", get(cookie::set_cookie))
        .route("/api/twine", post(publish::publish))
        .route("/api/token", post(token::mint))
        .route("/api/rooms/{room}/messages", get(history::messages))
        .route("/api/rooms/{room}/presence", get(presence::members));
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

/// A room named in a route's path, held to the same bounds as a subscribe.
fn room_in_path(room: String) -> Result<String, AppError> {
    if room.is_empty() || room.len() > MAX_ROOM_BYTES {
        return Err(AppError::Malformed("room must be 1 to 256 bytes."));
    }
    Ok(room)
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

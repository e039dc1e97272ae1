//! The HTTP routes beside Socket.IO, and the CORS policy that covers them and the Engine.IO
//! polling endpoint alike.

pub mod auth;
mod cookie;
mod demo;
mod health;
mod metrics;
mod publish;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, Method};
use axum::routing::{get, post};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::state::AppState;

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
    router.with_state(app)
}

/// Credentialed CORS: an allowed `Origin` is echoed back with
/// `Access-Control-Allow-Credentials: true` (never `*`, which browsers refuse with credentials);
/// with no list configured every origin is allowed.
pub fn cors(allowed: &[String]) -> CorsLayer {
    let allowed: Vec<HeaderValue> = allowed
        .iter()
        .map(|o| o.trim().trim_end_matches('/'))
        .filter(|o| !o.is_empty())
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let origin = AllowOrigin::predicate(move |origin, _| {
        allowed.is_empty() || allowed.iter().any(|a| a == origin)
    });
    CorsLayer::new()
        .allow_origin(origin)
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(std::time::Duration::from_secs(600))
}

//! The HTTP routes beside Socket.IO, the CORS policy that covers them and the Engine.IO
//! endpoint alike, and the timeouts every request is held to.

mod cookie;
pub mod demo;
mod fleet;
mod health;
mod history;
mod metrics;
mod presence;
mod publish;
mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::routing::{MethodRouter, get, post};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

use crate::config::Role;
use crate::error::AppError;
use crate::state::AppState;

/// A request's body, `limit` bytes at most.
pub async fn read_body(body: axum::body::Body, limit: u64) -> Result<axum::body::Bytes, AppError> {
    axum::body::to_bytes(body, limit as usize)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                AppError::TooLarge(limit)
            } else {
                AppError::BodyTimeout
            }
        })
}

/// Every route the node serves beside Socket.IO, as `(method, path)`. The router is built from
/// this list, so it is the whole of what clients can reach over HTTP (`GET /metrics` counts
/// requests under these names, and the flood test drives each of them).
pub const ROUTES: [(&str, &str); 10] = [
    ("GET", "/"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/set-cookie"),
    ("POST", "/api/twine"),
    ("POST", "/api/token"),
    ("GET", "/api/rooms/{room}/messages"),
    ("GET", "/api/rooms/{room}/presence"),
    ("GET", "/api/fleet"),
    ("POST", crate::admin::relay::PATH),
];

/// Routes only a node that takes publishes serves (`--role both` or `publish`).
const PUBLISHING: [&str; 2] = ["/api/twine", "/demo/publish"];

/// The paths of the routes this configuration serves.
pub fn served(demo: bool, role: Role) -> Vec<&'static str> {
    let demo_routes = demo.then_some(demo::ROUTES.iter()).into_iter().flatten();
    ROUTES
        .iter()
        .chain(demo_routes)
        .map(|(_, path)| *path)
        .filter(|path| role.publishes() || !PUBLISHING.contains(path))
        .collect()
}

/// The handler of each of [`ROUTES`].
fn handler(path: &str) -> MethodRouter<Arc<AppState>> {
    match path {
        "/" => get(health::live),
        "/ready" => get(health::ready),
        "/metrics" => get(metrics::metrics),
        "/set-cookie" => get(cookie::set_cookie),
        "/api/twine" => post(publish::publish),
        "/api/token" => post(token::mint),
        "/api/rooms/{room}/messages" => get(history::messages),
        "/api/rooms/{room}/presence" => get(presence::members),
        "/api/fleet" => get(fleet::listing),
        crate::admin::relay::PATH => post(fleet::admin),
        other => unreachable!("no handler for route {other}"),
    }
}

/// The routes, each held to `request_timeout` (Socket.IO is not a route here: its long-polling
/// requests wait by design) and counted by name.
pub fn routes(app: Arc<AppState>) -> Router {
    let role = app.config.role;
    let mut router = Router::new();
    for (_, path) in ROUTES {
        if role.publishes() || !PUBLISHING.contains(&path) {
            router = router.route(path, handler(path));
        }
    }
    let router = if app.config.demo {
        router.merge(demo::routes(&app.config.demo_dir, role.publishes()))
    } else {
        router
    };
    let router = match &app.config.admin_ui_dir {
        // The Admin UI's pages name their files relative to `/admin/`.
        Some(dir) => router
            .route(
                "/admin",
                get(|| async { axum::response::Redirect::permanent("/admin/") }),
            )
            .nest_service("/admin/", tower_http::services::ServeDir::new(dir)),
        None => router,
    };
    let timeout = app.config.request_timeout;
    let metrics = app.metrics.clone();
    router
        .with_state(app)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .route_layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let metrics = metrics.clone();
                async move {
                    if let Some(path) = request.extensions().get::<MatchedPath>() {
                        metrics.http_request(path.as_str());
                    }
                    next.run(request).await
                }
            },
        ))
}

/// A room named in a route's path, held to the rule every entry point shares.
fn room_in_path(room: String) -> Result<String, AppError> {
    crate::room::check(&room)?;
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

//! The demo page, served when `--demo` is on: `/demo/` is a small live feed built on the
//! published `twine-client-library`, loaded (with socket.io-client) from the npm packages in the
//! demo folder rather than a CDN, and `POST /demo/publish` lets the page post without holding
//! the API key.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;
use tower_http::services::ServeDir;
use twine_store::Publish;

use crate::error::AppError;
use crate::state::AppState;

/// Longest demo post, in characters.
const MAX_TEXT: usize = 500;

/// The demo's routes, as `(method, path)` (see [`super::ROUTES`]); `/demo/` serves the page's
/// files.
pub const ROUTES: [(&str, &str); 2] = [("POST", "/demo/publish"), ("GET", "/demo/")];

pub fn routes(dir: &Path, publishes: bool) -> Router<Arc<AppState>> {
    let modules = dir.join("node_modules");
    let router = Router::new();
    let router = if publishes {
        router.route("/demo/publish", post(publish))
    } else {
        router
    };
    router
        .nest_service(
            "/demo/vendor/twine-client-library",
            ServeDir::new(modules.join("twine-client-library/dist")),
        )
        .nest_service(
            "/demo/vendor/socket.io-client",
            ServeDir::new(modules.join("socket.io-client/dist")),
        )
        .nest_service("/demo", ServeDir::new(dir.join("demo")))
}

#[derive(Deserialize)]
struct Post {
    room: String,
    name: String,
    text: String,
}

async fn publish(
    State(app): State<Arc<AppState>>,
    axum::Json(post): axum::Json<Post>,
) -> Result<(StatusCode, &'static str), AppError> {
    // Without a key, the page's posts share the API key's publish rate and delivery's bound.
    app.admit(crate::publish::Source::Backend)?;
    crate::room::check(&post.room)?;
    if post.text.trim().is_empty() || post.text.chars().count() > MAX_TEXT {
        return Err(AppError::Malformed("text must be 1 to 500 characters."));
    }
    let name: String = post.name.trim().chars().take(40).collect();
    let payload = json!({ "name": name, "text": post.text.trim() }).to_string();
    app.history
        .append(Publish::new(&post.room, &payload))
        .await?;
    Ok((StatusCode::CREATED, "ok"))
}

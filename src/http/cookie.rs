//! `GET /set-cookie`: gives a browser its `twineid` session cookie, once.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::session::{COOKIE_NAME, twineid};
use crate::state::AppState;

pub async fn set_cookie(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if twineid(&headers).is_some() {
        return "Cookie already set".into_response();
    }
    let max_age = app.config.recovery_window;
    let expires = httpdate::fmt_http_date(SystemTime::now() + max_age);
    // Cross-site pages need SameSite=None, which browsers accept only with Secure.
    let site = if app.config.cookie_secure {
        "Secure; SameSite=None"
    } else {
        "SameSite=Lax"
    };
    let cookie = format!(
        "{COOKIE_NAME}={}; Max-Age={}; Path=/; Expires={expires}; HttpOnly; {site}",
        uuid::Uuid::new_v4(),
        max_age.as_secs(),
    );
    let mut response = "First cookie set".into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("cookie is ASCII"),
    );
    response
}

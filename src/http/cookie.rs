//! `GET /set-cookie`: gives a browser its `twineid` session cookie, once.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};

use crate::session::{COOKIE_NAME, twineid};
use crate::state::AppState;

pub async fn set_cookie(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if twineid(&headers).is_some() {
        return "Cookie already set".into_response();
    }
    let window = app.config.recovery_window;
    let lifetime = cookie::time::Duration::try_from(window).unwrap_or(cookie::time::Duration::DAY);
    let secure = app.config.cookie_secure;
    let cookie = Cookie::build((COOKIE_NAME, uuid::Uuid::new_v4().to_string()))
        .max_age(lifetime)
        .expires(cookie::time::OffsetDateTime::now_utc() + lifetime)
        .path("/")
        .http_only(true)
        // Cross-site pages need SameSite=None, which browsers accept only with Secure.
        .secure(secure)
        .same_site(if secure {
            SameSite::None
        } else {
            SameSite::Lax
        })
        .build();
    let mut response = "First cookie set".into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie.to_string()).expect("cookie is ASCII"),
    );
    response
}

//! `POST /api/token`: a backend holding the API key mints a short-lived token for one of its
//! users, to pass to the page that connects with it (`auth: {token}`), optionally limited to some
//! rooms.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::config::parse_duration;
use crate::error::AppError;
use crate::state::AppState;

/// Bytes of a CONNECT packet around its token (`40{"token":"…"}` and Engine.IO's framing), with
/// room to spare.
const HANDSHAKE_FRAMING: usize = 64;

/// What may be asked of a token; every field may be left out (an empty body too).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    /// Who the token is for (the `sub` claim).
    sub: Option<String>,
    /// Rooms the connection may join: names, or prefixes ending in `*`. Absent: any room.
    rooms: Option<Vec<String>>,
    /// Rooms the connection may publish to with `--client-publish token`. Absent: none.
    publish: Option<Vec<String>>,
    /// Lifetime, e.g. `10m` (capped by `--token-max-ttl`).
    ttl: Option<String>,
}

#[derive(Serialize)]
pub struct Minted {
    token: String,
    /// Seconds since the epoch.
    expires_at: u64,
}

pub async fn mint(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Minted>), AppError> {
    app.api_key.check(&headers)?;
    let request: Request = if body.iter().all(u8::is_ascii_whitespace) {
        Request::default()
    } else {
        serde_json::from_slice(&body).map_err(|_| {
            AppError::Malformed(
                "the body must be a JSON object with optional sub, rooms, publish and ttl.",
            )
        })?
    };
    let ttl = request
        .ttl
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|_| AppError::Malformed("ttl must be a duration such as 10m."))?;
    let (token, expires_at) = app
        .tokens
        .mint(request.sub, request.rooms, request.publish, ttl);
    // The token travels in the handshake's CONNECT packet, which must fit in --max-payload.
    let max_payload = app.config.max_payload;
    if (token.len() + HANDSHAKE_FRAMING) as u64 > max_payload {
        return Err(AppError::TokenTooLarge(token.len(), max_payload));
    }
    Ok((StatusCode::CREATED, Json(Minted { token, expires_at })))
}

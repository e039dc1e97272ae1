//! `GET /api/rooms/{room}/presence`: who is present in a room now, across every node, for
//! backends holding the API key.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;

use crate::error::AppError;
use crate::presence::Members;
use crate::state::AppState;

pub async fn members(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<Members>, AppError> {
    app.api_key.check(&headers)?;
    let room = super::room_in_path(room)?;
    Ok(Json(
        app.presence
            .members(&room)
            .await
            .map_err(AppError::StoreRead)?,
    ))
}

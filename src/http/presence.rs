//! `GET /api/rooms/{room}/presence`: who is present in a room now, across every node, for
//! backends holding the API key: every member at once, read now.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;

use crate::error::AppError;
use crate::state::AppState;

pub async fn members(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    app.api_key.check(&headers)?;
    let room = super::room_in_path(room)?;
    let snapshot = app
        .presence
        .read(&Arc::from(room))
        .await
        .map_err(AppError::StoreRead)?;
    let body = snapshot.all().get().to_owned();
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}

//! `GET /api/rooms/{room}/messages?after=<timestamp>&limit=<n>`: a room's history for backends
//! holding the API key, and for apps that got `recoveryTruncated` and want what they missed, a
//! page at a time across both tiers (Redis and DynamoDB).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use twine_store::{PageLimit, Position};

use crate::error::AppError;
use crate::outbox::Encoded;
use crate::state::AppState;

/// Messages per page unless asked, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Deserialize)]
pub struct Params {
    /// Messages after this timestamp (exclusive); from the oldest kept when absent.
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

/// A page of history: the messages as clients receive them (payload with `timestamp` and
/// `room`), oldest first.
#[derive(Serialize)]
pub struct HistoryPage {
    room: String,
    messages: Vec<Box<RawValue>>,
    /// Ask again with `after` set to this for the next page; `null` when this is the last.
    next: Option<u64>,
    /// Retention already dropped messages after the asked timestamp.
    truncated: bool,
}

pub async fn messages(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Query(params): Query<Params>,
) -> Result<Json<HistoryPage>, AppError> {
    app.api_key.check(&headers)?;
    let room = super::room_in_path(room)?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::Malformed("limit must be 1 to 1000."));
    }
    let page = app
        .history
        .read_page(
            &room,
            Position(params.after),
            Position::MAX,
            PageLimit {
                count: limit,
                bytes: app.config.replay_memory as usize,
            },
        )
        .await
        .map_err(AppError::StoreRead)?;
    let next = page
        .more
        .then(|| page.messages.last().map(|m| m.position.0))
        .flatten();
    let messages = page
        .messages
        .iter()
        .map(|m| Encoded::new(m).into_json())
        .collect();
    Ok(Json(HistoryPage {
        room,
        messages,
        next,
        truncated: page.truncated,
    }))
}

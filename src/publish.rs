//! One path for every publish, from a backend (`POST /api/twine`) or from a client (the
//! `publish` event): the store assigns the message its position, and live delivery, recovery and
//! the archive take it from there alike. Callers first take it from the node's publish rate
//! ([`crate::state::AppState::admit_publish`]).

use std::time::{Duration, SystemTime};

use twine_store::{Appended, Publish};

use crate::error::AppError;
use crate::state::AppState;

/// Longest idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// A publish the store has not run after this long is refused by the store instead, so a
/// refusal means "not stored".
const STORE_DEADLINE: Duration = Duration::from_secs(1);

/// Whether `key` may be an idempotency key: 1 to 255 visible ASCII characters.
pub fn usable_key(key: &str) -> bool {
    (1..=MAX_KEY_BYTES).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Stores `publish` (its payload a JSON object, as text); a repeat of its key stores nothing
/// again.
pub async fn store(app: &AppState, publish: Publish<'_>) -> Result<Appended, AppError> {
    let room = publish.room;
    let publish = publish.with_deadline(Some(SystemTime::now() + STORE_DEADLINE));
    let appended = app.history.append(publish).await?;
    if !appended.repeated {
        app.metrics.published.inc();
    }
    tracing::debug!(%room, position = %appended.message.position, repeated = appended.repeated, "published");
    Ok(appended)
}

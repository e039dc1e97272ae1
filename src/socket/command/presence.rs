//! `presence:enter`, `presence:update`, `presence:leave` and `presence:members`: who is in a room
//! the connection is in, with data of their own ([`crate::presence`] holds the room's side).

use std::sync::Arc;

use serde_json::value::RawValue;

use super::{Command, Decoding, Refusal};
use crate::metrics::Limit;
use crate::room;
use crate::socket::context::{Context, LISTINGS_PER_SECOND};

/// Longest member id a listing may start after (ids are a connection's, far shorter).
const MAX_AFTER: usize = 256;

pub struct Presence {
    /// The event's name, as the `error` event names it.
    pub event: &'static str,
    pub room: Arc<str>,
    pub action: Action,
}

pub enum Action {
    /// `presence:enter` (`update: false`) or `presence:update` (only once entered).
    Enter {
        data: Box<RawValue>,
        update: bool,
    },
    Leave,
    /// A page of the room's members, after the member id `after`.
    Members {
        after: Option<String>,
    },
}

impl Presence {
    pub fn size(&self) -> usize {
        self.room.len()
            + match &self.action {
                Action::Enter { data, .. } => data.get().len(),
                Action::Leave => 0,
                Action::Members { after } => after.as_ref().map_or(0, String::len),
            }
    }
}

/// A presence event's argument: `{room, data}` (`data` only to enter or update, any JSON value
/// up to `--presence-max-data` bytes, `{}` when absent), `{room, after}` to list members after a
/// member id, or the room name alone.
pub fn parse(
    event: &'static str,
    arg: Option<&RawValue>,
    decoding: &Decoding<'_>,
) -> Result<Command, Refusal> {
    #[derive(serde::Deserialize)]
    struct Arg<'a> {
        #[serde(borrow)]
        room: Option<&'a RawValue>,
        data: Option<Box<RawValue>>,
        after: Option<String>,
    }
    let refuse = |message: String| Refusal::new(event, message);
    let (room, data, after) = match arg {
        Some(raw) if raw.get().trim_start().starts_with('{') => {
            let parsed: Arg<'_> = serde_json::from_str(raw.get())
                .map_err(|_| refuse("the argument must be {room, data} or {room, after}".into()))?;
            let room = room::from_json(parsed.room).map_err(|e| refuse(e.to_string()))?;
            (room, parsed.data, parsed.after)
        }
        other => (
            room::from_json(other).map_err(|e| refuse(e.to_string()))?,
            None,
            None,
        ),
    };
    let action = match event {
        "presence:enter" | "presence:update" => {
            let data = data.unwrap_or_else(|| RawValue::from_string("{}".into()).expect("JSON"));
            let max_data = decoding.config.presence_max_data as usize;
            if data.get().len() > max_data {
                let length = data.get().len();
                return Err(refuse(format!(
                    "data is {length} bytes long; the limit is {max_data}"
                )));
            }
            Action::Enter {
                data,
                update: event == "presence:update",
            }
        }
        "presence:leave" => Action::Leave,
        _ if after.as_ref().is_some_and(|a| a.len() > MAX_AFTER) => {
            return Err(refuse(format!(
                "after must be a member id of at most {MAX_AFTER} bytes"
            )));
        }
        _ => Action::Members { after },
    };
    Ok(Command::Presence(Presence {
        event,
        room,
        action,
    }))
}

impl Presence {
    pub async fn apply(self, connection: &Context) {
        let Presence {
            event,
            room,
            action,
        } = self;
        if !connection.rooms(|rooms| rooms.contains_key(&room)) {
            let message = format!("subscribe to room {room} before using its presence");
            return connection.refuse(event, &message).await;
        }
        let presence = &connection.app.presence;
        let sid = connection.sid;
        match action {
            Action::Enter { data, update } => {
                let entering = !presence.is_present(&room, sid);
                let user = connection.grant.user();
                let outbox = &connection.outbox;
                if presence
                    .enter(&room, sid, user, &data, update, outbox)
                    .is_err()
                {
                    let message = format!("not present in room {room}: enter it first");
                    return connection.refuse(event, &message).await;
                }
                // The newcomer gets the room as it is (when its listings allow); the room hears
                // of the newcomer in its next batch of changes.
                if entering && connection.listings.check().is_ok() {
                    list_members(connection, event, &room, None).await;
                }
            }
            Action::Leave => presence.leave(&room, sid),
            Action::Members { after } => {
                if connection.listings.check().is_err() {
                    connection.app.metrics.limit(Limit::EventRate);
                    let message = format!(
                        "member listings are limited to {LISTINGS_PER_SECOND} a second; ask again later"
                    );
                    return connection.refuse(event, &message).await;
                }
                list_members(connection, event, &room, after.as_deref()).await;
            }
        }
    }
}

/// Sends a page of `room`'s members as `presence:members`.
async fn list_members(connection: &Context, event: &str, room: &Arc<str>, after: Option<&str>) {
    match connection.app.presence.snapshot(room).await {
        Ok(snapshot) => {
            let page = snapshot.page(after);
            let _ = connection
                .outbox
                .send_encoded("presence:members", &page)
                .await;
        }
        Err(e) => {
            tracing::warn!(%room, "{event} failed: {e}");
            connection
                .refuse(event, "presence is unavailable; try again")
                .await;
        }
    }
}

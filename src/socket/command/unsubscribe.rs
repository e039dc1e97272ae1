//! `unsubscribe`: the client leaves a room (`roomLeft` in answer), here and in its session.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::{Command, Decoding, Refusal, until_done};
use crate::room;
use crate::socket::context::Context;

pub struct Unsubscribe {
    pub room: Arc<str>,
}

pub fn parse(
    name: &'static str,
    arg: Option<&RawValue>,
    _: &Decoding<'_>,
) -> Result<Command, Refusal> {
    let room = room::from_json(arg).map_err(|e| Refusal::new(name, e.to_string()))?;
    Ok(Command::Unsubscribe(Unsubscribe { room }))
}

impl Unsubscribe {
    pub async fn apply(self, connection: &Context) {
        let room = self.room;
        if let Some(membership) = connection.rooms(|rooms| rooms.remove(&room)) {
            connection.leave_room(&room, membership);
            if let Some(admin) = &connection.app.admin {
                admin.left(connection.sid, &room);
            }
        }
        // Retried while the connection lasts: a leave the session missed would bring the room
        // back on the client's next recovery.
        let left = until_done(
            "recording a leave in the session",
            || connection.is_leaving(),
            || connection.session.leave(&room),
        );
        left.await;
        let left = format!("You have left room: {room}");
        let _ = connection.outbox.send("roomLeft", &left).await;
    }
}

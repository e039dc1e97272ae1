//! `subscribe`: the client joins a room (`roomJoined` in answer), live from the exact position
//! it joined at, which its session records so a recovery starts there.
//!
//! A room the connect hook named joins the same way, without asking the subscribe hook. A store
//! that does not answer delays the join (retried while the connection lasts), it does not turn
//! it into an `error` event the client's library never shows: a join the client asked for is a
//! join its session keeps.

use std::sync::Arc;

use serde_json::value::RawValue;
use twine_store::Joined;

use super::{Command, Decoding, Refusal, until_done};
use crate::fanout::shard::Subscriber;
use crate::hooks::Decision;
use crate::metrics::Limit;
use crate::room;
use crate::socket::context::{Context, Membership};

pub struct Subscribe {
    pub room: Arc<str>,
    /// Asked by the client (the subscribe hook is asked too, and it is answered even when in
    /// the room already), not named by the connect hook.
    pub asked: bool,
}

pub fn parse(
    name: &'static str,
    arg: Option<&RawValue>,
    decoding: &Decoding<'_>,
) -> Result<Command, Refusal> {
    let room = room::from_json(arg).map_err(|e| Refusal::new(name, e.to_string()))?;
    if !decoding.grant.allows(&room) {
        let message = format!("this connection's token does not allow room {room}");
        return Err(Refusal::new(name, message));
    }
    Ok(Command::Subscribe(Subscribe { room, asked: true }))
}

impl Subscribe {
    pub async fn apply(self, connection: &Context) {
        let Subscribe { room, asked } = self;
        let joined = format!("You have joined room: {room}");
        let (known, count) = connection.rooms(|rooms| (rooms.contains_key(&room), rooms.len()));
        if known {
            if asked {
                let _ = connection.outbox.send("roomJoined", &joined).await;
            }
            return;
        }
        let app = &connection.app;
        if count >= app.config.max_rooms as usize {
            return refuse_room_limit(connection).await;
        }
        if asked {
            let user = connection.grant.user();
            let session = connection.session.id();
            if app.hooks.on_subscribe() {
                connection.wait_for_backend().await;
            }
            let decision = app.hooks.subscribe(session, user, &room).await;
            connection.backend_answered(matches!(decision, Decision::Allow(_)));
            if let Decision::Refuse(reason) = decision {
                return connection.refuse("subscribe", &reason).await;
            }
        }
        let outbox = &connection.outbox;
        let slot = outbox.add_room(room.clone(), false);
        let join = until_done(
            "joining a room",
            || connection.is_leaving(),
            || {
                let member = Subscriber::new(connection.sid, outbox.clone(), slot);
                app.fanout.join(&room, member)
            },
        );
        let Some(cut) = join.await else {
            outbox.remove_room(slot);
            return;
        };
        let recorded = until_done(
            "recording a join in the session",
            || connection.is_leaving(),
            || connection.session.join(&room, cut),
        );
        match recorded.await {
            Some(Joined::Full) => {
                app.fanout.leave(&room, connection.sid);
                outbox.remove_room(slot);
                return refuse_room_limit(connection).await;
            }
            Some(_) => {}
            // The connection is going: it leaves its rooms as it ends.
            None => {}
        }
        outbox.has_up_to(slot, cut);
        if let Some(admin) = &app.admin {
            admin.joined(connection.sid, &room);
        }
        connection.rooms(|rooms| rooms.insert(room, Membership { slot, live: true }));
        let _ = outbox.send("roomJoined", &joined).await;
    }
}

async fn refuse_room_limit(connection: &Context) {
    connection.app.metrics.limit(Limit::Rooms);
    let message = format!(
        "this session is in {} rooms already, the most allowed; unsubscribe from one first",
        connection.app.config.max_rooms
    );
    connection.refuse("subscribe", &message).await
}

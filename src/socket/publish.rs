//! The `publish` event: a client publishes `{room_id, payload, id?}` into a room, through the
//! same path as `POST /api/twine` ([`crate::publish`]), so its message is stored, ordered,
//! delivered, recovered and archived alike.
//!
//! Who may publish is `--client-publish`: nobody (`off`), the rooms the connection's token lists
//! (`token`), or whom the publish hook allows (`hook`). The payload passes, in order: its size
//! (`--client-publish-max-bytes`), the word filter, the hook (which may replace it), the node's
//! publish rate; then it is stored. An `id` makes retries safe: the same `id` from the same
//! session, with the same payload as the client sent it, stores the message once, and a retry of
//! one already stored is answered from the store before the filter and the hook run again (the
//! hook may change its answer, or be down, by then). An event that asks for an acknowledgement
//! gets
//! `{ok: true, timestamp, repeated}` or `{ok: false, reason}`; one that does not gets an `error`
//! event when it is refused.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use twine_store::{Appended, Message, Publish, StoreError};

use crate::auth::Grant;
use crate::config::ClientPublish;
use crate::error::AppError;
use crate::hooks::Decision;
use crate::publish;
use crate::room;
use crate::session::SessionHandle;
use crate::state::AppState;
use crate::transport::Sid;

/// A decoded `publish`.
pub struct Request {
    pub room: Arc<str>,
    pub payload: Box<RawValue>,
    pub id: Option<String>,
}

/// What the acknowledgement of a `publish` carries.
#[derive(Serialize)]
pub struct Outcome<'a> {
    pub ok: bool,
    /// The stored message's timestamp (its position in the room).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// The `id` was published before: nothing new was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

impl Outcome<'_> {
    pub fn stored(appended: &Appended) -> Outcome<'static> {
        Outcome {
            ok: true,
            timestamp: Some(appended.message.position.0),
            repeated: Some(appended.repeated),
            reason: None,
        }
    }

    pub fn refused(reason: &str) -> Outcome<'_> {
        Outcome {
            ok: false,
            timestamp: None,
            repeated: None,
            reason: Some(reason),
        }
    }
}

/// Decodes the event's argument: `{room_id, payload, id?}`, as `POST /api/twine`'s body.
pub fn decode(arg: Option<&RawValue>) -> Result<Request, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Arg<'a> {
        #[serde(borrow)]
        room_id: Option<&'a RawValue>,
        payload: Option<Box<RawValue>>,
        id: Option<String>,
    }
    let arg: Arg<'_> = arg
        .and_then(|a| serde_json::from_str(a.get()).ok())
        .ok_or("the argument must be {room_id, payload, id?}")?;
    let room = room::from_json(arg.room_id).map_err(|e| e.to_string())?;
    let payload = arg.payload.ok_or("payload is missing")?;
    if !payload.get().starts_with('{') {
        return Err("payload must be a JSON object".into());
    }
    if let Some(id) = &arg.id
        && !publish::usable_key(id)
    {
        return Err("id must be 1 to 255 visible ASCII characters".into());
    }
    Ok(Request {
        room,
        payload,
        id: arg.id,
    })
}

/// One connection publishing.
pub struct Publisher<'a> {
    pub app: &'a AppState,
    pub session: &'a SessionHandle,
    pub grant: &'a Grant,
    pub sid: Sid,
}

impl Publisher<'_> {
    /// Takes `request` through every check and stores it; the reason the client is told when
    /// it is refused.
    pub async fn publish(&self, request: Request) -> Result<Appended, String> {
        let Request { room, payload, id } = request;
        let app = self.app;
        let config = &app.config;
        match config.client_publish {
            ClientPublish::Off => {
                return Err("publishing from clients is off on this server".into());
            }
            ClientPublish::Token if !self.grant.allows_publishing(&room) => {
                return Err(format!(
                    "this connection's token does not allow publishing to room {room}"
                ));
            }
            ClientPublish::Token | ClientPublish::Hook => {}
        }
        let max = config.client_publish_max_bytes;
        if payload.get().len() as u64 > max {
            return Err(format!(
                "the payload is over {max} bytes (--client-publish-max-bytes)"
            ));
        }
        let twineid = self.session.id();
        // Scoped to the session (a retry after a reconnect is the same publish), or to the
        // connection without one.
        let key = id.map(|id| match twineid {
            Some(session) => format!("client:{session}:{id}"),
            None => format!("client:{}:{id}", self.sid),
        });
        let sent = payload.get().to_owned();
        if key.is_some() {
            let probe = Publish::new(&room, &sent)
                .with_key(key.as_deref())
                .with_identity(Some(&sent));
            match app.history.repeat(&probe).await {
                Ok(Some(position)) => {
                    return Ok(Appended {
                        message: Message {
                            room: room.to_string(),
                            position,
                            payload: sent.clone(),
                        },
                        repeated: true,
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(refusal(AppError::Store(e))),
            }
        }
        let payload = app.hooks.filter.apply(payload);
        let payload = match app
            .hooks
            .publish(twineid, self.grant.user(), &room, payload)
            .await
        {
            Decision::Allow(payload) => payload,
            Decision::Refuse(reason) => return Err(reason),
        };
        if payload.get().len() as u64 > config.max_payload {
            return Err(format!(
                "the payload is over {} bytes (--max-payload)",
                config.max_payload
            ));
        }
        app.admit_publish().map_err(refusal)?;
        let publish = Publish::new(&room, payload.get())
            .with_key(key.as_deref())
            .with_identity(Some(&sent));
        publish::store(app, publish).await.map_err(refusal)
    }
}

/// What the client is told of a publish the node refused.
fn refusal(e: AppError) -> String {
    match e {
        AppError::Store(StoreError::KeyReused) => {
            "this id was used for another message: send a new id with a new message".into()
        }
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(json: &str) -> Result<Request, String> {
        let raw = RawValue::from_string(json.into()).unwrap();
        decode(Some(&raw))
    }

    #[test]
    fn the_argument_is_the_http_body_with_an_optional_id() {
        let request = arg(r#"{"room_id":"chat","payload":{"text":"hi"},"id":"m-1"}"#).unwrap();
        assert_eq!(&*request.room, "chat");
        assert_eq!(request.payload.get(), r#"{"text":"hi"}"#);
        assert_eq!(request.id.as_deref(), Some("m-1"));
        for bad in [
            r#"{"room_id":"chat"}"#,
            r#"{"room_id":"chat","payload":"text"}"#,
            r#"{"room_id":"","payload":{}}"#,
            r#"{"room_id":"chat","payload":{},"id":"has space"}"#,
            r#"{"room_id":"chat","payload":{},"extra":1}"#,
            r#""chat""#,
        ] {
            assert!(arg(bad).is_err(), "{bad}");
        }
        assert!(decode(None).is_err());
    }
}

//! The `publish` event: a client publishes `{room_id, payload, id?}` into a room, through the
//! same path as `POST /api/twine` ([`crate::publish`]), so its message is stored, ordered,
//! delivered, recovered and archived alike.
//!
//! Who may publish is `--client-publish`: nobody (`off`), the rooms the connection's token lists
//! (`token`), or whom the publish hook allows (`hook`). Everything that can be checked of the
//! event alone is checked as it is decoded, before anything is queued: whether clients may
//! publish here, the room, the `id`, the size (`--client-publish-max-bytes`). Then, in the
//! connection's publish lane (its own, so a slow hook holds none of the client's other events,
//! while its publishes keep their order): admission (the delivery lag and the clients' rate),
//! a retry answered from the store, the word filter, the hook (which may replace the payload),
//! the store.
//!
//! An `id` makes retries safe: the same `id` from the same session, with the same payload as the
//! client sent it, stores the message once, and a retry of one already stored is answered from
//! the store before the filter and the hook run again (the hook may change its answer, or be
//! down, by then). An event that asks for an acknowledgement gets `{ok: true, timestamp,
//! repeated}` or `{ok: false, reason}`; one that does not gets an `error` event when it is
//! refused.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use twine_store::{Appended, Message};

use super::{Command, Decoding, Refusal};
use crate::config::ClientPublish;
use crate::hooks::Decision;
use crate::publish::{self, Refused, Source};
use crate::room;
use crate::socket::context::Context;
use crate::transport::Reply;

/// A decoded `publish`, and the acknowledgement it asked for.
pub struct Publish {
    pub room: Arc<str>,
    pub payload: Box<RawValue>,
    pub id: Option<String>,
    pub reply: Option<Box<dyn Reply>>,
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

    pub fn to_raw(&self) -> Box<RawValue> {
        serde_json::value::to_raw_value(self).expect("replies serialize")
    }
}

/// Decodes the event's argument, `{room_id, payload, id?}` as `POST /api/twine`'s body, and
/// checks all that can be checked of it alone.
pub fn parse(
    name: &'static str,
    arg: Option<&RawValue>,
    decoding: &Decoding<'_>,
) -> Result<Command, Refusal> {
    check(arg, decoding).map_err(|refused| Refusal::new(name, refused.to_string()))
}

fn check(arg: Option<&RawValue>, decoding: &Decoding<'_>) -> Result<Command, Refused> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Arg<'a> {
        #[serde(borrow)]
        room_id: Option<&'a RawValue>,
        payload: Option<&'a RawValue>,
        id: Option<String>,
    }
    let config = decoding.config;
    if config.client_publish == ClientPublish::Off {
        return Err(Refused::NotAllowed(
            "publishing from clients is off on this server".into(),
        ));
    }
    let arg: Arg<'_> = arg
        .and_then(|a| serde_json::from_str(a.get()).ok())
        .ok_or_else(|| {
            Refused::NotAllowed("the argument must be {room_id, payload, id?}".into())
        })?;
    let room = room::from_json(arg.room_id)?;
    let max = config.client_publish_max_bytes;
    if arg.payload.is_some_and(|p| p.get().len() as u64 > max) {
        return Err(Refused::TooLarge {
            limit: max,
            setting: "--client-publish-max-bytes",
        });
    }
    if config.client_publish == ClientPublish::Token && !decoding.grant.allows_publishing(&room) {
        return Err(Refused::NotAllowed(format!(
            "this connection's token does not allow publishing to room {room}"
        )));
    }
    let payload = arg
        .payload
        .ok_or_else(|| Refused::NotAllowed("payload is missing".into()))?;
    if !payload.get().starts_with('{') {
        return Err(Refused::NotAnObject);
    }
    if arg.id.as_deref().is_some_and(|id| !publish::usable_key(id)) {
        return Err(Refused::BadKey);
    }
    Ok(Command::Publish(Publish {
        room,
        payload: payload.to_owned(),
        id: arg.id,
        reply: None,
    }))
}

impl Publish {
    pub fn size(&self) -> usize {
        self.room.len() + self.payload.get().len() + self.id.as_ref().map_or(0, String::len)
    }

    pub async fn apply(mut self, connection: &Context) {
        let reply = self.reply.take();
        let outcome = self.store(connection).await;
        match (outcome, reply) {
            (Ok(appended), Some(reply)) => reply.send(&Outcome::stored(&appended).to_raw()),
            (Ok(_), None) => {}
            (Err(refused), Some(reply)) => {
                reply.send(&Outcome::refused(&refused.to_string()).to_raw())
            }
            (Err(refused), None) => connection.refuse("publish", &refused.to_string()).await,
        }
    }

    /// Takes the publish through admission, a retry's answer, the filter and the hook, and
    /// stores it.
    async fn store(self, connection: &Context) -> Result<Appended, Refused> {
        let Publish {
            room, payload, id, ..
        } = self;
        let app = &connection.app;
        if app.hooks.on_publish() {
            connection.wait_for_backend().await;
        }
        app.admit(Source::Client)?;
        let twineid = connection.session.id();
        // Scoped to the session (a retry after a reconnect is the same publish), or to the
        // connection without one.
        let key = id.map(|id| match twineid {
            Some(session) => format!("client:{session}:{id}"),
            None => format!("client:{}:{id}", connection.sid),
        });
        let sent = payload.get().to_owned();
        if key.is_some() {
            let probe = twine_store::Publish::new(&room, &sent)
                .with_key(key.as_deref())
                .with_identity(Some(&sent));
            if let Some(position) = app.history.repeat(&probe).await? {
                return Ok(Appended {
                    message: Message {
                        room: room.to_string(),
                        position,
                        payload: sent.clone(),
                    },
                    repeated: true,
                });
            }
        }
        let payload = app
            .hooks
            .filter
            .apply(payload)
            .map_err(|e| Refused::Unreadable(e.to_string()))?;
        let user = connection.grant.user();
        let decision = app.hooks.publish(twineid, user, &room, payload).await;
        connection.backend_answered(matches!(decision, Decision::Allow(_)));
        let payload = match decision {
            Decision::Allow(payload) => payload,
            Decision::Refuse(reason) => return Err(Refused::Hook(reason)),
        };
        let max = app.config.max_payload;
        if payload.get().len() as u64 > max {
            return Err(Refused::TooLarge {
                limit: max,
                setting: "--max-payload",
            });
        }
        let publish = twine_store::Publish::new(&room, payload.get())
            .with_key(key.as_deref())
            .with_identity(Some(&sent));
        publish::store(&*app.history, &app.metrics, publish).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Grant;
    use crate::config::Config;

    const HOOKED: [&str; 6] = [
        "--client-publish",
        "hook",
        "--publish-hook-url",
        "http://127.0.0.1:9/publish",
        "--hook-secret",
        "s",
    ];

    fn arg(json: &str, args: &[&str]) -> Result<Command, Refused> {
        let args = std::iter::once("twine").chain(args.iter().copied());
        let config = Config::from_sources(args, Vec::new()).unwrap();
        let grant = Grant::default();
        let decoding = Decoding {
            config: &config,
            grant: &grant,
        };
        let raw = RawValue::from_string(json.into()).unwrap();
        check(Some(&raw), &decoding)
    }

    #[test]
    fn the_argument_is_the_http_body_with_an_optional_id() {
        let on = HOOKED;
        let Ok(Command::Publish(publish)) =
            arg(r#"{"room_id":"chat","payload":{"a":1},"id":"m-1"}"#, &on)
        else {
            panic!("decoded")
        };
        assert_eq!(&*publish.room, "chat");
        assert_eq!(publish.payload.get(), r#"{"a":1}"#);
        assert_eq!(publish.id.as_deref(), Some("m-1"));
        for bad in [
            r#"{"room_id":"chat"}"#,
            r#"{"room_id":"chat","payload":"text"}"#,
            r#"{"room_id":"","payload":{}}"#,
            r#"{"room_id":"chat","payload":{},"id":"has space"}"#,
            r#"{"room_id":"chat","payload":{},"extra":1}"#,
            r#""chat""#,
        ] {
            assert!(arg(bad, &on).is_err(), "{bad}");
        }
    }

    #[test]
    fn what_can_be_refused_on_arrival_is_refused_before_it_is_queued() {
        let big = format!(
            r#"{{"room_id":"chat","payload":{{"pad":"{}"}}}}"#,
            "x".repeat(20_000)
        );
        assert!(matches!(
            arg(&big, &[]),
            Err(Refused::NotAllowed(reason)) if reason.contains("off")
        ));
        assert!(matches!(arg(&big, &HOOKED), Err(Refused::TooLarge { .. })));
    }
}

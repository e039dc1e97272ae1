//! A client's events, decoded in one place into [`Command`]s: one file a command, each with its
//! parse (everything that can be checked of the event alone, as it arrives, before anything is
//! queued) and its apply (what it does to the connection, in its turn).
//!
//! [`EVENTS`] is the one table of the events the server handles: the decoder dispatches through
//! it, and `GET /metrics` (and so the flood test) names its events from it, so a new event is
//! one new file and one line here.

pub mod acknowledge;
pub mod presence;
pub mod publish;
pub mod subscribe;
pub mod unsubscribe;

use std::borrow::Cow;
use std::time::Duration;

use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::auth::Grant;
use crate::config::Config;
pub use acknowledge::Acknowledge;
pub use presence::Presence;
pub use publish::Publish;
pub use subscribe::Subscribe;
pub use unsubscribe::Unsubscribe;

/// A client event, decoded and checked as far as it can be without the connection's state.
pub enum Command {
    Acknowledge(Acknowledge),
    /// `stateRecovery`: the client acknowledges each message (twine-client-library's way).
    StateRecovery,
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Presence(Presence),
    Publish(Publish),
    /// An event the contract does not name: ignored, as the original did.
    Other,
}

/// An event refused as it was decoded: the event it names in the `error` event, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub event: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(event: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            event,
            message: message.into(),
        }
    }
}

/// What a parse may look at besides the event: the settings, and what the connection's token
/// allows.
pub struct Decoding<'a> {
    pub config: &'a Config,
    pub grant: &'a Grant,
}

type Parse = fn(&'static str, Option<&RawValue>, &Decoding<'_>) -> Result<Command, Refusal>;

/// Every event a client may send that the server handles, and its parse.
pub const EVENTS: [(&str, Parse); 9] = [
    ("updateSessionTS", acknowledge::parse),
    ("stateRecovery", |_, _, _| Ok(Command::StateRecovery)),
    ("subscribe", subscribe::parse),
    ("unsubscribe", unsubscribe::parse),
    ("publish", publish::parse),
    ("presence:enter", presence::parse),
    ("presence:update", presence::parse),
    ("presence:leave", presence::parse),
    ("presence:members", presence::parse),
];

/// The names of [`EVENTS`].
pub fn event_names() -> Vec<&'static str> {
    EVENTS.iter().map(|(name, _)| *name).collect()
}

impl Command {
    /// Decodes an event's JSON text, `[name, args...]`. `Ok(None)` for an event that could not
    /// be read at all.
    pub fn decode(data: &str, decoding: &Decoding<'_>) -> Result<(Command, &'static str), Refusal> {
        // Most events are acknowledgements, one per message received: read them without serde.
        if let Some(ack) = acknowledge::plain(data) {
            return Ok((Command::Acknowledge(ack), "updateSessionTS"));
        }
        let Ok(Event { name, arg }) = serde_json::from_str::<Event<'_>>(data) else {
            return Err(Refusal::new("?", "the event could not be read"));
        };
        match EVENTS.iter().find(|(known, _)| *known == name) {
            Some((name, parse)) => Ok((parse(name, arg, decoding)?, name)),
            None => Ok((Command::Other, "other")),
        }
    }

    /// Bytes the command holds while it waits its turn (besides its slot).
    pub fn size(&self) -> usize {
        match self {
            Command::Subscribe(s) => s.room.len(),
            Command::Unsubscribe(u) => u.room.len(),
            Command::Presence(p) => p.size(),
            Command::Publish(p) => p.size(),
            Command::Acknowledge(_) | Command::StateRecovery | Command::Other => 0,
        }
    }
}

/// A decoded event: its name and first argument (as raw JSON, parsed only if needed).
struct Event<'a> {
    name: Cow<'a, str>,
    arg: Option<&'a RawValue>,
}

/// An event name, borrowed from the packet unless it has escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Name<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an event name")
            }
            fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(name)))
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(name.to_owned())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

impl<'de> de::Deserialize<'de> for Event<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventVisitor;
        impl<'de> Visitor<'de> for EventVisitor {
            type Value = Event<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("[event, args...]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Event<'de>, A::Error> {
                let Name(name) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let arg = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Event { name, arg })
            }
        }
        deserializer.deserialize_seq(EventVisitor)
    }
}

/// Runs `attempt` until it succeeds or `give_up` says to stop, backing off between tries: a
/// store that pauses delays the work, it does not lose it. `None` when it gave up.
pub async fn until_done<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut give_up: impl FnMut() -> bool,
    mut attempt: impl FnMut() -> F,
) -> Option<T> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match attempt().await {
            Ok(done) => return Some(done),
            Err(e) => {
                // Debug only: in an outage every connection retries, and the store's own metrics
                // (`twine_store_errors_total`, by operation) count the failures.
                tracing::debug!("{what} failed, retrying in {backoff:?}: {e}");
                if give_up() {
                    return None;
                }
                tokio::time::sleep(backoff).await;
                if give_up() {
                    return None;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode_to_name_and_first_argument() {
        let event: Event = serde_json::from_str(r#"["subscribe","news",{"x":1}]"#).unwrap();
        assert_eq!(event.name, "subscribe");
        assert_eq!(event.arg.unwrap().get(), r#""news""#);
        let event: Event = serde_json::from_str(r#"["stateRecovery"]"#).unwrap();
        assert!(event.arg.is_none());
        assert!(serde_json::from_str::<Event>("[]").is_err());
        assert!(serde_json::from_str::<Event>("[7]").is_err());
    }

    #[test]
    fn every_event_in_the_table_decodes_through_its_own_parse() {
        let config = Config::from_sources(["twine"], Vec::new()).unwrap();
        let grant = Grant::default();
        let decoding = Decoding {
            config: &config,
            grant: &grant,
        };
        for (name, _) in EVENTS {
            let data = format!(r#"["{name}","room"]"#);
            let decoded = Command::decode(&data, &decoding);
            // Each either decodes as itself or is refused in its own name: none is "other".
            match decoded {
                Ok((Command::Other, _)) => panic!("{name} decoded as an unknown event"),
                Ok((_, as_name)) => assert_eq!(as_name, name),
                Err(refusal) => assert_eq!(refusal.event, name),
            }
        }
        assert!(matches!(
            Command::decode(r#"["made-up",1]"#, &decoding),
            Ok((Command::Other, "other"))
        ));
    }
}

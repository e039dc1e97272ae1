//! One path for every publish, from a backend (`POST /api/twine`) or from a client (the
//! `publish` event), in one order:
//!
//! 1. what can be checked of the request alone (room, payload, key, size), as it is read;
//! 2. admission ([`Admission::admit`], [`crate::state::AppState::admit`]): the node's delivery lag, then the publish rate of where
//!    it came from (the API key, or the node's clients), before any hook or store work, so an
//!    overloaded node spends nothing on a publish it then refuses;
//! 3. for a client, its filter and hook ([`crate::socket`]);
//! 4. the store assigns the message its position ([`store`]), and live delivery, recovery and
//!    the archive take it from there alike.
//!
//! A refusal is a [`Refused`]; each entry turns it into its status code or acknowledgement.

use std::time::{Duration, SystemTime};

use twine_store::{Appended, Publish, StoreError};

use twine_store::History;

use crate::config::Config;
use crate::error::AppError;
use crate::metrics::{Limit, Metrics};
use crate::rate::{Limiter, limiter, wait_time};
use crate::room::RoomError;

/// Longest idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// A publish the store has not run after this long is refused by the store instead, so a
/// refusal means "not stored".
const STORE_DEADLINE: Duration = Duration::from_secs(1);

/// Why a publish was not stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    #[error("{0}")]
    BadRoom(#[from] RoomError),
    #[error("payload must be a JSON object")]
    NotAnObject,
    #[error("id must be 1 to 255 visible ASCII characters")]
    BadKey,
    #[error("the payload is over {limit} bytes ({setting})")]
    TooLarge { limit: u64, setting: &'static str },
    /// Who published may not publish there (the reason says why).
    #[error("{0}")]
    NotAllowed(String),
    #[error("over the publish rate; retry after {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
    #[error("live delivery on this node is {} ms behind; retry later", .0.as_millis())]
    Overloaded(Duration),
    /// The filter could not read the payload.
    #[error("{0}")]
    Unreadable(String),
    /// The app's backend said no (its reason).
    #[error("{0}")]
    Hook(String),
    #[error("{}", store_refusal(.0))]
    Store(#[from] StoreError),
}

fn store_refusal(e: &StoreError) -> &'static str {
    match e {
        StoreError::KeyReused => {
            "this id was used for another message: send a new id with a new message"
        }
        StoreError::Unconfirmed(_) => {
            "stored, but not confirmed by the replicas in time; retry with the same id to settle it"
        }
        StoreError::Unanswered(_) => {
            "the store did not answer in time: the message may or may not have been stored; retry with the same id to settle it"
        }
        _ => "the message was not stored; retry later",
    }
}

/// Whether `key` may be an idempotency key: 1 to 255 visible ASCII characters.
pub fn usable_key(key: &str) -> bool {
    (1..=MAX_KEY_BYTES).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Where a publish came from: each has a rate of its own, so clients cannot spend the
/// backend's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `POST /api/twine` with the API key (and the demo's page).
    Backend,
    /// A client's `publish` event.
    Client,
}

/// The node's publish rates, one per [`Source`].
pub struct Admission {
    backend: Limiter,
    clients: Limiter,
}

impl Admission {
    pub fn new(config: &Config) -> Admission {
        Admission {
            backend: limiter(config.publish_rate, config.publish_burst),
            clients: limiter(config.client_publish_rate, config.client_publish_burst),
        }
    }

    /// Takes one publish from `source`'s rate, unless live delivery runs too far behind.
    pub fn admit(
        &self,
        source: Source,
        lag: Duration,
        max_lag: Duration,
        metrics: &Metrics,
    ) -> Result<(), Refused> {
        if lag > max_lag {
            metrics.limit(Limit::DeliveryLag);
            return Err(Refused::Overloaded(lag));
        }
        let (limiter, limit) = match source {
            Source::Backend => (&self.backend, Limit::PublishRate),
            Source::Client => (&self.clients, Limit::ClientPublishRate),
        };
        limiter.check().map_err(|not_until| {
            metrics.limit(limit);
            Refused::RateLimited(wait_time(&not_until))
        })
    }
}

/// Stores `publish` (its payload a JSON object, as text); a repeat of its key stores nothing
/// again.
pub async fn store(
    history: &dyn History,
    metrics: &Metrics,
    publish: Publish<'_>,
) -> Result<Appended, Refused> {
    let room = publish.room;
    let publish = publish.with_deadline(Some(SystemTime::now() + STORE_DEADLINE));
    let appended = history.append(publish).await?;
    if !appended.repeated {
        metrics.published.inc();
    }
    tracing::debug!(%room, position = %appended.message.position, repeated = appended.repeated, "published");
    Ok(appended)
}

/// A publish refused on the one publish path, as `POST /api/twine` answers it.
impl From<Refused> for AppError {
    fn from(refused: Refused) -> AppError {
        match refused {
            Refused::BadRoom(e) => AppError::BadRoom(e),
            Refused::NotAnObject => AppError::Malformed("Payload is of an incorrect data type."),
            Refused::BadKey => {
                AppError::Malformed("Idempotency-Key must be 1 to 255 visible ASCII characters.")
            }
            Refused::TooLarge { limit, .. } => AppError::TooLarge(limit),
            Refused::RateLimited(wait) => AppError::RateLimited(wait),
            Refused::Overloaded(lag) => AppError::Overloaded(lag),
            Refused::Store(e) => AppError::Store(e),
            Refused::NotAllowed(_) | Refused::Unreadable(_) | Refused::Hook(_) => {
                AppError::Malformed("The publish was refused.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let args = std::iter::once("twine").chain(args.iter().copied());
        Config::from_sources(args, Vec::new()).unwrap()
    }

    #[test]
    fn clients_and_the_backend_have_rates_of_their_own() {
        let admission = Admission::new(&config(&[
            "--client-publish-rate",
            "1",
            "--client-publish-burst",
            "2",
        ]));
        let metrics = Metrics::new();
        let admit = |source| admission.admit(source, Duration::ZERO, Duration::MAX, &metrics);
        assert!(admit(Source::Client).is_ok());
        assert!(admit(Source::Client).is_ok());
        assert!(matches!(
            admit(Source::Client),
            Err(Refused::RateLimited(_))
        ));
        // Clients that spent theirs leave the backend's untouched.
        for _ in 0..100 {
            assert!(admit(Source::Backend).is_ok());
        }
    }

    #[test]
    fn a_node_behind_refuses_before_taking_from_a_rate() {
        let admission = Admission::new(&config(&["--publish-burst", "1"]));
        let metrics = Metrics::new();
        let behind = Duration::from_secs(1);
        let refused = admission.admit(Source::Backend, behind, Duration::ZERO, &metrics);
        assert!(matches!(refused, Err(Refused::Overloaded(_))));
        assert!(
            admission
                .admit(Source::Backend, Duration::ZERO, Duration::MAX, &metrics)
                .is_ok(),
            "the refusal took nothing from the rate"
        );
    }
}

//! What every request and socket handler shares: the configuration, the stores chosen at start-up,
//! this node's live delivery, its connections' byte meters, and the publish rate limit.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, MonotonicClock};
use governor::{Quota, RateLimiter};
use twine_store::{History, SessionStore};

use crate::config::Config;
use crate::error::AppError;
use crate::fanout::Fanout;
use crate::http::auth::ApiKey;
use crate::net::meter::Meters;
use crate::session::Flusher;

type PublishLimiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    MonotonicClock,
    governor::middleware::NoOpMiddleware<<MonotonicClock as Clock>::Instant>,
>;

pub struct AppState {
    pub config: Config,
    pub api_key: ApiKey,
    pub history: Arc<dyn History>,
    pub sessions: Arc<dyn SessionStore>,
    pub fanout: Arc<Fanout>,
    pub meters: Arc<Meters>,
    pub flusher: Arc<Flusher>,
    publishing: PublishLimiter,
}

impl AppState {
    pub fn new(
        config: Config,
        api_key: ApiKey,
        history: Arc<dyn History>,
        sessions: Arc<dyn SessionStore>,
        fanout: Arc<Fanout>,
        meters: Arc<Meters>,
    ) -> AppState {
        let rate = NonZeroU32::new(config.publish_rate).expect("checked by the config");
        let burst = NonZeroU32::new(config.publish_burst).expect("checked by the config");
        let publishing = RateLimiter::direct_with_clock(
            Quota::per_second(rate).allow_burst(burst),
            MonotonicClock,
        );
        let flusher = Flusher::start(sessions.clone(), config.ack_flush);
        AppState {
            config,
            api_key,
            history,
            sessions,
            fanout,
            meters,
            flusher,
            publishing,
        }
    }

    /// Takes one publish from the API key's rate.
    pub fn admit_publish(&self) -> Result<(), AppError> {
        self.publishing.check().map_err(|not_until| {
            AppError::RateLimited(not_until.wait_time_from(MonotonicClock.now()))
        })
    }
}

//! What every request and socket handler shares: the configuration, the stores chosen at start-up,
//! this node's live delivery, its connections' byte meters, and the publish rate limit.

use std::sync::Arc;

use twine_store::{History, SessionStore, StoreError};

use crate::auth::{ApiKey, Signer, Tokens};
use crate::budget::QueueMemory;
use crate::config::Config;
use crate::drain::Draining;
use crate::fanout::Fanout;
use crate::fleet::FleetView;
use crate::fleet::forward::Forwarder;
use crate::hooks::Hooks;
use crate::metrics::Metrics;
use crate::presence::{PresenceHub, PresenceOptions};
use crate::publish::{Admission, Refused, Source};
use crate::session::Flusher;
use crate::stores::Stores;
use crate::transport::socketio::meter::Meters;

pub struct AppState {
    pub config: Config,
    pub api_key: ApiKey,
    pub tokens: Tokens,
    /// Signs the Socket.IO recovery `pid`s this deployment hands out.
    pub signer: Signer,
    pub history: Arc<dyn History>,
    pub sessions: Arc<dyn SessionStore>,
    pub fanout: Arc<Fanout>,
    pub presence: Arc<PresenceHub>,
    pub meters: Arc<Meters>,
    pub flusher: Arc<Flusher>,
    pub metrics: Arc<Metrics>,
    /// Whether the node is draining before it stops.
    pub draining: Arc<Draining>,
    /// The app's backend in the loop.
    pub hooks: Hooks,
    /// The node's publish rates and delivery-lag bound ([`crate::publish`]).
    pub admission: Admission,
    /// Bytes of client events waiting in the node's connections' queues.
    pub queued_events: Arc<QueueMemory>,
    /// The nodes of the deployment, this one among them.
    pub fleet: Arc<FleetView>,
    /// Sends Engine.IO requests on to the node holding their session.
    pub forwarder: Arc<Forwarder>,
}

impl AppState {
    fn new(
        config: Config,
        api_key: ApiKey,
        stores: Stores,
        fanout: Arc<Fanout>,
        presence: Arc<PresenceHub>,
        meters: Arc<Meters>,
        metrics: Arc<Metrics>,
    ) -> AppState {
        let Stores {
            history,
            sessions,
            fleet,
            ..
        } = stores;
        let flusher = Flusher::start(sessions.clone(), config.ack_flush);
        let secret = config
            .auth_secret
            .as_deref()
            .unwrap_or(api_key.as_str())
            .as_bytes()
            .to_vec();
        let tokens = Tokens::new(config.auth, &secret, config.token_ttl, config.token_max_ttl);
        let signer = Signer::new(&secret);
        let (fleet, shared) = fleet;
        let fleet = FleetView::new(fleet, shared, config.max_sockets, metrics.clone());
        let forwarder = Arc::new(Forwarder::new(
            fleet.me(),
            &secret,
            config.ping_interval + config.ping_timeout,
            metrics.clone(),
        ));
        let hooks = Hooks::new(&config, metrics.clone());
        let admission = Admission::new(&config);
        let queued_events = QueueMemory::new(config.event_queue_memory as usize);
        AppState {
            config,
            api_key,
            tokens,
            signer,
            history,
            sessions,
            fanout,
            presence,
            meters,
            flusher,
            metrics,
            draining: Arc::default(),
            hooks,
            admission,
            queued_events,
            fleet,
            forwarder,
        }
    }

    /// Starts what the node shares over `stores`: their metered views, live delivery, presence
    /// and the flusher.
    pub async fn start(
        config: Config,
        api_key: ApiKey,
        stores: Stores,
    ) -> Result<Arc<AppState>, StoreError> {
        let metrics = Metrics::new();
        let stores = stores.metered(&metrics);
        let feed = stores.history.feed(config.feed_memory as usize).await?;
        let shards = tokio::runtime::Handle::current().metrics().num_workers();
        let fanout = Fanout::start(
            stores.history.clone(),
            feed,
            shards,
            config.send_queue as usize / 4,
            metrics.clone(),
        );
        let presence = PresenceHub::start(
            stores.presence.clone(),
            stores.presence.subscribe().await?,
            fanout.clone(),
            PresenceOptions {
                ttl: config.presence_ttl,
                max_members: config.presence_max_members as usize,
                interval: config.presence_interval,
            },
            metrics.clone(),
        );
        let meters = Arc::new(Meters::default());
        Ok(Arc::new(AppState::new(
            config, api_key, stores, fanout, presence, meters, metrics,
        )))
    }

    /// How many Socket.IO connections this node holds, joined or joining.
    pub fn sockets(&self) -> u64 {
        self.metrics.connections.get().max(0) as u64
    }

    /// Takes one publish from `source`'s rate, unless live delivery runs too far behind
    /// ([`Admission::admit`]).
    pub fn admit(&self, source: Source) -> Result<(), Refused> {
        let lag = self.fanout.delay();
        let max_lag = self.config.max_delivery_lag;
        self.admission.admit(source, lag, max_lag, &self.metrics)
    }
}

//! The node's figures for `GET /metrics` (Prometheus text format, through prometheus-client):
//! connections, messages published, delivered and replayed, delivery and replay latency, store
//! calls, the write-behind backlog, and every limit that tripped.
//!
//! Also the store decorators that time every store call and count its errors, so nothing else
//! needs to know.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use async_trait::async_trait;
use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use twine_store::{
    Appended, Feed, History, Joined, Page, PageLimit, Position, Progress, Publish, ReplayStart,
    Session, SessionStore, StoreError,
};

/// Client events the server does not handle are counted under this name.
const OTHER_EVENT: &str = "other";

/// How a Socket.IO connection began.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Transport {
    Websocket,
    Polling,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: Transport,
}

/// A bound that was reached (see the README's bounds table).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Limit {
    /// A client fell more than its send queue behind and was cut.
    SendQueue,
    /// A client stopped reading while being replayed to, and was cut.
    Stalled,
    /// A client's events came faster than its rate, and some were dropped.
    EventRate,
    /// A subscribe over the room limit.
    Rooms,
    /// A publish over the API key's rate.
    PublishRate,
    /// A publish refused while live delivery ran too far behind.
    DeliveryLag,
    /// A connection refused over the node's total.
    Connections,
    /// A connection refused over its address's share.
    ConnectionsPerAddress,
    /// A presence entry refused: the room had its most members present.
    PresenceMembers,
    /// An Engine.IO handshake refused over the node's pending sessions.
    PendingSessions,
    /// An Engine.IO handshake refused over its address's pending sessions.
    PendingSessionsPerAddress,
    /// A hook call not made: the node had its most calls in flight.
    HooksInFlight,
    /// A client publish over the node's rate for clients.
    ClientPublishRate,
    /// An event refused: its connection had its most bytes of events waiting.
    EventQueue,
    /// An event refused: the node had its most bytes of events waiting.
    EventQueueMemory,
    /// A hook call not made: its connection was refused too often of late.
    HookRefusals,
    /// An Engine.IO handshake refused: the node held `--max-sockets`.
    MaxSockets,
    /// An Engine.IO handshake refused: the node moved sockets away to even out the fleet.
    Rebalancing,
}

impl Transport {
    fn as_str(&self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::Polling => "polling",
        }
    }
}

impl Limit {
    fn as_str(&self) -> &'static str {
        match self {
            Limit::SendQueue => "send_queue",
            Limit::Stalled => "stalled",
            Limit::EventRate => "event_rate",
            Limit::Rooms => "rooms",
            Limit::PublishRate => "publish_rate",
            Limit::DeliveryLag => "delivery_lag",
            Limit::Connections => "connections",
            Limit::ConnectionsPerAddress => "connections_per_address",
            Limit::PresenceMembers => "presence_members",
            Limit::PendingSessions => "pending_sessions",
            Limit::PendingSessionsPerAddress => "pending_sessions_per_address",
            Limit::HooksInFlight => "hooks_in_flight",
            Limit::ClientPublishRate => "client_publish_rate",
            Limit::EventQueue => "event_queue",
            Limit::EventQueueMemory => "event_queue_memory",
            Limit::HookRefusals => "hook_refusals",
            Limit::MaxSockets => "max_sockets",
            Limit::Rebalancing => "rebalancing",
        }
    }

    const ALL: [Limit; 18] = [
        Limit::SendQueue,
        Limit::Stalled,
        Limit::EventRate,
        Limit::Rooms,
        Limit::PublishRate,
        Limit::DeliveryLag,
        Limit::Connections,
        Limit::ConnectionsPerAddress,
        Limit::PresenceMembers,
        Limit::PendingSessions,
        Limit::PendingSessionsPerAddress,
        Limit::HooksInFlight,
        Limit::ClientPublishRate,
        Limit::EventQueue,
        Limit::EventQueueMemory,
        Limit::HookRefusals,
        Limit::MaxSockets,
        Limit::Rebalancing,
    ];
}

// Label values in Prometheus's snake_case.
impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Limit {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: Limit,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabel {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabel {
    pub hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookOutcomeLabel {
    pub hook: &'static str,
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub connections_opened: Family<TransportLabel, Counter>,
    pub published: Counter,
    pub delivered: Counter,
    pub replayed: Counter,
    /// From a message's timestamp (assigned when it was stored) to its hand-over to the local
    /// sockets.
    pub delivery_seconds: Histogram,
    pub replay_seconds: Histogram,
    pub store_seconds: Family<StoreLabel, Histogram>,
    pub store_errors: Family<StoreLabel, Counter>,
    pub limits: Family<LimitLabel, Counter>,
    pub store_up: Gauge,
    pub archive_backlog: Gauge,
    pub delivery_lag_seconds: Gauge<f64, AtomicU64>,
    /// 1 while the node drains before it stops.
    pub draining: Gauge,
    /// Sockets a drain closed.
    pub drain_closed: Counter,
    /// Messages this node took from Redis pub/sub (only the rooms it serves).
    pub redis_received: Counter,
    /// Live messages not fed because the feed's budget was full (their rooms caught up).
    pub feed_dropped: Counter,
    /// Times a Redis subscription was found silent, and made again.
    pub redis_silent: Counter,
    /// Times a Redis subscription was interrupted, and made again.
    pub redis_resubscribed: Counter,
    /// Nodes in the fleet, as this node last saw it (itself included).
    pub fleet_nodes: Gauge,
    /// Socket.IO connections across the fleet, as this node last saw it.
    pub fleet_sockets: Gauge,
    /// Sockets this node moved to even out the fleet.
    pub rebalance_moved: Counter,
    /// Engine.IO requests this node forwarded to the node holding their session.
    pub forwarded: Counter,
    /// WebSockets of other nodes' sessions joined through this node now.
    pub forwarded_websockets: Gauge,
    /// Client events received, by name (those the server does not handle as `other`).
    client_events: Family<EventLabel, Counter>,
    /// HTTP requests to each route.
    http_requests: Family<RouteLabel, Counter>,
    /// Calls to the app's backend, by hook and outcome.
    hook_calls: Family<HookOutcomeLabel, Counter>,
    hook_seconds: Family<HookLabel, Histogram>,
    /// The names events and routes are counted under, fixed at start.
    surface: std::sync::OnceLock<(Vec<&'static str>, Vec<&'static str>)>,
}

/// The route among `known` that serves `path` (a router's matched path): the same route, else
/// the longest folder route (one ending in `/`, the root excepted) that holds it.
fn route_of(known: &[&'static str], path: &str) -> Option<&'static str> {
    if let Some(&route) = known.iter().find(|r| **r == path) {
        return Some(route);
    }
    let within = format!("{path}/");
    known
        .iter()
        .filter(|r| r.len() > 1 && r.ends_with('/') && within.starts_with(**r))
        .max_by_key(|r| r.len())
        .copied()
}

impl Metrics {
    /// Names the client events and routes the node serves, so each shows from the start (at
    /// zero) and nothing else is counted under its own name.
    pub fn name_surface(&self, events: &[&'static str], routes: &[&'static str]) {
        let (events, routes) = self
            .surface
            .get_or_init(|| (events.to_vec(), routes.to_vec()));
        for &event in events.iter().chain([&OTHER_EVENT]) {
            drop(self.client_events.get_or_create(&EventLabel { event }));
        }
        for &route in routes {
            drop(self.http_requests.get_or_create(&RouteLabel { route }));
        }
    }

    /// Counts a call to the app's backend.
    pub fn hook_call(&self, hook: &'static str, outcome: &'static str) {
        self.hook_calls
            .get_or_create(&HookOutcomeLabel { hook, outcome })
            .inc();
    }

    /// The latency of `hook`'s calls.
    pub fn hook_seconds(&self, hook: &'static str) -> Histogram {
        self.hook_seconds.get_or_create(&HookLabel { hook }).clone()
    }

    /// Brings the feed's counters up to `stats`.
    pub fn feed(&self, stats: &twine_store::feed::FeedStats) {
        use std::sync::atomic::Ordering::Relaxed;
        for (counter, now) in [
            (&self.redis_received, stats.received.load(Relaxed)),
            (&self.feed_dropped, stats.dropped.load(Relaxed)),
            (&self.redis_silent, stats.silent.load(Relaxed)),
            (&self.redis_resubscribed, stats.resubscribed.load(Relaxed)),
        ] {
            counter.inc_by(now.saturating_sub(counter.get()));
        }
    }

    /// A client event arrived.
    pub fn client_event(&self, name: &str) {
        let known = self.surface.get().map_or(&[][..], |(events, _)| events);
        let event = known
            .iter()
            .find(|e| **e == name)
            .copied()
            .unwrap_or(OTHER_EVENT);
        self.client_events
            .get_or_create(&EventLabel { event })
            .inc();
    }

    /// A request reached the route `path`.
    pub fn http_request(&self, path: &str) {
        let known = self.surface.get().map_or(&[][..], |(_, routes)| routes);
        if let Some(route) = route_of(known, path) {
            self.http_requests
                .get_or_create(&RouteLabel { route })
                .inc();
        }
    }

    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("twine");
        let metrics = Metrics {
            connections: Gauge::default(),
            connections_opened: Family::default(),
            published: Counter::default(),
            delivered: Counter::default(),
            replayed: Counter::default(),
            delivery_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            replay_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            store_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            store_errors: Family::default(),
            limits: Family::default(),
            store_up: Gauge::default(),
            archive_backlog: Gauge::default(),
            delivery_lag_seconds: Gauge::default(),
            draining: Gauge::default(),
            drain_closed: Counter::default(),
            redis_received: Counter::default(),
            feed_dropped: Counter::default(),
            redis_silent: Counter::default(),
            redis_resubscribed: Counter::default(),
            fleet_nodes: Gauge::default(),
            fleet_sockets: Gauge::default(),
            rebalance_moved: Counter::default(),
            forwarded: Counter::default(),
            forwarded_websockets: Gauge::default(),
            client_events: Family::default(),
            http_requests: Family::default(),
            hook_calls: Family::default(),
            hook_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            surface: std::sync::OnceLock::new(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Socket.IO connections open on this node",
            metrics.connections.clone(),
        );
        registry.register(
            "fleet_nodes",
            "Nodes in the fleet as this node last saw it, itself included",
            metrics.fleet_nodes.clone(),
        );
        registry.register(
            "fleet_sockets",
            "Socket.IO connections across the fleet as this node last saw it",
            metrics.fleet_sockets.clone(),
        );
        registry.register(
            "rebalance_moved",
            "Sockets this node moved to other nodes to even out the fleet",
            metrics.rebalance_moved.clone(),
        );
        registry.register(
            "forwarded_requests",
            "Engine.IO requests forwarded to the node holding their session",
            metrics.forwarded.clone(),
        );
        registry.register(
            "forwarded_websockets",
            "WebSockets of other nodes' sessions joined through this node now",
            metrics.forwarded_websockets.clone(),
        );
        registry.register(
            "connections_opened",
            "Socket.IO connections opened, by the transport they began on",
            metrics.connections_opened.clone(),
        );
        registry.register(
            "messages_published",
            "Messages published through this node",
            metrics.published.clone(),
        );
        registry.register(
            "messages_delivered",
            "Live messages handed to this node's clients",
            metrics.delivered.clone(),
        );
        registry.register(
            "messages_replayed",
            "Missed messages replayed to this node's reconnecting clients",
            metrics.replayed.clone(),
        );
        registry.register(
            "delivery_seconds",
            "From a message's timestamp to its hand-over to this node's clients",
            metrics.delivery_seconds.clone(),
        );
        registry.register(
            "replay_seconds",
            "How long recovering a reconnecting client took",
            metrics.replay_seconds.clone(),
        );
        registry.register(
            "store_seconds",
            "Store calls, by operation",
            metrics.store_seconds.clone(),
        );
        registry.register(
            "store_errors",
            "Store calls that failed, by operation",
            metrics.store_errors.clone(),
        );
        registry.register(
            "limits_reached",
            "Times a bound was reached, by bound",
            metrics.limits.clone(),
        );
        registry.register(
            "store_up",
            "Whether the store answers (1) or not (0)",
            metrics.store_up.clone(),
        );
        registry.register(
            "archive_backlog",
            "Messages accepted but not yet written to the archive",
            metrics.archive_backlog.clone(),
        );
        registry.register(
            "delivery_lag_seconds",
            "How far live delivery on this node runs behind",
            metrics.delivery_lag_seconds.clone(),
        );
        registry.register(
            "hook_calls",
            "Calls to the app's backend, by hook and outcome (allowed, refused, timeout, unreachable, garbled, busy)",
            metrics.hook_calls.clone(),
        );
        registry.register(
            "hook_seconds",
            "How long calls to the app's backend took, by hook",
            metrics.hook_seconds.clone(),
        );
        registry.register(
            "draining",
            "Whether the node is draining before it stops (1) or not (0)",
            metrics.draining.clone(),
        );
        registry.register(
            "drain_closed",
            "Sockets closed by this node's drain",
            metrics.drain_closed.clone(),
        );
        registry.register(
            "redis_messages_received",
            "Messages this node took from Redis pub/sub (of the rooms it serves)",
            metrics.redis_received.clone(),
        );
        registry.register(
            "feed_dropped",
            "Live messages not fed because the feed's budget (--feed-memory) was full; their rooms caught up from history",
            metrics.feed_dropped.clone(),
        );
        registry.register(
            "redis_silent",
            "Times a Redis subscription went silent (no heartbeat) and was made again",
            metrics.redis_silent.clone(),
        );
        registry.register(
            "redis_resubscribed",
            "Times a Redis pub/sub connection was lost and its subscriptions made again",
            metrics.redis_resubscribed.clone(),
        );
        registry.register(
            "client_events",
            "Socket.IO events received from clients, by event (other: events the server ignores)",
            metrics.client_events.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests, by route",
            metrics.http_requests.clone(),
        );
        // Every label shows from the start, at zero: a dashboard or alert on a limit works before
        // the limit is first reached.
        for limit in Limit::ALL {
            drop(metrics.limits.get_or_create(&LimitLabel { limit }));
        }
        for transport in [Transport::Websocket, Transport::Polling] {
            drop(
                metrics
                    .connections_opened
                    .get_or_create(&TransportLabel { transport }),
            );
        }
        Arc::new(Metrics {
            registry,
            ..metrics
        })
    }

    pub fn limit(&self, limit: Limit) {
        self.limits.get_or_create(&LimitLabel { limit }).inc();
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        let label = StoreLabel { op };
        self.store_seconds
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.store_errors.get_or_create(&label).inc();
        }
        result
    }
}

/// A history whose every call is timed and counted.
pub struct MeteredHistory {
    pub inner: Arc<dyn History>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl History for MeteredHistory {
    async fn repeat(&self, publish: &Publish<'_>) -> Result<Option<Position>, StoreError> {
        self.metrics
            .timed("repeat", self.inner.repeat(publish))
            .await
    }

    async fn append(&self, publish: Publish<'_>) -> Result<Appended, StoreError> {
        self.metrics
            .timed("append", self.inner.append(publish))
            .await
    }

    async fn read_page(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: PageLimit,
    ) -> Result<Page, StoreError> {
        let call = self.inner.read_page(room, after, until, limit);
        self.metrics.timed("read_page", call).await
    }

    async fn replay_start(
        &self,
        room: &str,
        after: Position,
        until: Position,
        max: usize,
    ) -> Result<ReplayStart, StoreError> {
        let call = self.inner.replay_start(room, after, until, max);
        self.metrics.timed("replay_start", call).await
    }

    async fn last_position(&self, room: &str) -> Result<Position, StoreError> {
        let call = self.inner.last_position(room);
        self.metrics.timed("last_position", call).await
    }

    async fn feed(&self, limit: usize) -> Result<Feed, StoreError> {
        self.inner.feed(limit).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.metrics.timed("check", self.inner.check()).await
    }

    async fn backlog(&self) -> Result<Option<u64>, StoreError> {
        self.inner.backlog().await
    }
}

/// A session store whose every call is timed and counted.
pub struct MeteredSessions {
    pub inner: Arc<dyn SessionStore>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl SessionStore for MeteredSessions {
    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.metrics
            .timed("session_load", self.inner.load(id))
            .await
    }

    async fn join(&self, id: &str, room: &str, at: Position) -> Result<Joined, StoreError> {
        let call = self.inner.join(id, room, at);
        self.metrics.timed("session_join", call).await
    }

    async fn leave(&self, id: &str, room: &str) -> Result<(), StoreError> {
        let call = self.inner.leave(id, room);
        self.metrics.timed("session_leave", call).await
    }

    async fn advance(&self, id: &str, progress: &[Progress]) -> Result<(), StoreError> {
        let call = self.inner.advance(id, progress);
        self.metrics.timed("session_advance", call).await
    }

    async fn advance_many(&self, batch: &[(&str, &[Progress])]) -> Result<(), StoreError> {
        let call = self.inner.advance_many(batch);
        self.metrics.timed("session_advance", call).await
    }
}

#[cfg(test)]
mod route_tests {
    #[test]
    fn a_request_is_counted_under_its_own_route_not_the_root() {
        let known = ["/", "/ready", "/api/rooms/{room}/messages", "/demo/"];
        let route = |path| super::route_of(&known, path);
        assert_eq!(route("/"), Some("/"));
        assert_eq!(route("/ready"), Some("/ready"));
        assert_eq!(
            route("/api/rooms/{room}/messages"),
            Some("/api/rooms/{room}/messages")
        );
        assert_eq!(route("/demo"), Some("/demo/"));
        assert_eq!(route("/demo/{*path}"), Some("/demo/"));
        assert_eq!(route("/elsewhere"), None);
    }
}

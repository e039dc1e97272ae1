//! The server's configuration: one struct, read from flags and environment variables, checked
//! whole before anything starts.

use std::net::IpAddr;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, Parser};

/// Every setting of a `twine` node. Each flag can also be given by the environment variable named
/// beside it; a flag wins over its variable.
#[derive(Parser, Debug, Clone)]
#[command(name = "twine", version, about = "Drop-in Twine real-time server")]
pub struct Config {
    /// Port to listen on (HTTP and Socket.IO). Default 3005. The original's `ENV_PORT` is read
    /// when `PORT` is unset.
    #[arg(long, env = "PORT")]
    port: Option<u16>,

    #[arg(long = "env-port", env = "ENV_PORT", hide = true)]
    env_port: Option<u16>,

    /// Address to bind.
    #[arg(long, env = "TWINE_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Key backends send in `Authorization` (raw or `Bearer <key>`) to publish. When unset, a
    /// random key is generated and logged once at start.
    #[arg(long, env = "TWINE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Origins allowed to connect and make credentialed requests, comma-separated (e.g.
    /// `https://app.example.com,http://localhost:5173`). Unset: any origin, echoed back (a
    /// warning is logged at start).
    #[arg(long, env = "TWINE_CORS_ORIGINS")]
    cors_origins: Option<String>,

    /// Mark the `twineid` cookie `Secure` (with `SameSite=None`). Turn off only for plain-http
    /// development on a host other than localhost; the cookie then uses `SameSite=Lax`.
    #[arg(long, env = "TWINE_COOKIE_SECURE", default_value_t = true, action = ArgAction::Set)]
    pub cookie_secure: bool,

    /// Engine.IO ping interval.
    #[arg(long, env = "TWINE_PING_INTERVAL", default_value = "25s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Engine.IO ping timeout.
    #[arg(long, env = "TWINE_PING_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub ping_timeout: Duration,

    /// Largest accepted Engine.IO payload, WebSocket message and `POST /api/twine` body, in bytes.
    #[arg(long, env = "TWINE_MAX_PAYLOAD", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(64..=(1 << 30)))]
    pub max_payload: u64,

    /// Time a client has to join the namespace after the Engine.IO handshake; a session that has
    /// not joined by then is closed. Clients join at once after their handshake, so this is
    /// what an abandoned handshake costs the node.
    #[arg(long, env = "TWINE_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Engine.IO sessions that have not joined the namespace yet, in total; a handshake beyond it
    /// is answered `503` (the client retries).
    #[arg(long, env = "TWINE_MAX_PENDING_SESSIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pending_sessions: u64,

    /// Engine.IO sessions that have not joined the namespace yet, from one IP address (`0`: no
    /// limit, e.g. behind a proxy that connects from one address); a handshake beyond it is
    /// answered `429` (the client retries).
    #[arg(long, env = "TWINE_MAX_PENDING_SESSIONS_PER_IP", default_value_t = 256)]
    pub max_pending_sessions_per_ip: u64,

    /// How long messages and idle sessions are kept for recovery.
    #[arg(long, env = "TWINE_RECOVERY_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub recovery_window: Duration,

    /// Most messages replayed per room to one reconnecting client; beyond it the newest are
    /// replayed and `recoveryTruncated` is emitted.
    #[arg(long, env = "TWINE_MAX_REPLAY", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_replay: u64,

    /// How long a reconnecting browser page has, counted from its handshake, to attach its
    /// `message` listeners before its missed messages are replayed (twine-client-library attaches
    /// them up to 100 ms after creating its socket). `0s` replays at once.
    #[arg(long, env = "TWINE_REPLAY_GRACE", default_value = "250ms", value_parser = parse_duration_or_zero)]
    pub replay_grace: Duration,

    /// How often acknowledgements are resolved and stored; after a node crash, at most this much
    /// of its clients' acknowledgements is lost (those messages are replayed once more).
    #[arg(long, env = "TWINE_ACK_FLUSH", default_value = "100ms", value_parser = parse_duration)]
    pub ack_flush: Duration,

    /// Most messages the in-memory store keeps per room.
    #[arg(long, env = "TWINE_HISTORY_PER_ROOM", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub history_per_room: u64,

    /// Most bytes of history the in-memory store keeps across all rooms; the oldest messages go
    /// first (reported to reconnecting clients by `recoveryTruncated`).
    #[arg(long, env = "TWINE_HISTORY_MEMORY", default_value = "256MiB", value_parser = parse_bytes)]
    pub history_memory: u64,

    /// Most bytes of sessions the in-memory store keeps; the least recently active go first.
    #[arg(long, env = "TWINE_SESSION_MEMORY", default_value = "64MiB", value_parser = parse_bytes)]
    pub session_memory: u64,

    /// Most rooms one session (and so one connection) may be in; a `subscribe` beyond it is
    /// refused with an `error` event.
    #[arg(long, env = "TWINE_MAX_ROOMS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_rooms: u64,

    /// Bytes that may wait to be written to one client. A client that falls this far behind is
    /// disconnected (it recovers what it missed when it reconnects); a replay waits instead.
    #[arg(long, env = "TWINE_SEND_QUEUE", default_value = "4MiB", value_parser = parse_bytes)]
    pub send_queue: u64,

    /// Bytes of live messages on their way from the store to this node's sockets. A node that
    /// falls further behind (paused, overloaded) is not fed more: its rooms catch up from the
    /// history instead, in order, so it misses nothing and holds no more than this.
    #[arg(long, env = "TWINE_FEED_MEMORY", default_value = "64MiB", value_parser = parse_bytes)]
    pub feed_memory: u64,

    /// Bytes of history one replay reads ahead of what it has sent.
    #[arg(long, env = "TWINE_REPLAY_MEMORY", default_value = "4MiB", value_parser = parse_bytes)]
    pub replay_memory: u64,

    /// Most open TCP connections; beyond it new ones are answered `503` and closed. Default: the
    /// process's open-files limit less 64.
    #[arg(long, env = "TWINE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,

    /// Most open TCP connections from one IP address (`0`: no limit, e.g. behind a proxy that
    /// connects from one address); beyond it new ones are answered `429` and closed.
    #[arg(long, env = "TWINE_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    pub max_connections_per_ip: u64,

    /// Time a client has to send a request's headers, counted from when its connection opened
    /// or last went idle; idle keep-alive connections are closed after it.
    #[arg(long, env = "TWINE_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Time a client has to send a request's body.
    #[arg(long, env = "TWINE_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Time an HTTP route other than Socket.IO has to answer.
    #[arg(long, env = "TWINE_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Socket.IO events one connection may send per second (acknowledgements of received messages
    /// excepted); beyond it, with `--event-burst` spent, events are dropped with an `error` event.
    #[arg(long, env = "TWINE_EVENT_RATE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub event_rate: u32,

    /// Events one connection may send at once above `--event-rate` (a page subscribing to as
    /// many rooms as `--max-rooms` allows at load).
    #[arg(long, env = "TWINE_EVENT_BURST", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub event_burst: u32,

    /// Publishes per second the API key may make; beyond it, with `--publish-burst` spent,
    /// `POST /api/twine` answers `429` with `Retry-After`.
    #[arg(long, env = "TWINE_PUBLISH_RATE", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub publish_rate: u32,

    /// Publishes the API key may make at once above `--publish-rate`.
    #[arg(long, env = "TWINE_PUBLISH_BURST", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub publish_burst: u32,

    /// How far behind live delivery on this node may run; beyond it `POST /api/twine` answers
    /// `503` with `Retry-After` instead of queueing more than the node can deliver.
    #[arg(long, env = "TWINE_MAX_DELIVERY_LAG", default_value = "500ms", value_parser = parse_duration)]
    pub max_delivery_lag: Duration,

    /// Whether Socket.IO connections must carry a token (an HS256 JWT in the handshake's
    /// `auth.token`): `off` (the original's behaviour), `optional`, or `required`.
    #[arg(long, env = "TWINE_AUTH", value_enum, default_value = "off")]
    pub auth: crate::auth::AuthMode,

    /// Secret tokens are signed with. Default: the API key (as Cerebellum signs its tokens).
    #[arg(long, env = "TWINE_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// Lifetime of tokens minted by `POST /api/token` unless the request asks for less.
    #[arg(long, env = "TWINE_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// Longest lifetime `POST /api/token` grants.
    #[arg(long, env = "TWINE_TOKEN_MAX_TTL", default_value = "24h", value_parser = parse_duration)]
    pub token_max_ttl: Duration,

    /// Socket.IO's connection state recovery for clients without a `twineid` cookie: the CONNECT
    /// reply carries a `pid`, every `message` (and `roomJoined`, `roomLeft`) an offset as its last
    /// argument, and a reconnecting client gets its rooms back and what it missed
    /// (`socket.recovered`). Off by default: it adds an argument to events.
    #[arg(long, env = "TWINE_SOCKETIO_RECOVERY", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub socketio_recovery: bool,

    /// How long a presence entry lasts without its node's heartbeat (every third of it): how long
    /// the members of a node that died stay listed.
    #[arg(long, env = "TWINE_PRESENCE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub presence_ttl: Duration,

    /// Most members present in one room; entering beyond it is refused with an `error` event.
    #[arg(long, env = "TWINE_PRESENCE_MAX_MEMBERS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub presence_max_members: u64,

    /// Largest presence `data` a member may send, in bytes.
    #[arg(long, env = "TWINE_PRESENCE_MAX_DATA", default_value = "1KiB", value_parser = parse_bytes)]
    pub presence_max_data: u64,

    /// How often this node writes its members' presence changes and each room is told of them in
    /// one `presence` event: a member changes at most once per interval (its last change wins),
    /// and member listings are at most this old.
    #[arg(long, env = "TWINE_PRESENCE_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub presence_interval: Duration,

    /// Who may read `GET /metrics`: `public`, `api-key` (the API key in `Authorization`, as a
    /// Prometheus scrape's `authorization` setting sends it) or `off`.
    #[arg(long, env = "TWINE_METRICS", value_enum, default_value = "public")]
    pub metrics: MetricsAccess,

    /// Redis to share history, sessions and live delivery between nodes, e.g.
    /// `redis://cache:6379/0`: one primary, or a Redis Cluster (found out by itself), whose seeds
    /// may be listed comma-separated (`redis://a:7000,redis://b:7000`). Unset: the in-memory
    /// store, one node. The original's `CACHE_ENDPOINT` (`host[:port]`) is read when `REDIS_URL`
    /// is unset.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,

    #[arg(long = "cache-endpoint", env = "CACHE_ENDPOINT", hide = true)]
    cache_endpoint: Option<String>,

    /// Replicas that must hold a published message before the publish is answered `201`
    /// (`WAIT`); `0` keeps Redis's asynchronous replication, where a failover can lose a
    /// message just answered `201`. When they do not confirm in time the publish is answered
    /// `504` (stored, but not confirmed: retry with the same `Idempotency-Key`).
    #[arg(long, env = "TWINE_REDIS_MIN_REPLICAS", default_value_t = 0)]
    pub redis_min_replicas: u32,

    /// How long a publish waits for `--redis-min-replicas`.
    #[arg(long, env = "TWINE_REDIS_MIN_REPLICAS_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    pub redis_min_replicas_timeout: Duration,

    /// What this node does: `both` (the default) holds sockets and takes publishes; `publish`
    /// takes `POST /api/twine` and serves history and health, but holds no sockets (no
    /// `/socket.io/`) and subscribes to nothing; `edge` holds sockets and does not take
    /// publishes. Publishing nodes and socket nodes then scale apart.
    #[arg(long, env = "TWINE_ROLE", value_enum, default_value = "both")]
    pub role: Role,

    /// Prefix of every Redis key and channel, so several deployments can share one Redis.
    #[arg(long, env = "TWINE_REDIS_PREFIX", default_value = "twine")]
    pub redis_prefix: String,

    /// DynamoDB table holding history for the whole recovery window (layout compatible with the
    /// original's `rooms` table). Region, credentials and endpoint come from the AWS SDK's
    /// standard settings (`AWS_REGION`, `AWS_ENDPOINT_URL_DYNAMODB`, ...).
    #[arg(long, env = "TWINE_DYNAMODB_TABLE")]
    pub dynamodb_table: Option<String>,

    /// Create the DynamoDB table (and enable its TTL) when it does not exist.
    #[arg(long, env = "TWINE_DYNAMODB_CREATE_TABLE", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dynamodb_create_table: bool,

    /// Seconds of history Redis keeps in front of DynamoDB. Default 120 with DynamoDB, else the
    /// whole recovery window.
    #[arg(long, env = "TWINE_REDIS_HISTORY_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    redis_history_secs: Option<u64>,

    /// With Redis and DynamoDB: most messages waiting in Redis to be written to DynamoDB. At this
    /// size publishing answers 503 until the backlog drains.
    #[arg(long, env = "TWINE_ARCHIVE_BACKLOG_MAX", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub archive_backlog_max: u64,

    /// Serve the demo page at `/demo/` (a live feed using the published twine-client-library)
    /// with its publish route `POST /demo/publish`. Off by default: the route publishes without
    /// the API key.
    #[arg(long, env = "TWINE_DEMO", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub demo: bool,

    /// Folder holding `demo/` and the npm packages it loads (`node_modules/`).
    #[arg(long, env = "TWINE_DEMO_DIR", default_value = "js-fixtures")]
    pub demo_dir: std::path::PathBuf,

    /// After the signal to stop, how long the node stays up unready (`GET /ready` answers `503`,
    /// new connections are refused) before it closes its sockets: long enough for a load
    /// balancer's readiness check to take it out of rotation.
    #[arg(long, env = "TWINE_DRAIN_DELAY", default_value = "5s", value_parser = parse_duration_or_zero)]
    pub drain_delay: Duration,

    /// Over how long the node then closes its sockets, a few at a time, so the other nodes see a
    /// steady trickle of reconnections instead of a spike. `0s` closes them all at once.
    #[arg(long, env = "TWINE_DRAIN_PERIOD", default_value = "20s", value_parser = parse_duration_or_zero)]
    pub drain_period: Duration,

    /// The app's backend decides who connects: each Socket.IO connection is posted here first
    /// (see README, "Backend hooks"). Off when unset.
    #[arg(long, env = "TWINE_CONNECT_HOOK_URL")]
    pub connect_hook_url: Option<String>,

    /// The app's backend decides who joins a room: each `subscribe` to a room the session does
    /// not hold yet is posted here first. Off when unset.
    #[arg(long, env = "TWINE_SUBSCRIBE_HOOK_URL")]
    pub subscribe_hook_url: Option<String>,

    /// The app's backend decides, and may change, what clients publish (`--client-publish
    /// hook`): each client `publish` is posted here before it is stored.
    #[arg(long, env = "TWINE_PUBLISH_HOOK_URL")]
    pub publish_hook_url: Option<String>,

    /// Key of the `Twine-Signature` on every hook call (HMAC-SHA256); required with any hook.
    #[arg(long, env = "TWINE_HOOK_SECRET", hide_env_values = true)]
    pub hook_secret: Option<String>,

    /// How long a hook call may take before it counts as failed.
    #[arg(long, env = "TWINE_HOOK_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub hook_timeout: Duration,

    /// Calls of each hook in flight at once on this node; a call over it waits its turn (first
    /// come, first served, one per connection) within `--hook-timeout`, else counts as failed.
    #[arg(long, env = "TWINE_HOOK_MAX_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub hook_max_in_flight: u32,

    /// What a connect does when its hook fails (slow, down, busy or garbled): `allow` or
    /// `refuse`.
    #[arg(
        long,
        env = "TWINE_CONNECT_HOOK_FAILURE",
        value_enum,
        default_value = "refuse"
    )]
    pub connect_hook_failure: HookFailure,

    /// What a subscribe does when its hook fails.
    #[arg(
        long,
        env = "TWINE_SUBSCRIBE_HOOK_FAILURE",
        value_enum,
        default_value = "refuse"
    )]
    pub subscribe_hook_failure: HookFailure,

    /// What a client publish does when its hook fails (`allow` stores the client's payload as
    /// the filter left it).
    #[arg(
        long,
        env = "TWINE_PUBLISH_HOOK_FAILURE",
        value_enum,
        default_value = "refuse"
    )]
    pub publish_hook_failure: HookFailure,

    /// Whether clients may publish with the `publish` event: `off`, `hook` (the publish hook
    /// decides each one) or `token` (the connection's token lists the rooms, claim `publish`).
    #[arg(long, env = "TWINE_CLIENT_PUBLISH", value_enum, default_value = "off")]
    pub client_publish: ClientPublish,

    /// A file of words (one per line) masked with `*` in every string value (not key) of a
    /// client-published payload, before its hook: a word filter that needs no backend.
    #[arg(long, env = "TWINE_PUBLISH_FILTER_WORDS")]
    pub publish_filter_words: Option<std::path::PathBuf>,

    /// Largest payload a client may publish, in bytes (as JSON text; within `--max-payload`).
    #[arg(long, env = "TWINE_CLIENT_PUBLISH_MAX_BYTES", default_value = "16KiB", value_parser = parse_bytes)]
    pub client_publish_max_bytes: u64,

    /// Client publishes per second this node accepts from all its clients together (a rate of
    /// their own: clients cannot spend the API key's); beyond it, with
    /// `--client-publish-burst` spent, a publish is refused.
    #[arg(long, env = "TWINE_CLIENT_PUBLISH_RATE", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub client_publish_rate: u32,

    /// Client publishes this node accepts at once above `--client-publish-rate`.
    #[arg(long, env = "TWINE_CLIENT_PUBLISH_BURST", default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub client_publish_burst: u32,

    /// Most bytes of one connection's events waiting to be handled (a subscribe behind a
    /// replay, publishes behind a slow hook); an event beyond it is refused with an `error`
    /// event (a publish asking for an acknowledgement gets `{ok: false}`).
    #[arg(long, env = "TWINE_EVENT_QUEUE", default_value = "256KiB", value_parser = parse_bytes)]
    pub event_queue: u64,

    /// Most bytes of events waiting to be handled across all of this node's connections.
    #[arg(long, env = "TWINE_EVENT_QUEUE_MEMORY", default_value = "64MiB", value_parser = parse_bytes)]
    pub event_queue_memory: u64,

    /// Where the fleet's other nodes reach this one, `host:port` or `host` (with Redis: they
    /// forward it the Engine.IO requests of the sessions it holds, so no balancer needs sticky
    /// sessions). Default: the address it listens on when bound to one, else the address it
    /// reaches Redis from; and the port it listens on.
    #[arg(long, env = "TWINE_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,

    /// Socket.IO connections this node should hold (sessions still joining count too). At it,
    /// `GET /ready` answers `503` and new handshakes are refused with `503` and `Retry-After`
    /// until the node is 5 % under it; its sockets stay. Default: no bound of its own.
    #[arg(long, env = "TWINE_MAX_SOCKETS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sockets: Option<u64>,

    /// Whether a node holding more than its share of the fleet's sockets moves the excess to the
    /// others (`on` or `off`; with Redis only). Default: on with Redis.
    #[arg(long, env = "TWINE_REBALANCE", value_enum)]
    pub rebalance: Option<Switch>,

    /// How far over its share (in percent) a node may hold before it moves sockets away.
    #[arg(long, env = "TWINE_REBALANCE_TOLERANCE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rebalance_tolerance: u32,

    /// Most sockets a node moves away per second while it rebalances.
    #[arg(long, env = "TWINE_REBALANCE_RATE", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rebalance_rate: u32,

    /// Log filter (`error`, `warn`, `info`, `debug`, or per-target directives).
    #[arg(long, env = "TWINE_LOG", default_value = "info")]
    pub log: String,

    /// Log lines as text, or as one JSON object per line (for log collectors).
    #[arg(long, env = "TWINE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// What the settings above parse into, made once when the configuration loads (so nothing
    /// parses them again later).
    #[arg(skip)]
    pub parsed: Parsed,
}

/// Settings parsed into the values they name.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    /// `--cors-origins`: `None` when any origin is allowed.
    pub origins: Option<Vec<String>>,
    /// `--publish-filter-words`, lowercased.
    pub filter_words: Vec<String>,
    /// The hook URLs, by hook.
    pub connect_hook: Option<axum::http::Uri>,
    pub subscribe_hook: Option<axum::http::Uri>,
    pub publish_hook: Option<axum::http::Uri>,
}

/// A feature turned on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// What a node does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Both,
    Publish,
    Edge,
}

impl Role {
    pub fn holds_sockets(self) -> bool {
        self != Role::Publish
    }

    pub fn publishes(self) -> bool {
        self != Role::Edge
    }
}

/// What a call to the app's backend does when the backend cannot answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HookFailure {
    Allow,
    Refuse,
}

/// Whether clients may publish, and who decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientPublish {
    Off,
    Hook,
    Token,
}

/// Who may read `GET /metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsAccess {
    Public,
    ApiKey,
    Off,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Invalid(#[from] clap::Error),
    #[error("unknown setting {0} in the environment (known: {1})")]
    UnknownVariable(String, String),
    #[error("--cors-origins / TWINE_CORS_ORIGINS: {0}")]
    Origins(String),
    #[error(
        "--send-queue ({send_queue} bytes) must hold at least two of the largest messages (--max-payload {max_payload})"
    )]
    SendQueueTooSmall { send_queue: u64, max_payload: u64 },
    #[error("--send-queue ({0} bytes) may be at most {MAX_SEND_QUEUE} bytes (1 GiB)")]
    SendQueueTooLarge(u64),
    #[error("{0}: {1}")]
    Setting(&'static str, String),
}

/// The largest `--send-queue`: one long-polling response takes everything a connection has
/// queued, and must stay within what the transport is told it may carry (see
/// [`crate::ENGINE_MAX_PAYLOAD`]).
pub const MAX_SEND_QUEUE: u64 = 1 << 30;

impl Config {
    /// Reads flags and environment, refusing unknown `TWINE_*` variables so a misspelt setting
    /// fails at start instead of being ignored.
    pub fn load() -> Result<Config, ConfigError> {
        Self::from_sources(std::env::args_os(), std::env::vars())
    }

    /// As [`Config::load`], from the given arguments (first is the program name) and
    /// variables.
    pub fn from_sources<A, V>(args: A, vars: V) -> Result<Config, ConfigError>
    where
        A: IntoIterator,
        A::Item: Into<std::ffi::OsString> + Clone,
        V: IntoIterator<Item = (String, String)>,
    {
        let known: Vec<String> = Config::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        for (name, value) in vars {
            if name.starts_with("TWINE_")
                && !known.contains(&name)
                && !is_service_link(&name, &value)
            {
                let listed = known
                    .iter()
                    .filter(|k| k.starts_with("TWINE_"))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ConfigError::UnknownVariable(name, listed));
            }
        }
        let mut config = Config::try_parse_from(args)?;
        let origins = config.cors_origins()?;
        if config.send_queue < 2 * config.max_payload {
            return Err(ConfigError::SendQueueTooSmall {
                send_queue: config.send_queue,
                max_payload: config.max_payload,
            });
        }
        if config.send_queue > MAX_SEND_QUEUE {
            return Err(ConfigError::SendQueueTooLarge(config.send_queue));
        }
        let [connect_hook, subscribe_hook, publish_hook] = config.check_hooks()?;
        if config.client_publish != ClientPublish::Off
            && config.event_queue < config.client_publish_max_bytes * 2
        {
            return Err(ConfigError::Setting(
                "--event-queue",
                format!(
                    "must hold at least two of the largest client publishes (--client-publish-max-bytes {})",
                    config.client_publish_max_bytes
                ),
            ));
        }
        let filter_words = config.publish_filter_words()?;
        config.parsed = Parsed {
            origins,
            filter_words,
            connect_hook,
            subscribe_hook,
            publish_hook,
        };
        Ok(config)
    }

    /// Each hook's URL, by hook name.
    pub fn hook_urls(&self) -> [(&'static str, Option<&str>); 3] {
        [
            ("connect", self.connect_hook_url.as_deref()),
            ("subscribe", self.subscribe_hook_url.as_deref()),
            ("publish", self.publish_hook_url.as_deref()),
        ]
    }

    /// Checks the hooks' settings; their URLs, parsed, by hook.
    fn check_hooks(&self) -> Result<[Option<axum::http::Uri>; 3], ConfigError> {
        let mut any = false;
        let mut uris = [None, None, None];
        for ((hook, url), parsed) in self.hook_urls().into_iter().zip(&mut uris) {
            let Some(url) = url else { continue };
            any = true;
            let uri: axum::http::Uri = url.parse().map_err(|e| {
                ConfigError::Setting("hook URL", format!("the {hook} hook's URL {url:?}: {e}"))
            })?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(ConfigError::Setting(
                    "hook URL",
                    format!(
                        "the {hook} hook's URL {url:?} must be http://host[:port]/path (for HTTPS, put a proxy on the backend's side)"
                    ),
                ));
            }
            *parsed = Some(uri);
        }
        if any && self.hook_secret.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::Setting(
                "--hook-secret / TWINE_HOOK_SECRET",
                "required with any hook URL: the backend checks each call's Twine-Signature with it".into(),
            ));
        }
        if self.client_publish == ClientPublish::Hook && self.publish_hook_url.is_none() {
            return Err(ConfigError::Setting(
                "--client-publish hook",
                "needs --publish-hook-url".into(),
            ));
        }
        if self.client_publish != ClientPublish::Off && !self.role.publishes() {
            return Err(ConfigError::Setting(
                "--client-publish",
                "needs a node that takes publishes (--role both): an edge node stores none".into(),
            ));
        }
        if self.client_publish == ClientPublish::Token && self.auth == crate::auth::AuthMode::Off {
            return Err(ConfigError::Setting(
                "--client-publish token",
                "needs --auth optional or required: the rooms a client may publish to come from its token".into(),
            ));
        }
        if self.publish_hook_url.is_some() && self.client_publish != ClientPublish::Hook {
            return Err(ConfigError::Setting(
                "--publish-hook-url",
                "is called only with --client-publish hook".into(),
            ));
        }
        Ok(uris)
    }

    /// The words of `--publish-filter-words`, lowercased (none when unset).
    pub fn publish_filter_words(&self) -> Result<Vec<String>, ConfigError> {
        let Some(path) = &self.publish_filter_words else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::Setting("--publish-filter-words", format!("{}: {e}", path.display()))
        })?;
        Ok(text
            .lines()
            .map(|w| w.trim().to_lowercase())
            .filter(|w| !w.is_empty() && !w.starts_with('#'))
            .collect())
    }

    /// The listen port: `--port`/`PORT`, else `ENV_PORT`, else 3005.
    pub fn port(&self) -> u16 {
        self.port.or(self.env_port).unwrap_or(3005)
    }

    /// The Redis to use: `--redis-url`/`REDIS_URL`, else `CACHE_ENDPOINT`.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url
            .as_deref()
            .or(self.cache_endpoint.as_deref())
            .filter(|u| !u.is_empty())
    }

    /// Whether nodes move sockets to even out the fleet: `--rebalance`, on by default with Redis
    /// (nodes share nothing without it).
    pub fn rebalances(&self) -> bool {
        self.redis_url().is_some() && self.rebalance != Some(Switch::Off)
    }

    /// How long Redis keeps messages: `--redis-history-secs`, else 120 s in front of DynamoDB,
    /// else the recovery window.
    pub fn redis_history(&self) -> Duration {
        match (self.redis_history_secs, &self.dynamodb_table) {
            (Some(secs), _) => Duration::from_secs(secs),
            (None, Some(_)) => Duration::from_secs(120),
            (None, None) => self.recovery_window,
        }
    }

    /// The origins allowed, each as `scheme://host[:port]`; `None` when any origin is.
    pub fn cors_origins(&self) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(list) = &self.cors_origins else {
            return Ok(None);
        };
        let origins: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(parse_origin)
            .collect::<Result<_, _>>()
            .map_err(ConfigError::Origins)?;
        if origins.is_empty() {
            return Err(ConfigError::Origins(format!(
                "{list:?} names no origin; unset it to allow any origin"
            )));
        }
        Ok(Some(origins))
    }

    /// Most open TCP connections: `--max-connections`, else the open-files limit less 64 (the
    /// node's own files, Redis and DynamoDB connections).
    pub fn max_connections(&self) -> u64 {
        self.max_connections
            .unwrap_or_else(|| open_files_limit().saturating_sub(64).max(64))
    }
}

/// Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_SERVICE_PORT[_<NAME>]`,
/// `<SERVICE>_PORT=tcp://…` and `<SERVICE>_PORT_<n>_<PROTO>[_…]` for every Service in the
/// namespace; a Service whose name starts with `twine` gives `TWINE_*` variables that are not
/// settings.
fn is_service_link(name: &str, value: &str) -> bool {
    let upper_snake = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    if !upper_snake(name) {
        return false;
    }
    if name.contains("_SERVICE_HOST") || name.contains("_SERVICE_PORT") {
        return true;
    }
    let url_like = ["tcp://", "udp://", "sctp://"]
        .iter()
        .any(|p| value.starts_with(p));
    if name.ends_with("_PORT") && url_like {
        return true;
    }
    // <SERVICE>_PORT_<n>_<PROTO> and its _PROTO, _PORT and _ADDR companions.
    name.split("_PORT_").nth(1).is_some_and(|rest| {
        let mut parts = rest.split('_');
        let number = parts.next().is_some_and(|n| n.parse::<u16>().is_ok());
        let proto = parts
            .next()
            .is_some_and(|p| matches!(p, "TCP" | "UDP" | "SCTP"));
        number && proto
    })
}

/// `scheme://host[:port]` as browsers send it in `Origin`; anything else is refused.
fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim_end_matches('/');
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err(format!("{text:?} is not an origin (scheme://host[:port])"));
    };
    let host_ok = !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' ', '*'])
        && rest
            .rsplit_once(':')
            .is_none_or(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
    if !matches!(scheme, "http" | "https") || !host_ok {
        return Err(format!("{text:?} is not an origin (scheme://host[:port])"));
    }
    Ok(origin.to_ascii_lowercase())
}

/// The soft open-files limit, from `/proc/self/limits` (4,096 when it cannot be read).
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(4096)
}

/// Parses `500ms`, `25s`, `2m`, `24h`, `7d` (anything `humantime` reads); a bare number is
/// refused so that milliseconds are never mistaken for seconds, and so is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration_or_zero(text)?;
    if duration.is_zero() {
        return Err(format!("'{text}' must be longer than zero"));
    }
    Ok(duration)
}

fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{text}' has no unit: write e.g. 500ms, 25s, 2m, 24h or 7d"
        ));
    }
    humantime::parse_duration(text).map_err(|e| format!("'{text}': {e}"))
}

/// Parses a byte size: `65536`, `512KiB`, `4MiB`, `1GiB` (or kB/MB/GB, powers of ten).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' does not start with a whole number"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(scale)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("'{text}' must be more than zero and fit in 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let args = std::iter::once("twine").chain(args.iter().copied());
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_sources(args, vars)
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = load(&[], &[]).unwrap();
        assert_eq!(c.port(), 3005);
        assert!(c.cookie_secure);
        assert_eq!(c.ping_interval, Duration::from_secs(25));
        assert_eq!(c.ping_timeout, Duration::from_secs(20));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.max_pending_sessions, 10_000);
        assert_eq!(c.max_pending_sessions_per_ip, 256);
        assert_eq!(c.presence_interval, Duration::from_secs(1));
        assert_eq!(c.metrics, MetricsAccess::Public);
        assert_eq!(c.max_payload, 1_000_000);
        assert_eq!(c.recovery_window, Duration::from_secs(86_400));
        assert_eq!(c.max_replay, 10_000);
        assert_eq!(c.replay_grace, Duration::from_millis(250));
        assert_eq!(c.send_queue, 4 << 20);
        assert_eq!(c.max_rooms, 1_000);
        assert_eq!(c.event_queue, 256 << 10);
        assert_eq!(c.event_queue_memory, 64 << 20);
        assert_eq!(c.client_publish_rate, 1_000);
        assert_eq!(c.cors_origins().unwrap(), None);
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("25000").unwrap_err().contains("no unit"));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_duration_or_zero("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn byte_sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_bytes("65536"), Ok(65_536));
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("2 GB"), Ok(2_000_000_000));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
    }

    #[test]
    fn bad_and_unknown_values_are_refused() {
        assert!(load(&["--ping-interval", "fast"], &[]).is_err());
        assert!(load(&["--max-replay", "0"], &[]).is_err());
        assert!(load(&["--nonsense"], &[]).is_err());
        let err = load(&[], &[("TWINE_API_KEYS", "x")]).unwrap_err();
        assert!(err.to_string().contains("TWINE_API_KEYS"));
        let err = load(&["--max-payload", "4000000"], &[]).unwrap_err();
        assert!(err.to_string().contains("--send-queue"), "{err}");
        let err = load(&["--send-queue", "2GiB"], &[]).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
        assert!(load(&["--send-queue", "1GiB"], &[]).is_ok());
        let err = load(&["--client-publish", "token"], &[]).unwrap_err();
        assert!(err.to_string().contains("--auth"), "{err}");
        assert!(load(&["--client-publish", "token", "--auth", "optional"], &[]).is_ok());
        let edge = [
            "--client-publish",
            "token",
            "--auth",
            "optional",
            "--role",
            "edge",
        ];
        let err = load(&edge, &[]).unwrap_err();
        assert!(err.to_string().contains("--role"), "{err}");
        let err = load(
            &[
                "--client-publish-max-bytes",
                "1MiB",
                "--client-publish",
                "token",
                "--auth",
                "optional",
            ],
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("--event-queue"), "{err}");
    }

    #[test]
    fn kubernetes_service_links_are_not_settings() {
        let injected = [
            ("TWINE_PORT", "tcp://10.0.0.7:3005"),
            ("TWINE_PORT_3005_TCP", "tcp://10.0.0.7:3005"),
            ("TWINE_PORT_3005_TCP_PROTO", "tcp"),
            ("TWINE_PORT_3005_TCP_PORT", "3005"),
            ("TWINE_PORT_3005_TCP_ADDR", "10.0.0.7"),
            ("TWINE_SERVICE_HOST", "10.0.0.7"),
            ("TWINE_SERVICE_PORT", "3005"),
            ("TWINE_SERVICE_PORT_HTTP", "3005"),
            ("TWINE_REDIS_SERVICE_HOST", "10.0.0.8"),
            ("TWINE_REDIS_PORT", "tcp://10.0.0.8:6379"),
        ];
        assert!(load(&[], &injected).is_ok());
        let err = load(&[], &[("TWINE_PORT", "8080")]).unwrap_err();
        assert!(err.to_string().contains("TWINE_PORT"), "a port, not a link");
    }

    #[test]
    fn origins_must_be_origins_and_a_blank_list_is_refused() {
        let c = load(
            &[
                "--cors-origins",
                "https://a.example, http://localhost:5173/",
            ],
            &[],
        );
        assert_eq!(
            c.unwrap().cors_origins().unwrap(),
            Some(vec![
                "https://a.example".to_string(),
                "http://localhost:5173".to_string()
            ])
        );
        for blank in [" ", ",", " , "] {
            assert!(load(&["--cors-origins", blank], &[]).is_err(), "{blank:?}");
        }
        for bad in [
            "*",
            "a.example",
            "https://a.example/path",
            "ftp://a.example",
            "https://a.example:x",
        ] {
            assert!(load(&["--cors-origins", bad], &[]).is_err(), "{bad:?}");
        }
    }
}

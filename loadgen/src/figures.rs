//! The sections of a run's figures that belong to one scenario (churn, deploy, scale-out, mass
//! disconnect, hooks). They live apart from the scenarios so that [`crate::scenario::Figures`] can hold them
//! without importing the scenarios that fill them in.

use crate::session::Count;
use crate::stats::Latency;

/// Churn (`churn`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ChurnFigures {
    pub count: Count,
    /// Unique messages delivered ÷ messages due.
    pub delivered_share: f64,
    pub forced_closes: u64,
    pub reconnects: u64,
    pub closed_by_server: u64,
    /// socket.io flow: reconnections the server did not recover (new session, messages lost).
    pub not_recovered: u64,
    pub failed_attempts: u64,
    pub replayed: Option<Latency>,
    /// Replayed messages from the reconnect's start to delivery.
    #[serde(default)]
    pub replay_after_connect: Option<Latency>,
    pub live: Option<Latency>,
    pub longest_away_ms: f64,
    /// Sessions not connected at the end.
    pub never_back: usize,
}

/// One node's restart.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Restart {
    /// SIGTERM → the process exited.
    pub drain_seconds: f64,
    /// Exit → ready again (started and `/ready` answering `200`).
    pub start_seconds: f64,
    /// SIGTERM → every client connected again.
    pub back_seconds: f64,
    /// The surviving nodes' CPU (cores busy, summed) from SIGTERM until every client was
    /// connected again (the drain and the reconnections it caused).
    pub surviving_cores: f64,
    pub peak_reconnects_per_second: u64,
    pub reconnects: u64,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct DeployFigures {
    pub count: Count,
    pub restarts: Vec<Restart>,
    pub peak_reconnects_per_second: u64,
    pub reconnects: u64,
    pub closed_by_server: u64,
    /// Namespace disconnects (`41`) the clients received: a stock socket.io-client stays away
    /// after one.
    pub kicked: u64,
    pub not_recovered: u64,
    pub failed_attempts: u64,
    pub longest_away_ms: f64,
    /// Publish → deliver of every message, replayed or live.
    pub replayed: Option<Latency>,
    /// Replayed messages from the reconnect's start to delivery.
    #[serde(default)]
    pub replay_after_connect: Option<Latency>,
    pub live: Option<Latency>,
    /// Clients not connected at the end.
    pub never_back: usize,
    /// Connections the balancer held open to each node at the end (clients, and any publish
    /// under way).
    #[serde(default)]
    pub sockets_at_end: Vec<usize>,
    /// Client connections the balancer closed because no node was ready (`None`: not counted,
    /// a run from before the balancer counted them).
    #[serde(default)]
    pub no_ready_node: Option<u64>,
}

/// The scale-out (`scaleout`): a node added behind the balancer, and how the fleet's sockets
/// spread over it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ScaleOutFigures {
    pub count: Count,
    /// A node's share: the fleet's sockets ÷ nodes, within this fraction either way.
    pub tolerance: f64,
    /// How long the nodes were watched after the node was added.
    pub watched_seconds: f64,
    /// Node added → in service at the balancer (its readiness check passed).
    pub ready_seconds: Option<f64>,
    /// Node added → every node within its share ± the tolerance (first seen; `None`: not within
    /// the watch).
    pub balanced_seconds: Option<f64>,
    /// Connections the balancer held open to each node just before the node was added.
    pub sockets_before: Vec<usize>,
    /// The same at the end of the watch (the added node last).
    pub sockets_at_end: Vec<usize>,
    /// Sockets per node by the server's own account at the end of the watch (`GET /api/fleet`,
    /// where the server has it), in the same order.
    pub fleet_view_at_end: Option<Vec<usize>>,
    /// `(seconds since the node was added, connections open to each node)`, once a second.
    pub timeline: Vec<(f64, Vec<usize>)>,
    /// Reconnections during the watch.
    pub reconnects: u64,
    pub peak_reconnects_per_second: u64,
    /// Connection attempts that failed during the watch (refused handshakes among them).
    pub failed_attempts: u64,
    /// Client connections the balancer closed because no node was ready (whole run).
    pub no_ready_node: u64,
    pub closed_by_server: u64,
    pub kicked: u64,
    pub not_recovered: u64,
    pub longest_away_ms: f64,
    /// Publish → deliver of messages published while their client was connected, during the
    /// watch.
    pub live: Option<Latency>,
    /// Replayed messages (published before the reconnect that delivered them began), whole run.
    pub replayed: Option<Latency>,
    /// Clients not connected at the end.
    pub never_back: usize,
}

/// One phase of a mass disconnect: the drop, or the return.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MassPhase {
    /// From the moment the members dropped (or began to reconnect) until the node's CPU was back
    /// to its idle rate.
    pub settle_seconds: f64,
    /// Recovery: until every member had every missed message.
    pub done_seconds: Option<f64>,
    /// Node CPU over the phase, less the idle rate.
    pub cpu_seconds: f64,
    pub cpu_us_per_member: f64,
    /// The other room's publish→deliver meanwhile.
    pub other_room: Option<Latency>,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MassFigures {
    pub members: usize,
    /// The node's CPU with the members connected and only the other room published to.
    pub idle_cores: f64,
    pub disconnect: MassPhase,
    pub recovery: MassPhase,
    /// Members with every missed message.
    pub complete: usize,
    /// socket.io flow: members whose session the server recovered.
    pub recovered: usize,
}

/// One phase of the hooks scenario: its rate, latency and what the server spent on each operation.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct HooksPhase {
    /// Operations that succeeded ÷ the phase's wall time.
    pub per_second: f64,
    /// Start → answered (connect reply, `roomJoined`, acknowledgement), succeeded ones.
    pub latency: Option<Latency>,
    pub seconds: f64,
    /// Server CPU over the phase ÷ operations attempted, µs.
    pub server_cpu_us: f64,
}

/// The server's account of one hook (`/metrics`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct HookCalls {
    pub calls: f64,
    /// Calls that failed (timeout, unreachable, garbled, busy).
    pub failed: f64,
    /// Mean seconds per call (the histogram's sum ÷ count), in ms.
    pub mean_ms: Option<f64>,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct HooksFigures {
    pub clients: usize,
    pub concurrency: usize,
    pub connect: HooksPhase,
    /// Refused by the server (`44`, the connect hook's refusal among them).
    pub connects_refused: u64,
    /// Any other failure (no answer within the patience, a closed connection).
    pub connects_failed: u64,
    pub subscribe: HooksPhase,
    /// Answered with an `error` event.
    pub subscribes_refused: u64,
    pub subscribes_failed: u64,
    pub publish: HooksPhase,
    pub publishes_ok: u64,
    /// Acknowledged `{ok: false}`.
    pub publishes_refused: u64,
    /// Not acknowledged.
    pub publishes_failed: u64,
    /// `None` from a server without that hook.
    pub connect_hook: Option<HookCalls>,
    pub subscribe_hook: Option<HookCalls>,
    pub publish_hook: Option<HookCalls>,
    /// The backend's CPU seconds per wall second, where the run has one.
    pub backend_cores: Option<f64>,
}

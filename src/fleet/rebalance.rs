//! Rebalancing: a node holding more than its share of the fleet's sockets moves the excess to
//! the others, so a node an autoscaler adds, or the one a rolling deploy restarted last, fills
//! up without waiting for new arrivals.
//!
//! On each new snapshot of the fleet (about once a second), a node works out its share: the fleet's
//! sockets in proportion to the nodes' `--max-sockets` when every node has one, else evenly,
//! over the nodes not draining that hold sockets. Over its share by more than `--rebalance-tolerance` (and with
//! some node under its own share to take them), it moves sockets away, at most
//! `--rebalance-rate` a second, until it is down to its share. A moved socket is closed as the
//! drain closes it (delivery stops, its last acknowledgements are stored, its transport
//! closes), and its client library reconnects by itself and recovers exactly. While it moves,
//! the node refuses new handshakes as at capacity, so the reconnecting clients land on nodes
//! under their share even behind a round-robin balancer.
//!
//! The oldest connections move first, and a client that arrived while the fleet was moving
//! sockets (perhaps moved here) is not moved again for [`PROTECTED_FOR`]. A node waits
//! [`WARM_UP`] after it starts before it moves anything (its view of the fleet is new), moves
//! nothing on a stale view, and a draining node moves nothing (its drain moves everything).
//!
//! While any node of the fleet drains, and for [`SETTLE`] after, no node moves sockets or refuses
//! a handshake over its share: a rolling deploy is under way, the drained clients must land at
//! once wherever the balancer sends them, and the node restarted last fills up once it is over.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{FleetView, Node};
use crate::drain::Draining;
use crate::metrics::Metrics;
use crate::transport::Sid;

/// How long a node runs before it moves sockets: a few announcements, so it sees the fleet.
pub const WARM_UP: Duration = Duration::from_secs(3);
/// The pace a node's rate is counted over: about one batch per announcement.
const EVERY: Duration = Duration::from_secs(1);
/// How long a client that may have been moved is not moved again.
pub const PROTECTED_FOR: Duration = Duration::from_secs(300);
/// How long after the fleet's last move its nodes take new clients only up to their share.
const SETTLE: Duration = Duration::from_secs(15);
/// How often the node looks whether a new snapshot of the fleet came.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// `--rebalance-tolerance` and `--rebalance-rate`.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// How far over its share a node may be, as a fraction (0.1 for 10 %).
    pub tolerance: f64,
    /// Most sockets moved per second.
    pub rate: u32,
}

/// This node's share of the fleet's sockets, given `nodes` (this one, `me`, among them), or
/// `None` when there is no one to share with.
pub fn share(nodes: &[Node], me: &str) -> Option<f64> {
    let live: Vec<&Node> = nodes
        .iter()
        .filter(|n| !n.draining && n.holds_sockets)
        .collect();
    let mine = live.iter().find(|n| n.id == me)?;
    if live.len() < 2 {
        return None;
    }
    // Draining nodes' sockets are on their way to the others.
    let total: u64 = nodes.iter().map(|n| n.sockets).sum();
    let weight = |n: &Node| match n.capacity {
        Some(capacity) if live.iter().all(|n| n.capacity.is_some()) => capacity as f64,
        _ => 1.0,
    };
    let weights: f64 = live.iter().map(|n| weight(n)).sum();
    Some(total as f64 * weight(mine) / weights)
}

/// How many sockets this node should move away now. `moving`: it already is, and goes on down
/// to its share; otherwise it starts only beyond its share plus `tolerance`.
pub fn excess(nodes: &[Node], me: &str, tolerance: f64, moving: bool) -> u64 {
    let Some(share) = share(nodes, me) else {
        return 0;
    };
    let Some(mine) = nodes.iter().find(|n| n.id == me).map(|n| n.sockets) else {
        return 0;
    };
    let start_above = if moving {
        share
    } else {
        share * (1.0 + tolerance)
    };
    let someone_takes_them = nodes.iter().any(|n| {
        n.id != me
            && !n.draining
            && n.holds_sockets
            && share_of(nodes, n).is_some_and(|s| (n.sockets as f64) < s)
    });
    if (mine as f64) <= start_above.ceil() || !someone_takes_them {
        return 0;
    }
    mine - share.ceil() as u64
}

fn share_of(nodes: &[Node], node: &Node) -> Option<f64> {
    share(nodes, &node.id)
}

/// When the fleet was seen moving sockets: a client that arrived on a node then may have been
/// moved there, and is not moved again for [`PROTECTED_FOR`].
#[derive(Default)]
struct Moves {
    windows: VecDeque<(Instant, Instant)>,
}

impl Moves {
    /// A snapshot at `now` showed some node moving, or none.
    fn seen(&mut self, moving: bool, now: Instant) {
        while self
            .windows
            .front()
            .is_some_and(|(_, end)| now.duration_since(*end) > PROTECTED_FOR)
        {
            self.windows.pop_front();
        }
        if !moving {
            return;
        }
        match self.windows.back_mut() {
            Some((_, end)) if now.duration_since(*end) <= 2 * EVERY => *end = now,
            _ => self.windows.push_back((now, now)),
        }
    }

    /// Whether the fleet moved sockets within the last [`SETTLE`].
    fn recent(&self, now: Instant) -> bool {
        self.windows
            .back()
            .is_some_and(|(_, end)| now.duration_since(*end) < SETTLE)
    }

    /// Whether a connection that began at `since` may have been moved here.
    fn may_have_moved(&self, since: Instant) -> bool {
        self.windows
            .iter()
            .any(|(start, end)| since + 2 * EVERY >= *start && since <= *end + SETTLE)
    }
}

/// Moves this node's excess sockets away until the node is dropped.
///
/// Every decision is made on one snapshot of the fleet, every node's figures as announced
/// (this node's own live count against the others' second-old ones would find every node of a
/// growing fleet over its share), and only on a snapshot taken after the last sockets moved
/// had gone. Moving starts only when two snapshots in a row find the node over its share plus
/// the tolerance, and the fleet's total held within half the tolerance between them, so the
/// unevenness of a burst of arrivals (or departures) moves nothing.
///
/// While any node moves sockets, and for [`SETTLE`] after, every node takes new handshakes only
/// up to its share plus half the tolerance, so the moved clients spread over the nodes under
/// theirs instead of piling onto one.
pub fn spawn(view: Arc<FleetView>, draining: Arc<Draining>, metrics: Arc<Metrics>, plan: Plan) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(LOOK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Connections asked to move that have not ended yet.
        let mut leaving: HashSet<Sid> = HashSet::new();
        // When the last of them ended, and the snapshot last decided on.
        let mut gone_at = Instant::now();
        let mut decided_on: Option<Instant> = None;
        let mut last_batch = Instant::now();
        let mut over_in_a_row = 0;
        let mut last_total = 0;
        let mut moving = false;
        let mut moves = Moves::default();
        // When a snapshot last showed a node draining.
        let mut drain_seen: Option<Instant> = None;
        loop {
            every.tick().await;
            if !leaving.is_empty() {
                leaving.retain(|sid| draining.holds(*sid));
                if leaving.is_empty() {
                    gone_at = Instant::now();
                }
                continue;
            }
            let snapshot = view.fresh_at().filter(|at| *at > gone_at);
            if snapshot.is_none() || snapshot == decided_on {
                continue;
            }
            decided_on = snapshot;
            let now = Instant::now();
            let nodes = view.nodes();
            moves.seen(moving || nodes.iter().any(|n| n.moving), now);
            if nodes.iter().any(|n| n.draining) {
                drain_seen = Some(now);
            }
            let deploying = drain_seen.is_some_and(|at| now.duration_since(at) < SETTLE);
            let total: u64 = nodes.iter().map(|n| n.sockets).sum();
            let settling =
                (total as f64 - last_total as f64).abs() > plan.tolerance * total as f64 / 2.0;
            last_total = total;
            let wanted =
                if draining.is_on() || deploying || view.age() < WARM_UP || !view.is_fresh() {
                    0
                } else if !moving && settling {
                    // Clients arriving or leaving in numbers: the figures are not yet worth acting on.
                    0
                } else {
                    excess(&nodes, view.me(), plan.tolerance, moving)
                };
            if wanted == 0 {
                if moving {
                    tracing::info!("rebalancing: this node holds its share");
                }
                (moving, over_in_a_row) = (false, 0);
                let limit = share(&nodes, view.me())
                    .filter(|_| moves.recent(now) && !deploying)
                    .map_or(u64::MAX, |share| {
                        (share * (1.0 + plan.tolerance / 2.0)).ceil() as u64 + 1
                    });
                view.take_below(limit);
                continue;
            }
            over_in_a_row += 1;
            if !moving && over_in_a_row < 2 {
                continue;
            }
            if !moving {
                tracing::info!(
                    excess = wanted,
                    "rebalancing: over this node's share, moving sockets to the others"
                );
                last_batch = now - EVERY;
            }
            moving = true;
            view.take_below(0);
            let due = (f64::from(plan.rate) * last_batch.elapsed().min(2 * EVERY).as_secs_f64())
                .ceil() as u64;
            let batch = wanted.min(due.max(1)) as usize;
            last_batch = now;
            let movable = draining.oldest(batch, |since| !moves.may_have_moved(since));
            if movable.is_empty() {
                tracing::debug!("rebalancing: every connection left may have been moved here");
            }
            for (sid, connection) in movable {
                leaving.insert(sid);
                connection.drain();
                metrics.rebalance_moved.inc();
            }
            tracing::debug!(moved = leaving.len(), left = wanted, "rebalancing");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, sockets: u64, capacity: Option<u64>, draining: bool) -> Node {
        Node {
            id: id.into(),
            address: String::new(),
            sockets,
            capacity,
            rooms: 0,
            draining,
            holds_sockets: true,
            moving: false,
            admins: 0,
            started_at: 0,
            version: String::new(),
        }
    }

    #[test]
    fn a_node_over_its_share_and_tolerance_moves_down_to_its_share() {
        let fleet = [
            node("a", 300, None, false),
            node("b", 300, None, false),
            node("c", 0, None, false),
        ];
        assert_eq!(excess(&fleet, "a", 0.1, false), 100);
        assert_eq!(excess(&fleet, "c", 0.1, false), 0);
        let within = [
            node("a", 215, None, false),
            node("b", 200, None, false),
            node("c", 185, None, false),
        ];
        assert_eq!(excess(&within, "a", 0.1, false), 0, "within the tolerance");
        assert_eq!(
            excess(&within, "a", 0.1, true),
            15,
            "once moving, down to the share"
        );
    }

    #[test]
    fn capacities_weigh_the_shares_and_drainers_and_loners_take_nothing() {
        let weighted = [
            node("a", 300, Some(1000), false),
            node("b", 0, Some(3000), false),
        ];
        assert_eq!(share(&weighted, "a"), Some(75.0));
        assert_eq!(excess(&weighted, "a", 0.1, false), 225);
        let alone = [node("a", 300, None, false)];
        assert_eq!(excess(&alone, "a", 0.1, false), 0);
        let other_drains = [node("a", 300, None, false), node("b", 300, None, true)];
        assert_eq!(
            excess(&other_drains, "a", 0.1, false),
            0,
            "no one to take them"
        );
        let draining = [
            node("a", 300, None, true),
            node("b", 0, None, false),
            node("c", 0, None, false),
        ];
        assert_eq!(
            excess(&draining, "a", 0.1, false),
            0,
            "a draining node moves by its drain"
        );
        let mut publisher = node("p", 0, None, false);
        publisher.holds_sockets = false;
        let with_publisher = [node("a", 300, None, false), publisher];
        assert_eq!(
            excess(&with_publisher, "a", 0.1, false),
            0,
            "a publishing node takes none"
        );
        let even = [node("a", 101, None, false), node("b", 100, None, false)];
        assert_eq!(excess(&even, "a", 0.1, true), 0, "no one under their share");
    }
}

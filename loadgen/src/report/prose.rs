//! The report's prose: the method (points, pinning, open-loop publisher, repeats, machine, date,
//! command), each section's heading and what its points have in common, the section filled by
//! hand (what an idle connection holds, from a heap profile) carried over from the existing report
//! when it is regenerated, and the profile kept beside the raw figures (`bench/profile.md`).

use std::fmt::Write as _;
use std::path::Path;

use super::runs::{Group, Meta};

impl Group {
    /// The section's heading.
    pub(super) fn heading(self) -> &'static str {
        match self {
            Group::Idle => "1. Idle memory per WebSocket connection",
            Group::Fanout => "2. Fan-out with acknowledgements on and off",
            Group::Latency => {
                "3. Latency under load: the highest rate within a p99 limit, and overload"
            }
            Group::Cores => "4. Many rooms on both cores",
            Group::RedisPublish => "5a. Redis mode: publishes accepted per second",
            Group::RedisFanout => "5b. Redis mode: cross-node fan-out",
            Group::RedisStorm => "5c. Redis mode: reconnect storm with recovery",
            Group::RedisCluster => "6. Redis Cluster: publishes accepted per second",
            Group::QuietNode => "7. A node whose rooms get no traffic",
            Group::Deploy => "8. Deploy: every node restarted in turn behind a load balancer",
            Group::ScaleOut => "8b. Scale-out: a third node added behind a round-robin balancer",
            Group::Churn => "9. Churn: connections force-closed by their clients",
            Group::Mass => "10. Mass disconnect and mass recovery of one room",
            Group::Hooks => "11. Backend hooks: connects, subscribes and client publishes",
        }
    }

    /// What the section's points have in common, said once above their tables.
    pub(super) fn intro(self) -> Option<&'static str> {
        Some(match self {
            Group::Cores => {
                "Left: our server and the load generator unpinned, both free to use both cores. \
                 Right: our server pinned to core 0, the load generator to core 1. The ratio of \
                 \"server CPU, cores busy\" shows how much of a second core delivery used."
            }
            Group::RedisPublish => {
                "No subscribers. One node on each side, on core 0 (the same node count and the same \
                 core: a second node would only take that core from the one serving publishes). \
                 The peer still sends every publish through Redis pub/sub, as the redis-adapter \
                 does for any number of nodes. Redis shares core 1 with the load generator."
            }
            Group::RedisCluster => {
                "As 5a, on a Redis Cluster of three primaries (no replicas), all three pinned to \
                 core 1 with the load generator. Ours: one node given the three primaries as \
                 seeds (it finds the cluster by itself and publishes with sharded pub/sub). The \
                 peer: one node with `@socket.io/redis-adapter`'s `createShardedAdapter` \
                 (`subscriptionMode: \"dynamic\"`, a channel per room) on a `redis` v4 \
                 `createCluster` client (`js-fixtures/node-peer/redis-sharded.mjs`). Both on core \
                 0. Redis CPU is read from /proc of each redis-server: per \
                 primary and in total."
            }
            Group::QuietNode => {
                "Two nodes on core 0. Node A holds one subscriber (acknowledging) in each busy \
                 room and takes every publish; node B holds the other clients, in rooms nobody \
                 publishes to. What node B spends meanwhile is the point: its CPU, the messages \
                 it says it took from Redis pub/sub (`twine_redis_messages_received_total` on \
                 `/metrics`; ours counts only messages of rooms it serves, the Node peers what \
                 their subscribing Redis client hands to the adapter), and, from Redis itself, \
                 what it subscribes to: the channels (`sub` + `ssub`) and patterns (`psub`) that \
                 `CLIENT LIST` shows for node B's connections (found by its sockets). On one Redis the peer is the classic \
                 `@socket.io/redis-adapter` (every node receives every broadcast); on the \
                 cluster, the sharded adapter with a channel per room."
            }
            Group::Deploy => {
                "Three nodes on core 0 and one Redis, behind a TCP load balancer inside the load \
                 generator (core 1), round robin with no stickiness: each new connection goes to \
                 the next node whose readiness check passes. The balancer checks as a cloud \
                 balancer does: `GET /ready` on every node every second with a 2 s timeout; a \
                 `200` puts a node in service, two failed checks in a row (another answer, a \
                 refused connection, no answer in time) take it out, and so does a last `200` \
                 more than 3 s old. A connection for which no node is ready is closed at once and \
                 counted (\"connections the balancer closed\"); connections to a node that stops \
                 being ready are not cut by the balancer. Clients connect \
                 over WebSocket through it, acknowledge every message and reconnect by \
                 themselves with socket.io-client's backoff (0.5–1.5 s, doubling to 5 s), ours \
                 with the `twineid` cookie, the peer's with `pid` and offset as stock \
                 socket.io-client does; publishes go through the balancer too, a new connection \
                 each. After 3 s of publishing, every node in turn gets SIGTERM, is waited for \
                 until it exits and is started again (same port, same flags); the next follows 3 s \
                 after every client is connected again (1 s in a smoke run). \"Surviving nodes' CPU\" is the other two \
                 nodes' CPU from the SIGTERM until every client was back. Both sides stay up, not \
                 ready, for the same delay after SIGTERM before closing: ours with \
                 `--drain-delay`, the peer with `DRAIN_DELAY_MS` (a `preStop`-like sleep, its \
                 `/ready` answering `503` meanwhile). Then ours closes its connections at once \
                 (`--drain-period 0s`) or paced over the drain period; the peer has no paced \
                 close, it closes every connection and exits, so its rows are alike in both \
                 points. \"Sockets at the end\" are the connections the balancer holds to each node once \
                 the last node has been back for 6 s (2 s in a smoke run) and every client is \
                 connected (node 3 was restarted last)."
            }
            Group::ScaleOut => {
                "Two nodes on core 0 and one Redis on core 1, behind the deploy's balancer (8) \
                 in round-robin mode: each new TCP connection goes to the next node in service, \
                 nothing of the request (no cookie, no `sid`) looked at. Acknowledging clients \
                 connect over WebSocket through it (ours with the `twineid` cookie, the peer's \
                 recovering with `pid` and offset as stock socket.io-client does) and reconnect \
                 by themselves with socket.io-client's backoff; 20 publishes/s go through the \
                 balancer, a new connection each. After 3 s (1 s in a smoke run) a third node is \
                 started (same flags, pinned to core 0 with the others) and added to the \
                 balancer as soon as it listens, and the connections the balancer holds to each \
                 node are read every 100 ms for 60 s (10 s in a smoke run) from the node's start. \
                 A node's share is the clients ÷ 3 (so clients still away count against it); \
                 \"every node within its share\" is the first reading where each node holds \
                 it within 10 % either way. Ours runs with \
                 its defaults on Redis, rebalancing on (`--rebalance-tolerance 10`, \
                 `--rebalance-rate 50`), each node given `--advertise-address \
                 127.0.0.1:<port>`: a node over its share by more than the tolerance moves the \
                 excess away, at most 50 sockets a second, with its drain's gentle close, and \
                 refuses new handshakes (`503`) meanwhile; while any node moves, every node takes \
                 new clients only up to its share plus half the tolerance, so reconnecting \
                 clients land on the node under its share (a refused client tries again after \
                 its backoff: the balancer, working on TCP, does not retry a `503`). The peer \
                 (socket.io 4.8, `connectionStateRecovery` with \
                 `@socket.io/redis-streams-adapter`, stock clients) has no rebalancing: its new \
                 node gets new connections only, and its column says where it stands after the \
                 same time. Loss, repeats and order are counted per client over the whole run, \
                 against the publishes accepted; live latency is over the watch."
            }
            Group::Churn => {
                "One node each, no Redis: ours in memory, the peer socket.io 4.8 with \
                 `connectionStateRecovery` and its in-memory adapter \
                 (`js-fixtures/node-peer/recovery.mjs`). Every session first receives one \
                 message (so a socket.io session has an offset to recover from); then each \
                 client loses its own connection (no WebSocket close) at a random moment, the \
                 first spread over one period, then every 0.5–1.5 periods. With `--loss clean` \
                 the client flushes the acknowledgements it has written and closes TCP (FIN): the \
                 server has them and sees the close at once. With `--loss silent` it goes as a \
                 network does: acknowledgements not yet sent are lost and nothing more is sent, \
                 neither FIN nor pong, so the old connection still looks alive to the server \
                 until its ping timeout (25 s interval + 20 s on both servers), well after the \
                 client is back on a new one. In both, it reconnects after socket.io-client's backoff (0.5–1.5 s), ours with \
                 its cookie, the peer's with `pid` and offset. Replay latency is publish → \
                 delivered for messages published before the reconnect that delivered them \
                 began."
            }
            Group::Mass => {
                "One node each, no Redis (ours in memory; the peer socket.io 4.8 with \
                 `connectionStateRecovery`, in memory). N members of one room and one client of \
                 another room, which gets a publish every 20 ms throughout. First every member \
                 closes at once; then 3 messages are published to their room; then all N come \
                 back at once (ours with their cookies, the peer's with `pid` and offset) and \
                 must each get the 3. Node CPU per member is the node's CPU from the moment they \
                 dropped (or began to reconnect) until its CPU had been back within 0.05 core of \
                 its rate before (the other room's traffic alone) for 0.5 s, less that rate (CPU \
                 read from each thread's `schedstat`, to the nanosecond); the \
                 other room's latency is over the same span. Figures of an earlier build of ours \
                 come from the same command with `--twine` pointing at it."
            }
            Group::Hooks => {
                "Both columns are our server, one node, no Redis; the left one with every hook on \
                 (`--connect-hook-url`, `--subscribe-hook-url`, `--publish-hook-url`, \
                 `--client-publish hook`) calling `js-fixtures/backend.mjs` (node:http, every \
                 hook allowing, checking every call's signature) pinned to core 1 beside the load \
                 generator; the right one with no hooks (`--client-publish token`). Both verify \
                 the client's token (`--auth optional`), so the hooks are the only difference. \
                 The ratio is hooks on ÷ hooks off. One token is minted first (`publish` \
                 claim `hooks-*`); every client fetches its cookie; a first round of 500 other \
                 clients (all of them in a smoke run), not measured, warms the backend and the \
                 server's connections to it. Then three phases run one after another, 64 operations in flight in each: every client connects (the \
                 token in its connect packet; latency to the connect reply), subscribes to one \
                 room (to `roomJoined`), and sends 5 `publish` events with acknowledgements, one \
                 after another, into rooms nobody subscribes to (so the publish, not its \
                 fan-out, is measured; latency to the acknowledgement). Each phase's rate is its \
                 operations ÷ its wall time; server CPU per operation is the server's CPU over \
                 the phase (each thread's `schedstat`) ÷ its operations. A hook call's mean is \
                 the server's own account (`twine_hook_seconds` sum ÷ count on `/metrics`): the \
                 signed HTTP call to the backend and its answer."
            }
            _ => return None,
        })
    }
}

const HAND_FILLED: &str = "## What an idle connection holds";

const PROFILE: &str = "## Where the time goes";

/// `bench/profile.md` (a profile of a point, written by hand beside the raw figures), as the
/// report's last section: under its own `## ` heading if it has one, else under `PROFILE`.
pub(super) fn profile(bench: &Path) -> Option<String> {
    let text = std::fs::read_to_string(bench.join("profile.md")).ok()?;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(if text.starts_with("## ") {
        text.to_owned()
    } else {
        format!("{PROFILE}\n\n{text}")
    })
}

/// The hand-filled section: carried over from the existing report at `out`, or, where it has
/// none, a note of what belongs there.
pub(super) fn hand_filled(out: &Path) -> String {
    carried_over(out).unwrap_or_else(|| {
        format!(
            "{HAND_FILLED}\n\n_To be filled by hand: a table of what an idle WebSocket \
             connection holds on our server, by owner, from a heaptrack profile of N idle \
             connections (live heap per allocation site divided by N). `loadgen bench` keeps \
             this section as it finds it._"
        )
    })
}

/// The hand-filled section of an existing report, if any, up to the next `## ` heading.
fn carried_over(out: &Path) -> Option<String> {
    let old = std::fs::read_to_string(out).ok()?;
    let start = old.find(HAND_FILLED)?;
    let rest = &old[start + HAND_FILLED.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    Some(
        format!("{HAND_FILLED}{}", &rest[..end])
            .trim_end()
            .to_owned(),
    )
}

/// `what`, or "not recorded" for a report drawn from figures that did not keep it.
fn or_unknown(what: &str) -> &str {
    if what.is_empty() {
        "not recorded"
    } else {
        what
    }
}

/// The method: how every point was run and measured, on what, when, and by which command.
pub(super) fn method(text: &mut String, meta: &Meta) {
    let pinning = if meta.pinned {
        "Every server process is pinned to core 0 with `taskset -c 0` (two nodes share it), the \
         load generator to core 1 with `taskset -c 1`, and Redis, when a point uses it, shares \
         core 1 with the load generator (all three primaries of a Redis Cluster, and the deploy's \
         load balancer, which runs inside the load generator, too). The one exception is point 4, \
         where our server and the load generator both run unpinned on both cores, to show \
         delivery using more than one core."
    } else {
        "This machine has fewer than two cores, so nothing is pinned: the load generator and the \
         servers share its core, which inflates latency for both servers alike."
    };
    let _ = writeln!(
        text,
        "## Method\n\n\
         Our server and the peer a user would pick instead, measured in the same run on the same \
         machine with the same load generator (`loadgen/`), one point at a time, ours then the \
         peer, each on fresh processes (and a fresh Redis where one is used). Clients follow the \
         Twine flow over loopback (GET /set-cookie, WebSocket connect with the cookie, subscribe, \
         and, with acks on, `updateSessionTS` for every message as twine-client-library does), \
         from source addresses spread over 127.0.0.0/8. The peers are in `js-fixtures/node-peer/`: \
         `server.mjs` (socket.io 4.8, no adapter), `redis-adapter.mjs` (`@socket.io/redis-adapter`) \
         and `redis-streams.mjs` (`connectionStateRecovery` with `@socket.io/redis-streams-adapter`, \
         whose clients recover with `pid` and offset as stock socket.io-client does).\n\n\
         - **Pinning**: {pinning}\n\
         - **Same offered load**: the publisher is open-loop: it sends `POST /api/twine` on a fixed \
           schedule without waiting for earlier answers, on pooled keep-alive connections, at most \
           256 unanswered at once (64 for the publish-rate points, where it acts like wrk with 64 \
           connections). Each table reports publishes offered, accepted (`201`), refused (`503`/`429`: \
           our server refuses publishes while live delivery runs more than `--max-delivery-lag` \
           500 ms behind, its documented overload behaviour) and failed or not sent (no answer, \
           another status, or the in-flight bound reached). A pooled connection is checked \
           before it is reused, and a publish on one that a server closed while idle is sent \
           again on a fresh connection; a publish sent and never answered stays due to its \
           room's clients (the server may have taken it).\n\
         - **What is measured**: server memory (RSS) and CPU time (user + system, summed over \
           nodes) from /proc; Redis's CPU from /proc and `INFO commandstats`; the load generator's \
           own CPU from /proc (\"load generator CPU, cores busy\" near 1.00 means it, not the \
           server, may have been the limit); publish→deliver latency from the send time each \
           payload carries (one clock); loss and duplicates per client against the publishes \
           accepted for its room; the queue a server builds as deliveries owed (publishes sent and \
           not refused × subscribers − delivered, sampled every 50 ms) and the time from the last \
           publish sent to the last delivery. \"Other load on the machine\" is the CPU time the \
           rest of the machine used meanwhile (from /proc/stat, less the servers, Redis and the \
           load generator): the machine is shared, so before each run the benchmark waits (up \
           to three minutes) for it to be quiet, and a run during which other work kept more \
           than 0.3 cores busy is run again (twice at most).\n\
         - **Repeats**: each point is run {} time(s); a cell is the median, with the range \
           (min–max) in parentheses when the runs differ. The ratio is ours / peer of the medians.\n\
         - Our server runs with `--max-connections-per-ip 0` (one source address carries every \
           connection), `--publish-rate 1000000 --publish-burst 1000000` and \
           `--client-publish-rate 1000000 --client-publish-burst 1000000` (the API key's and the \
           clients' publish rate limits are not what is measured); everything else is default, \
           `--max-delivery-lag 500ms` included.\n\
         - Machine: {}\n\
         - Date: {}\n\
         - Our server: {}\n\
         - Commit: {}; Node.js {}; Redis {}\n\
         - Command: `cargo build --release -p twine -p twine-loadgen && ./target/release/loadgen bench{}` \
           ({:.0} minutes)",
        meta.repeats,
        meta.machine,
        meta.date,
        meta.server,
        or_unknown(&meta.commit),
        or_unknown(&meta.node),
        or_unknown(&meta.redis),
        if meta.of_record { "" } else { " --scale smoke" },
        meta.minutes
    );
    if !meta.of_record {
        let _ = writeln!(
            text,
            "- Smoke run: seconds per point, not figures of record."
        );
    }
    for later in &meta.later {
        let _ = writeln!(
            text,
            "- Measured later, with `--only … --merge` ({} run(s) each, {:.1} minutes, {}, our \
             server {}, commit {}, Node.js {}, Redis {}): {}.",
            later.repeats,
            later.minutes,
            later.date,
            later.server,
            or_unknown(&later.commit),
            or_unknown(&later.node),
            or_unknown(&later.redis),
            later
                .titles
                .iter()
                .map(|t| format!("\"{t}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        text,
        "\nPoints: (1) idle memory per connection at 1k/5k/10k/18k (one process may open 20,000 \
         files here); (2) fan-out into one room, 2,000 and 5,000 subscribers × 20 publishes/s, \
         acks on and off; (3) a search for the highest publish rate into 5,000 subscribers (acks \
         on) with p99 ≤ 50 ms, and the same with p99 ≤ 250 ms: each probe offers one rate for \
         3 s and passes only if every publish was accepted, every delivery arrived and p99 stayed \
         within the limit; rates double from 10/s while they pass (halve while they fail, down \
         to 1/s), then a geometric bisection narrows to about 10 %; then one point offered well \
         above both servers' capacity; (4) many rooms, our server on both cores against one; (5) \
         Redis mode: (a) publishes per second with no subscribers into one room already holding \
         10,000 messages and over 1,000 rooms, one node of ours against one Node node with the \
         redis-adapter, (b) fan-out across two nodes sharing one Redis, \
         subscribers split over both, publishing into one, (c) a reconnect storm: every session \
         receives one message, all drop, messages are published while they are away, then all \
         come back at once on the other node while publishing goes on at 20/s. (6) 5a on a Redis \
         Cluster of three primaries, against the sharded redis-adapter; (7) a node whose clients \
         are all in rooms without traffic, beside a node taking 10,000 publishes/s: what it \
         spends and what it takes from Redis; (8) a rolling deploy of three nodes behind a load \
         balancer that skips unready nodes, each node stopped with SIGTERM and started again \
         while 3,000 acknowledging clients reconnect by themselves, both sides not ready for 5 s \
         first, then our drain closing at once and paced; (8b) a third node added to two holding \
         6,000 acknowledging clients behind a round-robin balancer: how soon every node holds its \
         share; (9) churn: up to 10,000 clients (a \
         quarter of the open-files limit, for the connections a silent loss leaves open) each \
         losing its own connection about every 15 s for a minute, cleanly and silently, while \
         each of 50 rooms gets one publish per second; (10) the mass disconnect and recovery of 5,000, \
         10,000 and 18,000 members of one room, with another room's latency meanwhile; (11) \
         2,000 clients connecting, subscribing and publishing 5 messages each with every backend \
         hook on (the backend on core 1) against our server without hooks: the cost of each \
         hook call. Each section says how its point runs."
    );
}

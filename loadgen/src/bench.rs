//! The side-by-side benchmark: for every point of the plan, our server and its peer, each on a
//! fresh set of processes, interleaved (ours, then the peer) and repeated; the load generator
//! runs each time as a child process (`loadgen spec`), pinned to core 1 while the servers are
//! pinned to core 0, so its CPU time is its own and it never competes with the server for a
//! core. Then the report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, bail};
use tokio::process::Command;

use crate::report::{self, Group, Run};
use crate::scenario::{self, Figures, Kind, RecoveryFlow};
use crate::servers::{self, Deployment, Programs, Redis, Server};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    /// The figures of record, each point three times (takes about 40 minutes).
    Full,
    /// A few seconds per scenario, once, to check the harness end to end.
    Smoke,
}

#[derive(clap::Args)]
pub struct Args {
    /// Our server's binary.
    #[arg(long, default_value = "target/release/twine")]
    pub twine: PathBuf,
    /// The Node peers' folder (server.mjs, recovery.mjs, redis-adapter.mjs, redis-sharded.mjs,
    /// redis-streams.mjs).
    #[arg(long, default_value = "js-fixtures/node-peer")]
    pub peer_dir: PathBuf,
    /// Where the report goes; its charts and raw figures go beside it, in `bench/`.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "full")]
    pub scale: Scale,
    /// Runs of each point (default: 3 at full scale, 1 for smoke).
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Only the points whose title contains this text (repeat it for the points that contain
    /// any of them).
    #[arg(long)]
    pub only: Vec<String>,
    /// Exit non-zero if our server lost, duplicated or dropped anything.
    #[arg(long)]
    pub strict: bool,
    /// Run our side only (e.g. an earlier build's figures, with `--twine` pointing at it).
    #[arg(long)]
    pub ours_only: bool,
    /// Keep the existing report's other points (its `bench/runs.json`) and put the points run now
    /// in place of their earlier runs (with `--only`).
    #[arg(long)]
    pub merge: bool,
}

/// One point: a scenario, and the two deployments it compares.
pub struct Point {
    pub group: Group,
    pub title: String,
    pub args: scenario::Args,
    pub ours: Deployment,
    pub peer: Deployment,
    /// The flow the peer's clients recover with, when it differs from ours.
    pub peer_recovery: Option<RecoveryFlow>,
    /// Run the load generator unpinned for our side (the many-rooms point).
    pub ours_unpinned: bool,
    /// The peer's column header, when its deployment's name does not say what differs (ours
    /// against ours with other flags).
    pub peer_label: Option<&'static str>,
}

/// A scenario with the defaults; targets and pids are filled in when its servers start.
fn scenario_args(kind: Kind) -> scenario::Args {
    scenario::Args {
        scenario: kind,
        targets: Vec::new(),
        server_pids: Vec::new(),
        redis: Vec::new(),
        connections: 1000,
        rooms: 1,
        rate: 20.0,
        seconds: 8.0,
        missed: 100,
        ack: true,
        connect_rate: 2500,
        api_key: "test-key".into(),
        concurrency: 256,
        prefill: 0,
        recovery: RecoveryFlow::Cookie,
        probe_seconds: 3.0,
        max_probes: 11,
        p99_limit_ms: 50.0,
        members: 1,
        every: 15.0,
        loss: scenario::Loss::Clean,
        backend_pid: None,
        watch_seconds: 60.0,
        restart: Vec::new(),
        // A progress line only where someone watches it.
        quiet: !std::io::stderr().is_terminal(),
    }
}

const fn deploy(server: Server, nodes: usize, redis: Redis) -> Deployment {
    Deployment {
        server,
        nodes,
        redis,
        pinned: true,
        flags: &[],
        env: &[],
        backend: false,
        later: 0,
    }
}

const TWINE: Deployment = deploy(Server::Twine, 1, Redis::None);
const NODE: Deployment = deploy(Server::Node, 1, Redis::None);
const NODE_RECOVERY: Deployment = deploy(Server::NodeRecovery, 1, Redis::None);

fn point(
    group: Group,
    title: String,
    args: scenario::Args,
    ours: Deployment,
    peer: Deployment,
) -> Point {
    Point {
        group,
        title,
        args,
        ours,
        peer,
        peer_recovery: None,
        ours_unpinned: false,
        peer_label: None,
    }
}

/// The points of record (or their smoke-sized versions).
pub fn plan(scale: Scale) -> Vec<Point> {
    let full = scale == Scale::Full;
    let mut points = Vec::new();

    // 1. Idle memory, up to what one process may open here.
    let ceiling = crate::addrs::connection_ceiling();
    let sizes: Vec<usize> = if full {
        [1_000, 5_000, 10_000, 18_000]
            .into_iter()
            .map(|n| n.min(ceiling))
            .collect()
    } else {
        vec![300]
    };
    for n in sizes {
        let mut a = scenario_args(Kind::Idle);
        (a.connections, a.seconds) = (n, 3.0);
        points.push(point(
            Group::Idle,
            format!("idle, {n} connections"),
            a,
            TWINE,
            NODE,
        ));
    }

    // 2. Fan-out into one room, acknowledgements on and off.
    let fanouts: &[(usize, bool)] = if full {
        &[(2_000, true), (2_000, false), (5_000, true), (5_000, false)]
    } else {
        &[(300, true), (300, false)]
    };
    for &(n, ack) in fanouts {
        let mut a = scenario_args(Kind::Fanout);
        (a.connections, a.ack, a.rate) = (n, ack, 20.0);
        a.seconds = if full { 8.0 } else { 2.0 };
        let acks = if ack { "acks on" } else { "acks off" };
        points.push(point(
            Group::Fanout,
            format!("fan-out, {n} subscribers in 1 room, 20 publishes/s, {acks}"),
            a,
            TWINE,
            NODE,
        ));
    }

    // 3. Latency search (at the target's 50 ms, and at 250 ms, which a single publish's fan-out
    // to 5,000 subscribers on one core can meet), then one overloaded point.
    for limit in [50.0, 250.0] {
        let mut a = scenario_args(Kind::LatencySearch);
        (a.connections, a.rate, a.probe_seconds, a.max_probes) = if full {
            (5_000, 10.0, 3.0, 8)
        } else {
            (300, 20.0, 1.0, 3)
        };
        a.p99_limit_ms = limit;
        points.push(point(
            Group::Latency,
            format!(
                "latency search, {} subscribers in 1 room, acks on, p99 ≤ {limit} ms",
                a.connections
            ),
            a,
            TWINE,
            NODE,
        ));
        if !full {
            break;
        }
    }
    let mut a = scenario_args(Kind::Fanout);
    (a.connections, a.rate, a.seconds) = if full {
        (5_000, 100.0, 4.0)
    } else {
        (300, 400.0, 2.0)
    };
    points.push(point(
        Group::Latency,
        format!(
            "overload, {} subscribers in 1 room, {} publishes/s offered, acks on",
            a.connections, a.rate
        ),
        a,
        TWINE,
        NODE,
    ));

    // 4. Many rooms: ours on both cores against ours on one.
    let mut a = scenario_args(Kind::Fanout);
    (a.connections, a.rooms, a.rate, a.seconds) = if full {
        (10_000, 100, 600.0, 8.0)
    } else {
        (300, 10, 100.0, 2.0)
    };
    let mut p = point(
        Group::Cores,
        format!(
            "many rooms, {} subscribers over {} rooms, {} publishes/s, acks on",
            a.connections, a.rooms, a.rate
        ),
        a,
        Deployment {
            pinned: false,
            ..TWINE
        },
        TWINE,
    );
    p.ours_unpinned = true;
    points.push(p);

    // 5a. Redis: publishes accepted per second, one hot room with history and many rooms.
    publish_points(
        &mut points,
        full,
        Group::RedisPublish,
        "Redis",
        Redis::One,
        Server::NodeRedisAdapter,
    );

    // 5b. Redis: cross-node fan-out.
    let mut a = scenario_args(Kind::Fanout);
    (a.connections, a.rate) = if full { (4_000, 20.0) } else { (300, 20.0) };
    a.seconds = if full { 8.0 } else { 2.0 };
    points.push(point(
        Group::RedisFanout,
        format!(
            "Redis: cross-node fan-out, {} subscribers over 2 nodes in 1 room, 20 publishes/s into one node, acks on",
            a.connections
        ),
        a,
        deploy(Server::Twine, 2, Redis::One),
        deploy(Server::NodeRedisAdapter, 2, Redis::One),
    ));

    // 5c. Redis: reconnect storm with recovery.
    let mut a = scenario_args(Kind::ReconnectStorm);
    // 2,000 sessions: socket.io's recovery reads the Redis stream once per session, and at
    // 10,000 the peer takes many minutes (and trims entries sessions still need).
    (a.connections, a.missed) = if full { (2_000, 100) } else { (200, 20) };
    let mut p = point(
        Group::RedisStorm,
        format!(
            "Redis: reconnect storm, {} sessions over 2 nodes missing {} messages each, back on the other node",
            a.connections, a.missed
        ),
        a,
        deploy(Server::Twine, 2, Redis::One),
        deploy(Server::NodeRedisStreams, 2, Redis::One),
    );
    p.peer_recovery = Some(RecoveryFlow::SocketIo);
    points.push(p);

    more_points(&mut points, full);
    points
}

/// Publishes accepted per second on `redis`, one node of ours against one of `peer`, both on
/// core 0: one hot room holding history, and many rooms.
fn publish_points(
    points: &mut Vec<Point>,
    full: bool,
    group: Group,
    on: &str,
    redis: Redis,
    peer: Server,
) {
    for (rooms, prefill) in [(1, if full { 10_000 } else { 1_000 }), (1_000, 0)] {
        let mut a = scenario_args(Kind::PublishRate);
        (a.connections, a.rooms, a.prefill, a.rate, a.concurrency) =
            (0, rooms, prefill, 50_000.0, 64);
        a.seconds = if full { 5.0 } else { 1.5 };
        let what = if rooms == 1 {
            format!("one room holding {prefill} messages")
        } else {
            format!("spread over {rooms} rooms")
        };
        points.push(point(
            group,
            format!("{on}: publishes per second, {what}"),
            a,
            deploy(Server::Twine, 1, redis),
            deploy(peer, 1, redis),
        ));
    }
}

/// Points 6–11: Redis Cluster, the quiet node, the rolling deploy and the scale-out, churn, mass
/// disconnect, backend hooks.
fn more_points(points: &mut Vec<Point>, full: bool) {
    // 6. Redis Cluster: publishes accepted per second, as 5a, on three primaries.
    publish_points(
        points,
        full,
        Group::RedisCluster,
        "Redis Cluster",
        Redis::Cluster,
        Server::NodeRedisSharded,
    );

    // 7. A node whose rooms get no traffic, on one primary and on the cluster.
    for (redis, peer, on) in [
        (Redis::One, Server::NodeRedisAdapter, "one Redis"),
        (Redis::Cluster, Server::NodeRedisSharded, "a Redis Cluster"),
    ] {
        let mut a = scenario_args(Kind::QuietNode);
        (a.connections, a.rooms, a.rate, a.seconds) = if full {
            (1_000, 100, 10_000.0, 8.0)
        } else {
            (200, 10, 500.0, 2.0)
        };
        points.push(point(
            Group::QuietNode,
            format!(
                "quiet node: 2 nodes on {on}, {} publishes/s over {} rooms into node A, {} clients in other rooms on node B",
                a.rate, a.rooms, a.connections
            ),
            a,
            deploy(Server::Twine, 2, redis),
            deploy(peer, 2, redis),
        ));
    }

    // 8. Rolling deploy behind a load balancer, closing at once and paced. Both sides stay up,
    // not ready, for the same delay after SIGTERM (ours `--drain-delay`, the peer a `preStop`-like
    // sleep) before they close.
    type Drain = (
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
        &'static str,
    );
    let drains: &[Drain] = if full {
        &[
            (
                &["--drain-delay", "5s", "--drain-period", "0s"],
                &[("DRAIN_DELAY_MS", "5000")],
                "5 s not ready, then all closed at once",
            ),
            (
                &["--drain-delay", "5s", "--drain-period", "20s"],
                &[("DRAIN_DELAY_MS", "5000")],
                "5 s not ready, then ours paced over 20 s",
            ),
        ]
    } else {
        &[
            // One point in CI: a short delay (long enough for the balancer's two failed checks a
            // second apart), then a paced close.
            (
                &["--drain-delay", "3s", "--drain-period", "2s"],
                &[("DRAIN_DELAY_MS", "3000")],
                "3 s not ready, then ours paced over 2 s",
            ),
        ]
    };
    for &(flags, peer_env, drain) in drains {
        let mut a = scenario_args(Kind::Deploy);
        (a.connections, a.rooms, a.rate, a.seconds) = if full {
            (3_000, 30, 20.0, 3.0)
        } else {
            (300, 6, 20.0, 1.0)
        };
        let mut p = point(
            Group::Deploy,
            format!(
                "deploy: 3 nodes behind a balancer, {} clients over {} rooms, 20 publishes/s, each node restarted in turn, {drain}",
                a.connections, a.rooms
            ),
            a,
            Deployment {
                flags,
                ..deploy(Server::Twine, 3, Redis::One)
            },
            Deployment {
                env: peer_env,
                ..deploy(Server::NodeRedisStreams, 3, Redis::One)
            },
        );
        p.peer_recovery = Some(RecoveryFlow::SocketIo);
        points.push(p);
    }

    // 8b. Scale-out: a third node added behind a round-robin balancer.
    let mut a = scenario_args(Kind::ScaleOut);
    (a.connections, a.rooms, a.rate, a.seconds, a.watch_seconds) = if full {
        (6_000, 30, 20.0, 3.0, 60.0)
    } else {
        (300, 6, 20.0, 1.0, 10.0)
    };
    let mut p = point(
        Group::ScaleOut,
        format!(
            "scale-out: 2 nodes behind a round-robin balancer, {} clients over {} rooms, 20 publishes/s, a third node started and added, watched for {} s",
            a.connections, a.rooms, a.watch_seconds
        ),
        a,
        Deployment {
            later: 1,
            ..deploy(Server::Twine, 2, Redis::One)
        },
        Deployment {
            later: 1,
            ..deploy(Server::NodeRedisStreams, 2, Redis::One)
        },
    );
    p.peer_recovery = Some(RecoveryFlow::SocketIo);
    points.push(p);

    // 9. Churn: every connection force-closed about every 15 s for a minute, cleanly and as a
    // network loses it. A silently lost connection stays open on both ends until the server's
    // ping timeout (up to 45 s): about three per client at once, within the open-files limit.
    for loss in [scenario::Loss::Clean, scenario::Loss::Silent] {
        let mut a = scenario_args(Kind::Churn);
        (a.connections, a.rooms, a.rate, a.seconds, a.every) = if full {
            let n = 10_000.min(crate::addrs::connection_ceiling().saturating_sub(1_000) / 4);
            (n, 50, 50.0, 60.0, 15.0)
        } else {
            (300, 10, 10.0, 6.0, 2.0)
        };
        a.loss = loss;
        let mut p = point(
            Group::Churn,
            format!(
                "churn: {} clients each force-closed every ~{} s for {} s, 1 publish/s into each of {} rooms, --loss {}",
                a.connections,
                a.every,
                a.seconds,
                a.rooms,
                loss.name()
            ),
            a,
            TWINE,
            NODE_RECOVERY,
        );
        p.peer_recovery = Some(RecoveryFlow::SocketIo);
        points.push(p);
    }

    // 10. Mass disconnect and mass recovery of one room.
    let sizes: Vec<usize> = if full {
        let most = crate::addrs::connection_ceiling();
        [5_000, 10_000, 18_000]
            .into_iter()
            .map(|n| n.min(most))
            .collect()
    } else {
        vec![300]
    };
    for n in sizes {
        let mut a = scenario_args(Kind::MassDrop);
        (a.connections, a.rooms, a.missed) = (n, 2, 3);
        let mut p = point(
            Group::Mass,
            format!(
                "mass disconnect and recovery: {n} members of one room, {} missed messages each, another room published every 20 ms",
                a.missed
            ),
            a,
            TWINE,
            NODE_RECOVERY,
        );
        p.peer_recovery = Some(RecoveryFlow::SocketIo);
        points.push(p);
    }

    // 11. Backend hooks: ours with every hook on (its backend on core 1) against ours with none,
    // the token granting what the publish hook would.
    let mut a = scenario_args(Kind::Hooks);
    (a.connections, a.rooms, a.concurrency) = (if full { 2_000 } else { 200 }, 20, 64);
    let mut p = point(
        Group::Hooks,
        format!(
            "hooks: {} clients connect, subscribe ({} rooms) and publish {} each, {} in flight: every hook on, backend on core 1, against hooks off",
            a.connections,
            a.rooms,
            crate::hooks::PUBLISHES_PER_CLIENT,
            a.concurrency
        ),
        a,
        Deployment {
            // The token is verified on both sides: the hooks are the only difference.
            flags: &["--auth", "optional"],
            backend: true,
            ..TWINE
        },
        Deployment {
            flags: &["--auth", "optional", "--client-publish", "token"],
            ..TWINE
        },
    );
    p.peer_label = Some("twine, hooks off (--auth optional --client-publish token)");
    points.push(p);
}

/// Other work on the machine (cores busy) above which a run is run again.
const OTHER_LOAD_LIMIT: f64 = 0.3;

/// Waits (up to `patience`) until the machine keeps less than a fifth of a core busy, so another
/// build or benchmark does not take the cores the servers are pinned to.
async fn wait_until_quiet(patience: std::time::Duration) -> anyhow::Result<()> {
    let give_up = Instant::now() + patience;
    let mut said = false;
    loop {
        let before = crate::procfs::machine_busy_seconds()?;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let busy = (crate::procfs::machine_busy_seconds()? - before) / 0.3;
        if busy < 0.2 || Instant::now() > give_up {
            if said {
                eprintln!("   the machine is quieter ({busy:.2} cores busy), going on");
            }
            return Ok(());
        }
        if !said {
            eprintln!("   waiting for other work on the machine to finish ({busy:.2} cores busy)");
            said = true;
        }
    }
}

/// Runs the load generator as a child process (pinned to core 1 when asked) and reads its
/// figures from its output.
async fn measure(args: &scenario::Args, pin: bool) -> anyhow::Result<Figures> {
    let exe = std::env::current_exe().context("the load generator's own path")?;
    let spec = serde_json::to_string(args)?;
    let mut c = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    // Not `output()`: it would capture stderr too, and the load generator's progress and errors
    // belong on ours.
    let out = c
        .arg("spec")
        .arg(spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("running the load generator")?
        .wait_with_output()
        .await
        .context("running the load generator")?;
    if !out.status.success() {
        bail!("the load generator failed ({})", out.status);
    }
    serde_json::from_slice(&out.stdout).context("the load generator's figures")
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let can_pin = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let programs = Programs {
        twine: args.twine.clone(),
        peer_dir: args.peer_dir.clone(),
        can_pin,
        advertise: knows_flags(&args.twine, &["--advertise-address"]),
    };
    let repeats = args
        .repeats
        .unwrap_or(if args.scale == Scale::Full { 3 } else { 1 });
    let mut runs: Vec<Run> = Vec::new();
    let points: Vec<Point> = plan(args.scale)
        .into_iter()
        .filter(|p| args.only.is_empty() || args.only.iter().any(|o| p.title.contains(o.as_str())))
        .filter(|p| {
            // A binary from before a flag existed (a "before" run) skips the points that need it.
            let mut flags = p.ours.flags.to_vec();
            if p.ours.backend {
                flags.extend(servers::HOOK_FLAGS);
            }
            if p.peer.server == Server::Twine && !args.ours_only {
                flags.extend(p.peer.flags);
            }
            let known = knows_flags(&args.twine, &flags);
            if !known {
                eprintln!(
                    "== {}: skipped, {} does not take {}",
                    p.title,
                    args.twine.display(),
                    flags.join(" ")
                );
            }
            known
        })
        .collect();
    for p in &points {
        for repeat in 0..repeats {
            let sides = [(report::Side::Ours, p.ours), (report::Side::Peer, p.peer)];
            let sides = &sides[..if args.ours_only { 1 } else { 2 }];
            for &(side, deployment) in sides {
                let label = match (side, p.peer_label) {
                    (report::Side::Peer, Some(label)) => label.to_owned(),
                    _ => report::label(deployment),
                };
                eprintln!("== {} [{}/{repeats}]: {label}", p.title, repeat + 1);
                let patience = if args.scale == Scale::Full { 180 } else { 10 };
                wait_until_quiet(std::time::Duration::from_secs(patience)).await?;
                let running = servers::start(deployment, &programs).await?;
                let mut a = p.args.clone();
                a.targets = running.targets();
                a.server_pids = running.pids();
                a.redis = running.redis();
                a.restart = running.recipes();
                a.backend_pid = running.backend_pid();
                if side == report::Side::Peer
                    && let Some(flow) = p.peer_recovery
                {
                    a.recovery = flow;
                }
                let pin = can_pin && !(side == report::Side::Ours && p.ours_unpinned);
                let mut figures = measure(&a, pin).await?;
                drop(running);
                // A run that shared the machine with other work is run again (twice at most).
                for _ in 0..2 {
                    if figures.other_cores <= OTHER_LOAD_LIMIT || args.scale != Scale::Full {
                        break;
                    }
                    eprintln!(
                        "   other work kept {:.2} cores busy during the run: running it again",
                        figures.other_cores
                    );
                    wait_until_quiet(std::time::Duration::from_secs(180)).await?;
                    let running = servers::start(deployment, &programs).await?;
                    a.targets = running.targets();
                    a.server_pids = running.pids();
                    a.redis = running.redis();
                    a.restart = running.recipes();
                    a.backend_pid = running.backend_pid();
                    figures = measure(&a, pin).await?;
                }
                runs.push(Run {
                    group: p.group,
                    title: p.title.clone(),
                    side,
                    server: deployment.server,
                    label,
                    pinned: pin,
                    repeat,
                    figures,
                });
            }
        }
    }
    let meta = report::Meta {
        of_record: args.scale == Scale::Full,
        pinned: can_pin,
        repeats,
        minutes: started.elapsed().as_secs_f64() / 60.0,
        machine: report::machine(),
        server: server_version(&args.twine),
        date: report::now(),
        later: Vec::new(),
        commit: report::commit(),
        node: report::node_version(),
        redis: report::redis_version(),
    };
    // Checked before the runs go into the report (a merge takes them).
    let checked = if args.strict { check(&runs) } else { Ok(()) };
    if args.merge {
        report::merge(&args.out, &meta, runs)?;
    } else {
        report::write(&args.out, &meta, &runs)?;
    }
    eprintln!(
        "wrote {} after {:.1} minutes",
        args.out.display(),
        meta.minutes
    );
    checked
}

/// Whether our binary's `--help` lists every flag among `flags` (`--name value` pairs).
fn knows_flags(twine: &std::path::Path, flags: &[&str]) -> bool {
    if flags.is_empty() {
        return true;
    }
    let help = std::process::Command::new(twine)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    flags
        .iter()
        .filter(|f| f.starts_with("--"))
        .all(|f| help.contains(&format!("{f} ")))
}

/// Our binary's version line and when it was built (others may be changing the server while
/// a benchmark runs: the report says which build it measured).
fn server_version(twine: &std::path::Path) -> String {
    let version = std::process::Command::new(twine)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let built = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC", "-r"])
        .arg(twine)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("`{}` ({version}, built {built})", twine.display())
}

/// What went wrong for our server in one run (nothing, for a clean run).
fn trouble(f: &Figures) -> Vec<String> {
    let mut t = Vec::new();
    let mut flag = |what: &str, n: u64| {
        if n > 0 {
            t.push(format!("{what} {n}"));
        }
    };
    flag("lost", f.lost);
    flag("duplicated", f.duplicated);
    flag("dropped", f.dropped as u64);
    flag("connect errors", f.connect_errors as u64);
    flag("failed publishes", f.failed);
    if let Some(d) = &f.deploy {
        flag("out of order", d.count.out_of_order);
        flag("never came back", d.never_back as u64);
    }
    if let Some(s) = &f.scale_out {
        flag("out of order", s.count.out_of_order);
        flag("never came back", s.never_back as u64);
    }
    if let Some(c) = &f.churn {
        flag("out of order", c.count.out_of_order);
        flag("never came back", c.never_back as u64);
    }
    if let Some(h) = &f.hooks {
        flag("client publishes refused", h.publishes_refused);
        flag("subscribes refused", h.subscribes_refused);
        flag("subscribes unanswered", h.subscribes_failed);
    }
    if let Some(m) = &f.mass {
        flag(
            "members without every missed message",
            (m.members - m.complete) as u64,
        );
    }
    if f.scenario == "ReconnectStorm" && f.recovery_seconds.is_none() {
        t.push("not every session recovered".into());
    }
    t
}

/// `--strict`: our server lost, repeated, reordered and dropped nothing, answered every publish,
/// and every session recovered and came back.
fn check(runs: &[Run]) -> anyhow::Result<()> {
    let mut bad = 0;
    for r in runs.iter().filter(|r| r.server == Server::Twine) {
        let t = trouble(&r.figures);
        if !t.is_empty() {
            bad += 1;
            eprintln!("{} ({}): {}", r.title, r.label, t.join(", "));
        }
    }
    if bad > 0 {
        bail!("our server lost, duplicated or dropped something");
    }
    Ok(())
}

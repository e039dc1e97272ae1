//! The quiet node: two nodes sharing Redis; the first holds subscribers of the busy rooms
//! (`--members` each) and takes every publish, the second holds `--connections` clients in other
//! rooms that get no traffic at all. What counts is what the second node spends meanwhile: its CPU,
//! the messages it says it took from Redis pub/sub (`twine_redis_messages_received_total` on
//! `/metrics`, which the Node peers also answer), and what Redis itself holds for it: the channels
//! and patterns its connections subscribe to (`CLIENT LIST`), beside the busy node's and Redis's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::addrs::SourceAddrs;
use crate::fleet::{self, Plan, Run};
use crate::http::{fetch_cookie, metric};
use crate::procfs::CpuWindow;
use crate::publisher::{Limit, Tally, room_name};
use crate::scenario::{Args, Figures, NodeFigures, Setup, finish_rates};

const RECEIVED: &str = "twine_redis_messages_received_total";

async fn cookies_from(targets: &[SocketAddr]) -> anyhow::Result<Vec<String>> {
    let sources = Arc::new(SourceAddrs::new());
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(targets.len());
    for &target in targets {
        let (sources, gate) = (sources.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            fetch_cookie(sources.next(), target).await
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

pub async fn run(args: &Args, setup: &Setup, figures: &mut Figures) -> anyhow::Result<()> {
    anyhow::ensure!(setup.targets.len() == 2, "the quiet node needs two nodes");
    let (busy, quiet) = (setup.targets[0], setup.targets[1]);
    let rooms = setup.rooms;
    // Busy rooms 0..rooms, their members on the busy node; quiet rooms rooms..2×rooms on the
    // quiet node.
    let busy_members = rooms * args.members.max(1);
    let rooms_of: Vec<usize> = (0..busy_members)
        .map(|i| i % rooms)
        .chain((0..args.connections).map(|i| rooms + i % rooms))
        .collect();
    let targets: Vec<SocketAddr> = (0..rooms_of.len())
        .map(|i| if i < busy_members { busy } else { quiet })
        .collect();
    let cookies = cookies_from(&targets).await?;
    let plans: Vec<Plan> = rooms_of
        .iter()
        .zip(&targets)
        .zip(cookies)
        .map(|((&room, &target), cookie)| Plan {
            target,
            room: room_name(room),
            cookie: Some(cookie),
            recover: None,
            subscribe: true,
            waiting_for: None,
        })
        .collect();
    let run = Run::new(args.ack, args.quiet);
    let handles = run.launch(plans, args.connect_rate).await;
    // Let joins and subscriptions settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received_before = [metric(busy, RECEIVED).await, metric(quiet, RECEIVED).await];
    let tally = Arc::new(Tally::new(rooms));
    let cpu = CpuWindow::start(&setup.pids, &setup.redis_pids)?;
    run.progress(&format!(
        "publishing {} /s for {} s",
        args.rate, args.seconds
    ));
    let schedule = setup.schedule(
        args.rate,
        Limit::For(Duration::from_secs_f64(args.seconds)),
        0,
        args,
    );
    setup.publish(schedule, &tally).await;
    let due: u64 = tally
        .accepted_per_room
        .iter()
        .map(|a| Tally::load(a) * args.members.max(1) as u64)
        .sum();
    run.settle(due, Duration::from_secs(5)).await;
    let spent = cpu.spent()?;
    let received_after = [metric(busy, RECEIVED).await, metric(quiet, RECEIVED).await];
    // Redis's own account of each node's subscriptions, not the node's: its connections (found
    // by the node's sockets) and the channels and patterns Redis holds for them.
    let mut subscribed = Vec::with_capacity(2);
    for &pid in setup.pids.iter().take(2) {
        let connections = crate::procfs::tcp_connections_to(pid, &setup.redis)?;
        subscribed.push(crate::redis::subscriptions(&setup.redis, &connections).await?);
    }
    figures.spent(&spent);
    figures.nodes_each = [busy_members, args.connections]
        .iter()
        .enumerate()
        .map(|(i, &clients)| NodeFigures {
            clients,
            cores: spent.server_each[i] / spent.wall.max(1e-9),
            cpu_seconds: spent.server_each[i],
            redis_messages: received_after[i]
                .zip(received_before[i])
                .map(|(a, b)| a - b),
            redis_channels: subscribed.get(i).map(|s| s.channels),
            redis_patterns: subscribed.get(i).map(|s| s.patterns),
        })
        .collect();
    figures.dropped = run.fleet.dropped.load(std::sync::atomic::Ordering::Relaxed);
    figures.connect_errors = run.fleet.errors.load(std::sync::atomic::Ordering::Relaxed);
    figures.latency = run.fleet.latency.summary();
    let seen = run.finish(handles).await;
    figures.published(&tally);
    figures.accepted_per_second = figures.accepted as f64 / args.seconds.max(1e-9);
    let mut accepted = tally.due_seqs();
    accepted.resize(2 * rooms, Vec::new());
    (
        figures.deliveries,
        figures.expected,
        figures.lost,
        figures.duplicated,
    ) = fleet::tally(&seen, &rooms_of, &accepted, 0);
    finish_rates(figures);
    Ok(())
}

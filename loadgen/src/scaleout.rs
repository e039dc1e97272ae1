//! The scale-out: the nodes sit behind the round-robin load balancer ([`crate::balancer`]), no
//! stickiness; acknowledging clients connect through it and reconnect by themselves
//! ([`crate::session`]) while publishing goes on through it too. After `--seconds` of publishing,
//! one more node (prepared by the benchmark: the recipe after the running nodes') is started and
//! added to the balancer, and the connections the balancer holds to each node are watched for
//! `--watch-seconds`: a server that rebalances closes some of its sockets gently and its clients
//! come back through the balancer, some of them onto the new node; one that does not leaves the
//! new node to new connections only.
//!
//! What counts: the time from the node's start until every node held its share (clients ÷ nodes)
//! within 10 % either way, how the sockets stood at the end of the watch, the most reconnections
//! in one second, messages lost, repeated and out of order per client, live delivery during the
//! move, and connections the balancer could not place.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::deploy::{Fronted, fronted};
use crate::figures::ScaleOutFigures;
use crate::http::fleet_sockets;
use crate::procfs::CpuWindow;
use crate::scenario::{Args, Figures, Setup, finish_rates, resolve};
use crate::servers;
use crate::session;

/// A node's share is the fleet's sockets ÷ nodes, give or take this fraction (our server's
/// default `--rebalance-tolerance`).
const TOLERANCE: f64 = 0.10;

/// Whether every node holds its share of the run's `clients` (connections open to it, so the
/// clients still away count against it), within `tolerance`.
pub fn balanced(open: &[usize], clients: usize, tolerance: f64) -> bool {
    if open.is_empty() || clients == 0 {
        return false;
    }
    let share = clients as f64 / open.len() as f64;
    open.iter()
        .all(|&c| (c as f64 - share).abs() <= tolerance * share)
}

pub async fn run(args: &Args, setup: &Setup, figures: &mut Figures) -> anyhow::Result<()> {
    let first_nodes = setup.targets.len();
    let recipe = args
        .restart
        .get(first_nodes)
        .context("the scale-out needs the recipe of the node it adds")?;
    let n = args.connections;
    let Fronted {
        balancer,
        run,
        handles,
        warm,
        tally,
        from_seq,
        stop_publishing,
        publisher,
    } = fronted(args, setup, figures).await?;
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;

    // The new node: started, then put behind the balancer as soon as it listens.
    let sockets_before = balancer.open();
    run.progress("starting a node");
    let began = Instant::now();
    let node = servers::spawn(recipe)
        .await
        .context("starting the added node")?;
    let added = balancer.add(resolve(&node.url)?);
    let first_second = run.second();
    let reconnects_before = run.sessions.reconnects.load(Ordering::Relaxed);
    let failed_before = run.sessions.failed_attempts.load(Ordering::Relaxed);
    run.sessions.live.reset();
    let mut pids = setup.pids.clone();
    pids.push(node.pid);
    let cpu = CpuWindow::start(&pids, &setup.redis_pids)?;
    let watch_for = Duration::from_secs_f64(args.watch_seconds);
    let (mut ready_seconds, mut balanced_seconds) = (None, None);
    let mut timeline = Vec::new();
    let mut next_line = Duration::ZERO;
    loop {
        let at = began.elapsed();
        let open = balancer.open();
        if ready_seconds.is_none() && balancer.is_ready(added) {
            ready_seconds = Some(at.as_secs_f64());
        }
        if balanced_seconds.is_none() && balanced(&open, n, TOLERANCE) {
            balanced_seconds = Some(at.as_secs_f64());
        }
        if at >= next_line {
            run.progress(&format!(
                "{:.0}/{:.0} s: sockets per node {open:?}",
                at.as_secs_f64(),
                watch_for.as_secs_f64()
            ));
            timeline.push((at.as_secs_f64(), open));
            next_line += Duration::from_secs(1);
        }
        if at >= watch_for {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sockets_at_end = balancer.open();
    let live = run.sessions.live.summary();
    let peak_reconnects_per_second = run.peak_reconnects(first_second, run.second());
    let reconnects = run.sessions.reconnects.load(Ordering::Relaxed) - reconnects_before;
    let failed_attempts = run.sessions.failed_attempts.load(Ordering::Relaxed) - failed_before;
    figures.spent(&cpu.spent()?);
    // The server's own account, where it has one, in the balancer's order of nodes.
    let mut addrs: Vec<SocketAddr> = setup.targets.clone();
    addrs.push(resolve(&node.url)?);
    let fleet_view_at_end = fleet_sockets(setup.targets[0], &setup.api_key)
        .await
        .map(|nodes| {
            addrs
                .iter()
                .map(|a| {
                    nodes
                        .iter()
                        .find(|(address, _)| *address == a.to_string())
                        .map_or(0, |n| n.1)
                })
                .collect()
        });

    let _ = stop_publishing.send(true);
    publisher.await?;
    run.all_connected(n, Duration::from_secs(30)).await;
    run.settle(setup.due(&warm) + setup.due(&tally), Duration::from_secs(5))
        .await;
    let no_ready_node = balancer.no_ready();
    let s = run.sessions.clone();
    let traces = run.finish(handles).await;
    drop(balancer);
    drop(node);

    figures.nodes = first_nodes + 1;
    figures.published(&tally);
    let c = session::count(&traces, &setup.rooms_of, &tally.due_seqs(), from_seq);
    figures.delivered(&c);
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    figures.latency = live.clone();
    figures.scale_out = Some(ScaleOutFigures {
        count: c,
        tolerance: TOLERANCE,
        watched_seconds: args.watch_seconds,
        ready_seconds,
        balanced_seconds,
        sockets_before,
        sockets_at_end,
        fleet_view_at_end,
        timeline,
        reconnects,
        peak_reconnects_per_second,
        failed_attempts,
        no_ready_node,
        closed_by_server: load(&s.closed_by_server),
        kicked: load(&s.kicked),
        not_recovered: load(&s.not_recovered),
        longest_away_ms: load(&s.longest_away_us) as f64 / 1000.0,
        live,
        replayed: s.replayed.summary(),
        never_back: traces.iter().filter(|t| !t.connected).count(),
    });
    finish_rates(figures);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::balanced;

    #[test]
    fn share_within_the_tolerance() {
        assert!(balanced(&[2000, 2000, 2000], 6000, 0.1));
        assert!(balanced(&[2150, 1900, 1950], 6000, 0.1));
        assert!(!balanced(&[2300, 2000, 1700], 6000, 0.1));
        assert!(!balanced(&[3000, 3000, 0], 6000, 0.1));
        // Clients still away count against the share.
        assert!(!balanced(&[1700, 1700, 1700], 6000, 0.1));
        assert!(!balanced(&[], 6000, 0.1));
    }
}

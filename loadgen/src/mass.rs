//! Mass disconnect and mass recovery of one room: `--connections` members of one room and, on the
//! same node, one client of another room that gets a publish every 20 ms. First every member
//! drops at once (their clients close); then, once a few messages (`--missed`) were published to
//! their room, all come back at once and recover them. For each of the two: the node's CPU per
//! member (less what it spends meanwhile on the other room's traffic, measured just before), the
//! time until its CPU settled back to that, and the other room's publish→deliver p99 and max
//! until then.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::addrs::SourceAddrs;
use crate::figures::{MassFigures, MassPhase};
use crate::fleet::{self, Plan, Run};
use crate::procfs::total_precise_cpu_seconds;
use crate::publisher::{self, Limit, Schedule, Tally, room_name};
use crate::scenario::{Args, Figures, RecoveryFlow, Setup, cookies, finish_rates};

/// The other room's publishes: one every 20 ms.
const OTHER_RATE: f64 = 50.0;
/// CPU samples (each thread's `schedstat`, to the nanosecond) are taken over this window.
const SAMPLE: Duration = Duration::from_millis(100);
/// Settled: this many samples in a row within `SETTLED_CORES` of the idle rate.
const CALM_SAMPLES: usize = 5;
const SETTLED_CORES: f64 = 0.05;

/// Waits until the nodes' CPU has stayed within `SETTLED_CORES` of `idle` for `CALM_SAMPLES`
/// samples in a row (or `patience` passed); returns when that calm stretch began and the CPU
/// seconds read then.
async fn settled(pids: &[u32], idle: f64, patience: Duration) -> anyhow::Result<(Instant, f64)> {
    let give_up = Instant::now() + patience;
    let (mut last, mut last_at) = (total_precise_cpu_seconds(pids)?, Instant::now());
    let mut calm: Option<(Instant, f64, usize)> = None;
    loop {
        tokio::time::sleep(SAMPLE).await;
        let (now, at) = (total_precise_cpu_seconds(pids)?, Instant::now());
        let cores = (now - last) / at.duration_since(last_at).as_secs_f64().max(1e-9);
        calm = if cores <= idle + SETTLED_CORES {
            let (since, cpu, n) = calm.unwrap_or((last_at, last, 0));
            if n + 1 >= CALM_SAMPLES {
                return Ok((since, cpu));
            }
            Some((since, cpu, n + 1))
        } else {
            None
        };
        if at > give_up {
            return Ok((at, now));
        }
        (last, last_at) = (now, at);
    }
}

fn phase(
    began: Instant,
    cpu_began: f64,
    (calm, cpu_calm): (Instant, f64),
    idle: f64,
    members: usize,
    other: &Run,
) -> MassPhase {
    let seconds = calm.saturating_duration_since(began).as_secs_f64();
    let cpu = (cpu_calm - cpu_began - idle * seconds).max(0.0);
    MassPhase {
        settle_seconds: seconds,
        done_seconds: None,
        cpu_seconds: cpu,
        cpu_us_per_member: cpu * 1e6 / members.max(1) as f64,
        other_room: other.fleet.latency.summary(),
    }
}

pub async fn run(args: &Args, setup: &Setup, figures: &mut Figures) -> anyhow::Result<()> {
    let n = args.connections;
    let target = setup.targets[0];
    let cookies = cookies(setup, n + 1).await?;
    let plan = |i: usize, room: usize| Plan {
        target,
        room: room_name(room),
        cookie: cookies.get(i).cloned(),
        recover: None,
        subscribe: true,
        waiting_for: None,
    };
    // The members are many users: from many addresses (100 each), as a per-address limit on
    // handshakes in progress would otherwise refuse what one address opens at once.
    let spread = || SourceAddrs::spread(100);
    let members = Run::with_sources(args.ack, args.quiet, spread());
    let handles = members
        .launch((0..n).map(|i| plan(i, 0)).collect(), args.connect_rate)
        .await;
    let other = Run::new(args.ack, true);
    let other_handles = other.launch(vec![plan(n, 1)], 100).await;
    let publish =
        |rate: f64, limit: Limit, first_room: usize, first_seq: u64, tally: &Arc<Tally>| {
            let s = Schedule {
                rate,
                limit,
                rooms: 1,
                first_room,
                first_seq,
                concurrency: args.concurrency,
                fresh_connections: false,
            };
            publisher::publish(target, setup.api_key.clone(), s, tally.clone(), None)
        };
    // One message to the room, so every socket.io session has an offset to recover from.
    let warm = Arc::new(Tally::new(2));
    publish(1_000.0, Limit::Count(1), 0, 0, &warm).await;
    members.settle(n as u64, Duration::from_secs(5)).await;
    // The other room is published to from now on.
    let other_tally = Arc::new(Tally::new(2));
    let (stop_other, other_stopped) = watch::channel(false);
    let other_publisher = {
        let s = Schedule {
            rate: OTHER_RATE,
            limit: Limit::Open,
            rooms: 1,
            first_room: 1,
            first_seq: 1_000_000_000,
            concurrency: args.concurrency,
            fresh_connections: false,
        };
        let (key, tally) = (setup.api_key.clone(), other_tally.clone());
        tokio::spawn(
            async move { publisher::publish(target, key, s, tally, Some(other_stopped)).await },
        )
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu, at) = (total_precise_cpu_seconds(&setup.pids)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = (total_precise_cpu_seconds(&setup.pids)? - cpu) / at.elapsed().as_secs_f64();
    let mut mass = MassFigures {
        members: n,
        idle_cores: idle,
        ..MassFigures::default()
    };
    let patience = Duration::from_secs(60);

    // Every member drops at once.
    members.progress(&format!("{n} members drop at once"));
    other.fleet.latency.reset();
    let (began, cpu_began) = (Instant::now(), total_precise_cpu_seconds(&setup.pids)?);
    figures.dropped = members.fleet.dropped.load(Ordering::Relaxed);
    figures.connect_errors = members.fleet.errors.load(Ordering::Relaxed);
    let before = members.finish(handles).await;
    let calm = settled(&setup.pids, idle, patience).await?;
    mass.disconnect = phase(began, cpu_began, calm, idle, n, &other);

    // While they are away: `missed` messages to their room.
    let away = Arc::new(Tally::new(2));
    publish(1_000.0, Limit::Count(args.missed as u64), 0, 1, &away).await;
    let missed: HashSet<u64> = away.accepted_seqs()[0].iter().copied().collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Every member comes back at once and recovers.
    let again = Run::with_sources(args.ack, args.quiet, spread());
    let plans: Vec<Plan> = before
        .iter()
        .enumerate()
        .map(|(i, seen)| {
            let mut p = plan(i, 0);
            p.subscribe = false;
            p.waiting_for = Some(missed.clone());
            if args.recovery == RecoveryFlow::SocketIo {
                p.cookie = None;
                p.recover = seen.pid.clone().zip(seen.offset.clone());
            }
            p
        })
        .collect();
    other.fleet.latency.reset();
    let (began, cpu_began) = (Instant::now(), total_precise_cpu_seconds(&setup.pids)?);
    let again_handles = again.launch(plans, u32::MAX / 2).await;
    let connected = n - again.fleet.errors.load(Ordering::Relaxed);
    while again.fleet.complete.load(Ordering::Relaxed) < connected && began.elapsed() < patience {
        again.progress(&format!(
            "recovering: {}/{connected}",
            again.fleet.complete.load(Ordering::Relaxed)
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = began.elapsed().as_secs_f64();
    let calm = settled(&setup.pids, idle, patience).await?;
    mass.recovery = phase(began, cpu_began, calm, idle, n, &other);
    mass.recovery.done_seconds = Some(done);
    mass.complete = again.fleet.complete.load(Ordering::Relaxed);
    mass.recovered = match args.recovery {
        RecoveryFlow::SocketIo => again.fleet.recovered.load(Ordering::Relaxed),
        RecoveryFlow::Cookie => mass.complete,
    };

    let _ = stop_other.send(true);
    other_publisher.await?;
    other
        .settle(Tally::load(&other_tally.accepted), Duration::from_secs(3))
        .await;
    figures.dropped +=
        again.fleet.dropped.load(Ordering::Relaxed) + other.fleet.dropped.load(Ordering::Relaxed);
    figures.connect_errors +=
        again.fleet.errors.load(Ordering::Relaxed) + other.fleet.errors.load(Ordering::Relaxed);
    let recovered = again.finish(again_handles).await;
    let other_seen = other.finish(other_handles).await;
    let mut due = vec![Vec::new(); 2];
    due[0] = away.accepted_seqs()[0].clone();
    let members_rooms = vec![0; n];
    let (d, e, l, dup) = fleet::tally(&recovered, &members_rooms, &due, 1);
    let (od, oe, ol, odup) = fleet::tally(&other_seen, &[1], &other_tally.accepted_seqs(), 0);
    (
        figures.deliveries,
        figures.expected,
        figures.lost,
        figures.duplicated,
    ) = (d + od, e + oe, l + ol, dup + odup);
    figures.offered = Tally::load(&away.offered) + Tally::load(&other_tally.offered);
    figures.accepted = Tally::load(&away.accepted) + Tally::load(&other_tally.accepted);
    figures.failed = Tally::load(&away.failed) + Tally::load(&other_tally.failed);
    figures.refused = Tally::load(&away.refused) + Tally::load(&other_tally.refused);
    figures.mass = Some(mass);
    finish_rates(figures);
    Ok(())
}

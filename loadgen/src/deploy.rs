//! The rolling deploy: the nodes sit behind a load balancer ([`crate::balancer`]) that sends new
//! connections only to ready nodes; acknowledging clients reconnect by themselves
//! ([`crate::session`]) while publishing goes on through the balancer; every node in turn gets
//! SIGTERM, is waited for until it exits, and is started again (same port, same flags), and the
//! next one follows `--seconds` after it is ready and every client is connected again (the run
//! also publishes that long before the first restart and after the last).
//!
//! What counts: messages lost and repeated per client, the most reconnections in one second (all
//! of them land on the surviving nodes), the longest any client waited for a message, the CPU the
//! surviving nodes spent during each drain, clients that never came back, connections the balancer
//! closed because no node was ready, and how the clients were spread over the nodes at the end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::addrs::SourceAddrs;
use crate::balancer::Balancer;
use crate::figures::{DeployFigures, Restart};
use crate::http::fetch_cookie;
use crate::procfs::{CpuWindow, cpu_seconds};
use crate::publisher::{self, Limit, Schedule, Tally, room_name};
use crate::scenario::{Args, Figures, RecoveryFlow, Setup, finish_rates};
use crate::servers::{self, Node};
use crate::session::{self, SessionPlan, SessionRun};

/// Whether process `pid` has exited (gone, or a zombie its parent has not collected).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|at| stat[at + 1..].split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

async fn sigterm(pid: u32) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
    Ok(())
}

/// A `twineid` cookie per client through the balancer at `front`, as a page gets its cookie from
/// whichever node answers (none for clients that recover the socket.io way).
pub async fn cookies_through(
    front: SocketAddr,
    n: usize,
    flow: RecoveryFlow,
) -> anyhow::Result<Vec<String>> {
    if flow == RecoveryFlow::SocketIo {
        return Ok(Vec::new());
    }
    let sources = Arc::new(SourceAddrs::new());
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (sources, gate) = (sources.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            fetch_cookie(sources.next(), front).await
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// The clients and the publishing of a run behind the balancer, as the deploy and the
/// scale-out start them.
pub struct Fronted {
    pub balancer: Balancer,
    pub run: SessionRun,
    pub handles: Vec<JoinHandle<session::Trace>>,
    /// The one message per room published first, so every session has an offset to recover
    /// from.
    pub warm: Arc<Tally>,
    /// What the publishing through the balancer had accepted.
    pub tally: Arc<Tally>,
    /// The first sequence number of that publishing.
    pub from_seq: u64,
    pub stop_publishing: watch::Sender<bool>,
    pub publisher: JoinHandle<std::time::Instant>,
}

/// Starts the balancer in front of `setup`'s nodes, connects the clients through it, publishes
/// one message per room and waits for it, then keeps publishing through it at `--rate`.
pub async fn fronted(args: &Args, setup: &Setup, figures: &mut Figures) -> anyhow::Result<Fronted> {
    let n = args.connections;
    let balancer = Balancer::start(setup.targets.clone()).await?;
    let front: SocketAddr = balancer.addr;
    let cookies = cookies_through(front, n, args.recovery).await?;
    let run = SessionRun::new(args.ack, 0.0, args.quiet);
    let plans: Vec<SessionPlan> = (0..n)
        .map(|i| SessionPlan {
            target: front,
            room: room_name(setup.rooms_of[i]),
            cookie: cookies.get(i).cloned(),
            flow: args.recovery,
        })
        .collect();
    let handles = run.launch(plans, args.connect_rate).await;
    figures.connect_errors = n.saturating_sub(run.sessions.ready.load(Ordering::Relaxed));
    let schedule = |rate: f64, limit: Limit, first_seq: u64| Schedule {
        rate,
        limit,
        rooms: setup.rooms,
        first_room: 0,
        first_seq,
        concurrency: args.concurrency,
        fresh_connections: true,
    };
    // One message per room, so every socket.io session has an offset to recover from.
    let warm = Arc::new(Tally::new(setup.rooms));
    publisher::publish(
        front,
        setup.api_key.clone(),
        schedule(1_000.0, Limit::Count(setup.rooms as u64), 0),
        warm.clone(),
        None,
    )
    .await;
    run.settle(setup.due(&warm), Duration::from_secs(5)).await;
    let from_seq = setup.rooms as u64;

    // Publishing goes on through the balancer for the whole run.
    let tally = Arc::new(Tally::new(setup.rooms));
    let (stop_publishing, publishing) = watch::channel(false);
    let publisher = {
        let (key, tally) = (setup.api_key.clone(), tally.clone());
        let s = schedule(args.rate, Limit::Open, from_seq);
        tokio::spawn(
            async move { publisher::publish(front, key, s, tally, Some(publishing)).await },
        )
    };
    Ok(Fronted {
        balancer,
        run,
        handles,
        warm,
        tally,
        from_seq,
        stop_publishing,
        publisher,
    })
}

pub async fn run(args: &Args, setup: &Setup, figures: &mut Figures) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.restart.len() == setup.targets.len(),
        "the deploy needs each node's recipe to start it again"
    );
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
    let steady = Duration::from_secs_f64(args.seconds);
    tokio::time::sleep(steady).await;

    // Every node process's CPU time when first and last read (a node's last read is just before
    // it exits), for the servers' CPU over the whole deploy.
    let whole = CpuWindow::start(&[], &setup.redis_pids)?;
    let mut cpu_of: Vec<(u32, f64, f64)> = Vec::new();
    for &p in &setup.pids {
        let c = cpu_seconds(p)?;
        cpu_of.push((p, c, c));
    }
    let mut pids = setup.pids.clone();
    let mut started: Vec<Node> = Vec::new();
    let mut restarts = Vec::with_capacity(pids.len());
    for k in 0..pids.len() {
        let survivors: Vec<u32> = pids
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != k)
            .map(|(_, &p)| p)
            .collect();
        run.progress(&format!("restarting node {} of {}", k + 1, pids.len()));
        let first_second = run.second();
        let reconnects_before = run.sessions.reconnects.load(Ordering::Relaxed);
        let cpu = CpuWindow::start(&survivors, &[])?;
        let term = Instant::now();
        sigterm(pids[k]).await?;
        let give_up = term + Duration::from_secs(180);
        while !exited(pids[k]) {
            anyhow::ensure!(Instant::now() < give_up, "node {k} did not exit in 180 s");
            if let (Ok(c), Some(e)) = (
                cpu_seconds(pids[k]),
                cpu_of.iter_mut().find(|e| e.0 == pids[k]),
            ) {
                e.2 = c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drain_seconds = term.elapsed().as_secs_f64();
        let exit = Instant::now();
        let node = servers::spawn(&args.restart[k])
            .await
            .with_context(|| format!("starting node {k} again"))?;
        pids[k] = node.pid;
        let c = cpu_seconds(node.pid)?;
        cpu_of.push((node.pid, c, c));
        started.push(node);
        while !balancer.is_ready(k) {
            anyhow::ensure!(
                exit.elapsed() < Duration::from_secs(30),
                "node {k} was not ready 30 s after starting again"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let start_seconds = exit.elapsed().as_secs_f64();
        run.all_connected(n, Duration::from_secs(60)).await;
        let back_seconds = term.elapsed().as_secs_f64();
        let spent = cpu.spent()?;
        restarts.push(Restart {
            drain_seconds,
            start_seconds,
            back_seconds,
            surviving_cores: spent.server / spent.wall.max(1e-9),
            peak_reconnects_per_second: run.peak_reconnects(first_second, run.second()),
            reconnects: run.sessions.reconnects.load(Ordering::Relaxed) - reconnects_before,
        });
        tokio::time::sleep(steady).await;
    }
    tokio::time::sleep(steady).await;
    let _ = stop_publishing.send(true);
    publisher.await?;
    for e in cpu_of.iter_mut() {
        if let Ok(c) = cpu_seconds(e.0) {
            e.2 = c;
        }
    }
    let mut spent = whole.spent()?;
    spent.server = cpu_of.iter().map(|e| e.2 - e.1).sum();
    spent.other = (spent.other - spent.server).max(0.0);
    figures.spent(&spent);
    run.all_connected(n, Duration::from_secs(30)).await;
    run.settle(setup.due(&warm) + setup.due(&tally), Duration::from_secs(5))
        .await;
    let sockets_at_end = balancer.open();
    let no_ready_node = Some(balancer.no_ready());
    let s = run.sessions.clone();
    let traces = run.finish(handles).await;
    drop(balancer);
    drop(started);

    figures.published(&tally);
    let c = session::count(&traces, &setup.rooms_of, &tally.due_seqs(), from_seq);
    figures.delivered(&c);
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    figures.latency = s.live.summary();
    figures.deploy = Some(DeployFigures {
        count: c,
        peak_reconnects_per_second: restarts
            .iter()
            .map(|r| r.peak_reconnects_per_second)
            .max()
            .unwrap_or(0),
        restarts,
        reconnects: load(&s.reconnects),
        closed_by_server: load(&s.closed_by_server),
        kicked: load(&s.kicked),
        not_recovered: load(&s.not_recovered),
        failed_attempts: load(&s.failed_attempts),
        longest_away_ms: load(&s.longest_away_us) as f64 / 1000.0,
        replayed: s.replayed.summary(),
        replay_after_connect: s.replay_after_connect.summary(),
        live: s.live.summary(),
        never_back: traces.iter().filter(|t| !t.connected).count(),
        sockets_at_end,
        no_ready_node,
    });
    finish_rates(figures);
    Ok(())
}

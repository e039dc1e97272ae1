//! Churn: every client's connection is force-closed by the client at a random moment about every
//! `--every` seconds (like a flaky mobile network), while each room gets one publish per second;
//! each client reconnects after socket.io-client's backoff and recovers what it missed. What
//! counts: the share of messages delivered (every one, once, in order), how long the missed ones
//! took (publish → delivered after the reconnect) and what the server spent.
//!
//! Every session first receives one message, so a socket.io session has an offset to recover
//! from; the count starts after it, and churning starts then.
//!
//! `--loss clean` closes each connection cleanly (its acknowledgements flushed, then a FIN);
//! `--loss silent` loses it as a network does: what was not yet sent is lost, and the server
//! sees nothing until its ping timeout, while the client is already back on a new connection.

use std::sync::Arc;
use std::time::Duration;

use crate::figures::ChurnFigures;
use crate::procfs::CpuWindow;
use crate::publisher::{Limit, Tally, room_name};
use crate::scenario::{Args, Figures, RecoveryFlow, Setup, cookies, finish_rates};
use crate::session::{self, SessionPlan, SessionRun};

pub async fn run(args: &Args, setup: &Setup, figures: &mut Figures) -> anyhow::Result<()> {
    let n = args.connections;
    let cookies = match args.recovery {
        RecoveryFlow::Cookie => cookies(setup, n).await?,
        RecoveryFlow::SocketIo => Vec::new(),
    };
    let run = SessionRun::new(args.ack, args.every, args.quiet).losing(args.loss);
    let plans: Vec<SessionPlan> = (0..n)
        .map(|i| SessionPlan {
            target: setup.node_of(i, 0),
            room: room_name(setup.rooms_of[i]),
            cookie: cookies.get(i).cloned(),
            flow: args.recovery,
        })
        .collect();
    let handles = run.launch(plans, args.connect_rate).await;
    figures.connect_errors = n.saturating_sub(
        run.sessions
            .ready
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    // One message per room, so every session has something to recover from.
    let warm = Arc::new(Tally::new(setup.rooms));
    let schedule = setup.schedule(1_000.0, Limit::Count(setup.rooms as u64), 0, args);
    setup.publish(schedule, &warm).await;
    run.settle(setup.due(&warm), Duration::from_secs(5)).await;
    let from_seq = setup.rooms as u64;

    let cpu = CpuWindow::start(&setup.pids, &setup.redis_pids)?;
    run.churn(true);
    run.progress(&format!("churning for {} s", args.seconds));
    let tally = Arc::new(Tally::new(setup.rooms));
    let schedule = setup.schedule(
        args.rate,
        Limit::For(Duration::from_secs_f64(args.seconds)),
        from_seq,
        args,
    );
    setup.publish(schedule, &tally).await;
    run.churn(false);
    let spent = cpu.spent()?;
    // Everyone back, everything delivered.
    run.all_connected(n, Duration::from_secs(30)).await;
    run.settle(setup.due(&warm) + setup.due(&tally), Duration::from_secs(5))
        .await;
    figures.spent(&spent);
    let s = run.sessions.clone();
    let traces = run.finish(handles).await;
    figures.published(&tally);
    let c = session::count(&traces, &setup.rooms_of, &tally.due_seqs(), from_seq);
    figures.delivered(&c);
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    // Connections the server itself ended count as dropped: here only the clients close.
    figures.dropped = load(&s.closed_by_server) as usize;
    figures.latency = s.live.summary();
    figures.churn = Some(ChurnFigures {
        delivered_share: (c.expected - c.lost) as f64 / c.expected.max(1) as f64,
        count: c,
        forced_closes: load(&s.forced),
        reconnects: load(&s.reconnects),
        closed_by_server: load(&s.closed_by_server),
        not_recovered: load(&s.not_recovered),
        failed_attempts: load(&s.failed_attempts),
        replayed: s.replayed.summary(),
        replay_after_connect: s.replay_after_connect.summary(),
        live: s.live.summary(),
        longest_away_ms: load(&s.longest_away_us) as f64 / 1000.0,
        never_back: traces.iter().filter(|t| !t.connected).count(),
    });
    finish_rates(figures);
    Ok(())
}

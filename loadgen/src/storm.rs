//! The reconnect storm: every session subscribes and receives one message, then all drop at
//! once; messages are published while they are away; then all come back at once (each on
//! another node when there are several) while publishing goes on, and each must get every
//! message it missed and every live one, once.
//!
//! Sessions recover the Twine way (their cookie) or the socket.io way (`pid` and the last offset
//! received, in the connect packet, as stock socket.io-client does); the first message gives
//! every socket.io session an offset to come back from, and is sent to both servers alike.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::fleet::{self, Run};
use crate::procfs::CpuWindow;
use crate::publisher::{self, Limit, Tally};
use crate::scenario::{Args, Figures, RecoveryFlow, Setup, cookies, finish_rates};

pub async fn run(args: &Args, setup: &Setup, figures: &mut Figures) -> anyhow::Result<()> {
    let rooms = setup.rooms;
    let cookies = cookies(setup, args.connections).await?;
    // Sessions subscribe and receive one message.
    let first = Run::new(args.ack, args.quiet);
    let handles = first
        .launch(setup.plans(&cookies, 0, true), args.connect_rate)
        .await;
    let warm = Arc::new(Tally::new(rooms));
    let schedule = setup.schedule(1_000.0, Limit::Count(rooms as u64), 0, args);
    setup.publish(schedule, &warm).await;
    first.settle(setup.due(&warm), Duration::from_secs(5)).await;
    figures.connect_errors = first.fleet.errors.load(Ordering::Relaxed);
    // All drop at once.
    let before = first.finish(handles).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // While they are away: `missed` messages per room.
    let missed_from = rooms as u64;
    let away = Arc::new(Tally::new(rooms));
    let schedule = setup.schedule(
        10_000.0,
        Limit::Count((args.missed * rooms) as u64),
        missed_from,
        args,
    );
    setup.publish(schedule, &away).await;
    let away_seqs = away.due_seqs();
    // All come back at once, each on another node, while publishing goes on.
    let again = Run::new(args.ack, args.quiet);
    let live = Arc::new(Tally::new(rooms));
    let (stop_live, live_stopped) = watch::channel(false);
    let live_task = {
        let schedule = setup.schedule(
            args.rate,
            Limit::Open,
            missed_from + Tally::load(&away.offered),
            args,
        );
        let (target, key, live) = (setup.targets[0], setup.api_key.clone(), live.clone());
        tokio::spawn(async move {
            publisher::publish(target, key, schedule, live, Some(live_stopped)).await
        })
    };
    let mut plans = setup.plans(&cookies, 1, false);
    for ((plan, seen), &room) in plans.iter_mut().zip(&before).zip(&setup.rooms_of) {
        plan.waiting_for = Some(away_seqs[room].iter().copied().collect::<HashSet<u64>>());
        if args.recovery == RecoveryFlow::SocketIo {
            plan.cookie = None;
            plan.recover = seen.pid.clone().zip(seen.offset.clone());
        }
    }
    let cpu = CpuWindow::start(&setup.pids, &setup.redis_pids)?;
    let storm = Instant::now();
    let handles = again.launch(plans, u32::MAX / 2).await;
    let connected = args.connections - again.fleet.errors.load(Ordering::Relaxed);
    let deadline = Duration::from_secs(60);
    while again.fleet.complete.load(Ordering::Relaxed) < connected && storm.elapsed() < deadline {
        again.progress(&format!(
            "recovering: {}/{connected} complete after {:.1} s",
            again.fleet.complete.load(Ordering::Relaxed),
            storm.elapsed().as_secs_f64()
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovery = storm.elapsed().as_secs_f64();
    figures.sessions_complete = again.fleet.complete.load(Ordering::Relaxed);
    figures.sessions_recovered = match args.recovery {
        RecoveryFlow::SocketIo => again.fleet.recovered.load(Ordering::Relaxed),
        RecoveryFlow::Cookie => figures.sessions_complete,
    };
    let all_recovered = figures.sessions_complete >= args.connections;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_live.send(true);
    live_task.await?;
    let mut accepted = away_seqs;
    for (room, seqs) in live.due_seqs().into_iter().enumerate() {
        accepted[room].extend(seqs);
    }
    let due: u64 = accepted
        .iter()
        .zip(&setup.members)
        .map(|(a, m)| a.len() as u64 * m)
        .sum();
    again.settle(due, Duration::from_secs(5)).await;
    figures.spent(&cpu.spent()?);
    figures.connect_errors += again.fleet.errors.load(Ordering::Relaxed);
    figures.dropped = again.fleet.dropped.load(Ordering::Relaxed);
    figures.latency = again.fleet.latency.summary();
    let seen = again.finish(handles).await;
    figures.offered = Tally::load(&away.offered) + Tally::load(&live.offered);
    figures.accepted = Tally::load(&away.accepted) + Tally::load(&live.accepted);
    figures.refused = Tally::load(&away.refused) + Tally::load(&live.refused);
    figures.failed = Tally::load(&away.failed) + Tally::load(&live.failed);
    figures.unsent = Tally::load(&away.unsent) + Tally::load(&live.unsent);
    (
        figures.deliveries,
        figures.expected,
        figures.lost,
        figures.duplicated,
    ) = fleet::tally(&seen, &setup.rooms_of, &accepted, missed_from);
    figures.recovery_seconds = all_recovered.then_some(recovery);
    let replayed = Tally::load(&away.accepted) as f64 / rooms as f64 * args.connections as f64;
    figures.replayed_per_second = Some(replayed / recovery.max(1e-9));
    finish_rates(figures);
    Ok(())
}

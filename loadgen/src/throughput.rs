//! Publish rate: no subscribers, publishes offered well above what the server can take, at most
//! `concurrency` waiting for an answer at once (so this behaves like a closed-loop HTTP load
//! generator with that many keep-alive connections, e.g. wrk). What counts is publishes accepted
//! per second, and what each cost the server and, in Redis mode, Redis (its process CPU time
//! from /proc and `INFO commandstats`, each primary's and in total on a Redis Cluster). A room can
//! first be given a history (`--prefill`), so a per-append cost that grows with the room's depth
//! shows.

use std::sync::Arc;
use std::time::Duration;

use crate::procfs::CpuWindow;
use crate::publisher::{Limit, Schedule, Tally};
use crate::redis;
use crate::scenario::{Args, Figures, PrimaryFigures, RedisFigures, Setup, finish_rates};

pub async fn run(args: &Args, setup: &Setup, figures: &mut Figures) -> anyhow::Result<()> {
    if args.prefill > 0 {
        if !args.quiet {
            eprintln!("prefilling bench-0 with {} messages", args.prefill);
        }
        // Open-loop publishes not sent (in-flight bound) are simply sent again in a next round.
        let fill = Arc::new(Tally::new(1));
        for _ in 0..20 {
            let missing = args.prefill.saturating_sub(Tally::load(&fill.accepted));
            if missing == 0 {
                break;
            }
            let schedule = Schedule {
                rate: 4_000.0,
                limit: Limit::Count(missing),
                rooms: 1,
                first_room: 0,
                first_seq: Tally::load(&fill.offered),
                concurrency: 256,
                fresh_connections: false,
            };
            setup.publish(schedule, &fill).await;
        }
        anyhow::ensure!(
            Tally::load(&fill.accepted) >= args.prefill,
            "prefill: {} of {} publishes accepted",
            Tally::load(&fill.accepted),
            args.prefill
        );
        // Let the store settle (archiving, trimming) before measuring.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let first_seq = 1_000_000_000;
    for &addr in &setup.redis {
        redis::reset_stats(addr).await?;
    }
    let tally = Arc::new(Tally::new(setup.rooms));
    let cpu = CpuWindow::start(&setup.pids, &setup.redis_pids)?;
    let schedule = setup.schedule(
        args.rate,
        Limit::For(Duration::from_secs_f64(args.seconds)),
        first_seq,
        args,
    );
    setup.publish(schedule, &tally).await;
    let spent = cpu.spent()?;
    figures.spent(&spent);
    figures.published(&tally);
    figures.accepted_per_second = figures.accepted as f64 / spent.wall.max(1e-9);
    if !setup.redis.is_empty() {
        // Every primary's commands, summed by name.
        let mut commands: std::collections::BTreeMap<String, redis::CommandStat> =
            Default::default();
        for &addr in &setup.redis {
            for (name, stat) in redis::command_stats(addr).await? {
                let sum = commands.entry(name).or_default();
                sum.calls += stat.calls;
                sum.usec += stat.usec;
            }
        }
        let accepted = figures.accepted.max(1) as f64;
        let primaries = if setup.redis.len() > 1 {
            setup
                .redis
                .iter()
                .zip(&spent.redis_each)
                .map(|(addr, &cpu)| PrimaryFigures {
                    addr: addr.to_string(),
                    cpu_seconds: cpu,
                    cpu_us_per_publish: cpu * 1e6 / accepted,
                })
                .collect()
        } else {
            Vec::new()
        };
        let usec: u64 = commands
            .iter()
            .filter(|(name, _)| !name.starts_with("info") && !name.starts_with("config"))
            .map(|(_, s)| s.usec)
            .sum();
        figures.redis = Some(RedisFigures {
            primaries,
            cpu_seconds: spent.redis,
            cpu_us_per_publish: spent.redis * 1e6 / accepted,
            evalsha_us_per_call: commands
                .get("evalsha")
                .filter(|s| s.calls > 0)
                .map(|s| s.usec as f64 / s.calls as f64),
            commands_us_per_publish: usec as f64 / accepted,
            commands,
        });
    }
    finish_rates(figures);
    Ok(())
}

//! The latency search: the highest publish rate into one room at which p99 publish→deliver stays
//! within a limit. The fleet connects once; each probe offers one rate for a few seconds, waits
//! for everything accepted to arrive, and passes only if every publish was accepted, every
//! delivery arrived, and p99 stayed within the limit (a server that refuses publishes to keep
//! its latency does not pass at that rate). Rates double until one fails, then a bisection
//! (geometric) narrows the gap to about 10 %.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::fleet::{self, Run};
use crate::procfs::CpuWindow;
use crate::publisher::{Limit, Tally};
use crate::scenario::{Args, Figures, Probe, Search, Setup, cookies, finish_rates};

/// Highest rate tried.
const MAX_RATE: f64 = 5_000.0;

struct Searcher<'a> {
    args: &'a Args,
    setup: &'a Setup,
    run: &'a Run,
    next_seq: u64,
    accepted: Vec<Vec<u64>>,
    probes: Vec<Probe>,
}

impl Searcher<'_> {
    async fn probe(&mut self, rate: f64) -> anyhow::Result<bool> {
        let (args, setup, run) = (self.args, self.setup, self.run);
        run.fleet.latency.reset();
        let delivered_before = run.delivered();
        let tally = Arc::new(Tally::new(setup.rooms));
        run.progress(&format!("probe {rate:.0}/s"));
        let cpu = CpuWindow::start(&setup.pids, &setup.redis_pids)?;
        let schedule = setup.schedule(
            rate,
            Limit::For(Duration::from_secs_f64(args.probe_seconds)),
            self.next_seq,
            args,
        );
        setup.publish(schedule, &tally).await;
        let due = setup.due(&tally);
        run.settle(delivered_before + due, Duration::from_secs(3))
            .await;
        let spent = cpu.spent()?;
        let offered = Tally::load(&tally.offered);
        self.next_seq += offered;
        let accepted = Tally::load(&tally.accepted);
        for (room, seqs) in tally.accepted_seqs().into_iter().enumerate() {
            self.accepted[room].extend(seqs);
        }
        let delivered = run.delivered() - delivered_before;
        let latency = run.fleet.latency.summary();
        let passed = accepted == offered
            && delivered >= due
            && latency
                .as_ref()
                .is_some_and(|l| l.p99_ms <= args.p99_limit_ms);
        self.probes.push(Probe {
            rate,
            offered,
            accepted,
            not_accepted: offered - accepted,
            late_or_lost: due.saturating_sub(delivered),
            latency,
            deliveries_per_cpu_second: delivered as f64 / spent.server.max(1e-9),
            server_cores: spent.server / spent.wall.max(1e-9),
            loadgen_cores: spent.loadgen / spent.wall.max(1e-9),
            other_cores: spent.other / spent.wall.max(1e-9),
            passed,
        });
        // Let a server that fell behind catch up (and its overload gate reopen) before the next.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(passed)
    }
}

pub async fn run(args: &Args, setup: &Setup, figures: &mut Figures) -> anyhow::Result<()> {
    let cookies = cookies(setup, args.connections).await?;
    let run = Run::new(args.ack, args.quiet);
    let handles = run
        .launch(setup.plans(&cookies, 0, true), args.connect_rate)
        .await;
    let mut s = Searcher {
        args,
        setup,
        run: &run,
        next_seq: 0,
        accepted: vec![Vec::new(); setup.rooms],
        probes: Vec::new(),
    };
    let (mut lo, mut hi) = (0.0f64, None::<f64>);
    let mut rate = args.rate.max(1.0);
    // Ramp: double while passing; halve while the first rate fails.
    while s.probes.len() < args.max_probes {
        if s.probe(rate).await? {
            lo = rate;
            if hi.is_some() || rate * 2.0 > MAX_RATE {
                break;
            }
            rate *= 2.0;
        } else {
            hi = Some(rate);
            if lo > 0.0 || rate < 2.0 {
                break;
            }
            rate /= 2.0;
        }
    }
    // Bisect between the highest pass and the lowest failure.
    while let Some(h) = hi {
        if lo <= 0.0 || h / lo <= 1.1 || s.probes.len() >= args.max_probes {
            break;
        }
        let mid = (lo * h).sqrt().round();
        if mid <= lo || mid >= h {
            break;
        }
        if s.probe(mid).await? {
            lo = mid;
        } else {
            hi = Some(mid);
        }
    }
    figures.dropped = run.fleet.dropped.load(Ordering::Relaxed);
    figures.connect_errors = run.fleet.errors.load(Ordering::Relaxed);
    let seen = run.finish(handles).await;
    (
        figures.deliveries,
        figures.expected,
        figures.lost,
        figures.duplicated,
    ) = fleet::tally(&seen, &setup.rooms_of, &s.accepted, 0);
    // The figures of the best passing probe stand for the search.
    if let Some(best) = s
        .probes
        .iter()
        .filter(|p| p.passed)
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
    {
        figures.latency = best.latency.clone();
        figures.deliveries_per_cpu_second = best.deliveries_per_cpu_second;
        figures.server_cores = best.server_cores;
        figures.loadgen_cores = best.loadgen_cores;
    }
    // Other work during any probe may have decided the search.
    figures.other_cores = s.probes.iter().map(|p| p.other_cores).fold(0.0, f64::max);
    figures.offered = s.probes.iter().map(|p| p.offered).sum();
    figures.accepted = s.probes.iter().map(|p| p.accepted).sum();
    figures.search = Some(Search {
        found_rate: lo,
        probes: s.probes,
    });
    let keep = figures.deliveries_per_cpu_second;
    finish_rates(figures);
    figures.deliveries_per_cpu_second = keep;
    Ok(())
}

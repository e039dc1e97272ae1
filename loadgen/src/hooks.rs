//! Backend hooks: what the app's backend costs a connect, a subscribe and a client publish. The
//! clients connect (the Twine flow: cookie, then WebSocket, with a token in the connect packet),
//! then subscribe, then publish a few messages each with an acknowledgement, one phase after
//! another and `--concurrency` operations in flight in each, so every phase is a throughput and a
//! latency of its own. Against a server with the hooks on, each operation waits for one call to
//! the backend; against one without, the same operations show what that call adds. A first
//! round of up to 500 other clients, not measured, warms the backend and the server's connections
//! to it.
//!
//! The token (minted once, `publish` claim `hooks-*`) is what lets a client publish on a server
//! without a publish hook (`--client-publish token`); a server with `--auth off` ignores it.
//! Clients publish into rooms nobody subscribes to: fan-out is measured elsewhere, and here it
//! would hide the hook's share of a publish.
//!
//! The server's own account of its hooks comes from `GET /metrics` around the measured round:
//! `twine_hook_calls_total{hook, outcome}` and `twine_hook_seconds{hook}`'s sum and count.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::addrs::SourceAddrs;
use crate::client::{Client, Event, Hello};
use crate::figures::{HookCalls, HooksFigures, HooksPhase};
use crate::http::{metrics, mint_token, sample_sum};
use crate::procfs::{self, CpuWindow};
use crate::scenario::{Args, Figures, Setup, cookies};
use crate::stats::Histogram;

/// Publishes each client sends, one after another.
pub const PUBLISHES_PER_CLIENT: u64 = 5;
/// Clients of the round before the measured one (fewer when the run has fewer).
const WARM_UP: usize = 500;
/// Longest an operation may take; a longer one counts as failed.
const PATIENCE: Duration = Duration::from_secs(10);
/// What the token allows: any room to join (no `rooms` claim), the benchmark's rooms to publish.
const CLAIMS: &str = r#"{"sub":"bench","publish":["hooks-*"]}"#;
const HOOKS: [&str; 3] = ["connect", "subscribe", "publish"];

/// How one operation ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Refused,
    Failed,
}

/// What each phase's operations ended as, with the latency of those that succeeded.
struct Tally {
    latency: Histogram,
    counts: [u64; 3],
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: Histogram::new(),
            counts: [0; 3],
        }
    }

    fn add(&mut self, outcome: Outcome, took: Duration) {
        if outcome == Outcome::Ok {
            self.latency.record_us(took.as_micros() as u64);
        }
        self.counts[outcome as usize] += 1;
    }

    fn count(&self, outcome: Outcome) -> u64 {
        self.counts[outcome as usize]
    }

    fn attempted(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A phase's wall time and the server's CPU time over it (each thread's `schedstat`: a phase
/// may last less than a second).
struct Stopwatch<'a> {
    pids: &'a [u32],
    began: Instant,
    cpu: f64,
}

impl Stopwatch<'_> {
    fn start(pids: &[u32]) -> anyhow::Result<Stopwatch<'_>> {
        Ok(Stopwatch {
            pids,
            began: Instant::now(),
            cpu: procfs::total_precise_cpu_seconds(pids)?,
        })
    }

    fn phase(&self, tally: &Tally) -> anyhow::Result<HooksPhase> {
        let seconds = self.began.elapsed().as_secs_f64();
        let cpu = procfs::total_precise_cpu_seconds(self.pids)? - self.cpu;
        Ok(HooksPhase {
            per_second: tally.count(Outcome::Ok) as f64 / seconds.max(1e-9),
            latency: tally.latency.summary(),
            seconds,
            server_cpu_us: cpu * 1e6 / tally.attempted().max(1) as f64,
        })
    }
}

/// Runs `op` on every item, each in a task of its own, and returns what each returned, in order.
/// The operations themselves take the phase's permits, so at most `--concurrency` are in flight.
async fn each<T, R, F, Fut>(items: Vec<T>, op: F) -> anyhow::Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let tasks: Vec<_> = items.into_iter().map(|x| tokio::spawn(op(x))).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await?);
    }
    Ok(out)
}

/// Waits for the next event `want` accepts (`Some(outcome)`), ignoring the rest; `Failed` when
/// none came within the patience or the connection ended.
async fn answer(client: &mut Client, want: impl Fn(Event) -> Option<Outcome>) -> Outcome {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Ok(Some(event))) => {
                if let Some(outcome) = want(event) {
                    return outcome;
                }
            }
            _ => return Outcome::Failed,
        }
    }
}

/// The server's account of `hook` between two `/metrics` texts; `None` when it has no such hook.
fn hook_calls(after: &str, before: &str, hook: &str) -> Option<HookCalls> {
    let label = format!("hook=\"{hook}\"");
    let since = |name: &str, labels: &[&str]| {
        sample_sum(after, name, labels).map(|a| a - sample_sum(before, name, labels).unwrap_or(0.0))
    };
    let calls = since("twine_hook_calls_total", &[&label])?;
    let answered: f64 = ["allowed", "refused"]
        .iter()
        .filter_map(|o| {
            since(
                "twine_hook_calls_total",
                &[&label, &format!("outcome=\"{o}\"")],
            )
        })
        .sum();
    let sum = since("twine_hook_seconds_sum", &[&label]);
    let count = since("twine_hook_seconds_count", &[&label]).filter(|&c| c > 0.0);
    Some(HookCalls {
        calls,
        failed: calls - answered,
        mean_ms: sum.zip(count).map(|(s, c)| s / c * 1000.0),
    })
}

/// What every round shares: the node, the token, the permits of the operations in flight.
struct Rounds<'a> {
    target: std::net::SocketAddr,
    rooms: usize,
    pids: &'a [u32],
    token: Arc<str>,
    gate: Arc<Semaphore>,
    sources: Arc<SourceAddrs>,
    concurrency: usize,
    quiet: bool,
}

impl Rounds<'_> {
    fn progress(&self, what: &str) {
        if !self.quiet {
            eprintln!("   {what}");
        }
    }

    /// One client per cookie through the three phases; the clients, still connected.
    async fn round(&self, cookies: Vec<String>) -> anyhow::Result<(HooksFigures, Vec<Client>)> {
        let (n, target, rooms) = (cookies.len(), self.target, self.rooms);
        let mut out = HooksFigures {
            clients: n,
            concurrency: self.concurrency,
            ..HooksFigures::default()
        };

        // Connect: cookie on the handshake, token in the connect packet.
        self.progress(&format!("{n} clients connecting"));
        let watch = Stopwatch::start(self.pids)?;
        let connected = each(cookies, |cookie| {
            let (gate, sources, token) =
                (self.gate.clone(), self.sources.clone(), self.token.clone());
            async move {
                let _permit = gate.acquire().await;
                let began = Instant::now();
                let hello = Hello {
                    cookie: Some(&cookie),
                    recover: None,
                    token: Some(&token),
                };
                let connecting = Client::connect(target, sources.next(), hello);
                let result = match tokio::time::timeout(PATIENCE, connecting).await {
                    Ok(Ok(client)) => Ok(client),
                    // The connect hook's refusal, or the token's: a `44` connect error.
                    Ok(Err(e)) if e.to_string().starts_with("namespace connect refused") => {
                        Err(Outcome::Refused)
                    }
                    _ => Err(Outcome::Failed),
                };
                (result, began.elapsed())
            }
        })
        .await?;
        let mut tally = Tally::new();
        let mut clients = Vec::with_capacity(n);
        for (i, (result, took)) in connected.into_iter().enumerate() {
            match result {
                Ok(client) => {
                    tally.add(Outcome::Ok, took);
                    clients.push((i, client));
                }
                Err(outcome) => tally.add(outcome, took),
            }
        }
        out.connect = watch.phase(&tally)?;
        out.connects_refused = tally.count(Outcome::Refused);
        out.connects_failed = tally.count(Outcome::Failed);

        // Subscribe: one room each, until `roomJoined` (or the refusal's `error` event).
        self.progress(&format!("{} clients subscribing", clients.len()));
        let watch = Stopwatch::start(self.pids)?;
        let subscribed = each(clients, |(i, mut client)| {
            let gate = self.gate.clone();
            async move {
                let _permit = gate.acquire().await;
                let began = Instant::now();
                let outcome = match client.subscribe(&format!("hooks-{}", i % rooms)).await {
                    Ok(()) => {
                        answer(&mut client, |e| match e {
                            Event::Joined => Some(Outcome::Ok),
                            Event::Error => Some(Outcome::Refused),
                            _ => None,
                        })
                        .await
                    }
                    Err(_) => Outcome::Failed,
                };
                (i, client, outcome, began.elapsed())
            }
        })
        .await?;
        let mut tally = Tally::new();
        let mut clients = Vec::with_capacity(subscribed.len());
        for (i, client, outcome, took) in subscribed {
            tally.add(outcome, took);
            if outcome != Outcome::Failed {
                clients.push((i, client));
            }
        }
        out.subscribe = watch.phase(&tally)?;
        out.subscribes_refused = tally.count(Outcome::Refused);
        out.subscribes_failed = tally.count(Outcome::Failed);

        // Publish: a few each, one after another, each acknowledged before the next; every publish
        // takes a permit of its own, so `--concurrency` publishes are in flight across the clients.
        self.progress(&format!(
            "{} clients publishing {PUBLISHES_PER_CLIENT} each",
            clients.len()
        ));
        let payload = serde_json::json!({ "text": "hello" });
        let watch = Stopwatch::start(self.pids)?;
        let published = each(clients, |(i, mut client)| {
            let (gate, payload) = (self.gate.clone(), payload.clone());
            async move {
                let room = format!("hooks-out-{}", i % rooms);
                let mut ends = Vec::with_capacity(PUBLISHES_PER_CLIENT as usize);
                for id in 1..=PUBLISHES_PER_CLIENT {
                    let _permit = gate.acquire().await;
                    let began = Instant::now();
                    let outcome = match client.publish(id, &room, &payload).await {
                        Ok(()) => {
                            answer(&mut client, |e| match e {
                                Event::Ack(acked, body) if acked == id => {
                                    Some(if body.contains("\"ok\":true") {
                                        Outcome::Ok
                                    } else {
                                        Outcome::Refused
                                    })
                                }
                                _ => None,
                            })
                            .await
                        }
                        Err(_) => Outcome::Failed,
                    };
                    ends.push((outcome, began.elapsed()));
                    if outcome == Outcome::Failed {
                        break;
                    }
                }
                (client, ends)
            }
        })
        .await?;
        let mut tally = Tally::new();
        let mut clients = Vec::with_capacity(published.len());
        for (client, ends) in published {
            for (outcome, took) in ends {
                tally.add(outcome, took);
            }
            clients.push(client);
        }
        out.publish = watch.phase(&tally)?;
        out.publishes_ok = tally.count(Outcome::Ok);
        out.publishes_refused = tally.count(Outcome::Refused);
        // A client whose publish went unanswered sent none of the rest: those count as failed too.
        let due = (n as u64 - out.connects_refused - out.connects_failed) * PUBLISHES_PER_CLIENT;
        out.publishes_failed = due.saturating_sub(out.publishes_ok + out.publishes_refused);
        Ok((out, clients))
    }
}

/// The server's `/metrics` text, or an empty one from a server that does not answer it.
async fn scrape(target: std::net::SocketAddr) -> String {
    metrics(target).await.unwrap_or_default()
}

pub async fn run(args: &Args, setup: &Setup, figures: &mut Figures) -> anyhow::Result<()> {
    let n = args.connections;
    let target = setup.targets[0];
    let rounds = Rounds {
        target,
        rooms: setup.rooms,
        pids: &setup.pids,
        token: mint_token(target, &setup.api_key, CLAIMS).await?.into(),
        gate: Arc::new(Semaphore::new(args.concurrency.max(1))),
        sources: Arc::new(SourceAddrs::new()),
        concurrency: args.concurrency,
        quiet: args.quiet,
    };
    let warm = WARM_UP.min(n);
    let mut cookies = cookies(setup, warm + n).await?;
    // A round not measured first: a backend's first calls (its JIT, the server's pool of
    // connections to it) are not what an app's backend answers in service.
    rounds.progress(&format!("warming up with {warm} clients"));
    let (_, warmed) = rounds.round(cookies.drain(..warm).collect()).await?;
    for client in warmed {
        client.close().await;
    }
    let before = scrape(target).await;
    let cpu = CpuWindow::start(&setup.pids, &setup.redis_pids)?;
    let backend_before = args.backend_pid.map(procfs::cpu_seconds).transpose()?;
    let (mut out, clients) = rounds.round(cookies).await?;
    let spent = cpu.spent()?;
    let after = scrape(target).await;
    [out.connect_hook, out.subscribe_hook, out.publish_hook] =
        HOOKS.map(|hook| hook_calls(&after, &before, hook));
    figures.spent(&spent);
    if let (Some(pid), Some(before)) = (args.backend_pid, backend_before) {
        // The backend is measured, not other work on the machine.
        let backend = procfs::cpu_seconds(pid)? - before;
        let wall = spent.wall.max(1e-9);
        out.backend_cores = Some(backend / wall);
        figures.other_cores = ((spent.other - backend) / wall).max(0.0);
    }
    for client in clients {
        client.close().await;
    }
    figures.connect_errors = (out.connects_refused + out.connects_failed) as usize;
    figures.offered = out.publishes_ok + out.publishes_refused + out.publishes_failed;
    figures.accepted = out.publishes_ok;
    figures.refused = out.publishes_refused;
    figures.failed = out.publishes_failed;
    figures.accepted_per_second = out.publish.per_second;
    figures.answer_latency = out.publish.latency.clone();
    figures.hooks = Some(out);
    Ok(())
}

//! One Socket.IO connection: its session, the rooms it is in, and the work it does in order.
//!
//! Events are decoded into [`Command`]s as they arrive, on the connection's read path, and
//! everything that can be refused then is refused then, before anything is queued.
//! Acknowledgements and `stateRecovery` are applied there at once. The rest waits in one of two
//! lanes, each run in order by a task that exists only while it has work:
//! - the room lane: the connection's start (its recovery), then its subscribes, unsubscribes and
//!   presence, and its end;
//! - the publish lane: its publishes, whose hook may take seconds without holding the client's
//!   room changes, while its own publishes keep their order.
//!
//! What waits is bounded in bytes, per connection and per node ([`super::queue`]); an event
//! beyond it, or beyond the connection's rate, is dropped with an `error` event. When the
//! connection ends its lanes are dropped: no work outlives it.
//!
//! A store that does not answer delays a connection's work; it is retried while the connection
//! lasts ([`super::command::until_done`]), so a client is never left open in fewer rooms than its
//! session holds.

use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use twine_store::{Position, Session};

use super::command::publish::Outcome;
use super::command::{Command, Decoding, Publish, Refusal, Subscribe, until_done};
use super::context::{Context, EventError, Membership};
use super::queue::{Full, Lane, Waiting};
use super::replay::Replay;
use super::resume::{Notice, Resume};
use crate::auth::Grant;
use crate::drain::Drained;
use crate::metrics::Limit;
use crate::outbox::Outbox;
use crate::rate::{Limiter, limiter};
use crate::session::SessionHandle;
use crate::state::AppState;
use crate::transport::{Reply, Transport};

/// What a client is told of events dropped over its rate.
const RATE_EXCEEDED: &str =
    "events are arriving faster than this server accepts; some were dropped";
/// What a client is told of events dropped over its queue.
const QUEUE_FULL: &str = "too many events are waiting; some were dropped";
/// Least time between two "events dropped" notices to one connection.
const NOTICE_EVERY: Duration = Duration::from_secs(1);
/// How long a drained connection waits for its client to acknowledge what it was sent, and how
/// often it looks.
const DRAIN_ACK_WAIT: Duration = Duration::from_secs(1);
const DRAIN_ACK_POLL: Duration = Duration::from_millis(20);
/// How long a connection that ended keeps trying to store its positions while the store does
/// not answer: past it, its client's next recovery repeats what it had acknowledged since the
/// last flush.
const STORE_ON_END: Duration = Duration::from_secs(30);

/// Work of the room lane.
enum Work {
    /// Rooms back and missed messages replayed: always the first.
    Start,
    Command(Command),
    /// The node is stopping: stop live delivery, let the client acknowledge, close.
    Drain,
    /// The connection ended: store its positions and leave its rooms.
    End,
}

pub struct Connection {
    /// What its commands work on.
    context: Context,
    /// The replay waits for this (a reconnecting page's listeners may attach late).
    replay_not_before: Option<Instant>,
    /// Under Socket.IO's recovery: how the connection starts (taken by its recovery).
    resume: Mutex<Option<Resume>>,
    /// Rooms the connect hook named, joined once the connection starts.
    joins: Mutex<Vec<Arc<str>>>,
    limiter: Limiter,
    state: Mutex<State>,
}

/// The connection is its context, for its lanes and for tests.
impl Deref for Connection {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.context
    }
}

struct State {
    rooms_lane: Lane<Work>,
    publish_lane: Lane<Publish>,
    waiting: Waiting,
    ended: bool,
    last_notice: Option<Instant>,
}

impl State {
    fn rooms(&mut self) -> (&mut Lane<Work>, &mut Waiting) {
        (&mut self.rooms_lane, &mut self.waiting)
    }

    fn publishes(&mut self) -> (&mut Lane<Publish>, &mut Waiting) {
        (&mut self.publish_lane, &mut self.waiting)
    }
}

impl Connection {
    /// A connection over `transport`, counted and known to the drain; its work starts when
    /// [`Connection::connected`].
    pub fn open(
        app: &Arc<AppState>,
        transport: Arc<dyn Transport>,
        session: SessionHandle,
        replay_not_before: Option<Instant>,
        grant: Grant,
        resume: Option<Resume>,
        joins: Vec<Arc<str>>,
    ) -> Arc<Connection> {
        let config = &app.config;
        let sid = transport.sid();
        let outbox = Outbox::new(
            transport,
            config.send_queue as usize,
            config.ping_interval + config.ping_timeout,
            app.metrics.clone(),
        );
        if let Some(resume) = &resume {
            outbox.transport().reply_with_pid(&resume.pid);
            // The client's offsets are its positions: none are stored for it.
            outbox.give_offsets();
            outbox.freeze_positions();
        }
        app.metrics.connections.inc();
        let state = State {
            rooms_lane: Lane::default(),
            publish_lane: Lane::default(),
            waiting: Waiting::new(config.event_queue as usize, app.queued_events.clone()),
            ended: false,
            last_notice: None,
        };
        let connection = Arc::new(Connection {
            context: Context::new(app.clone(), outbox, session, grant),
            replay_not_before,
            resume: Mutex::new(resume),
            joins: Mutex::new(joins),
            limiter: limiter(config.event_rate, config.event_burst),
            state: Mutex::new(state),
        });
        let drained: Arc<dyn Drained> = connection.clone();
        app.draining.register(sid, Arc::downgrade(&drained));
        connection
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client has joined the namespace: recovery is its first work, then the rooms the
    /// connect hook named.
    pub fn connected(self: &Arc<Self>) {
        self.queue_own(Work::Start);
        let joins = std::mem::take(&mut *self.joins.lock().unwrap_or_else(|e| e.into_inner()));
        for room in joins {
            let subscribe = Subscribe { room, asked: false };
            self.queue_own(Work::Command(Command::Subscribe(subscribe)));
        }
    }

    /// Handles one event as it is decoded: `data` is its JSON text, `[name, args...]`; `reply`
    /// its acknowledgement, if it asked for one (only `publish` answers it).
    pub fn on_event(self: &Arc<Self>, data: &str, reply: Option<Box<dyn Reply>>) {
        let decoding = Decoding {
            config: &self.app.config,
            grant: &self.grant,
        };
        let decoded = Command::decode(data, &decoding);
        let metrics = &self.app.metrics;
        match decoded {
            Ok((Command::Acknowledge(ack), name)) => {
                metrics.client_event(name);
                self.acknowledged(ack.0);
            }
            Ok((command, name)) => {
                metrics.client_event(name);
                if !self.within_rate() {
                    // Dropped, but answered: a client awaiting its acknowledgement learns why.
                    return answer(reply, RATE_EXCEEDED);
                }
                match command {
                    Command::StateRecovery => self.outbox.acknowledge_each_message(),
                    Command::Other => {} // not part of the contract: ignored, as the original did
                    Command::Publish(mut publish) => {
                        let size = publish.size();
                        publish.reply = reply;
                        let queued =
                            self.queue(State::publishes, publish, size, Connection::run_publishes);
                        if let Err(publish) = queued {
                            answer(publish.reply, QUEUE_FULL);
                        }
                    }
                    command => {
                        let size = command.size();
                        let work = Work::Command(command);
                        let _ = self.queue(State::rooms, work, size, Connection::run_rooms);
                    }
                }
            }
            Err(Refusal { event, message }) => {
                metrics.client_event(event);
                if !self.within_rate() {
                    return answer(reply, RATE_EXCEEDED);
                }
                match reply {
                    Some(reply) => reply.send(&Outcome::refused(&message).to_raw()),
                    None => self.refuse_now(event, &message),
                }
            }
        }
    }

    fn acknowledged(self: &Arc<Self>, position: Position) {
        if self.outbox.ack(position) {
            self.app.flusher.mark(&self.session, &self.outbox);
        } else if self.within_rate() {
            // Only acknowledgements of what was sent are free.
            tracing::debug!(sid = %self.sid, %position, "acknowledged timestamp not among those sent");
        }
    }

    /// Takes one event from the connection's rate; over it, the event is dropped with a notice.
    fn within_rate(&self) -> bool {
        if self.limiter.check().is_ok() {
            return true;
        }
        self.app.metrics.limit(Limit::EventRate);
        self.notice(RATE_EXCEEDED);
        false
    }

    /// An `error` event about dropped events, at most once per [`NOTICE_EVERY`].
    fn notice(&self, message: &str) {
        let now = Instant::now();
        {
            let mut state = self.state();
            if state
                .last_notice
                .is_some_and(|at| now.duration_since(at) < NOTICE_EVERY)
            {
                return;
            }
            state.last_notice = Some(now);
        }
        tracing::debug!(sid = %self.sid, "{message}");
        self.refuse_now("*", message);
    }

    /// An `error` event for an event refused as it arrived; lost if the client is not reading.
    fn refuse_now(&self, event: &str, message: &str) {
        self.outbox.notify("error", &EventError { event, message });
    }

    /// Queues `item` on the lane `lane` picks, within the connection's and the node's bounds,
    /// starting the lane's task (`run`) if it has none; refused, the item back.
    fn queue<T, F>(
        self: &Arc<Self>,
        lane: fn(&mut State) -> (&mut Lane<T>, &mut Waiting),
        item: T,
        size: usize,
        run: fn(Arc<Self>) -> F,
    ) -> Result<(), T>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.is_leaving() {
            return Ok(()); // nothing more is handled for a connection that is going
        }
        let mut state = self.state();
        let (lane, waiting) = lane(&mut state);
        let pushed = waiting.push(lane, item, size);
        drop(state);
        match pushed {
            Ok(start) => {
                if start {
                    tokio::spawn(run(self.clone()));
                }
                Ok(())
            }
            Err((full, item)) => {
                self.queue_full(full);
                Err(item)
            }
        }
    }

    /// The next item of the lane `lane` picks; `None` (the lane idle) when it has none.
    fn next<T>(&self, lane: fn(&mut State) -> (&mut Lane<T>, &mut Waiting)) -> Option<T> {
        let mut state = self.state();
        let (lane, waiting) = lane(&mut state);
        waiting.pop(lane)
    }

    fn queue_full(&self, full: Full) {
        self.app.metrics.limit(match full {
            Full::Connection => Limit::EventQueue,
            Full::Node => Limit::EventQueueMemory,
        });
        self.notice(QUEUE_FULL);
    }

    /// Queues the connection's own work (its start, its drain, its end): never refused.
    fn queue_own(self: &Arc<Self>, work: Work) {
        let mut state = self.state();
        let (lane, waiting) = state.rooms();
        if waiting.push_own(lane, work) {
            drop(state);
            tokio::spawn(self.clone().run_rooms());
        }
    }

    /// An operator joins the connection to `room` (the Admin UI): in the room lane, after the
    /// client's own work, without the subscribe hook, as a room the connect hook names.
    pub fn operator_joins(self: &Arc<Self>, room: Arc<str>) {
        let subscribe = Subscribe { room, asked: false };
        self.queue_own(Work::Command(Command::Subscribe(subscribe)));
    }

    /// An operator makes the connection leave `room` (the Admin UI), here and in its session.
    pub fn operator_removes(self: &Arc<Self>, room: Arc<str>) {
        let unsubscribe = super::command::Unsubscribe { room };
        self.queue_own(Work::Command(Command::Unsubscribe(unsubscribe)));
    }

    /// The connection ended: what is queued is dropped, and its end is stored.
    pub fn end(self: &Arc<Self>) {
        self.outbox.close();
        let mut state = self.state();
        if state.ended {
            return;
        }
        state.ended = true;
        self.leave();
        let State {
            rooms_lane,
            publish_lane,
            waiting,
            ..
        } = &mut *state;
        waiting.clear(rooms_lane);
        waiting.clear(publish_lane);
        drop(state);
        self.queue_own(Work::End);
    }

    async fn run_rooms(self: Arc<Self>) {
        while let Some(work) = self.next(State::rooms) {
            match work {
                Work::Start => self.start().await,
                Work::Command(Command::Subscribe(subscribe)) => {
                    subscribe.apply(&self.context).await
                }
                Work::Command(Command::Unsubscribe(unsubscribe)) => {
                    unsubscribe.apply(&self.context).await
                }
                Work::Command(Command::Presence(presence)) => presence.apply(&self.context).await,
                Work::Command(_) => {}
                Work::Drain => self.drain_now().await,
                Work::End => self.finish().await,
            }
        }
    }

    async fn run_publishes(self: Arc<Self>) {
        while let Some(publish) = self.next(State::publishes) {
            publish.apply(&self.context).await;
        }
    }

    /// The connection's first work: its session's rooms back and what it missed, by its cookie
    /// (Twine's recovery) or by its `pid` and offset (Socket.IO's, [`Resume`]). A session the
    /// store does not give is asked for again while the connection lasts: the client stays
    /// connected and its events wait, rather than going on in no rooms.
    async fn start(&self) {
        let resume = self.resume.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(resume) = resume {
            return self.resume(resume).await;
        }
        let load = until_done(
            "loading a session",
            || self.is_leaving(),
            || self.session.load(),
        );
        match load.await {
            Some(Some(session)) if !session.rooms.is_empty() => self.replay(session, None).await,
            _ => {}
        }
    }

    /// Starts under Socket.IO's recovery: the client is told whether it recovered (with its
    /// first offset), then gets its rooms and what it missed.
    async fn resume(&self, resume: Resume) {
        match resume.session {
            Some(session) => self.replay(session, Some(&resume.notice)).await,
            None => {
                let _ = self.outbox.send("recovery", &resume.notice).await;
            }
        }
    }

    async fn replay(&self, session: Session, notice: Option<&Notice>) {
        let replay = Replay {
            app: &self.app,
            outbox: &self.outbox,
            sid: self.sid,
            not_before: self.replay_not_before,
            grant: &self.grant,
            notice,
            leaving: &|| self.is_leaving(),
        };
        let rejoined = replay.run(session).await;
        self.rooms(|rooms| {
            for r in rejoined {
                let membership = Membership {
                    slot: r.slot,
                    live: r.live,
                };
                if let Some(admin) = &self.app.admin {
                    admin.joined(self.sid, &r.room);
                }
                rooms.insert(r.room, membership);
            }
        });
    }

    async fn drain_now(&self) {
        let rooms: Vec<(Arc<str>, Membership)> =
            self.rooms(|rooms| rooms.iter().map(|(room, m)| (room.clone(), *m)).collect());
        for (room, membership) in &rooms {
            if membership.live {
                self.app.fanout.leave_now(room, self.sid).await;
            } else {
                self.app.fanout.unhold(room, self.sid);
            }
        }
        let deadline = Instant::now() + DRAIN_ACK_WAIT;
        while !self.outbox.settled() && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_ACK_POLL).await;
        }
        // Stored before the client can reconnect elsewhere, so it comes back to exactly this.
        let progress = self.outbox.progress(true);
        self.store(&progress, Instant::now() + STORE_ON_END).await;
        self.outbox.close_transport();
    }

    /// Stores how far the client got, trying until `deadline` while the store does not answer.
    async fn store(&self, progress: &[twine_store::Progress], deadline: Instant) {
        let stored = until_done(
            "storing positions",
            || Instant::now() >= deadline,
            || self.session.advance(progress),
        );
        if stored.await.is_none() {
            tracing::warn!(sid = %self.sid, "positions not stored: the store did not answer in time");
        }
    }

    async fn finish(&self) {
        self.app.metrics.connections.dec();
        let progress = self.outbox.progress(true);
        let rooms = self.rooms(std::mem::take);
        for (room, membership) in rooms {
            self.leave_room(&room, membership);
        }
        self.store(&progress, Instant::now() + STORE_ON_END).await;
        self.app.meters.remove(self.sid);
        self.app.draining.forget(self.sid);
        self.outbox.transport().release();
    }
}

impl Drained for Connection {
    fn drain(self: Arc<Self>) {
        self.leave();
        self.queue_own(Work::Drain);
    }
}

/// Answers a refused publish that asked for an acknowledgement.
fn answer(reply: Option<Box<dyn Reply>>, reason: &str) {
    if let Some(reply) = reply {
        reply.send(&Outcome::refused(reason).to_raw());
    }
}

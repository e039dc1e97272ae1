//! One Socket.IO connection: its session, the rooms it is in, and its events, handled one at a
//! time in the order they arrived.
//!
//! Events are decoded as they arrive (in arrival order, on the connection's read path).
//! Acknowledgements and `stateRecovery` are settled there at once; `subscribe` and `unsubscribe`
//! become commands in the connection's queue, behind its recovery. A task drains the queue and
//! exists only while there is work, so an idle connection holds no task, and when the
//! connection ends its queue is dropped: no work outlives it. Events beyond the connection's rate
//! or queue are dropped with an `error` event.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::{Quota, RateLimiter};
use serde::Serialize;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;
use tokio::time::Instant;
use twine_store::{Joined, Position, Session};

use super::publish::{self, Outcome, Publisher};
use super::replay::Replay;
use super::resume::{Notice, Resume};
use crate::auth::Grant;
use crate::drain::Drained;
use crate::fanout::shard::Subscriber;
use crate::hooks::Decision;
use crate::metrics::Limit;
use crate::outbox::Outbox;
use crate::outbox::acks::Slot;
use crate::room;
use crate::session::SessionHandle;
use crate::state::AppState;
use crate::transport::{Reply, Sid, Transport};

/// Every event a client may send that the server handles; others are ignored (and counted as
/// `other` in `GET /metrics`). The flood test drives each of them.
pub const EVENTS: [&str; 9] = [
    "updateSessionTS",
    "stateRecovery",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence:enter",
    "presence:update",
    "presence:leave",
    "presence:members",
];

/// What a client is told of events dropped over its rate.
const RATE_EXCEEDED: &str =
    "events are arriving faster than this server accepts; some were dropped";
/// Commands that may wait in one connection's queue.
const MAX_QUEUED: usize = 4_096;
/// Least time between two "events dropped" notices to one connection.
const NOTICE_EVERY: Duration = Duration::from_secs(1);
/// How long a drained connection waits for its client to acknowledge what it was sent, and how
/// often it looks.
const DRAIN_ACK_WAIT: Duration = Duration::from_secs(1);
const DRAIN_ACK_POLL: Duration = Duration::from_millis(20);
/// Member listings (pages of `presence:members`) one connection may ask for per second, and at
/// once: with pages of at most 64 KiB, at most 128 KiB a second.
const LISTINGS_PER_SECOND: u32 = 2;
const LISTING_BURST: u32 = 20;

type EventLimiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    MonotonicClock,
    governor::middleware::NoOpMiddleware<<MonotonicClock as Clock>::Instant>,
>;

/// Work a connection does in order.
enum Command {
    /// Rooms back and missed messages replayed: always the first command.
    Start,
    Subscribe(Arc<str>),
    /// A room the connect hook named: joined as a subscribe is, without asking the subscribe
    /// hook, and silently if the connection is in it already.
    Join(Arc<str>),
    /// A client publish (or why it was refused as it was decoded), and its acknowledgement.
    Publish(Result<publish::Request, String>, Option<Box<dyn Reply>>),
    Unsubscribe(Arc<str>),
    Presence(PresenceRequest),
    /// An event refused as it was decoded; answered in order with the others.
    Refuse(&'static str, String),
    /// The node is stopping: stop live delivery, let the client acknowledge, close.
    Drain,
    /// The connection ended: store its positions and leave its rooms.
    End,
}

/// A presence event, decoded.
enum PresenceRequest {
    /// `presence:enter` (`update: false`) or `presence:update` (only once entered).
    Enter {
        room: Arc<str>,
        data: Box<RawValue>,
        update: bool,
    },
    Leave(Arc<str>),
    /// A page of the room's members, after the member id `after`.
    Members {
        room: Arc<str>,
        after: Option<String>,
    },
}

/// The `error` event sent when a client event is refused.
#[derive(Serialize)]
struct EventError<'a> {
    event: &'a str,
    message: &'a str,
}

pub struct Connection {
    pub sid: Sid,
    pub outbox: Arc<Outbox>,
    session: SessionHandle,
    app: Arc<AppState>,
    /// The replay waits for this (a reconnecting page's listeners may attach late).
    replay_not_before: Option<Instant>,
    /// What the connection's token allows.
    grant: Grant,
    /// Under Socket.IO's recovery: how the connection starts (taken by its recovery).
    resume: Mutex<Option<Resume>>,
    /// Rooms the connect hook named, joined once the connection starts.
    joins: Mutex<Vec<Arc<str>>>,
    limiter: EventLimiter,
    listings: EventLimiter,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Command>,
    draining: bool,
    ended: bool,
    /// Rooms the connection is in (live) or recovering (held), by name.
    rooms: HashMap<Arc<str>, Membership>,
    last_notice: Option<Instant>,
}

#[derive(Clone, Copy)]
struct Membership {
    slot: Slot,
    live: bool,
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
        let connection = Connection::new(
            sid,
            outbox,
            session,
            app.clone(),
            replay_not_before,
            grant,
            resume,
        );
        *connection.joins.lock().unwrap_or_else(|e| e.into_inner()) = joins;
        let drained: Arc<dyn Drained> = connection.clone();
        app.draining.register(sid, Arc::downgrade(&drained));
        connection
    }

    fn new(
        sid: Sid,
        outbox: Arc<Outbox>,
        session: SessionHandle,
        app: Arc<AppState>,
        replay_not_before: Option<Instant>,
        grant: Grant,
        resume: Option<Resume>,
    ) -> Arc<Connection> {
        let config = &app.config;
        let rate = NonZeroU32::new(config.event_rate).expect("checked by the config");
        let burst = NonZeroU32::new(config.event_burst).expect("checked by the config");
        let limiter = RateLimiter::direct_with_clock(
            Quota::per_second(rate).allow_burst(burst),
            MonotonicClock,
        );
        let listing_rate = NonZeroU32::new(LISTINGS_PER_SECOND).expect("not zero");
        let listing_burst = NonZeroU32::new(LISTING_BURST).expect("not zero");
        let listings = RateLimiter::direct_with_clock(
            Quota::per_second(listing_rate).allow_burst(listing_burst),
            MonotonicClock,
        );
        Arc::new(Connection {
            sid,
            outbox,
            session,
            app,
            replay_not_before,
            grant,
            resume: Mutex::new(resume),
            joins: Mutex::default(),
            limiter,
            listings,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client has joined the namespace: recovery is its first work, then the rooms the
    /// connect hook named.
    pub fn connected(self: &Arc<Self>) {
        self.push(Command::Start);
        let joins = std::mem::take(&mut *self.joins.lock().unwrap_or_else(|e| e.into_inner()));
        for room in joins {
            self.push(Command::Join(room));
        }
    }

    /// Handles one event as it is decoded: `data` is its JSON text, `[name, args...]`; `reply`
    /// its acknowledgement, if it asked for one (only `publish` answers it).
    pub fn on_event(self: &Arc<Self>, data: &str, reply: Option<Box<dyn Reply>>) {
        // Most events are acknowledgements, one per message received: read them without serde.
        if let Some(position) = plain_acknowledgement(data) {
            self.app.metrics.client_event("updateSessionTS");
            return self.acknowledged(position);
        }
        let Ok(Event { name, arg }) = serde_json::from_str::<Event<'_>>(data) else {
            return self.over_limit_or(|| {
                self.push(Command::Refuse("?", "the event could not be read".into()));
            });
        };
        self.app.metrics.client_event(&name);
        match name.as_ref() {
            "updateSessionTS" => match arg.and_then(timestamp) {
                Some(position) => self.acknowledged(position),
                None => self.over_limit_or(|| {
                    self.push(Command::Refuse(
                        "updateSessionTS",
                        "timestamp must be the non-negative integer timestamp of a received message"
                            .into(),
                    ));
                }),
            },
            "stateRecovery" => self.over_limit_or(|| self.outbox.acknowledge_each_message()),
            "subscribe" => self.over_limit_or(|| match room::from_json(arg) {
                Ok(room) => self.push(Command::Subscribe(room)),
                Err(e) => self.push(Command::Refuse("subscribe", e.to_string())),
            }),
            "publish" => {
                if self.within_rate() {
                    self.push(Command::Publish(publish::decode(arg), reply));
                } else if let Some(reply) = reply {
                    // Dropped, but answered: a client awaiting its acknowledgement learns why.
                    let refused = Outcome::refused(RATE_EXCEEDED);
                    reply.send(&to_raw(&refused));
                }
            }
            "unsubscribe" => self.over_limit_or(|| match room::from_json(arg) {
                Ok(room) => self.push(Command::Unsubscribe(room)),
                Err(e) => self.push(Command::Refuse("unsubscribe", e.to_string())),
            }),
            "presence:enter" | "presence:update" | "presence:leave" | "presence:members" => {
                let max_data = self.app.config.presence_max_data as usize;
                self.over_limit_or(|| match presence_request(&name, arg, max_data) {
                    Ok(request) => self.push(Command::Presence(request)),
                    Err(message) => self.push(Command::Refuse(presence_event(&name), message)),
                })
            }
            _ => self.over_limit_or(|| ()), // not part of the contract: ignored, as the original did
        }
    }

    fn acknowledged(self: &Arc<Self>, position: Position) {
        if self.outbox.ack(position) {
            self.app.flusher.mark(&self.session, &self.outbox);
        } else {
            // Only acknowledgements of what was sent are free.
            self.over_limit_or(|| {
                tracing::debug!(sid = %self.sid, %position, "acknowledged timestamp not among those sent");
            });
        }
    }

    /// Runs `accepted` if the event is within the connection's rate, else drops it.
    fn over_limit_or(self: &Arc<Self>, accepted: impl FnOnce()) {
        if self.within_rate() {
            accepted();
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
        self.outbox.notify(
            "error",
            &EventError {
                event: "*",
                message,
            },
        );
    }

    fn push(self: &Arc<Self>, command: Command) {
        let mut state = self.state();
        if state.ended {
            return;
        }
        if state.queue.len() >= MAX_QUEUED {
            drop(state);
            return self.notice("too many events are waiting; some were dropped");
        }
        state.queue.push_back(command);
        if !state.draining {
            state.draining = true;
            tokio::spawn(self.clone().drain());
        }
    }

    /// The connection ended: what is queued is dropped, and its end is stored.
    pub fn end(self: &Arc<Self>) {
        self.outbox.close();
        let mut state = self.state();
        if state.ended {
            return;
        }
        state.ended = true;
        state.queue.clear();
        state.queue.push_back(Command::End);
        if !state.draining {
            state.draining = true;
            tokio::spawn(self.clone().drain());
        }
    }

    async fn drain(self: Arc<Self>) {
        loop {
            let command = {
                let mut state = self.state();
                match state.queue.pop_front() {
                    Some(command) => command,
                    None => {
                        state.draining = false;
                        return;
                    }
                }
            };
            self.run(command).await;
        }
    }

    async fn run(&self, command: Command) {
        match command {
            Command::Start => self.start().await,
            Command::Subscribe(room) => self.subscribe(room, true).await,
            Command::Join(room) => self.subscribe(room, false).await,
            Command::Publish(request, reply) => self.publish(request, reply).await,
            Command::Unsubscribe(room) => self.unsubscribe(room).await,
            Command::Presence(request) => self.presence(request).await,
            Command::Refuse(event, message) => self.refuse(event, &message).await,
            Command::Drain => self.drain_now().await,
            Command::End => self.finish().await,
        }
    }

    async fn refuse(&self, event: &str, message: &str) {
        tracing::debug!(sid = %self.sid, event, message, "event refused");
        let _ = self
            .outbox
            .send("error", &EventError { event, message })
            .await;
    }

    /// The connection's first work: its session's rooms back and what it missed, by its cookie
    /// (Twine's recovery) or by its `pid` and offset (Socket.IO's, [`Resume`]).
    async fn start(&self) {
        let resume = self.resume.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(resume) = resume {
            return self.resume(resume).await;
        }
        let session = match self.session.load().await {
            Ok(Some(session)) if !session.rooms.is_empty() => session,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(sid = %self.sid, "session not loaded: {e}");
                self.outbox.freeze_positions();
                return self
                    .refuse(
                        "stateRecovery",
                        "the session could not be loaded; reconnect to retry",
                    )
                    .await;
            }
        };
        self.replay(session, None).await;
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
        };
        let rejoined = replay.run(session).await;
        let mut state = self.state();
        for r in rejoined {
            let membership = Membership {
                slot: r.slot,
                live: r.live,
            };
            state.rooms.insert(r.room, membership);
        }
    }

    /// Joins `room`: asked by the client, or named by the connect hook.
    async fn subscribe(&self, room: Arc<str>, asked: bool) {
        let joined = format!("You have joined room: {room}");
        let (known, count) = {
            let state = self.state();
            (state.rooms.contains_key(&room), state.rooms.len())
        };
        if known {
            if asked {
                let _ = self.outbox.send("roomJoined", &joined).await;
            }
            return;
        }
        if count >= self.app.config.max_rooms as usize {
            return self.refuse_room_limit().await;
        }
        if !self.grant.allows(&room) {
            let message = format!("this connection's token does not allow room {room}");
            return self.refuse("subscribe", &message).await;
        }
        if asked {
            let hooks = &self.app.hooks;
            let user = self.grant.user();
            if let Decision::Refuse(reason) = hooks.subscribe(self.session.id(), user, &room).await
            {
                return self.refuse("subscribe", &reason).await;
            }
        }
        let slot = self.outbox.add_room(room.clone(), false);
        let member = Subscriber::new(self.sid, self.outbox.clone(), slot);
        let cut = match self.app.fanout.join(&room, member).await {
            Ok(cut) => cut,
            Err(e) => {
                tracing::warn!(%room, "subscribe failed: {e}");
                self.outbox.remove_room(slot);
                return self
                    .refuse("subscribe", "the room could not be joined; try again")
                    .await;
            }
        };
        match self.session.join(&room, cut).await {
            Ok(Joined::Full) => {
                self.app.fanout.leave(&room, self.sid);
                self.outbox.remove_room(slot);
                return self.refuse_room_limit().await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%room, "session not updated on subscribe: {e}"),
        }
        self.outbox.has_up_to(slot, cut);
        self.state()
            .rooms
            .insert(room, Membership { slot, live: true });
        let _ = self.outbox.send("roomJoined", &joined).await;
    }

    async fn publish(
        &self,
        request: Result<publish::Request, String>,
        reply: Option<Box<dyn Reply>>,
    ) {
        let publisher = Publisher {
            app: &self.app,
            session: &self.session,
            grant: &self.grant,
            sid: self.sid,
        };
        let outcome = match request {
            Ok(request) => publisher.publish(request).await,
            Err(reason) => Err(reason),
        };
        match (outcome, reply) {
            (Ok(appended), Some(reply)) => reply.send(&to_raw(&Outcome::stored(&appended))),
            (Ok(_), None) => {}
            (Err(reason), Some(reply)) => reply.send(&to_raw(&Outcome::refused(&reason))),
            (Err(reason), None) => self.refuse("publish", &reason).await,
        }
    }

    async fn refuse_room_limit(&self) {
        self.app.metrics.limit(Limit::Rooms);
        let message = format!(
            "this session is in {} rooms already, the most allowed; unsubscribe from one first",
            self.app.config.max_rooms
        );
        self.refuse("subscribe", &message).await
    }

    async fn unsubscribe(&self, room: Arc<str>) {
        let membership = self.state().rooms.remove(&room);
        if let Some(membership) = membership {
            self.leave_room(&room, membership).await;
        }
        if let Err(e) = self.session.leave(&room).await {
            tracing::warn!(%room, "session not updated on unsubscribe: {e}");
        }
        let left = format!("You have left room: {room}");
        let _ = self.outbox.send("roomLeft", &left).await;
    }

    async fn leave_room(&self, room: &Arc<str>, membership: Membership) {
        if membership.live {
            self.app.fanout.leave(room, self.sid);
        } else {
            self.app.fanout.unhold(room, self.sid);
        }
        self.outbox.remove_room(membership.slot);
        self.app.presence.leave(room, self.sid);
    }

    async fn presence(&self, request: PresenceRequest) {
        let (event, room) = match &request {
            PresenceRequest::Enter {
                room, update: true, ..
            } => ("presence:update", room),
            PresenceRequest::Enter { room, .. } => ("presence:enter", room),
            PresenceRequest::Leave(room) => ("presence:leave", room),
            PresenceRequest::Members { room, .. } => ("presence:members", room),
        };
        if !self.state().rooms.contains_key(room) {
            let message = format!("subscribe to room {room} before using its presence");
            return self.refuse(event, &message).await;
        }
        let presence = &self.app.presence;
        match &request {
            PresenceRequest::Enter { data, update, .. } => {
                let entering = !presence.is_present(room, self.sid);
                let user = self.grant.user();
                if presence
                    .enter(room, self.sid, user, data, *update, &self.outbox)
                    .is_err()
                {
                    let message = format!("not present in room {room}: enter it first");
                    return self.refuse(event, &message).await;
                }
                // The newcomer gets the room as it is (when its listings allow); the room hears
                // of the newcomer in its next batch of changes.
                if entering && self.listings.check().is_ok() {
                    self.list_members(event, room, None).await;
                }
            }
            PresenceRequest::Leave(_) => presence.leave(room, self.sid),
            PresenceRequest::Members { after, .. } => {
                if self.listings.check().is_err() {
                    self.app.metrics.limit(Limit::EventRate);
                    let message = format!(
                        "member listings are limited to {LISTINGS_PER_SECOND} a second; ask again later"
                    );
                    return self.refuse(event, &message).await;
                }
                self.list_members(event, room, after.as_deref()).await;
            }
        }
    }

    /// Sends a page of `room`'s members as `presence:members`.
    async fn list_members(&self, event: &str, room: &Arc<str>, after: Option<&str>) {
        match self.app.presence.snapshot(room).await {
            Ok(snapshot) => {
                let page = snapshot.page(after);
                let _ = self.outbox.send_encoded("presence:members", &page).await;
            }
            Err(e) => {
                tracing::warn!(%room, "{event} failed: {e}");
                self.refuse(event, "presence is unavailable; try again")
                    .await;
            }
        }
    }

    async fn drain_now(&self) {
        let rooms: Vec<(Arc<str>, Membership)> = self
            .state()
            .rooms
            .iter()
            .map(|(room, m)| (room.clone(), *m))
            .collect();
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
        if let Err(e) = self.session.advance(&progress).await {
            tracing::warn!("positions not stored while draining: {e}");
        }
        self.outbox.close_transport();
    }

    async fn finish(&self) {
        self.app.metrics.connections.dec();
        let progress = self.outbox.progress(true);
        if let Err(e) = self.session.advance(&progress).await {
            tracing::warn!("positions not stored on disconnect: {e}");
        }
        let rooms = std::mem::take(&mut self.state().rooms);
        for (room, membership) in rooms {
            self.leave_room(&room, membership).await;
        }
        self.app.meters.remove(self.sid);
        self.app.draining.forget(self.sid);
        self.outbox.transport().release();
    }
}

impl Drained for Connection {
    fn drain(self: Arc<Self>) {
        self.push(Command::Drain);
    }
}

fn to_raw<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("replies serialize")
}

/// A decoded event: its name and first argument (as raw JSON, parsed only if needed).
struct Event<'a> {
    name: Cow<'a, str>,
    arg: Option<&'a RawValue>,
}

/// An event name, borrowed from the packet unless it has escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Name<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an event name")
            }
            fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(name)))
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(name.to_owned())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

impl<'de> de::Deserialize<'de> for Event<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventVisitor;
        impl<'de> Visitor<'de> for EventVisitor {
            type Value = Event<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("[event, args...]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Event<'de>, A::Error> {
                let Name(name) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let arg = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Event { name, arg })
            }
        }
        deserializer.deserialize_seq(EventVisitor)
    }
}

/// The name of a presence event, as the `error` event names it.
fn presence_event(name: &str) -> &'static str {
    match name {
        "presence:enter" => "presence:enter",
        "presence:update" => "presence:update",
        "presence:leave" => "presence:leave",
        _ => "presence:members",
    }
}

/// A presence event's argument: `{room, data}` (`data` only to enter or update, any JSON value
/// up to `max_data` bytes, `{}` when absent), `{room, after}` to list members after a member id,
/// or the room name alone.
fn presence_request(
    name: &str,
    arg: Option<&RawValue>,
    max_data: usize,
) -> Result<PresenceRequest, String> {
    #[derive(serde::Deserialize)]
    struct Arg<'a> {
        #[serde(borrow)]
        room: Option<&'a RawValue>,
        data: Option<Box<RawValue>>,
        after: Option<String>,
    }
    let (room, data, after) = match arg {
        Some(raw) if raw.get().trim_start().starts_with('{') => {
            let parsed: Arg<'_> = serde_json::from_str(raw.get())
                .map_err(|_| "the argument must be {room, data} or {room, after}".to_string())?;
            let room = room::from_json(parsed.room).map_err(|e| e.to_string())?;
            (room, parsed.data, parsed.after)
        }
        other => (
            room::from_json(other).map_err(|e| e.to_string())?,
            None,
            None,
        ),
    };
    match name {
        "presence:enter" | "presence:update" => {
            let data = data.unwrap_or_else(|| RawValue::from_string("{}".into()).expect("JSON"));
            if data.get().len() > max_data {
                return Err(format!(
                    "data is {} bytes long; the limit is {max_data}",
                    data.get().len()
                ));
            }
            Ok(PresenceRequest::Enter {
                room,
                data,
                update: name == "presence:update",
            })
        }
        "presence:leave" => Ok(PresenceRequest::Leave(room)),
        _ => Ok(PresenceRequest::Members { room, after }),
    }
}

/// A client's `updateSessionTS` argument as a position: a non-negative whole number.
/// `["updateSessionTS",<digits>]` as clients send it, without spaces: its position.
fn plain_acknowledgement(data: &str) -> Option<Position> {
    let digits = data
        .strip_prefix("[\"updateSessionTS\",")?
        .strip_suffix(']')?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Position)
}

fn timestamp(arg: &RawValue) -> Option<Position> {
    let number: serde_json::Number = serde_json::from_str(arg.get()).ok()?;
    number.as_u64().map(Position).or_else(|| {
        let f = number.as_f64()?;
        (f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64).then_some(Position(f as u64))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn events_decode_to_name_and_first_argument() {
        let event: Event = serde_json::from_str(r#"["subscribe","news",{"x":1}]"#).unwrap();
        assert_eq!(event.name, "subscribe");
        assert_eq!(event.arg.unwrap().get(), r#""news""#);
        let event: Event = serde_json::from_str(r#"["stateRecovery"]"#).unwrap();
        assert!(event.arg.is_none());
        assert!(serde_json::from_str::<Event>("[]").is_err());
        assert!(serde_json::from_str::<Event>("[7]").is_err());
    }

    #[test]
    fn plain_acknowledgements_are_read_as_serde_reads_them() {
        for data in [
            r#"["updateSessionTS",1732000000123]"#,
            r#"["updateSessionTS",0]"#,
            r#"["updateSessionTS",18446744073709551615]"#,
        ] {
            let Event { arg, .. } = serde_json::from_str(data).unwrap();
            assert_eq!(
                plain_acknowledgement(data),
                arg.and_then(timestamp),
                "{data}"
            );
        }
        for other in [
            r#"["updateSessionTS", 1]"#,
            r#"["updateSessionTS",1.5e12]"#,
            r#"["updateSessionTS",-1]"#,
            r#"["updateSessionTS","1"]"#,
            r#"["updateSessionTS",99999999999999999999]"#,
            r#"["subscribe",1]"#,
        ] {
            assert_eq!(plain_acknowledgement(other), None, "{other}");
        }
    }

    #[test]
    fn timestamps_are_non_negative_whole_numbers() {
        assert_eq!(
            timestamp(&raw("1732000000123")),
            Some(Position(1_732_000_000_123))
        );
        assert_eq!(timestamp(&raw("1.5e12")), Some(Position(1_500_000_000_000)));
        assert_eq!(timestamp(&raw("1.5")), None);
        assert_eq!(timestamp(&raw("-3")), None);
        assert_eq!(timestamp(&raw(r#""123""#)), None);
    }
}

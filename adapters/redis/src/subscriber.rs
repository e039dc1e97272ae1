//! Live delivery out of Redis: a node subscribes to each room it serves, on the room's own
//! channel, and to nothing else.
//!
//! One pub/sub connection per primary that owns a listened room's partition (one in all on a
//! single primary, where rooms use `SUBSCRIBE`; sharded `SSUBSCRIBE` on a cluster, so a message
//! goes only to the primary that owns its room's slot and on to the nodes subscribed there). The
//! connections speak RESP2 themselves and one task owns them and the set of rooms wanted: every
//! subscription is made again whenever Redis drops it, which client libraries do not do reliably
//! for sharded channels (after a slot migration, a failover, or a reconnection holding channels
//! of several slots).
//!
//! Subscribing is batched: the requests that arrive while the task works are sent as one command
//! per partition (per connection on a single primary), so a reconnect storm joining thousands of
//! rooms costs a few round trips, not one per room. A `listen` resolves once Redis confirmed the
//! room's subscription.
//!
//! Nothing is lost in between: a room whose subscription was interrupted is reported as a gap
//! once it is back, and catches up from the history. A subscription can also go silent while
//! commands still succeed (a failover, a proxy dropping idle connections): every second the node
//! publishes a heartbeat through each partition it listens to, and a partition whose heartbeat
//! has not come back for [`SILENT_AFTER`] has its connection made again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::{ConnectionAddr, IntoConnectionInfo, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use twine_store::{FeedSender, Listen, Message, Position, PresenceEvent, StoreError};

use crate::keys::{Channel, Keys, PARTITIONS, partition_of, partition_slot};
use crate::link::{Link, RESPONSE_TIMEOUT};
use crate::resp::{self, Frame};

/// How often each listened partition's heartbeat is published.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A partition whose heartbeat has not come back for this long is silent.
pub const SILENT_AFTER: Duration = Duration::from_secs(3);
/// How long a `listen` waits for Redis to confirm.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pauses between attempts to reach a primary.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(2);
/// Most channels in one subscription command.
const MAX_CHANNELS_PER_COMMAND: usize = 1000;

/// The handle the store keeps: asks the subscriber task to listen, and attaches feeds.
#[derive(Clone)]
pub struct Subscriber {
    requests: mpsc::UnboundedSender<Event>,
}

enum Event {
    Listen {
        room: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Unlisten(String),
    AttachFeed(FeedSender),
    AttachPresence(mpsc::UnboundedSender<PresenceEvent>),
    Connected {
        node: String,
        id: u64,
        writer: mpsc::UnboundedSender<Vec<u8>>,
        reader: tokio::task::AbortHandle,
    },
    ConnectFailed {
        node: String,
        id: u64,
    },
    Frame {
        node: String,
        id: u64,
        frame: Frame,
    },
    Closed {
        node: String,
        id: u64,
    },
    Slots(Vec<(u16, u16, String)>),
    HeartbeatSent(usize),
    Tick,
}

/// How to reach the primaries.
#[derive(Clone)]
pub struct Reach {
    /// The single primary's address, or the cluster's seeds' (`host:port`).
    pub seeds: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Reach {
    /// From the configured seed URLs.
    pub fn from_urls(urls: &[String]) -> Result<Reach, StoreError> {
        let mut reach = Reach {
            seeds: Vec::new(),
            username: None,
            password: None,
        };
        for url in urls {
            let info = url
                .as_str()
                .into_connection_info()
                .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
            match info.addr() {
                ConnectionAddr::Tcp(host, port) => reach.seeds.push(format!("{host}:{port}")),
                other => {
                    return Err(StoreError::Unavailable(format!(
                        "Redis address {other} is not supported for pub/sub (plain TCP only)"
                    )));
                }
            }
            let settings = info.redis_settings();
            reach.username = settings.username().map(str::to_owned);
            reach.password = settings.password().map(str::to_owned);
        }
        Ok(reach)
    }
}

impl Subscriber {
    /// Starts the subscriber task for `keys`' channels, publishing heartbeats over `data`.
    pub fn start(keys: Keys, data: Link, reach: Reach) -> Subscriber {
        let (tx, rx) = mpsc::unbounded_channel();
        let cluster = data.is_cluster();
        let node = format!("{:016x}", crate::rand_u64());
        let task = Task {
            keys,
            data,
            reach,
            cluster,
            node,
            events: tx.clone(),
            feed: None,
            presence: None,
            rooms: HashMap::new(),
            partitions: (0..PARTITIONS).map(|_| Partition::default()).collect(),
            nodes: HashMap::new(),
            next_id: 0,
            slots: Vec::new(),
            refreshing: false,
            refresh_wanted: false,
            expected_unsubscribes: HashMap::new(),
        };
        tokio::spawn(task.run(rx));
        let ticks = tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(HEARTBEAT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if ticks.send(Event::Tick).is_err() {
                    return;
                }
            }
        });
        Subscriber { requests: tx }
    }

    pub fn attach_feed(&self, feed: FeedSender) {
        let _ = self.requests.send(Event::AttachFeed(feed));
    }

    pub fn attach_presence(&self, presence: mpsc::UnboundedSender<PresenceEvent>) {
        let _ = self.requests.send(Event::AttachPresence(presence));
    }
}

#[async_trait]
impl Listen for Subscriber {
    async fn listen(&self, room: &str) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let room = room.to_owned();
        self.requests
            .send(Event::Listen { room, reply })
            .map_err(|_| StoreError::Unavailable("the Redis subscriber stopped".into()))?;
        match tokio::time::timeout(LISTEN_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Unavailable(
                "the Redis subscriber stopped".into(),
            )),
            Err(_) => Err(StoreError::Unavailable(
                "Redis did not confirm the room's subscription in time".into(),
            )),
        }
    }

    fn unlisten(&self, room: &str) {
        let _ = self.requests.send(Event::Unlisten(room.to_owned()));
    }
}

/// A room wanted.
#[derive(Default)]
struct Room {
    /// Redis confirmed the subscription on the connection that carries it now.
    confirmed: bool,
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
    /// The subscription was interrupted: once it is back the room catches up.
    gap_on_confirm: bool,
}

/// A partition's subscriptions.
#[derive(Default)]
struct Partition {
    /// Rooms wanted in it.
    rooms: HashSet<String>,
    /// The primary whose connection carries them.
    node: Option<String>,
    /// When its heartbeat last came back (or its subscription was confirmed).
    heard: Option<Instant>,
    /// When a heartbeat was last published through it.
    sent: Option<Instant>,
}

/// One pub/sub connection.
#[derive(Default)]
struct Node {
    /// Which attempt is current: events of older ones are ignored.
    id: u64,
    /// Where to write, once connected.
    writer: Option<mpsc::UnboundedSender<Vec<u8>>>,
    reader: Option<tokio::task::AbortHandle>,
    connecting: bool,
    /// The pause before the next attempt.
    retry: Duration,
}

struct Task {
    keys: Keys,
    data: Link,
    reach: Reach,
    cluster: bool,
    node: String,
    events: mpsc::UnboundedSender<Event>,
    feed: Option<FeedSender>,
    presence: Option<mpsc::UnboundedSender<PresenceEvent>>,
    rooms: HashMap<String, Room>,
    partitions: Vec<Partition>,
    nodes: HashMap<String, Node>,
    next_id: u64,
    /// The cluster's slot ranges and their primaries.
    slots: Vec<(u16, u16, String)>,
    refreshing: bool,
    refresh_wanted: bool,
    /// Channels this task unsubscribed from, with how many confirmations are expected: a room
    /// left and joined again before Redis confirmed the leave gets that confirmation still, and
    /// must not take it for Redis dropping the room.
    expected_unsubscribes: HashMap<String, u32>,
}

impl Task {
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        if self.cluster {
            self.refresh_slots();
        }
        while let Some(first) = events.recv().await {
            // Everything that arrived meanwhile is handled before subscribing, so it goes out
            // in one command per partition.
            let mut batch = Subscriptions::default();
            self.handle(first, &mut batch);
            while let Ok(next) = events.try_recv() {
                self.handle(next, &mut batch);
            }
            self.send(batch);
        }
    }

    fn stats(&self) -> Option<&twine_store::feed::FeedStats> {
        self.feed.as_ref().map(|f| &f.budget().stats)
    }

    fn handle(&mut self, event: Event, batch: &mut Subscriptions) {
        match event {
            Event::Listen { room, reply } => self.listen(room, reply, batch),
            Event::Unlisten(room) => self.unlisten(&room, batch),
            Event::AttachFeed(feed) => self.feed = Some(feed),
            Event::AttachPresence(presence) => self.presence = Some(presence),
            Event::Connected {
                node,
                id,
                writer,
                reader,
            } => self.connected(node, id, writer, reader, batch),
            Event::ConnectFailed { node, id } => self.connect_failed(&node, id),
            Event::Frame { node, id, frame } => {
                if self.nodes.get(&node).is_some_and(|n| n.id == id) {
                    self.frame(&node, frame, batch);
                }
            }
            Event::Closed { node, id } => {
                if self.nodes.get(&node).is_some_and(|n| n.id == id) {
                    tracing::warn!(%node, "Redis pub/sub connection lost; subscribing again");
                    self.lost(&node);
                }
            }
            Event::Slots(slots) => {
                self.refreshing = false;
                self.slots = slots;
                self.route_all(batch);
                if std::mem::take(&mut self.refresh_wanted) {
                    self.refresh_slots();
                }
            }
            Event::HeartbeatSent(partition) => {
                self.partitions[partition].sent = Some(Instant::now());
            }
            Event::Tick => self.tick(),
        }
    }

    fn listen(
        &mut self,
        room: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
        batch: &mut Subscriptions,
    ) {
        if let Some(existing) = self.rooms.get_mut(&room) {
            if existing.confirmed {
                let _ = reply.send(Ok(()));
            } else {
                existing.waiters.push(reply);
            }
            return;
        }
        let partition = partition_of(&room);
        self.rooms.insert(
            room.clone(),
            Room {
                waiters: vec![reply],
                ..Room::default()
            },
        );
        let first = self.partitions[partition].rooms.is_empty();
        self.partitions[partition].rooms.insert(room.clone());
        let channel = self.keys.channel(&room);
        match self.partitions[partition].node.clone() {
            Some(node) => {
                batch.subscribe(&node, partition, channel);
                if first {
                    let heartbeat = self.keys.heartbeat(partition, &self.node);
                    batch.subscribe(&node, partition, heartbeat);
                }
            }
            None => self.route(partition, batch),
        }
    }

    fn unlisten(&mut self, room: &str, batch: &mut Subscriptions) {
        let Some(gone) = self.rooms.remove(room) else {
            return;
        };
        for waiter in gone.waiters {
            let _ = waiter.send(Err(StoreError::Unavailable("no longer wanted".into())));
        }
        let partition = partition_of(room);
        let state = &mut self.partitions[partition];
        state.rooms.remove(room);
        let Some(node) = state.node.clone() else {
            return;
        };
        let channel = self.keys.channel(room);
        *self
            .expected_unsubscribes
            .entry(channel.clone())
            .or_default() += 1;
        batch.unsubscribe(&node, partition, channel);
        if state.rooms.is_empty() {
            let heartbeat = self.keys.heartbeat(partition, &self.node);
            *self
                .expected_unsubscribes
                .entry(heartbeat.clone())
                .or_default() += 1;
            batch.unsubscribe(&node, partition, heartbeat);
            state.node = None;
            state.heard = None;
        }
    }

    /// The primary that owns `partition` now, if known.
    fn owner(&self, partition: usize) -> Option<String> {
        if !self.cluster {
            return self.reach.seeds.first().cloned();
        }
        let slot = partition_slot(partition);
        self.slots
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, node)| node.clone())
    }

    /// Puts `partition` on the connection of its owner, subscribing its rooms there.
    fn route(&mut self, partition: usize, batch: &mut Subscriptions) {
        if self.partitions[partition].rooms.is_empty() {
            return;
        }
        let Some(owner) = self.owner(partition) else {
            self.refresh_slots();
            return;
        };
        let state = &mut self.partitions[partition];
        if state.node.as_deref() == Some(owner.as_str()) {
            return;
        }
        // A primary that no longer owns the slot gets none of its messages: what it may still
        // hold of the partition's subscriptions costs nothing.
        state.node = Some(owner.clone());
        state.heard = None;
        for room in &state.rooms {
            if let Some(entry) = self.rooms.get_mut(room) {
                if entry.confirmed {
                    // Moving primaries: what was published in between is read back.
                    entry.gap_on_confirm = true;
                }
                entry.confirmed = false;
            }
        }
        match self.nodes.get(&owner) {
            Some(node) if node.writer.is_some() => {
                self.subscribe_partition(partition, &owner, batch);
            }
            Some(node) if node.connecting => {} // subscribed once connected
            _ => self.connect(owner),
        }
    }

    fn route_all(&mut self, batch: &mut Subscriptions) {
        for partition in 0..PARTITIONS {
            self.route(partition, batch);
        }
    }

    fn subscribe_partition(&self, partition: usize, node: &str, batch: &mut Subscriptions) {
        let state = &self.partitions[partition];
        for room in &state.rooms {
            batch.subscribe(node, partition, self.keys.channel(room));
        }
        if !state.rooms.is_empty() {
            batch.subscribe(node, partition, self.keys.heartbeat(partition, &self.node));
        }
    }

    fn connect(&mut self, node: String) {
        self.next_id += 1;
        let id = self.next_id;
        let entry = self.nodes.entry(node.clone()).or_default();
        entry.id = id;
        entry.connecting = true;
        entry.writer = None;
        let retry = entry.retry;
        let events = self.events.clone();
        let reach = self.reach.clone();
        tokio::spawn(async move {
            tokio::time::sleep(retry).await;
            match open(&node, &reach).await {
                Ok(stream) => {
                    let (writer, reader) =
                        spawn_connection(stream, node.clone(), id, events.clone());
                    let _ = events.send(Event::Connected {
                        node,
                        id,
                        writer,
                        reader,
                    });
                }
                Err(e) => {
                    tracing::debug!(%node, "Redis pub/sub connection not made: {e}");
                    let _ = events.send(Event::ConnectFailed { node, id });
                }
            }
        });
    }

    fn connected(
        &mut self,
        node: String,
        id: u64,
        writer: mpsc::UnboundedSender<Vec<u8>>,
        reader: tokio::task::AbortHandle,
        batch: &mut Subscriptions,
    ) {
        let Some(entry) = self.nodes.get_mut(&node).filter(|n| n.id == id) else {
            reader.abort();
            return;
        };
        entry.writer = Some(writer);
        entry.reader = Some(reader);
        entry.connecting = false;
        entry.retry = Duration::ZERO;
        for partition in 0..PARTITIONS {
            if self.partitions[partition].node.as_deref() == Some(node.as_str()) {
                self.subscribe_partition(partition, &node, batch);
            }
        }
    }

    fn connect_failed(&mut self, node: &str, id: u64) {
        let Some(entry) = self.nodes.get_mut(node).filter(|n| n.id == id) else {
            return;
        };
        entry.connecting = false;
        entry.retry = (entry.retry * 2).clamp(FIRST_RETRY, LAST_RETRY);
        if self.cluster {
            // The primary may be gone for good (a failover): where do its slots live now?
            self.unassign(node);
            self.refresh_slots();
        } else {
            self.connect(node.to_owned());
        }
    }

    /// The connection to `node` is gone: its rooms are subscribed again, and catch up.
    fn lost(&mut self, node: &str) {
        // Confirmations it owed will not come.
        self.expected_unsubscribes.clear();
        if let Some(stats) = self.stats() {
            stats.resubscribed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(entry) = self.nodes.get_mut(node) {
            if let Some(reader) = entry.reader.take() {
                reader.abort();
            }
            entry.writer = None;
            entry.connecting = false;
            entry.retry = (entry.retry * 2).clamp(FIRST_RETRY, LAST_RETRY);
        }
        if self.cluster {
            self.unassign(node);
            self.refresh_slots();
        } else {
            for partition in &mut self.partitions {
                partition.heard = None;
            }
            for room in self.rooms.values_mut() {
                room.confirmed = false;
                room.gap_on_confirm = true;
            }
            self.connect(node.to_owned());
        }
    }

    /// Takes the partitions carried by `node` off it (a cluster: they are routed anew).
    fn unassign(&mut self, node: &str) {
        for partition in &mut self.partitions {
            if partition.node.as_deref() == Some(node) {
                partition.node = None;
                partition.heard = None;
                for room in &partition.rooms {
                    if let Some(entry) = self.rooms.get_mut(room) {
                        entry.confirmed = false;
                        entry.gap_on_confirm = true;
                    }
                }
            }
        }
    }

    fn refresh_slots(&mut self) {
        if self.refreshing {
            self.refresh_wanted = true;
            return;
        }
        self.refreshing = true;
        let mut data = self.data.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let mut retry = FIRST_RETRY;
            loop {
                let reply: Result<Value, _> = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut data)
                    .await;
                match reply.map(|v| parse_slots(&v)) {
                    Ok(slots) if !slots.is_empty() => {
                        let _ = events.send(Event::Slots(slots));
                        return;
                    }
                    Ok(_) => tracing::warn!("Redis Cluster reported no slots; asking again"),
                    Err(e) => tracing::warn!("Redis Cluster slots not read, retrying: {e}"),
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
                if events.is_closed() {
                    return;
                }
            }
        });
    }

    fn frame(&mut self, node: &str, frame: Frame, batch: &mut Subscriptions) {
        let items = match frame {
            Frame::Array(items) => items,
            Frame::Error(e) => {
                let moved = ["MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"]
                    .iter()
                    .any(|code| e.starts_with(code));
                if self.cluster && moved {
                    // The slot map changed under a subscription.
                    tracing::info!(%node, "Redis redirected a subscription: {e}");
                    self.unassign(node);
                    self.refresh_slots();
                } else {
                    tracing::warn!(%node, "Redis refused a subscription: {e}");
                }
                return;
            }
            _ => return,
        };
        let [kind, channel, payload] = &items[..] else {
            return;
        };
        let (Some(kind), Some(channel)) = (kind.as_bytes(), channel.as_bytes()) else {
            return;
        };
        let Ok(channel) = std::str::from_utf8(channel) else {
            return;
        };
        match kind {
            b"message" | b"smessage" => {
                let Some(payload) = payload.as_bytes() else {
                    return;
                };
                self.message(channel, payload);
            }
            b"subscribe" | b"ssubscribe" => self.confirmed(channel),
            b"unsubscribe" | b"sunsubscribe" => match self.expected_unsubscribes.get_mut(channel) {
                Some(expected) if *expected > 1 => *expected -= 1,
                Some(_) => {
                    self.expected_unsubscribes.remove(channel);
                }
                None => self.unsubscribed(node, channel, batch),
            },
            _ => {}
        }
    }

    fn message(&mut self, channel: &str, payload: &[u8]) {
        match self.keys.parse_channel(channel) {
            Some(Channel::Heartbeat(partition)) => {
                self.partitions[partition].heard = Some(Instant::now());
            }
            Some(Channel::Room(room)) => {
                if !self.rooms.contains_key(room) {
                    return;
                }
                if let Some(stats) = self.stats() {
                    stats.received.fetch_add(1, Ordering::Relaxed);
                }
                match payload.split_first() {
                    Some((b'm', rest)) => match decode_message(room, rest) {
                        Some((message, prev)) => {
                            if let Some(feed) = &self.feed {
                                let _ = feed.message(message, prev);
                            }
                        }
                        None => tracing::warn!(%room, "ignoring an unreadable message"),
                    },
                    Some((b'p', rest)) => match crate::presence::decode_batch(room, rest) {
                        Some(event) => {
                            if let Some(presence) = &self.presence {
                                let _ = presence.send(event);
                            }
                        }
                        None => tracing::warn!(%room, "ignoring unreadable presence changes"),
                    },
                    _ => tracing::warn!(%room, "ignoring an unreadable message"),
                }
            }
            None => {}
        }
    }

    fn confirmed(&mut self, channel: &str) {
        match self.keys.parse_channel(channel) {
            Some(Channel::Heartbeat(partition)) => {
                self.partitions[partition].heard = Some(Instant::now());
            }
            Some(Channel::Room(room)) => {
                let Some(entry) = self.rooms.get_mut(room) else {
                    return;
                };
                entry.confirmed = true;
                for waiter in entry.waiters.drain(..) {
                    let _ = waiter.send(Ok(()));
                }
                if std::mem::take(&mut entry.gap_on_confirm)
                    && let Some(feed) = &self.feed
                {
                    let _ = feed.gap(room);
                }
            }
            None => {}
        }
    }

    /// Redis dropped a subscription by itself (its slot moved, or its primary became a
    /// replica): the room is subscribed where its slot lives now, and catches up.
    fn unsubscribed(&mut self, node: &str, channel: &str, batch: &mut Subscriptions) {
        let Some(Channel::Room(room)) = self.keys.parse_channel(channel) else {
            return;
        };
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        tracing::info!(%node, %room, "Redis dropped a room's subscription; subscribing again");
        entry.confirmed = false;
        entry.gap_on_confirm = true;
        if self.cluster {
            self.unassign(node);
            self.refresh_slots();
        } else {
            let partition = partition_of(room);
            batch.subscribe(node, partition, channel.to_owned());
        }
    }

    /// Publishes heartbeats and finds silent partitions.
    fn tick(&mut self) {
        let now = Instant::now();
        let mut silent = Vec::new();
        for (partition, state) in self.partitions.iter().enumerate() {
            let Some(node) = &state.node else {
                continue;
            };
            // One heartbeat per connection on a single primary: every partition shares it.
            if !self.cluster && partition != self.heartbeat_partition() {
                continue;
            }
            let connected = self.nodes.get(node).is_some_and(|n| n.writer.is_some());
            if !connected {
                continue;
            }
            let published_recently = state
                .sent
                .is_some_and(|at| now.duration_since(at) < SILENT_AFTER);
            let quiet = state
                .heard
                .is_none_or(|at| now.duration_since(at) > SILENT_AFTER);
            if published_recently && quiet && state.heard.is_some() {
                silent.push((partition, node.clone()));
            }
            self.publish_heartbeat(partition);
        }
        for (partition, node) in silent {
            tracing::warn!(%node, partition, "Redis pub/sub went silent (no heartbeat for 3 s); subscribing again");
            if let Some(stats) = self.stats() {
                stats.silent.fetch_add(1, Ordering::Relaxed);
            }
            self.lost(&node);
        }
        if self.cluster && self.refresh_wanted && !self.refreshing {
            self.refresh_wanted = false;
            self.refresh_slots();
        }
    }

    /// On a single primary, the partition whose channel carries the heartbeat: the first with
    /// rooms.
    fn heartbeat_partition(&self) -> usize {
        self.partitions
            .iter()
            .position(|p| !p.rooms.is_empty())
            .unwrap_or(0)
    }

    fn publish_heartbeat(&self, partition: usize) {
        let channel = self.keys.heartbeat(partition, &self.node);
        let mut data = self.data.clone();
        let events = self.events.clone();
        let command = if self.cluster { "SPUBLISH" } else { "PUBLISH" };
        tokio::spawn(async move {
            let mut cmd = redis::cmd(command);
            cmd.arg(&channel).arg("1");
            if data.on_slot(cmd, partition_slot(partition)).await.is_ok() {
                let _ = events.send(Event::HeartbeatSent(partition));
            }
        });
    }

    /// Sends what `batch` gathered: one command per partition and kind (a single primary takes
    /// any channels in one command).
    fn send(&mut self, batch: Subscriptions) {
        let (subscribe, unsubscribe): (&[u8], &[u8]) = if self.cluster {
            (b"SSUBSCRIBE", b"SUNSUBSCRIBE")
        } else {
            (b"SUBSCRIBE", b"UNSUBSCRIBE")
        };
        // Leaves before joins: a room left and joined in one batch ends up subscribed.
        let mut commands: Vec<_> = batch.0.into_iter().collect();
        commands.sort_by_key(|((_, _, subscribing), _)| *subscribing);
        for ((node, _, subscribing), channels) in commands {
            let Some(writer) = self.nodes.get(&node).and_then(|n| n.writer.as_ref()) else {
                continue; // subscribed once the connection is made
            };
            let verb = if subscribing { subscribe } else { unsubscribe };
            for chunk in channels.chunks(MAX_CHANNELS_PER_COMMAND) {
                let args = std::iter::once(verb).chain(chunk.iter().map(String::as_bytes));
                let _ = writer.send(resp::command(args));
            }
        }
    }
}

/// Subscription changes gathered for one send: channels per (connection, partition, subscribe
/// or not), since a sharded subscription command takes channels of one slot only.
#[derive(Default)]
struct Subscriptions(HashMap<(String, usize, bool), Vec<String>>);

impl Subscriptions {
    fn subscribe(&mut self, node: &str, partition: usize, channel: String) {
        self.0
            .entry((node.to_owned(), partition, true))
            .or_default()
            .push(channel);
    }

    fn unsubscribe(&mut self, node: &str, partition: usize, channel: String) {
        self.0
            .entry((node.to_owned(), partition, false))
            .or_default()
            .push(channel);
    }
}

/// Connects to `node` and authenticates.
async fn open(node: &str, reach: &Reach) -> Result<TcpStream, std::io::Error> {
    let mut stream = tokio::time::timeout(RESPONSE_TIMEOUT, TcpStream::connect(node))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream.set_nodelay(true)?;
    if let Some(password) = &reach.password {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &reach.username {
            args.push(user.as_bytes());
        }
        args.push(password.as_bytes());
        stream.write_all(&resp::command(args)).await?;
        let mut buf = Vec::new();
        let reply = loop {
            let mut chunk = [0u8; 256];
            let n = tokio::time::timeout(RESPONSE_TIMEOUT, stream.read(&mut chunk))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Ok(Some((frame, _))) = resp::parse(&buf) {
                break frame;
            }
        };
        if let Frame::Error(e) = reply {
            return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, e));
        }
    }
    Ok(stream)
}

/// Runs a connection's reader and writer; returns where to write and how to stop reading.
fn spawn_connection(
    stream: TcpStream,
    node: String,
    id: u64,
    events: mpsc::UnboundedSender<Event>,
) -> (mpsc::UnboundedSender<Vec<u8>>, tokio::task::AbortHandle) {
    let (mut read, mut write) = stream.into_split();
    let (writer, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let reader = tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        'read: loop {
            let n = match read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut used = 0;
            loop {
                match resp::parse(&buf[used..]) {
                    Ok(Some((frame, len))) => {
                        used += len;
                        let event = Event::Frame {
                            node: node.clone(),
                            id,
                            frame,
                        };
                        if events.send(event).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(resp::Malformed) => break 'read,
                }
            }
            buf.drain(..used);
        }
        let _ = events.send(Event::Closed { node, id });
    });
    (writer, reader.abort_handle())
}

/// A room channel's message after its `m`: `<timestamp>:<prev>:<payload>`.
fn decode_message(room: &str, bytes: &[u8]) -> Option<(Message, Position)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (position, rest) = text.split_once(':')?;
    let (prev, payload) = rest.split_once(':')?;
    let message = Message {
        room: room.to_owned(),
        position: Position(position.parse().ok()?),
        payload: payload.to_owned(),
    };
    Some((message, Position(prev.parse().ok()?)))
}

/// `CLUSTER SLOTS`: ranges with their primary's `host:port` (the first node of each).
pub(crate) fn parse_slots(value: &Value) -> Vec<(u16, u16, String)> {
    let Value::Array(ranges) = value else {
        return Vec::new();
    };
    ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(fields) = range else {
                return None;
            };
            let start: u16 = redis::from_redis_value_ref(fields.first()?).ok()?;
            let end: u16 = redis::from_redis_value_ref(fields.get(1)?).ok()?;
            let Value::Array(primary) = fields.get(2)? else {
                return None;
            };
            let host: String = redis::from_redis_value_ref(primary.first()?).ok()?;
            let port: u16 = redis::from_redis_value_ref(primary.get(1)?).ok()?;
            Some((start, end, format!("{host}:{port}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_position_and_the_one_before() {
        let (message, prev) =
            decode_message("r", b"1795593690279:1795593690200:{\"a\":\"b:c\"}").unwrap();
        assert_eq!(message.position, Position(1_795_593_690_279));
        assert_eq!(prev, Position(1_795_593_690_200));
        assert_eq!(message.payload, "{\"a\":\"b:c\"}");
        assert_eq!(decode_message("r", b"12:x:{}"), None);
        assert_eq!(decode_message("r", b"12"), None);
    }

    #[test]
    fn cluster_slots_give_each_range_its_primary() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(5460),
            Value::Array(vec![bulk("127.0.0.1"), Value::Int(7000), bulk("id")]),
            Value::Array(vec![bulk("127.0.0.1"), Value::Int(7003), bulk("id2")]),
        ])]);
        assert_eq!(
            parse_slots(&reply),
            [(0, 5460, "127.0.0.1:7000".to_owned())]
        );
    }
}

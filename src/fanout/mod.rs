//! Live delivery on this node. The store's feed arrives here in append order; a dispatcher hands
//! each message to the shard its room hashes to, and the shard sends it, encoded once, to the
//! room's local members ([`shard`]). A published message thus goes route → store → feed →
//! shard → outboxes, one way.
//!
//! Joins and recoveries are cut against that same per-shard order, so a joining connection gets
//! live exactly the messages after its cut, and a recovering one is held (its live messages
//! buffered) while it replays up to the cut, with no gap and no duplicate at the seam. No store
//! round trip ever happens inside a shard: when a join needs the store, the room is pinned first
//! and the store is read by the joining connection.

pub mod shard;

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use socketioxide::socket::Sid;
use tokio::sync::{mpsc, oneshot};
use twine_store::{Feed, FeedEvent, History, Message, PageLimit, Position, StoreError};

use crate::metrics::Metrics;
use shard::{Command, Lag, Member, Released, Shard};

/// Messages read per page when catching up after a feed gap.
const CATCH_UP_PAGE: usize = 1000;
/// Attempts at each catch-up read before giving up on a room.
const CATCH_UP_ATTEMPTS: u32 = 10;

/// This node's live delivery.
pub struct Fanout {
    shards: Vec<(mpsc::UnboundedSender<Command>, Arc<Lag>)>,
    history: Arc<dyn History>,
    hasher: BuildHasherDefault<DefaultHasher>,
}

/// A shard stopped: only a bug does that.
#[derive(Debug, thiserror::Error)]
#[error("live delivery stopped")]
pub struct Stopped;

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

impl Fanout {
    /// Starts `shards` shards and the dispatcher that feeds them from `feed`. Each held
    /// connection may have up to `hold_bytes` buffered per room while it replays.
    pub fn start(
        history: Arc<dyn History>,
        feed: Feed,
        shards: usize,
        hold_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Fanout> {
        let shards = (0..shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let lag = Arc::new(Lag::default());
                tokio::spawn(Shard::new(hold_bytes, lag.clone(), metrics.clone()).run(rx));
                (tx, lag)
            })
            .collect();
        let fanout = Arc::new(Fanout {
            shards,
            history,
            hasher: BuildHasherDefault::default(),
        });
        tokio::spawn(fanout.clone().dispatch(feed));
        fanout
    }

    fn shard_index(&self, room: &str) -> usize {
        self.hasher.hash_one(room) as usize % self.shards.len()
    }

    fn shard(&self, room: &str) -> &mpsc::UnboundedSender<Command> {
        &self.shards[self.shard_index(room)].0
    }

    /// How far live delivery runs behind now, on the slowest shard.
    pub fn delay(&self) -> Duration {
        self.shards
            .iter()
            .map(|(_, lag)| lag.delay())
            .max()
            .unwrap_or_default()
    }

    fn deliver(&self, message: Message) {
        let index = self.shard_index(&message.room);
        let (shard, lag) = &self.shards[index];
        lag.queued();
        let _ = shard.send(Command::Deliver(message, Instant::now()));
    }

    async fn ask<T>(
        &self,
        room: &str,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.shard(room).send(command(reply)).map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }

    /// Joins `member` to `room` live. Returns the cut: the member gets every message after it.
    pub async fn join(&self, room: &Arc<str>, member: Member) -> Result<Position, JoinError> {
        let known = self
            .ask(room, |reply| Command::Track {
                room: room.clone(),
                reply,
            })
            .await?;
        let floor = match known {
            Some(_) => None,
            None => match self.history.last_position(room).await {
                Ok(last) => Some(last),
                Err(e) => {
                    let _ = self
                        .shard(room)
                        .send(Command::Untrack { room: room.clone() });
                    return Err(e.into());
                }
            },
        };
        let cut = self
            .ask(room, |reply| Command::Join {
                room: room.clone(),
                member,
                floor,
                reply,
            })
            .await?;
        Ok(cut)
    }

    pub fn leave(&self, room: &Arc<str>, sid: Sid) {
        let _ = self.shard(room).send(Command::Leave {
            room: room.clone(),
            sid,
        });
    }

    /// Starts buffering `room`'s live messages for `member`, which then replays it from the
    /// store and calls [`Fanout::release`].
    pub async fn hold(&self, room: &Arc<str>, member: Member) -> Result<(), Stopped> {
        self.ask(room, |reply| Command::Hold {
            room: room.clone(),
            member,
            reply,
        })
        .await
    }

    /// Ends a hold once `room` was replayed up to `replayed`.
    pub async fn release(
        &self,
        room: &Arc<str>,
        sid: Sid,
        replayed: Position,
    ) -> Result<Released, Stopped> {
        self.ask(room, |reply| Command::Release {
            room: room.clone(),
            sid,
            replayed,
            reply,
        })
        .await
    }

    /// Ends a hold without going live.
    pub fn unhold(&self, room: &Arc<str>, sid: Sid) {
        let _ = self.shard(room).send(Command::Unhold {
            room: room.clone(),
            sid,
        });
    }

    /// Sends `event` to `room`'s live members on this node, in order with its messages. It is
    /// delivery work like a message: it counts in how far behind delivery runs.
    pub fn announce(&self, room: Arc<str>, event: &'static str, data: Arc<RawValue>) {
        let index = self.shard_index(&room);
        let (shard, lag) = &self.shards[index];
        lag.queued();
        let _ = shard.send(Command::Announce {
            room,
            event,
            data,
            arrived: Instant::now(),
        });
    }

    /// Hands the feed to the shards until it closes.
    async fn dispatch(self: Arc<Self>, mut feed: Feed) {
        while let Some(event) = feed.recv().await {
            match event {
                FeedEvent::Message(message) => self.deliver(message),
                FeedEvent::Gap => self.catch_up().await,
            }
        }
        tracing::warn!("the store's live feed closed; live delivery stopped");
    }

    /// After the feed was interrupted: hands the shards, in order, what each room tracked here
    /// missed. The feed is already back, and waits meanwhile; what it then repeats is skipped.
    async fn catch_up(&self) {
        let mut rooms = Vec::new();
        for (shard, _) in &self.shards {
            let (reply, answer) = oneshot::channel();
            if shard.send(Command::Rooms { reply }).is_ok()
                && let Ok(listed) = answer.await
            {
                rooms.extend(listed);
            }
        }
        tracing::info!(
            rooms = rooms.len(),
            "live feed resumed; catching up from history"
        );
        for (room, mut after) in rooms {
            let mut attempts = 0;
            loop {
                let page = self
                    .history
                    .read_page(&room, after, Position::MAX, PageLimit::count(CATCH_UP_PAGE))
                    .await;
                let page = match page {
                    Ok(page) => page,
                    Err(e) if attempts < CATCH_UP_ATTEMPTS => {
                        attempts += 1;
                        tracing::warn!(%room, "catch-up read failed, retrying: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(%room, "catch-up gave up; live clients may have missed messages until they reconnect: {e}");
                        break;
                    }
                };
                let more = page.more;
                for message in page.messages {
                    after = message.position;
                    self.deliver(message);
                }
                if !more {
                    break;
                }
            }
        }
    }
}

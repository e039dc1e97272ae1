//! Live delivery on this node. The store's feed carries the rooms this node serves, in append
//! order; a dispatcher hands each message to the shard its room hashes to, and the shard sends
//! it, encoded once, to the room's local members ([`shard`]). A published message thus goes
//! route → store → feed → shard → outboxes, one way.
//!
//! A room is fed to this node from its first local member (or recovering connection) to its last:
//! the first join makes the feed carry it, then reads where the room stands, so nothing appended
//! after that cut is missed. Joins and recoveries are cut against the same per-shard order, so a
//! joining connection gets live exactly the messages after its cut, and a recovering one is held
//! (its live messages buffered) while it replays up to the cut, with no gap and no duplicate at
//! the seam. No store round trip ever happens inside a shard.
//!
//! What the feed missed (it was interrupted, or this node fell behind and the feed's budget was
//! full) is read back from the history by position, room by room ([`catch_up`]).

mod catch_up;
mod lag;
mod members;
pub mod shard;

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::transport::Sid;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use twine_store::{Feed, FeedBudget, FeedEvent, History, Listen, Position, StoreError};

use crate::metrics::Metrics;
use lag::Lag;
use shard::{Command, Released, Shard, ShardContext, Subscriber};

/// This node's live delivery.
pub struct Fanout {
    shards: Vec<(mpsc::UnboundedSender<Command>, Arc<Lag>)>,
    history: Arc<dyn History>,
    rooms: Arc<dyn Listen>,
    budget: Arc<FeedBudget>,
    hasher: BuildHasherDefault<DefaultHasher>,
    served: Arc<AtomicUsize>,
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
        let Feed {
            events,
            rooms,
            budget,
        } = feed;
        let (catch_up, wanted) = mpsc::unbounded_channel();
        let served = Arc::new(AtomicUsize::new(0));
        let shards = (0..shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let lag = Arc::new(Lag::default());
                let cx = ShardContext {
                    hold_bytes,
                    lag: lag.clone(),
                    metrics: metrics.clone(),
                    budget: budget.clone(),
                    rooms: rooms.clone(),
                    catch_up: catch_up.clone(),
                    served: served.clone(),
                };
                tokio::spawn(Shard::new(cx).run(rx));
                (tx, lag)
            })
            .collect();
        let fanout = Arc::new(Fanout {
            shards,
            history,
            rooms,
            budget,
            hasher: BuildHasherDefault::default(),
            served,
        });
        tokio::spawn(fanout.clone().dispatch(events));
        tokio::spawn(catch_up::run(Arc::downgrade(&fanout), wanted));
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

    /// Rooms with members on this node.
    pub fn rooms_served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// The feed's budget and counts, for the node's metrics.
    pub fn budget(&self) -> &Arc<FeedBudget> {
        &self.budget
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

    /// Pins `room` on its shard and makes sure the feed carries it. Returns the newest position
    /// the store has when the shard did not know it (read once the feed carries the room).
    async fn track(&self, room: &Arc<str>) -> Result<Option<Position>, JoinError> {
        let known = self
            .ask(room, |reply| Command::Track {
                room: room.clone(),
                reply,
            })
            .await?;
        if known.is_some() {
            return Ok(None);
        }
        let floor = async {
            self.rooms.listen(room).await?;
            self.history.last_position(room).await
        };
        match floor.await {
            Ok(last) => Ok(Some(last)),
            Err(e) => {
                let _ = self
                    .shard(room)
                    .send(Command::Untrack { room: room.clone() });
                Err(e.into())
            }
        }
    }

    /// Joins `member` to `room` live. Returns the cut: the member gets every message after it.
    pub async fn join(&self, room: &Arc<str>, member: Subscriber) -> Result<Position, JoinError> {
        let floor = self.track(room).await?;
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
            done: None,
        });
    }

    /// [`Fanout::leave`], resolving once nothing more of `room` will be sent to `sid`.
    pub async fn leave_now(&self, room: &Arc<str>, sid: Sid) {
        let _ = self
            .ask(room, |done| Command::Leave {
                room: room.clone(),
                sid,
                done: Some(done),
            })
            .await;
    }

    /// Starts buffering `room`'s live messages for `member`, which then replays it from the
    /// store and calls [`Fanout::release`].
    pub async fn hold(&self, room: &Arc<str>, member: Subscriber) -> Result<(), JoinError> {
        let floor = self.track(room).await?;
        self.ask(room, |reply| Command::Hold {
            room: room.clone(),
            member,
            floor,
            reply,
        })
        .await?;
        Ok(())
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
    async fn dispatch(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<FeedEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                FeedEvent::Message { message, prev } => {
                    let index = self.shard_index(&message.room);
                    let (shard, lag) = &self.shards[index];
                    lag.queued();
                    let _ = shard.send(Command::Deliver {
                        message,
                        prev,
                        arrived: Instant::now(),
                    });
                }
                FeedEvent::Gap(room) => {
                    let _ = self.shard(&room).send(Command::Gap(Arc::from(room)));
                }
                FeedEvent::GapAll => {
                    tracing::info!("live feed resumed; rooms catch up from history");
                    for (shard, _) in &self.shards {
                        let _ = shard.send(Command::GapAll);
                    }
                }
            }
        }
        tracing::warn!("the store's live feed closed; live delivery stopped");
    }
}

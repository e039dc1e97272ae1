//! The replay on connect: a known session (by its `twineid` cookie, or by its Socket.IO `pid`, see
//! [`super::resume`]) gets its rooms back (`roomJoined` for each) and every
//! message published after its position in each room, merged across rooms in publish order, with
//! original timestamps, then goes live from the exact cut where its replay stopped.
//!
//! The replay is streamed: each room is read a page at a time (all rooms' pages together within
//! `--replay-memory`), and sending waits while the client has its send queue full, so a replay
//! of any length holds a bounded amount of memory.
//!
//! A store that does not answer (a paused Redis) delays the replay: each read is retried from
//! where it stopped while the connection lasts, so the client gets everything once, in order,
//! when the store is back, and is never left open with rooms that are not live.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::time::Instant;
use twine_store::{Message, Page, PageLimit, Position, Session};

use super::command::until_done;
use super::resume::Notice;
use crate::auth::Grant;
use crate::fanout::shard::{Released, Subscriber};
use crate::metrics::Limit;
use crate::outbox::acks::Slot;
use crate::outbox::{Encoded, Gone, Outbox};
use crate::state::AppState;
use crate::transport::Sid;

/// Messages per page read from the store.
const PAGE_COUNT: usize = 256;
/// Rooms whose replay is planned at once (store round trips in flight).
const PLAN_CONCURRENCY: usize = 16;
/// Times a room is read again from the store because more arrived during its replay than its
/// hold could buffer, before the client is deemed unable to keep up.
const MAX_CATCH_UP_ROUNDS: u32 = 8;

/// The `recoveryTruncated` event: messages of `room` after position `from` were not all replayed
/// (over the replay limit, or past retention); the oldest replayed one after them, if any, is
/// `until`.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Truncation {
    pub room: String,
    pub from: u64,
    pub until: Option<u64>,
}

/// A connection recovering its session.
pub struct Replay<'a> {
    pub app: &'a AppState,
    pub outbox: &'a Arc<Outbox>,
    pub sid: Sid,
    /// The replay starts no earlier than this (a page's listeners may attach late).
    pub not_before: Option<Instant>,
    /// Rooms of the session the connection's token does not allow are not rejoined.
    pub grant: &'a Grant,
    /// Under Socket.IO's recovery, the `recovery` event, sent before anything else (its offset
    /// names every room from where its replay starts).
    pub notice: Option<&'a Notice>,
    /// Whether the connection is going: retries of the store's reads stop.
    pub leaving: &'a (dyn Fn() -> bool + Sync),
}

/// A room the connection got back.
pub struct Rejoined {
    pub room: Arc<str>,
    pub slot: Slot,
    /// In the room live; otherwise it may still be held and must be let go.
    pub live: bool,
}

/// One room's replay in progress.
struct RoomReplay {
    name: Arc<str>,
    slot: Slot,
    /// The session's position in the room.
    from: Position,
    /// Newest position replayed (or the position the replay starts after).
    replayed: Position,
    page: VecDeque<Message>,
    more: bool,
}

impl Replay<'_> {
    fn page_limit(&self, rooms: usize) -> PageLimit {
        PageLimit {
            count: PAGE_COUNT,
            bytes: (self.app.config.replay_memory as usize / rooms.max(1)).max(1),
        }
    }

    /// Restores `session`'s rooms on this connection. Returns them, each marked live or not;
    /// stops early (rooms not live) if the client goes.
    pub async fn run(&self, session: Session) -> Vec<Rejoined> {
        let started = std::time::Instant::now();
        let max_rooms = self.app.config.max_rooms as usize;
        let mut rooms: Vec<RoomReplay> = Vec::new();
        let mut rejoined: Vec<Rejoined> = Vec::new();
        let allowed = session
            .rooms
            .iter()
            .filter(|(room, _)| self.grant.allows(room));
        for (name, cursor) in allowed.take(max_rooms) {
            let name: Arc<str> = Arc::from(name.as_str());
            let slot = self.outbox.add_room(name.clone(), cursor.listened);
            self.outbox.has_up_to(slot, cursor.resume_after());
            rejoined.push(Rejoined {
                room: name.clone(),
                slot,
                live: false,
            });
            rooms.push(RoomReplay {
                name,
                slot,
                from: cursor.resume_after(),
                replayed: cursor.resume_after(),
                page: VecDeque::new(),
                more: false,
            });
        }
        if self.replay_all(&mut rooms).await.is_err() {
            return rejoined;
        }
        for (room, rejoined) in rooms.iter().zip(rejoined.iter_mut()) {
            match self.release(room).await {
                Ok(live) => rejoined.live = live,
                Err(Gone) => break,
            }
        }
        tracing::debug!(sid = %self.sid, rooms = rejoined.len(), "recovered");
        self.app
            .metrics
            .replay_seconds
            .observe(started.elapsed().as_secs_f64());
        rejoined
    }

    /// Rejoins, holds and replays every room, up to the point where each can go live.
    async fn replay_all(&self, rooms: &mut [RoomReplay]) -> Result<(), Gone> {
        if let Some(notice) = self.notice {
            self.outbox.send("recovery", notice).await?;
        }
        for room in rooms.iter() {
            let joined = format!("You have joined room: {}", room.name);
            self.outbox.send("roomJoined", &joined).await?;
        }
        for room in rooms.iter() {
            let hold = until_done("holding a room for a replay", self.leaving, || {
                let member = Subscriber::new(self.sid, self.outbox.clone(), room.slot);
                self.app.fanout.hold(&room.name, member)
            });
            hold.await.ok_or(Gone)?;
        }
        if let Some(at) = self.not_before {
            tokio::time::sleep_until(at).await;
        }
        let truncations = self.plan(rooms).await?;
        for truncation in &truncations {
            self.outbox.send("recoveryTruncated", truncation).await?;
        }
        self.replay(rooms).await
    }

    /// Finds where each room's replay starts and reads its first page. Returns the rooms whose
    /// replay will not be complete.
    async fn plan(&self, rooms: &mut [RoomReplay]) -> Result<Vec<Truncation>, Gone> {
        let max = self.app.config.max_replay as usize;
        let limit = self.page_limit(rooms.len());
        let asks: Vec<(Arc<str>, Position)> =
            rooms.iter().map(|r| (r.name.clone(), r.from)).collect();
        let read = || {
            futures_util::stream::iter(asks.clone())
                .map(|(room, from)| {
                    let history = self.app.history.clone();
                    async move {
                        let start = history
                            .replay_start(&room, from, Position::MAX, max)
                            .await?;
                        let page = history
                            .read_page(&room, start.after, Position::MAX, limit)
                            .await?;
                        Ok::<_, twine_store::StoreError>((start, page))
                    }
                })
                .buffered(PLAN_CONCURRENCY)
                .try_collect::<Vec<_>>()
        };
        let firsts = until_done("reading history for a replay", self.leaving, read)
            .await
            .ok_or(Gone)?;
        let mut truncations = Vec::new();
        for (room, (start, page)) in rooms.iter_mut().zip(firsts) {
            if start.truncated || page.truncated {
                truncations.push(Truncation {
                    room: room.name.to_string(),
                    from: room.from.0,
                    until: page.messages.first().map(|m| m.position.0),
                });
            }
            room.replayed = start.after;
            room.more = page.more;
            room.page = page.messages.into();
        }
        Ok(truncations)
    }

    /// Sends every room's pages merged in position order (one clock, so publish order), reading
    /// more as each room's page runs out.
    async fn replay(&self, rooms: &mut [RoomReplay]) -> Result<(), Gone> {
        let limit = self.page_limit(rooms.len());
        let mut next: BinaryHeap<Reverse<(Position, usize)>> = rooms
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.page.front().map(|m| Reverse((m.position, i))))
            .collect();
        while let Some(Reverse((_, i))) = next.pop() {
            let room = &mut rooms[i];
            let message = room.page.pop_front().expect("queued by its front");
            let encoded = Encoded::with_room(room.name.clone(), &message);
            self.outbox.replay(&encoded, room.slot).await?;
            room.replayed = message.position;
            if room.page.is_empty() && room.more {
                self.refill(room, Position::MAX, limit).await?;
            }
            if let Some(front) = room.page.front() {
                next.push(Reverse((front.position, i)));
            }
        }
        Ok(())
    }

    /// Reads `room`'s next page (up to `until`), reporting a gap that retention made meanwhile.
    async fn refill(
        &self,
        room: &mut RoomReplay,
        until: Position,
        limit: PageLimit,
    ) -> Result<(), Gone> {
        let read = || {
            self.app
                .history
                .read_page(&room.name, room.replayed, until, limit)
        };
        let page: Page = until_done("reading history for a replay", self.leaving, read)
            .await
            .ok_or(Gone)?;
        if page.truncated {
            let truncation = Truncation {
                room: room.name.to_string(),
                from: room.replayed.0,
                until: page.messages.first().map(|m| m.position.0),
            };
            self.outbox.send("recoveryTruncated", &truncation).await?;
        }
        room.more = page.more;
        room.page = page.messages.into();
        Ok(())
    }

    /// Takes `room` live at the end of its replay. If more arrived during the replay than the
    /// hold buffered, replays that from the store first. Returns whether it went live.
    async fn release(&self, room: &RoomReplay) -> Result<bool, Gone> {
        let fanout = &self.app.fanout;
        let mut replayed = room.replayed;
        for _ in 0..=MAX_CATCH_UP_ROUNDS {
            // What was buffered goes out at once: make room for it.
            self.outbox.half_drained().await?;
            match fanout.release(&room.name, self.sid, replayed).await {
                Ok(Released::Live) => return Ok(true),
                Ok(Released::Behind(until)) => {
                    replayed = self.catch_up(room, replayed, until).await?;
                }
                Ok(Released::Gone) | Err(_) => return Err(Gone),
            }
        }
        self.outbox.cut(
            Limit::SendQueue,
            "more is published to its rooms than it reads while recovering",
        );
        Err(Gone)
    }

    /// Replays `room` from `after` to `until` from the store. Returns how far it got.
    async fn catch_up(
        &self,
        room: &RoomReplay,
        after: Position,
        until: Position,
    ) -> Result<Position, Gone> {
        let limit = self.page_limit(1);
        let mut catching = RoomReplay {
            name: room.name.clone(),
            slot: room.slot,
            from: after,
            replayed: after,
            page: VecDeque::new(),
            more: true,
        };
        while catching.more {
            self.refill(&mut catching, until, limit).await?;
            while let Some(message) = catching.page.pop_front() {
                let encoded = Encoded::with_room(room.name.clone(), &message);
                self.outbox.replay(&encoded, room.slot).await?;
                catching.replayed = message.position;
            }
        }
        Ok(catching.replayed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncations_serialize_as_the_contract_says() {
        let t = Truncation {
            room: "big".into(),
            from: 5,
            until: None,
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"room":"big","from":5,"until":null}"#
        );
    }
}

//! Reading back from the history what the feed missed, room by room and by position: after the
//! feed was interrupted, after a message arrived whose predecessor never did, or when this node
//! fell behind and the feed's budget turned messages into gaps. A room's catch-up reads pages
//! after what the room delivered and hands them to its shard, which delivers them in order and
//! says where to read on, until the catch-up has passed everything the feed brought meanwhile.
//!
//! Catch-ups read within the feed's budget (a node behind does not read more than it can hold)
//! and a bounded number at a time; a store that fails is retried until it answers.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use twine_store::{PageLimit, Position};

use super::Fanout;
use super::shard::{CatchUp, Command};

/// Messages per page read.
const PAGE_COUNT: usize = 256;
/// Most payload bytes per page read.
const PAGE_BYTES: usize = 1 << 20;
/// Rooms catching up at once.
const CONCURRENCY: usize = 16;
/// How often a catch-up looks again for room in the budget.
const BUDGET_WAIT: Duration = Duration::from_millis(10);
/// Pauses between attempts while the store fails.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Runs each catch-up asked for, a bounded number at a time, until the fanout is gone.
pub async fn run(fanout: Weak<Fanout>, mut wanted: mpsc::UnboundedReceiver<(Arc<str>, Position)>) {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some((room, from)) = wanted.recv().await {
        let Some(fanout) = fanout.upgrade() else {
            return;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            fanout.catch_up(room, from).await;
            drop(permit);
        });
    }
}

impl Fanout {
    /// Catches `room` up from `after` until its shard says it is done.
    async fn catch_up(&self, room: Arc<str>, mut after: Position) {
        let mut retry = FIRST_RETRY;
        loop {
            // A message not fed from now on is announced again, so this catch-up reads on.
            self.budget.catching_up(&room);
            while self.budget.in_flight() > self.budget.limit() / 2 {
                tokio::time::sleep(BUDGET_WAIT).await;
            }
            let limit = PageLimit {
                count: PAGE_COUNT,
                bytes: PAGE_BYTES,
            };
            let page = match self
                .history
                .read_page(&room, after, Position::MAX, limit)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(%room, "catch-up read failed, retrying in {retry:?}: {e}");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(LAST_RETRY);
                    continue;
                }
            };
            retry = FIRST_RETRY;
            let bytes: usize = page.messages.iter().map(|m| m.size()).sum();
            self.budget.force(bytes);
            let answer = self
                .ask(&room, |reply| Command::CatchUp {
                    room: room.clone(),
                    messages: page.messages,
                    more: page.more,
                    reply,
                })
                .await;
            match answer {
                Ok(CatchUp::After(position)) => after = position,
                Ok(CatchUp::Done) | Err(_) => return,
            }
        }
    }
}

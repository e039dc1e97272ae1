//! Test doubles for the stores' own tests and the adapters' (with the `testing` feature): an
//! [`Archive`] in memory.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound::{Excluded, Included};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::{Archive, Message, Page, PageLimit, Position, ReplayStart, StoreError};

/// An [`Archive`] in memory, for exercising the tiers in tests.
#[derive(Default)]
pub struct MemoryArchive {
    rooms: Mutex<HashMap<String, BTreeMap<Position, String>>>,
}

#[async_trait]
impl Archive for MemoryArchive {
    async fn put(&self, messages: &[Message]) -> Result<(), StoreError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        for m in messages {
            let room = rooms.entry(m.room.clone()).or_default();
            room.insert(m.position, m.payload.clone());
        }
        Ok(())
    }

    async fn read_page(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: PageLimit,
    ) -> Result<Page, StoreError> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let Some(log) = rooms.get(room).filter(|_| after < until) else {
            return Ok(Page::default());
        };
        let mut range = log.range((Excluded(after), Included(until)));
        let mut messages = Vec::new();
        let mut bytes = 0;
        while messages.len() < limit.count && bytes < limit.bytes {
            let Some((position, payload)) = range.next() else {
                break;
            };
            bytes += payload.len();
            messages.push(Message {
                room: room.to_owned(),
                position: *position,
                payload: payload.clone(),
            });
        }
        Ok(Page {
            messages,
            truncated: false,
            more: range.next().is_some(),
        })
    }

    async fn replay_start(
        &self,
        room: &str,
        after: Position,
        until: Position,
        max: usize,
    ) -> Result<ReplayStart, StoreError> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let newest_kept = rooms
            .get(room)
            .filter(|_| after < until)
            .and_then(|log| log.range((Excluded(after), Included(until))).rev().nth(max));
        Ok(match newest_kept {
            Some((position, _)) => ReplayStart {
                after: *position,
                truncated: true,
            },
            None => ReplayStart {
                after,
                truncated: false,
            },
        })
    }

    async fn last_position(&self, room: &str) -> Result<Position, StoreError> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let last = rooms.get(room).and_then(|r| r.keys().next_back().copied());
        Ok(last.unwrap_or(Position::ZERO))
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MemoryArchive;

    #[tokio::test]
    async fn the_memory_archive_passes_the_archive_conformance_suite() {
        crate::conformance::run_archive(|| Arc::new(MemoryArchive::default())).await;
    }
}

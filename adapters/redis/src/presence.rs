//! Presence shared through Redis.
//!
//! - `<prefix>:{<tag>}:p:<room>`: a hash per room, member id → what the room is told about the
//!   member.
//! - `<prefix>:{<tag>}:p-until`: a sorted set per partition, `<room length>:<room><member id>`
//!   scored by when the member expires (on Redis's clock). Any node's sweep of it finds the
//!   members of a node that died, whichever of the partition's rooms they were in.
//! - Changes go out on the room's channel, one message (`p…`) per batch, so only the nodes
//!   serving the room get them.
//!
//! Each batch is one script, so its changes and their announcement are atomic, and a member
//! expires once. Changes announced while a node's subscription is down are not repeated to it;
//! its clients can list the members again.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use twine_store::{Change, Member, Presence, PresenceEvent, PresenceFeed, StoreError, Update};

use crate::keys::{PARTITIONS, partition_of};
use crate::{RedisStore, classify, corrupt, scripts};

/// Members one sweep call drops at most (the sweep repeats until none are left).
const EXPIRE_BATCH: usize = 500;
/// Members one heartbeat call refreshes at most.
const REFRESH_BATCH: usize = 1_000;
/// Partitions swept or refreshed at once.
const CONCURRENCY: usize = 16;

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

/// Reads `<length>:<text>` off the front of `text`.
fn counted(text: &str) -> Option<(&str, &str)> {
    let (len, rest) = text.split_once(':')?;
    let len: usize = len.parse().ok()?;
    if rest.len() < len || !rest.is_char_boundary(len) {
        return None;
    }
    Some(rest.split_at(len))
}

/// A batch of `room`'s changes as the presence scripts publish it, after its `p` (see
/// `PRESENCE_HELPERS` in the scripts).
pub fn decode_batch(room: &str, bytes: &[u8]) -> Option<PresenceEvent> {
    let mut rest = std::str::from_utf8(bytes).ok()?;
    let mut changes = Vec::new();
    while !rest.is_empty() {
        let change = Change::from_code(*rest.as_bytes().first()?)?;
        let (id, after_id) = counted(&rest[1..])?;
        let (info, after_info) = counted(after_id)?;
        let member = Member {
            id: id.to_owned(),
            info: info.to_owned(),
        };
        changes.push((change, member));
        rest = after_info;
    }
    Some(PresenceEvent {
        room: room.to_owned(),
        changes,
    })
}

impl RedisStore {
    async fn expire_partition(&self, partition: usize) -> Result<(), StoreError> {
        loop {
            let dropped: usize = scripts::PRESENCE_EXPIRE
                .key(self.keys.presence_expiry(partition))
                .arg(self.keys.members_prefix(partition))
                .arg(self.keys.channel_prefix(partition))
                .arg(self.publish_command())
                .arg(EXPIRE_BATCH)
                .invoke_async(&mut self.link.clone())
                .await
                .map_err(classify)?;
            if dropped < EXPIRE_BATCH {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl Presence for RedisStore {
    async fn apply(
        &self,
        room: &str,
        updates: &[Update],
        ttl: Duration,
        max_members: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut invocation = scripts::PRESENCE_APPLY.key(self.keys.members(room));
        invocation
            .key(self.keys.presence_expiry(partition_of(room)))
            .arg(room)
            .arg(ms(ttl))
            .arg(max_members)
            .arg(self.keys.channel(room))
            .arg(self.publish_command());
        for update in updates {
            match update {
                Update::Enter(member) => invocation.arg("e").arg(&member.id).arg(&member.info),
                Update::Leave(id) => invocation.arg("l").arg(id).arg(""),
            };
        }
        invocation
            .invoke_async(&mut self.link.clone())
            .await
            .map_err(classify)
    }

    async fn members(&self, room: &str) -> Result<Vec<Member>, StoreError> {
        let flat: Vec<String> = scripts::PRESENCE_MEMBERS
            .key(self.keys.members(room))
            .key(self.keys.presence_expiry(partition_of(room)))
            .arg(room)
            .invoke_async(&mut self.link.clone())
            .await
            .map_err(classify)?;
        if !flat.len().is_multiple_of(2) {
            return Err(corrupt("presence members in pairs"));
        }
        Ok(flat
            .chunks_exact(2)
            .map(|pair| Member {
                id: pair[0].clone(),
                info: pair[1].clone(),
            })
            .collect())
    }

    async fn refresh(&self, entries: &[(&str, &str)], ttl: Duration) -> Result<(), StoreError> {
        let mut by_partition: BTreeMap<usize, Vec<(String, String)>> = BTreeMap::new();
        for (room, id) in entries {
            by_partition
                .entry(partition_of(room))
                .or_default()
                .push((room.to_string(), id.to_string()));
        }
        let calls: Vec<(usize, Vec<(String, String)>)> = by_partition
            .into_iter()
            .flat_map(|(partition, entries)| {
                let chunks: Vec<Vec<(String, String)>> =
                    entries.chunks(REFRESH_BATCH).map(<[_]>::to_vec).collect();
                chunks.into_iter().map(move |chunk| (partition, chunk))
            })
            .collect();
        let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(calls)
            .map(|(partition, chunk)| async move {
                let mut invocation =
                    scripts::PRESENCE_REFRESH.key(self.keys.presence_expiry(partition));
                invocation.arg(ms(ttl));
                for (room, id) in &chunk {
                    invocation.arg(room).arg(id);
                }
                let _: i64 = invocation
                    .invoke_async(&mut self.link.clone())
                    .await
                    .map_err(classify)?;
                Ok(())
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn expire(&self) -> Result<(), StoreError> {
        let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(0..PARTITIONS)
            .map(|partition| self.expire_partition(partition))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn subscribe(&self) -> Result<PresenceFeed, StoreError> {
        let (tx, events) = mpsc::unbounded_channel();
        let subscriber = self.subscriber();
        subscriber.attach_presence(tx);
        Ok(PresenceFeed {
            events,
            rooms: std::sync::Arc::new(subscriber.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_ids_and_infos_with_separators() {
        let event = decode_batch("a:b", b"e4:x:y:11:{\"n\":\"1:2\"}l1:z2:{}").unwrap();
        assert_eq!(event.room, "a:b");
        let changes: Vec<_> = event
            .changes
            .iter()
            .map(|(c, m)| (*c, m.id.as_str(), m.info.as_str()))
            .collect();
        assert_eq!(
            changes,
            [
                (Change::Enter, "x:y:", "{\"n\":\"1:2\"}"),
                (Change::Leave, "z", "{}")
            ]
        );
        assert_eq!(decode_batch("r", b"g1:b2:{}"), None, "an unknown change");
        assert_eq!(decode_batch("r", b"e1:b9:{}"), None, "a cut info");
    }
}

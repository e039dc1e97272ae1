//! Presence shared through Redis.
//!
//! - `<prefix>:p:<room>`: a hash per room, member id → what the room is told about the member.
//! - `<prefix>:p-until`: one sorted set for every room, `<room length>:<room><member id>` scored
//!   by when the member expires (on Redis's clock). One set, so any node's sweep finds the
//!   members of a node that died, whichever rooms they were in.
//! - `<prefix>:presence`: the pub/sub channel of changes, one message per batch of changes to
//!   a room (the format is in the scripts).
//!
//! Each batch is one script, so its changes and their announcement are atomic, and a member
//! expires once. The sweep names room hashes it finds in the expiry set rather than declaring them as
//! keys: presence needs one Redis, not a cluster. Changes announced while a node's subscription
//! is down are not repeated to it; its clients can list the members again.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use twine_store::{Change, Member, Presence, PresenceEvent, PresenceFeed, StoreError, Update};

use crate::{RedisStore, classify, corrupt, pump, scripts, subscribe, unavailable};

/// Members one sweep call drops at most (the sweep repeats until none are left).
const EXPIRE_BATCH: usize = 500;
/// Members one heartbeat call refreshes at most.
const REFRESH_BATCH: usize = 1_000;

impl RedisStore {
    fn members_key(&self, room: &str) -> String {
        format!("{}:p:{room}", self.options.prefix)
    }

    fn until_key(&self) -> String {
        format!("{}:p-until", self.options.prefix)
    }

    fn presence_channel(&self) -> String {
        format!("{}:presence", self.options.prefix)
    }
}

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

/// A batch as the presence scripts feed it (see `PRESENCE_HELPERS` in the scripts).
fn decode_batch(bytes: &[u8]) -> Option<PresenceEvent> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (room, mut rest) = counted(text)?;
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

#[async_trait]
impl Presence for RedisStore {
    async fn apply(
        &self,
        room: &str,
        updates: &[Update],
        ttl: Duration,
        max_members: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut invocation = scripts::PRESENCE_APPLY.key(self.members_key(room));
        invocation
            .key(self.until_key())
            .arg(room)
            .arg(ms(ttl))
            .arg(max_members)
            .arg(self.presence_channel());
        for update in updates {
            match update {
                Update::Enter(member) => invocation.arg("e").arg(&member.id).arg(&member.info),
                Update::Leave(id) => invocation.arg("l").arg(id).arg(""),
            };
        }
        invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(classify)
    }

    async fn members(&self, room: &str) -> Result<Vec<Member>, StoreError> {
        let flat: Vec<String> = scripts::PRESENCE_MEMBERS
            .key(self.members_key(room))
            .key(self.until_key())
            .arg(room)
            .invoke_async(&mut self.conn.clone())
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
        for batch in entries.chunks(REFRESH_BATCH) {
            let mut invocation = scripts::PRESENCE_REFRESH.key(self.until_key());
            invocation.arg(ms(ttl));
            for (room, id) in batch {
                invocation.arg(*room).arg(*id);
            }
            let _: i64 = invocation
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    async fn expire(&self) -> Result<(), StoreError> {
        loop {
            let dropped: usize = scripts::PRESENCE_EXPIRE
                .key(self.until_key())
                .arg(self.members_key(""))
                .arg(self.presence_channel())
                .arg(EXPIRE_BATCH)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(classify)?;
            if dropped < EXPIRE_BATCH {
                return Ok(());
            }
        }
    }

    async fn subscribe(&self) -> Result<PresenceFeed, StoreError> {
        let channel = self.presence_channel();
        let pubsub = subscribe(&self.client, &channel)
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(pump(
            self.client.clone(),
            channel,
            pubsub,
            tx,
            decode_batch,
            None,
        ));
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_rooms_and_ids_with_separators() {
        let event = decode_batch(b"3:a:be4:x:y:11:{\"n\":\"1:2\"}l1:z2:{}").unwrap();
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
        assert_eq!(decode_batch(b"1:ag1:b2:{}"), None, "an unknown change");
        assert_eq!(decode_batch(b"9:a"), None);
        assert_eq!(decode_batch(b"1:ae1:b9:{}"), None, "a cut info");
    }
}

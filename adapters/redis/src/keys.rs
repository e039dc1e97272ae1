//! Where everything lives in Redis. Every key and channel of a room carries its partition's hash
//! tag, `{<tag>}`: the room's stream, its idempotency records, its presence, its pub/sub channel,
//! and its partition's write-behind queue and presence expiry set all hash to one slot, so a
//! room's append (and each presence batch) is one atomic script on Redis Cluster too, and a
//! partition's queue is on the same master as its rooms.
//!
//! Rooms are spread over [`PARTITIONS`] partitions by a stable hash of their names; the
//! partitions' tags are chosen so their slots are spread evenly over Redis Cluster's 16,384
//! (one in each 256), so masters that own contiguous slot ranges, as `redis-cli --cluster
//! create` assigns them, share the partitions evenly. Sessions (`<prefix>:s:<id>`) are single
//! keys and need no tag.
//!
//! | key | what |
//! |---|---|
//! | `<prefix>:{<tag>}:h:<room>` | the room's messages (a stream) |
//! | `<prefix>:{<tag>}:k:<room length>:<room><key>` | an idempotency record of the room |
//! | `<prefix>:{<tag>}:c:<room>` | the room's pub/sub channel: messages and presence batches |
//! | `<prefix>:{<tag>}:p:<room>` | the room's present members (a hash) |
//! | `<prefix>:{<tag>}:archive` | the partition's write-behind queue to the archive |
//! | `<prefix>:{<tag>}:p-until` | when the partition's present members expire (a sorted set) |
//! | `<prefix>:{<tag>}:hb:<node>` | a node's heartbeat through the partition's channels |
//! | `<prefix>:s:<id>` | a session |
//! | `<prefix>:fleet` | the fleet: each node's announcement and when it expires (a hash) |

use std::sync::LazyLock;

/// How many partitions rooms are spread over. Changing it moves rooms to other keys: it is
/// fixed for a deployment.
pub const PARTITIONS: usize = 64;
/// Redis Cluster's hash slots.
const SLOTS: u16 = 16_384;

/// Each partition's hash tag, and the slot it hashes to.
static TAGS: LazyLock<Vec<(String, u16)>> = LazyLock::new(|| {
    let width = SLOTS as usize / PARTITIONS;
    (0..PARTITIONS)
        .map(|partition| {
            let range = partition * width..(partition + 1) * width;
            (0u32..)
                .map(|n| format!("{partition}.{n}"))
                .map(|tag| {
                    let slot = slot_of(tag.as_bytes());
                    (tag, slot)
                })
                .find(|(_, slot)| range.contains(&(*slot as usize)))
                .expect("some tag hashes into every range")
        })
        .collect()
});

/// Redis's CRC16 (XMODEM) of `bytes`.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The Redis Cluster slot of a key or channel (its hash tag's, when it has one).
pub fn slot_of(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

/// The partition of `room`: FNV-1a of its name, stable across nodes and versions.
pub fn partition_of(room: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % PARTITIONS as u64) as usize
}

/// The slot of a partition's keys.
pub fn partition_slot(partition: usize) -> u16 {
    TAGS[partition].1
}

/// Key and channel names under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys {
            prefix: prefix.into(),
        }
    }

    fn tagged(&self, partition: usize) -> String {
        format!("{}:{{{}}}", self.prefix, TAGS[partition].0)
    }

    fn of_room(&self, room: &str, what: &str) -> String {
        format!("{}:{what}:{room}", self.tagged(partition_of(room)))
    }

    pub fn history(&self, room: &str) -> String {
        self.of_room(room, "h")
    }

    pub fn key_record(&self, room: &str, key: &str) -> String {
        format!(
            "{}:k:{}:{room}{key}",
            self.tagged(partition_of(room)),
            room.len()
        )
    }

    pub fn channel(&self, room: &str) -> String {
        self.of_room(room, "c")
    }

    pub fn members(&self, room: &str) -> String {
        self.of_room(room, "p")
    }

    pub fn archive(&self, partition: usize) -> String {
        format!("{}:archive", self.tagged(partition))
    }

    pub fn presence_expiry(&self, partition: usize) -> String {
        format!("{}:p-until", self.tagged(partition))
    }

    /// The prefix of a partition's room channels (the sweep adds the room).
    pub fn channel_prefix(&self, partition: usize) -> String {
        format!("{}:c:", self.tagged(partition))
    }

    /// The prefix of a partition's member hashes (the sweep adds the room).
    pub fn members_prefix(&self, partition: usize) -> String {
        format!("{}:p:", self.tagged(partition))
    }

    pub fn heartbeat(&self, partition: usize, node: &str) -> String {
        format!("{}:hb:{node}", self.tagged(partition))
    }

    /// The fleet's announcements: one key, so one slot on a cluster.
    pub fn fleet(&self) -> String {
        format!("{}:fleet", self.prefix)
    }

    pub fn session(&self, id: &str) -> String {
        format!("{}:s:{id}", self.prefix)
    }

    /// What a channel of this prefix carries: a room's messages, or a partition's heartbeat.
    pub fn parse_channel<'a>(&self, channel: &'a str) -> Option<Channel<'a>> {
        let rest = channel.strip_prefix(&self.prefix)?.strip_prefix(":{")?;
        let (tag, rest) = rest.split_once("}:")?;
        let partition = TAGS.iter().position(|(t, _)| t == tag)?;
        if let Some(room) = rest.strip_prefix("c:") {
            return Some(Channel::Room(room));
        }
        rest.strip_prefix("hb:")
            .map(|_| Channel::Heartbeat(partition))
    }
}

/// What a channel carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Channel<'a> {
    Room(&'a str),
    Heartbeat(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis_and_its_hash_tags() {
        // Values Redis answers to CLUSTER KEYSLOT.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
        assert_eq!(slot_of(b"{foo}:anything"), 12182);
        assert_eq!(
            slot_of(b"{}foo"),
            slot_of(b"{}foo"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(slot_of(b"123456789"), 0x31c3, "the CRC16 check value");
    }

    #[test]
    fn partitions_spread_over_the_slots_evenly_and_a_room_keeps_one_slot() {
        for partition in 0..PARTITIONS {
            let slot = partition_slot(partition) as usize;
            assert_eq!(slot / 256, partition, "partition {partition} in its range");
        }
        let keys = Keys::new("twine");
        let room = "a:{room} with: separators";
        let slot = slot_of(keys.history(room).as_bytes());
        for key in [
            keys.key_record(room, "k-1"),
            keys.channel(room),
            keys.members(room),
            keys.archive(partition_of(room)),
            keys.presence_expiry(partition_of(room)),
            keys.heartbeat(partition_of(room), "node"),
        ] {
            assert_eq!(slot_of(key.as_bytes()), slot, "{key}");
        }
        assert_eq!(
            keys.parse_channel(&keys.channel(room)),
            Some(Channel::Room(room))
        );
        assert_eq!(
            keys.parse_channel(&keys.heartbeat(3, "n1")),
            Some(Channel::Heartbeat(3))
        );
        assert_eq!(Keys::new("other").parse_channel(&keys.channel(room)), None);
    }
}

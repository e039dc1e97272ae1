//! Write-behind to the archive. A publish is accepted once it is in Redis; the append script
//! also queues it on its partition's queue (`<prefix>:{<tag>}:archive`, on the same primary as the
//! room). Every node runs an archiver in one consumer group per queue: it reads a batch, writes
//! it to the archive, then acknowledges and deletes it from the queue. A batch whose archiver died
//! before acknowledging stays pending and is claimed by another archiver (or the node's
//! successor) once idle, so nothing accepted is lost; writing a message twice is harmless because
//! the archive keys it by room and position.
//!
//! A node archives the partitions it appended to at once (it is told so by its appends) and looks
//! at every partition every [`SWEEP_EVERY`], for what other nodes left behind.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::{RedisError, Value};
use tokio::sync::Notify;
use twine_store::{Archive, History, Message, Position, StoreError};

use crate::keys::PARTITIONS;
use crate::{RedisStore, unavailable};

const GROUP: &str = "archivers";
/// Messages per archive write.
const BATCH: usize = 200;
/// How often every partition is looked at, appended to here or not.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// Partitions archived at once.
const CONCURRENCY: usize = 8;
/// A batch pending this long is taken over from an archiver presumed dead.
const CLAIM_IDLE_MS: u64 = 10_000;
/// Longest pause between attempts while the archive is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a non-empty backlog is logged.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The partitions this node appended to since its archiver last looked.
#[derive(Default)]
pub struct Hints {
    partitions: Mutex<BTreeSet<usize>>,
    wake: Notify,
}

impl Hints {
    pub fn appended(&self, partition: usize) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        if partitions.insert(partition) {
            self.wake.notify_one();
        }
    }

    fn take(&self) -> BTreeSet<usize> {
        std::mem::take(&mut *self.partitions.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl RedisStore {
    /// Starts this node's archiver, moving queued messages to `archive` until the process ends.
    pub fn spawn_archiver(&self, archive: Arc<dyn Archive>) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move { store.archive_forever(archive).await })
    }

    async fn archive_forever(self, archive: Arc<dyn Archive>) {
        let consumer = format!("node-{:016x}", crate::rand_u64());
        let mut backoff = Duration::from_millis(100);
        let mut last_report = Instant::now();
        let mut last_sweep: Option<Instant> = None;
        let mut grouped = [false; PARTITIONS];
        loop {
            if last_report.elapsed() >= REPORT_EVERY {
                last_report = Instant::now();
                if let Ok(Some(n)) = self.backlog().await
                    && n > 0
                {
                    tracing::info!(backlog = n, "archive backlog");
                }
            }
            let mut partitions = self.hints.take();
            if last_sweep.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
                last_sweep = Some(Instant::now());
                partitions.extend(0..PARTITIONS);
            }
            let results: Vec<(usize, Result<usize, StoreError>)> =
                futures_util::stream::iter(partitions)
                    .map(|partition| {
                        let created = grouped[partition];
                        let (store, consumer, archive) = (&self, &consumer, &*archive);
                        async move {
                            let done = store
                                .archive_batch(partition, created, consumer, archive)
                                .await;
                            (partition, done)
                        }
                    })
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
            let mut failed = None;
            for (partition, result) in results {
                match result {
                    Ok(archived) => {
                        grouped[partition] = true;
                        if archived == BATCH {
                            self.hints.appended(partition); // more waits
                        }
                    }
                    Err(e) => failed = Some(e),
                }
            }
            match failed {
                None => {
                    backoff = Duration::from_millis(100);
                    let until_sweep = SWEEP_EVERY
                        .saturating_sub(last_sweep.map_or(Duration::ZERO, |at| at.elapsed()));
                    let _ = tokio::time::timeout(until_sweep, self.hints.wake.notified()).await;
                }
                Some(e) => {
                    let backlog = self.backlog().await.ok().flatten();
                    tracing::warn!(
                        ?backlog,
                        "archive write-behind failed, retrying in {backoff:?}: {e}"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Makes the partition's consumer group (and queue) when it has none.
    async fn create_group(&self, queue: &str) -> Result<(), StoreError> {
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(queue)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.link.clone())
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(redis_unavailable(e)),
        }
    }

    /// Archives one batch of a partition: this archiver's own unacknowledged messages first,
    /// then ones left by a dead archiver, then new ones. Returns how many were archived.
    async fn archive_batch(
        &self,
        partition: usize,
        grouped: bool,
        consumer: &str,
        archive: &dyn Archive,
    ) -> Result<usize, StoreError> {
        let queue = self.keys.archive(partition);
        if !grouped {
            self.create_group(&queue).await?;
        }
        let mut entries = self.read_group(&queue, consumer, "0").await?;
        if entries.is_empty() {
            let claimed: Value = redis::cmd("XAUTOCLAIM")
                .arg(&queue)
                .arg(GROUP)
                .arg(consumer)
                .arg(CLAIM_IDLE_MS)
                .arg("0-0")
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut self.link.clone())
                .await
                .map_err(redis_unavailable)?;
            entries = match claimed {
                Value::Array(mut parts) if parts.len() >= 2 => parse_entries(parts.swap_remove(1)),
                _ => Vec::new(),
            };
        }
        if entries.is_empty() {
            entries = self.read_group(&queue, consumer, ">").await?;
        }
        if entries.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
        let messages: Vec<Message> = entries.iter().filter_map(|(_, m)| m.clone()).collect();
        archive.put(&messages).await?;
        let () = redis::pipe()
            .xack(&queue, GROUP, &ids)
            .ignore()
            .xdel(&queue, &ids)
            .ignore()
            .query_async(&mut self.link.clone())
            .await
            .map_err(redis_unavailable)?;
        tracing::debug!(partition, count = messages.len(), "archived");
        Ok(entries.len())
    }

    async fn read_group(
        &self,
        queue: &str,
        consumer: &str,
        from: &str,
    ) -> Result<Vec<(String, Option<Message>)>, StoreError> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(BATCH)
            .arg("STREAMS")
            .arg(queue)
            .arg(from)
            .query_async(&mut self.link.clone())
            .await
            .map_err(redis_unavailable)?;
        // [[queue, [[id, fields], ...]]], or nil when nothing is there.
        Ok(match reply {
            Value::Array(mut streams) if !streams.is_empty() => match streams.swap_remove(0) {
                Value::Array(mut stream) if stream.len() == 2 => {
                    parse_entries(stream.swap_remove(1))
                }
                _ => Vec::new(),
            },
            Value::Map(mut streams) if !streams.is_empty() => {
                parse_entries(streams.swap_remove(0).1)
            }
            _ => Vec::new(),
        })
    }
}

fn redis_unavailable(e: RedisError) -> StoreError {
    match unavailable(e) {
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("redis: {m}")),
        other => other,
    }
}

/// Queue entries as (id, message); a message is `None` when its entry was already deleted (it
/// is then only acknowledged).
fn parse_entries(value: Value) -> Vec<(String, Option<Message>)> {
    let Value::Array(entries) = value else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|entry| {
            let Value::Array(mut parts) = entry else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let id: String = redis::from_redis_value(parts.pop()?).ok()?;
            let message = redis::from_redis_value::<Vec<String>>(fields)
                .ok()
                .and_then(|f| message_from_fields(&f));
            Some((id, message))
        })
        .collect()
}

fn message_from_fields(fields: &[String]) -> Option<Message> {
    let get = |name: &str| {
        fields
            .chunks(2)
            .find(|kv| kv.len() == 2 && kv[0] == name)
            .map(|kv| kv[1].clone())
    };
    Some(Message {
        room: get("r")?,
        position: Position(get("t")?.parse().ok()?),
        payload: get("p")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_entries_become_messages() {
        let fields: Vec<String> = ["r", "room", "t", "42", "p", "{}"]
            .map(String::from)
            .to_vec();
        let m = message_from_fields(&fields).unwrap();
        assert_eq!(
            (m.room.as_str(), m.position, m.payload.as_str()),
            ("room", Position(42), "{}")
        );
        assert_eq!(message_from_fields(&fields[..4]), None);
    }
}

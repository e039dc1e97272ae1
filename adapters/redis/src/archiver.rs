//! Write-behind to the archive. A publish is accepted once it is in Redis; the append script
//! also queues it on a stream (`<prefix>:archive`). Every node runs an archiver in one consumer
//! group: it reads a batch, writes it to the archive, then acknowledges and deletes it from the
//! queue. A batch whose archiver died before acknowledging stays pending and is claimed by
//! another archiver (or the node's successor) once idle, so nothing accepted is lost; writing a
//! message twice is harmless because the archive keys it by room and position.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use twine_store::{Archive, History, Message, Position, StoreError};

use crate::{RedisStore, unavailable};

const GROUP: &str = "archivers";
/// Messages per archive write.
const BATCH: usize = 200;
/// How long a read waits for new messages.
const BLOCK_MS: usize = 1000;
/// A batch pending this long is taken over from an archiver presumed dead.
const CLAIM_IDLE_MS: u64 = 10_000;
/// Longest pause between attempts while the archive is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a non-empty backlog is logged.
const REPORT_EVERY: Duration = Duration::from_secs(10);

impl RedisStore {
    /// Starts this node's archiver, moving queued messages to `archive` until the process ends.
    pub fn spawn_archiver(&self, archive: Arc<dyn Archive>) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move { store.archive_forever(archive).await })
    }

    async fn archive_forever(self, archive: Arc<dyn Archive>) {
        let consumer = format!("node-{:016x}", rand_u64());
        let mut backoff = Duration::from_millis(100);
        let mut conn: Option<MultiplexedConnection> = None;
        let mut last_report = Instant::now();
        loop {
            if last_report.elapsed() >= REPORT_EVERY {
                last_report = Instant::now();
                if let Ok(Some(n)) = self.backlog().await
                    && n > 0
                {
                    tracing::info!(backlog = n, "archive backlog");
                }
            }
            let result = match conn.as_mut() {
                Some(c) => self.archive_batch(c, &consumer, &*archive).await,
                None => match self.archiver_connection().await {
                    Ok(c) => {
                        conn = Some(c);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e) => {
                    let backlog = self.backlog().await.ok().flatten();
                    tracing::warn!(
                        ?backlog,
                        "archive write-behind failed, retrying in {backoff:?}: {e}"
                    );
                    if matches!(e, StoreError::Unavailable(ref m) if m.starts_with("redis")) {
                        conn = None;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// A connection of its own: blocking reads would hold up everything else on a shared one.
    async fn archiver_connection(&self) -> Result<MultiplexedConnection, StoreError> {
        // Longer than a blocking read waits, or every read of an idle queue would time out.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(crate::RESPONSE_TIMEOUT))
            .set_response_timeout(Some(
                Duration::from_millis(BLOCK_MS as u64) + crate::RESPONSE_TIMEOUT,
            ));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(redis_unavailable)?;
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.queue_key())
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => Ok(conn),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(conn),
            Err(e) => Err(redis_unavailable(e)),
        }
    }

    /// Archives one batch: this archiver's own unacknowledged messages first, then ones left
    /// by a dead archiver, then new ones. Returns how many were archived.
    async fn archive_batch(
        &self,
        conn: &mut MultiplexedConnection,
        consumer: &str,
        archive: &dyn Archive,
    ) -> Result<usize, StoreError> {
        let queue = self.queue_key();
        let mut entries = self.read_group(conn, consumer, "0", None).await?;
        if entries.is_empty() {
            let claimed: Value = redis::cmd("XAUTOCLAIM")
                .arg(&queue)
                .arg(GROUP)
                .arg(consumer)
                .arg(CLAIM_IDLE_MS)
                .arg("0-0")
                .arg("COUNT")
                .arg(BATCH)
                .query_async(conn)
                .await
                .map_err(redis_unavailable)?;
            entries = match claimed {
                Value::Array(mut parts) if parts.len() >= 2 => parse_entries(parts.swap_remove(1)),
                _ => Vec::new(),
            };
        }
        if entries.is_empty() {
            entries = self.read_group(conn, consumer, ">", Some(BLOCK_MS)).await?;
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
            .query_async(conn)
            .await
            .map_err(redis_unavailable)?;
        tracing::debug!(count = messages.len(), "archived");
        Ok(messages.len())
    }

    async fn read_group(
        &self,
        conn: &mut MultiplexedConnection,
        consumer: &str,
        from: &str,
        block_ms: Option<usize>,
    ) -> Result<Vec<(String, Option<Message>)>, StoreError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(BATCH);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(self.queue_key()).arg(from);
        let reply: Value = cmd.query_async(conn).await.map_err(redis_unavailable)?;
        // [[queue, [[id, fields], ...]]], or nil when nothing arrived in time.
        Ok(match reply {
            Value::Array(mut streams) if !streams.is_empty() => match streams.swap_remove(0) {
                Value::Array(mut stream) if stream.len() == 2 => {
                    parse_entries(stream.swap_remove(1))
                }
                _ => Vec::new(),
            },
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

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
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

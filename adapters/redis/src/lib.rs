//! The Redis store: history and sessions shared by every node of a deployment.
//!
//! # Key layout (all under a configurable prefix, default `twine`)
//!
//! - `<prefix>:h:<room>`: a stream per room, one entry per message, id `<timestamp>-0`, field `p`
//!   the payload. Trimmed by Redis on every append (entries older than the window, and beyond
//!   the per-room count) and expiring a window after the room's last message.
//! - `<prefix>:k:<idempotency key>`: a string, `<fingerprint>:<timestamp>`: the fingerprint of
//!   the room and payload first published with the key, and the timestamp that message got.
//!   Written by the append that stores the message, expiring after the history window.
//! - `<prefix>:s:<session id>`: a hash per session, room → `<joined_at>:<acked>`, with `:1`
//!   appended once the session acknowledges the room's messages one by one (listened). Expires a
//!   window after the session's last activity.
//! - `<prefix>:archive`: with an archive behind Redis, the write-behind queue (see
//!   [`RedisStore::spawn_archiver`]).
//! - `<prefix>:feed`: the pub/sub channel every node listens to for new messages.
//! - `<prefix>:p:<room>`, `<prefix>:p-until` and `<prefix>:presence`: presence (see
//!   [`presence`]).
//!
//! # Appending
//!
//! Appending is one Lua script: it reads Redis's own clock (`TIME`), makes the timestamp
//! `max(now, last + 1)` for the room, adds the entry, trims, and publishes it on the feed. Scripts
//! run atomically, so every node sees each room's messages in timestamp order, with one clock for
//! the whole deployment. Every step of the script costs the same whatever the room's history
//! depth (trimming reads only what it drops), so publishing into a deep room is as cheap as into
//! an empty one.
//!
//! An append with an idempotency key first looks the key up: a key already stored answers with
//! the message it stored (nothing is added or fed again), or fails with
//! [`StoreError::KeyReused`] when it came with another room or payload. Keys are remembered for
//! the history window, across every node.
//!
//! # Deadlines and clocks
//!
//! A publish's deadline is taken on the node's clock and compared, inside the script, with
//! Redis's clock: an append Redis runs after its deadline is refused ([`StoreError::Expired`])
//! with no effect. This is what makes a timed-out publish safe to report as not stored: a call
//! gives up after 2 s (the response timeout) and callers pass a deadline 1 s ahead, so a command
//! Redis queued (paused, overloaded, a slow network) and runs after the caller gave up is not
//! stored. It assumes the node's and Redis's clocks agree within that 1 s margin: a Redis clock
//! more than the margin behind would store a message its caller already reported as not stored,
//! and one more than the deadline's lead ahead refuses every publish (safely). Keep clocks
//! synchronised (NTP). The margin also covers the reply's trip back: a reply delayed by more than
//! 1 s after a timely append still makes its caller report an unknown outcome.

mod archiver;
mod presence;
mod scripts;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, ErrorKind, RedisError};
use tokio::sync::mpsc;
use twine_store::{
    Appended, Feed, FeedEvent, History, Joined, Message, Page, PageLimit, Position, Progress,
    Publish, ReplayStart, RoomCursor, Session, SessionStore, StoreError,
};

/// How long a command may take before Redis counts as unavailable. Publish deadlines are set
/// shorter than this (see the crate docs), so an append that times out here is one Redis refuses
/// if it ever runs it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts to re-establish the feed.
const FEED_RETRY: Duration = Duration::from_millis(500);

/// Settings of a [`RedisStore`].
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Prefix of every key and channel, so several deployments can share one Redis.
    pub prefix: String,
    /// How long messages are kept.
    pub history_window: Duration,
    /// How long an idle session is kept.
    pub session_window: Duration,
    /// Most messages kept per room.
    pub max_per_room: usize,
    /// Most rooms one session may hold; joining another is refused ([`Joined::Full`]).
    pub max_rooms_per_session: usize,
    /// With an archive behind Redis: the most messages waiting to be archived. Publishing is
    /// refused (not lost) while the backlog is at this size.
    pub archive_backlog_max: Option<u64>,
}

/// History and sessions in Redis. Cloning shares the connection.
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    conn: ConnectionManager,
    options: RedisOptions,
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

/// Tells a reply this store cannot read, and the refusals the scripts signal with an error code,
/// from an outage.
fn classify(e: RedisError) -> StoreError {
    match e.code() {
        Some("EXPIRED") => {
            return StoreError::Expired("the publish deadline passed before Redis ran it".into());
        }
        Some("KEYREUSED") => return StoreError::KeyReused,
        Some("BACKLOG") => {
            return StoreError::Full(
                "the archive backlog is full; publishing resumes as it drains".into(),
            );
        }
        _ => {}
    }
    match e.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => corrupt(e.to_string()),
        _ => unavailable(e),
    }
}

/// A deadline as the append script reads it: milliseconds since the epoch, never 0 (no
/// deadline), so a deadline at or before the epoch is simply past.
fn deadline_ms(deadline: SystemTime) -> u64 {
    deadline
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
        .max(1)
}

/// A position as the read scripts take an inclusive upper bound: `+` is the end of the stream.
fn upper_bound(until: Position) -> String {
    if until == Position::MAX {
        "+".to_owned()
    } else {
        until.0.to_string()
    }
}

/// Accepts a `redis://` or `rediss://` URL, or the original's bare `host[:port]` endpoint.
pub fn normalize_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else if endpoint.contains(':') {
        format!("redis://{endpoint}")
    } else {
        format!("redis://{endpoint}:6379")
    }
}

impl RedisStore {
    /// Connects, failing when Redis cannot be reached now. Later outages are survived: calls fail
    /// with [`StoreError::Unavailable`] and the connection comes back by itself.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<RedisStore, StoreError> {
        let client = Client::open(normalize_url(url))
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(unavailable)?;
        let store = RedisStore {
            client,
            conn,
            options,
        };
        store.check().await?;
        Ok(store)
    }

    /// The same connection under another key prefix (another deployment, or another test).
    pub fn with_prefix(&self, prefix: impl Into<String>) -> RedisStore {
        let mut store = self.clone();
        store.options.prefix = prefix.into();
        store
    }

    fn history_key(&self, room: &str) -> String {
        format!("{}:h:{room}", self.options.prefix)
    }

    fn key_record(&self, key: &str) -> String {
        format!("{}:k:{key}", self.options.prefix)
    }

    fn session_key(&self, id: &str) -> String {
        format!("{}:s:{id}", self.options.prefix)
    }

    fn queue_key(&self) -> String {
        format!("{}:archive", self.options.prefix)
    }

    fn feed_channel(&self) -> String {
        format!("{}:feed", self.options.prefix)
    }

    fn history_ms(&self) -> u64 {
        self.options.history_window.as_millis() as u64
    }

    fn session_ms(&self) -> u64 {
        self.options.session_window.as_millis() as u64
    }
}

/// Forwards `channel` into `tx`, decoded, until the receiver is dropped, re-subscribing after
/// any interruption and then sending `gap` (when there is one) to say messages may be missed.
async fn pump<T>(
    client: Client,
    channel: String,
    mut pubsub: redis::aio::PubSub,
    tx: mpsc::UnboundedSender<T>,
    decode: fn(&[u8]) -> Option<T>,
    gap: Option<fn() -> T>,
) {
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let decoded = msg
                    .get_payload::<Vec<u8>>()
                    .ok()
                    .and_then(|bytes| decode(&bytes));
                let Some(event) = decoded else {
                    tracing::warn!(%channel, "ignoring an unreadable message");
                    continue;
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
        tracing::warn!(%channel, "Redis subscription interrupted; re-subscribing");
        pubsub = loop {
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(FEED_RETRY).await;
            match subscribe(&client, &channel).await {
                Ok(p) => break p,
                Err(e) => tracing::debug!("Redis subscription not back yet: {e}"),
            }
        };
        tracing::info!(%channel, "Redis re-subscribed");
        if let Some(gap) = gap
            && tx.send(gap()).is_err()
        {
            return;
        }
    }
}

async fn subscribe(client: &Client, channel: &str) -> Result<redis::aio::PubSub, RedisError> {
    let mut pubsub = tokio::time::timeout(RESPONSE_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// A feed message is `<timestamp>:<room length>:<room><payload>`, built by the append script.
fn decode_feed(bytes: &[u8]) -> Option<Message> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (position, rest) = text.split_once(':')?;
    let (room_len, rest) = rest.split_once(':')?;
    let room_len: usize = room_len.parse().ok()?;
    if rest.len() < room_len || !rest.is_char_boundary(room_len) {
        return None;
    }
    let (room, payload) = rest.split_at(room_len);
    Some(Message {
        room: room.to_owned(),
        position: Position(position.parse().ok()?),
        payload: payload.to_owned(),
    })
}

fn parse_position(id: &str) -> Option<Position> {
    id.split('-').next()?.parse().ok().map(Position)
}

#[async_trait]
impl History for RedisStore {
    async fn append(&self, publish: Publish<'_>) -> Result<Appended, StoreError> {
        let mut invocation = scripts::APPEND.key(self.history_key(publish.room));
        invocation.key(self.queue_key());
        if let Some(key) = publish.key {
            invocation.key(self.key_record(key));
        }
        invocation
            .arg(publish.payload)
            .arg(self.history_ms())
            // A room keeps at least the message just appended.
            .arg(self.options.max_per_room.max(1))
            .arg(self.feed_channel())
            .arg(publish.room)
            .arg(self.options.archive_backlog_max.unwrap_or(0))
            .arg(publish.deadline.map_or(0, deadline_ms));
        if publish.key.is_some() {
            invocation.arg(publish.fingerprint());
        }
        let (position, repeated): (u64, i64) = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(classify)?;
        // A repeat matched the fingerprint of this room and payload, so the first append's
        // message is this one: Redis keeps only its timestamp.
        Ok(Appended {
            message: Message {
                room: publish.room.to_owned(),
                position: Position(position),
                payload: publish.payload.to_owned(),
            },
            repeated: repeated != 0,
        })
    }

    async fn read_page(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: PageLimit,
    ) -> Result<Page, StoreError> {
        let (truncated, more, entries): (i64, i64, Vec<(String, String)>) = scripts::READ_PAGE
            .key(self.history_key(room))
            .arg(after.0)
            .arg(upper_bound(until))
            .arg(limit.count)
            .arg(limit.bytes)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(classify)?;
        let messages = entries
            .into_iter()
            .map(|(id, payload)| {
                let position =
                    parse_position(&id).ok_or_else(|| corrupt(format!("entry id {id}")))?;
                Ok(Message {
                    room: room.to_owned(),
                    position,
                    payload,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Page {
            messages,
            truncated: truncated != 0,
            more: more != 0,
        })
    }

    async fn replay_start(
        &self,
        room: &str,
        after: Position,
        until: Position,
        max: usize,
    ) -> Result<ReplayStart, StoreError> {
        let (start, dropped): (String, i64) = scripts::REPLAY_START
            .key(self.history_key(room))
            .arg(after.0)
            .arg(upper_bound(until))
            .arg(max)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(classify)?;
        if start.is_empty() {
            return Ok(ReplayStart {
                after,
                truncated: dropped != 0,
            });
        }
        let after = parse_position(&start).ok_or_else(|| corrupt(format!("entry id {start}")))?;
        Ok(ReplayStart {
            after,
            truncated: true,
        })
    }

    async fn last_position(&self, room: &str) -> Result<Position, StoreError> {
        let last: u64 = scripts::LAST
            .key(self.history_key(room))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(classify)?;
        Ok(Position(last))
    }

    async fn subscribe(&self) -> Result<Feed, StoreError> {
        let channel = self.feed_channel();
        let pubsub = subscribe(&self.client, &channel)
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let decode = |bytes: &[u8]| decode_feed(bytes).map(FeedEvent::Message);
        let gap = || FeedEvent::Gap;
        tokio::spawn(pump(
            self.client.clone(),
            channel,
            pubsub,
            tx,
            decode,
            Some(gap),
        ));
        Ok(rx)
    }

    async fn check(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn backlog(&self) -> Result<Option<u64>, StoreError> {
        if self.options.archive_backlog_max.is_none() {
            return Ok(None);
        }
        let len: u64 = self
            .conn
            .clone()
            .xlen(self.queue_key())
            .await
            .map_err(unavailable)?;
        Ok(Some(len))
    }
}

/// A session's room as stored: `<joined_at>:<acked>`, then `:1` when listened. Cursors written
/// before the flag existed have only the first two fields.
fn parse_cursor(value: &str) -> Option<RoomCursor> {
    let mut fields = value.split(':');
    let joined_at = Position(fields.next()?.parse().ok()?);
    let acked = Position(fields.next()?.parse().ok()?);
    let listened = match fields.next() {
        None => false,
        Some("1") => true,
        Some(_) => return None,
    };
    if fields.next().is_some() {
        return None;
    }
    Some(RoomCursor {
        joined_at,
        acked,
        listened,
    })
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let key = self.session_key(id);
        let (fields, _): (BTreeMap<String, String>, i64) = redis::pipe()
            .hgetall(&key)
            .pexpire(&key, self.session_ms() as i64)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(classify)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let rooms = fields
            .into_iter()
            .map(|(room, value)| {
                let cursor = parse_cursor(&value)
                    .ok_or_else(|| corrupt(format!("session cursor {value:?}")))?;
                Ok((room, cursor))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Some(Session { rooms }))
    }

    async fn join(&self, id: &str, room: &str, at: Position) -> Result<Joined, StoreError> {
        let joined: i64 = scripts::JOIN
            .key(self.session_key(id))
            .arg(room)
            .arg(format!("{}:0", at.0))
            .arg(self.options.max_rooms_per_session)
            .arg(self.session_ms())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(classify)?;
        match joined {
            0 => Ok(Joined::Added),
            1 => Ok(Joined::Already),
            2 => Ok(Joined::Full),
            other => Err(corrupt(format!("join answered {other}"))),
        }
    }

    async fn leave(&self, id: &str, room: &str) -> Result<(), StoreError> {
        let key = self.session_key(id);
        let _: (i64, i64) = redis::pipe()
            .hdel(&key, room)
            .pexpire(&key, self.session_ms() as i64)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn advance(&self, id: &str, progress: &[Progress]) -> Result<(), StoreError> {
        self.advance_many(&[(id, progress)]).await
    }

    async fn advance_many(&self, batch: &[(&str, &[Progress])]) -> Result<(), StoreError> {
        // One pipeline for the whole batch: the node stores every connection's acknowledgements
        // each flush, and a round trip per session would cost more than the rest together.
        let mut pipe = redis::pipe();
        pipe.load_script(&scripts::ADVANCE).ignore();
        for (id, progress) in batch {
            let mut invocation = scripts::ADVANCE.key(self.session_key(id));
            invocation.arg(self.session_ms());
            for p in *progress {
                invocation
                    .arg(&p.room)
                    .arg(p.handled.0)
                    .arg(if p.listened { "1" } else { "0" });
            }
            pipe.invoke_script(&invocation).ignore();
        }
        let () = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(classify)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_messages_round_trip_rooms_with_separators() {
        let m = decode_feed("1795593690279:5:a:b\n{\"x\":\"y:z\"}".as_bytes()).unwrap();
        assert_eq!(m.position, Position(1_795_593_690_279));
        assert_eq!(m.room, "a:b\n{");
        assert_eq!(m.payload, "\"x\":\"y:z\"}");
        assert_eq!(decode_feed(b"12:99:short"), None);
    }

    #[test]
    fn cursors_are_read_with_and_without_the_listened_flag() {
        let old = parse_cursor("10:15").unwrap();
        assert_eq!(
            (old.joined_at, old.acked, old.listened),
            (Position(10), Position(15), false)
        );
        assert!(parse_cursor("10:15:1").unwrap().listened);
        assert_eq!(parse_cursor("10:15:2"), None);
        assert_eq!(parse_cursor("10:15:1:1"), None);
        assert_eq!(parse_cursor("10"), None);
    }

    #[test]
    fn deadlines_before_the_epoch_are_past_not_absent() {
        assert_eq!(deadline_ms(UNIX_EPOCH), 1);
        assert_eq!(deadline_ms(UNIX_EPOCH + Duration::from_millis(1234)), 1234);
    }

    #[test]
    fn bare_endpoints_become_urls() {
        assert_eq!(normalize_url("cache.example"), "redis://cache.example:6379");
        assert_eq!(
            normalize_url("cache.example:7000"),
            "redis://cache.example:7000"
        );
        assert_eq!(normalize_url("rediss://x:1/2"), "rediss://x:1/2");
    }
}

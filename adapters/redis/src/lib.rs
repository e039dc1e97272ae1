//! The Redis store: history, sessions and presence shared by every node of a deployment, on one
//! Redis primary or a Redis Cluster.
//!
//! # Layout
//!
//! - [`keys`]: where everything lives; every key and channel of a room shares its partition's
//!   hash slot.
//! - [`link`]: the connection commands go over, to a primary or a cluster (found out at start).
//! - [`scripts`]: the Lua scripts; each is atomic on the Redis side.
//! - [`subscriber`]: live delivery, one subscription per room a node serves.
//! - [`archiver`]: the write-behind queue to the archive.
//! - [`presence`]: who is present in which room.
//! - [`replicated`]: the connections appends that wait for replicas run on.
//!
//! # Appending
//!
//! Appending is one Lua script: it reads Redis's own clock (`TIME`), makes the timestamp
//! `max(now, last + 1)` for the room, adds the entry, trims, and publishes it on the room's
//! channel with the timestamp before it. Scripts run atomically, so every node sees each room's
//! messages in timestamp order, with one clock for the whole deployment.
//!
//! An append with an idempotency key first looks the key up: a key already stored answers with
//! the message it stored (nothing is added or fed again), or fails with
//! [`StoreError::KeyReused`] when it came with another payload. Keys are remembered per room for
//! the history window, across every node.
//!
//! With `min_replicas`, an append runs on a connection of its own and then waits there (`WAIT`)
//! for that many replicas of its primary to hold it; one not confirmed in time is reported as
//! [`StoreError::Unconfirmed`]. A repeat of a stored key waits the same way, and so does
//! [`History::repeat`] finding one, so a retry is answered stored only once replicas hold the
//! message. Waiting never holds up the shared connection (see [`replicated`]).
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
//! synchronised (NTP). The margin does not cover the reply's trip back: an append whose answer
//! does not come back in time may have run in time, so it is reported as
//! [`StoreError::Unanswered`] (an unknown outcome, settled by a retry with the same key), never
//! as not stored.

mod archiver;
mod fleet;
pub mod keys;
pub mod link;
mod presence;
mod replicated;
mod resp;
mod scripts;
mod subscriber;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::{ErrorKind, RedisError, ScriptInvocation};
use twine_store::{
    Appended, Feed, History, Joined, Message, Page, PageLimit, Position, Progress, Publish,
    ReplayStart, RoomCursor, Session, SessionStore, StoreError,
};

use keys::{Keys, PARTITIONS, partition_of, partition_slot};
use link::Link;
use replicated::{Replicated, Wanted};
use subscriber::{Reach, Subscriber};

pub use link::RESPONSE_TIMEOUT;
pub use replicated::CONNECTIONS_PER_PRIMARY;

/// Appends retried when a cluster redirected them (a slot moving): the script did not run.
pub(crate) const REDIRECT_ATTEMPTS: u32 = 4;
/// Sessions stored at once on a cluster (their keys live on different primaries).
const SESSION_CONCURRENCY: usize = 32;

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
    /// With an archive behind Redis: the most messages waiting to be archived, split evenly
    /// over the partitions. Publishing into a partition is refused (not lost) while its share of
    /// the backlog is full.
    pub archive_backlog_max: Option<u64>,
    /// Replicas that must hold an append before it is reported stored (`0`: none, Redis's own
    /// asynchronous replication). Such appends run on connections of their own, at most
    /// [`CONNECTIONS_PER_PRIMARY`] per primary.
    pub min_replicas: u32,
    /// How long an append waits for them.
    pub min_replicas_timeout: Duration,
}

impl RedisOptions {
    /// Options for a store with nothing behind it and no replicas waited for.
    pub fn new(prefix: impl Into<String>, window: Duration, max_per_room: usize) -> RedisOptions {
        RedisOptions {
            prefix: prefix.into(),
            history_window: window,
            session_window: window,
            max_per_room,
            max_rooms_per_session: 1000,
            archive_backlog_max: None,
            min_replicas: 0,
            min_replicas_timeout: Duration::from_millis(500),
        }
    }
}

/// History, sessions and presence in Redis. Cloning shares the connections.
#[derive(Clone)]
pub struct RedisStore {
    link: Link,
    keys: Keys,
    options: RedisOptions,
    reach: Reach,
    subscriber: Arc<OnceLock<Subscriber>>,
    /// Partitions appended to, for this node's archiver.
    hints: Arc<archiver::Hints>,
    /// The connections of appends that wait for replicas.
    replicated: Arc<Replicated>,
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Whether a failed write may have reached Redis: it timed out, or its connection broke under
/// it (a connection refused, or a reply that is an error, says it did not run).
pub(crate) fn was_sent(e: &RedisError) -> bool {
    !e.is_connection_refusal()
        && e.code().is_none()
        && (e.is_timeout() || e.is_connection_dropped() || e.is_io_error())
}

/// A write sent whose answer did not come back in time.
pub(crate) fn unanswered(e: RedisError) -> StoreError {
    StoreError::Unanswered(e.to_string())
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

/// Tells a reply this store cannot read, and the refusals the scripts signal with an error code,
/// from an outage.
pub(crate) fn classify(e: RedisError) -> StoreError {
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

/// Accepts a `redis://` URL, or the original's bare `host[:port]` endpoint.
pub fn normalize_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else if endpoint.contains(':') {
        format!("redis://{endpoint}")
    } else {
        format!("redis://{endpoint}:6379")
    }
}

/// A random number, for names that must differ between processes.
pub(crate) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

impl RedisStore {
    /// Connects to `urls` (one URL, or a comma-separated list of a cluster's seeds), failing
    /// when Redis cannot be reached now. Later outages are survived: calls fail with
    /// [`StoreError::Unavailable`] and the connections come back by themselves.
    pub async fn connect(urls: &str, options: RedisOptions) -> Result<RedisStore, StoreError> {
        let seeds = link::seeds(urls);
        if seeds.is_empty() {
            return Err(StoreError::Unavailable("no Redis URL given".into()));
        }
        let reach = Reach::from_urls(&seeds)?;
        let link = Link::connect(&seeds).await.map_err(unavailable)?;
        let replicated = Arc::new(Replicated::new(&seeds[0], link.is_cluster())?);
        let store = RedisStore {
            link,
            keys: Keys::new(options.prefix.clone()),
            options,
            reach,
            subscriber: Arc::default(),
            hints: Arc::default(),
            replicated,
        };
        store.check().await?;
        Ok(store)
    }

    /// Whether the Redis behind is a cluster.
    pub fn is_cluster(&self) -> bool {
        self.link.is_cluster()
    }

    /// The same connection under another key prefix (another deployment, or another test).
    pub fn with_prefix(&self, prefix: impl Into<String>) -> RedisStore {
        let mut store = self.clone();
        store.options.prefix = prefix.into();
        store.keys = Keys::new(store.options.prefix.clone());
        store.subscriber = Arc::default();
        store
    }

    /// The same store, waiting for `replicas` replicas to hold each append.
    pub fn with_min_replicas(&self, replicas: u32) -> RedisStore {
        let mut store = self.clone();
        store.options.min_replicas = replicas;
        store
    }

    /// The subscriber this store's feeds share, started on first use.
    fn subscriber(&self) -> &Subscriber {
        self.subscriber.get_or_init(|| {
            Subscriber::start(self.keys.clone(), self.link.clone(), self.reach.clone())
        })
    }

    /// The command a script publishes with: sharded on a cluster, so a message goes only to the
    /// primary that owns its room.
    fn publish_command(&self) -> &'static str {
        if self.link.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Entries a room may hold over its most before it is trimmed: trimming every hundredth
    /// append instead of every one is most of what keeps an append cheap (exact below 100).
    fn trim_slack(&self) -> usize {
        self.options.max_per_room / 100
    }

    /// How much longer than the window an entry may stay: a thousandth of it (at least 1 ms).
    fn trim_slice_ms(&self) -> u64 {
        (self.history_ms() / 1000).max(1)
    }

    fn history_ms(&self) -> u64 {
        self.options.history_window.as_millis() as u64
    }

    fn session_ms(&self) -> u64 {
        self.options.session_window.as_millis() as u64
    }

    /// Each partition's share of the archive backlog (0: no archive behind Redis).
    fn partition_backlog_max(&self) -> u64 {
        self.options
            .archive_backlog_max
            .map_or(0, |max| (max / PARTITIONS as u64).max(1))
    }

    /// Runs the append script on the shared connection (no replicas waited for).
    async fn append_shared(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<(u64, i64), StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match invocation.invoke_async(&mut self.link.clone()).await {
                Ok(answer) => return Ok(answer),
                // A slot on the move: the script did not run; its deadline still holds.
                Err(e) if e.is_cluster_error() && attempt < REDIRECT_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                }
                // Sent, and its answer lost or late: Redis may have run it in time.
                Err(e) if was_sent(&e) => return Err(unanswered(e)),
                Err(e) => return Err(classify(e)),
            }
        }
    }

    /// Tells this node's archiver that `room`'s partition has something to archive.
    fn hint(&self, room: &str) {
        if self.options.archive_backlog_max.is_some() {
            self.hints.appended(partition_of(room));
        }
    }

    /// The replicas appends wait for, if any.
    fn wanted(&self) -> Option<Wanted> {
        (self.options.min_replicas > 0).then_some(Wanted {
            replicas: self.options.min_replicas,
            timeout: self.options.min_replicas_timeout,
        })
    }
}

/// When a write waiting for a connection of its own gives up: at its deadline (past it, the
/// script would refuse it anyway), and at most after the response timeout.
fn give_up_at(deadline: Option<SystemTime>) -> Instant {
    let left = deadline.map_or(RESPONSE_TIMEOUT, |deadline| {
        deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(RESPONSE_TIMEOUT)
    });
    Instant::now() + left
}

/// The position an idempotency key's record (`"<fingerprint>:<timestamp>"`) holds for `publish`,
/// or [`StoreError::KeyReused`] when it was stored for another message.
fn recorded(publish: &Publish<'_>, seen: Option<&str>) -> Result<Option<Position>, StoreError> {
    let Some((fingerprint, position)) = seen.and_then(|s| s.split_once(':')) else {
        return Ok(None);
    };
    if fingerprint != publish.fingerprint().to_string() {
        return Err(StoreError::KeyReused);
    }
    Ok(position.parse().ok().map(Position))
}

/// The `ADVANCE` script call for one session.
fn advance_call(store: &RedisStore, id: &str, progress: &[Progress]) -> ScriptInvocation<'static> {
    let mut invocation = scripts::ADVANCE.key(store.keys.session(id));
    invocation.arg(store.session_ms());
    for p in progress {
        invocation
            .arg(&p.room)
            .arg(p.handled.0)
            .arg(if p.listened { "1" } else { "0" });
    }
    invocation
}

/// Stores one session's progress (on a cluster, where sessions are not pipelined together).
async fn advance_one(
    (store, id, progress): (RedisStore, String, Vec<Progress>),
) -> Result<(), StoreError> {
    let _: i64 = advance_call(&store, &id, &progress)
        .invoke_async(&mut store.link.clone())
        .await
        .map_err(classify)?;
    Ok(())
}

fn parse_position(id: &str) -> Option<Position> {
    id.split('-').next()?.parse().ok().map(Position)
}

#[async_trait]
impl History for RedisStore {
    async fn append(&self, publish: Publish<'_>) -> Result<Appended, StoreError> {
        let mut invocation = scripts::APPEND.key(self.keys.history(publish.room));
        invocation.key(self.keys.archive(partition_of(publish.room)));
        if let Some(key) = publish.key {
            invocation.key(self.keys.key_record(publish.room, key));
        }
        invocation
            .arg(publish.payload)
            .arg(self.history_ms())
            // A room keeps at least the message just appended.
            .arg(self.options.max_per_room.max(1))
            .arg(self.keys.channel(publish.room))
            .arg(publish.room)
            .arg(self.partition_backlog_max())
            .arg(publish.deadline.map_or(0, deadline_ms))
            .arg(self.publish_command())
            .arg(self.trim_slack())
            .arg(self.trim_slice_ms());
        let wanted = self.wanted();
        if publish.key.is_some() {
            invocation
                .arg(publish.fingerprint())
                .arg(if wanted.is_some() { "1" } else { "0" });
        }
        let (position, repeated): (u64, i64) = match wanted {
            // Its own connection, and WAIT after it there, repeats too (see `replicated`).
            Some(wanted) => {
                self.replicated
                    .run(
                        &self.link,
                        partition_of(publish.room),
                        &invocation,
                        |_| true,
                        wanted,
                        give_up_at(publish.deadline),
                    )
                    .await
                    .map_err(|e| {
                        // Stored but not confirmed: still the archiver's to take.
                        if e.written() {
                            self.hint(publish.room);
                        }
                        StoreError::from(e)
                    })?
            }
            None => self.append_shared(&invocation).await?,
        };
        if repeated == 0 {
            self.hint(publish.room);
        }
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
            .key(self.keys.history(room))
            .arg(after.0)
            .arg(upper_bound(until))
            .arg(limit.count)
            .arg(limit.bytes)
            .invoke_async(&mut self.link.clone())
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
            .key(self.keys.history(room))
            .arg(after.0)
            .arg(upper_bound(until))
            .arg(max)
            .invoke_async(&mut self.link.clone())
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

    async fn repeat(&self, publish: &Publish<'_>) -> Result<Option<Position>, StoreError> {
        let Some(key) = publish.key else {
            return Ok(None);
        };
        // The record APPEND keeps: "<fingerprint>:<timestamp>".
        let record = self.keys.key_record(publish.room, key);
        let seen: Option<String> = redis::cmd("GET")
            .arg(&record)
            .query_async(&mut self.link.clone())
            .await
            .map_err(classify)?;
        let position = recorded(publish, seen.as_deref())?;
        let (Some(_), Some(wanted)) = (position, self.wanted()) else {
            return Ok(position);
        };
        // Stored, and answered as stored only once replicas hold it, as a retried append would
        // be: the record is read again with a write after it on a connection of its own, for
        // WAIT to cover (see `replicated`).
        let seen: Option<String> = self
            .replicated
            .run(
                &self.link,
                partition_of(publish.room),
                &scripts::REWRITE_RECORD.key(record),
                Option::is_some,
                wanted,
                give_up_at(publish.deadline),
            )
            .await?;
        recorded(publish, seen.as_deref())
    }

    async fn last_position(&self, room: &str) -> Result<Position, StoreError> {
        let last: u64 = scripts::LAST
            .key(self.keys.history(room))
            .invoke_async(&mut self.link.clone())
            .await
            .map_err(classify)?;
        Ok(Position(last))
    }

    async fn feed(&self, limit: usize) -> Result<Feed, StoreError> {
        let subscriber = self.subscriber();
        let (sender, feed) = twine_store::feed::channel(limit, Arc::new(subscriber.clone()));
        subscriber.attach_feed(sender);
        Ok(feed)
    }

    async fn check(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.link.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn backlog(&self) -> Result<Option<u64>, StoreError> {
        if self.options.archive_backlog_max.is_none() {
            return Ok(None);
        }
        let lengths: Vec<Result<u64, StoreError>> = futures_util::stream::iter(0..PARTITIONS)
            .map(|partition| async move {
                let mut xlen = redis::cmd("XLEN");
                xlen.arg(self.keys.archive(partition));
                let reply = self
                    .link
                    .clone()
                    .on_slot(xlen, partition_slot(partition))
                    .await
                    .map_err(unavailable)?;
                redis::from_redis_value::<u64>(reply).map_err(|e| corrupt(e.to_string()))
            })
            .buffer_unordered(SESSION_CONCURRENCY)
            .collect()
            .await;
        let mut total = 0;
        for length in lengths {
            total += length?;
        }
        Ok(Some(total))
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
        let key = self.keys.session(id);
        let (fields, _): (BTreeMap<String, String>, i64) = redis::pipe()
            .hgetall(&key)
            .pexpire(&key, self.session_ms() as i64)
            .query_async(&mut self.link.clone())
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
            .key(self.keys.session(id))
            .arg(room)
            .arg(format!("{}:0", at.0))
            .arg(self.options.max_rooms_per_session)
            .arg(self.session_ms())
            .invoke_async(&mut self.link.clone())
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
        let key = self.keys.session(id);
        let _: (i64, i64) = redis::pipe()
            .hdel(&key, room)
            .pexpire(&key, self.session_ms() as i64)
            .query_async(&mut self.link.clone())
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn advance(&self, id: &str, progress: &[Progress]) -> Result<(), StoreError> {
        self.advance_many(&[(id, progress)]).await
    }

    async fn advance_many(&self, batch: &[(&str, &[Progress])]) -> Result<(), StoreError> {
        if self.link.is_cluster() {
            // Sessions live on every primary: a call each, a bounded number at once.
            let calls: Vec<(RedisStore, String, Vec<Progress>)> = batch
                .iter()
                .map(|(id, progress)| (self.clone(), id.to_string(), progress.to_vec()))
                .collect();
            let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(calls)
                .map(advance_one)
                .buffer_unordered(SESSION_CONCURRENCY)
                .collect()
                .await;
            return results.into_iter().collect();
        }
        // One pipeline for the whole batch: the node stores every connection's acknowledgements
        // each flush, and a round trip per session would cost more than the rest together.
        let mut pipe = redis::pipe();
        pipe.load_script(&scripts::ADVANCE).ignore();
        for (id, progress) in batch {
            pipe.invoke_script(&advance_call(self, id, progress))
                .ignore();
        }
        let () = pipe
            .query_async(&mut self.link.clone())
            .await
            .map_err(classify)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_write_waits_for_a_connection_until_its_deadline_at_most() {
        let now = Instant::now();
        let past = give_up_at(Some(UNIX_EPOCH));
        assert!(past >= now && past - now < Duration::from_millis(100));
        let soon = give_up_at(Some(SystemTime::now() + Duration::from_millis(500)));
        let left = soon - now;
        assert!(left > Duration::from_millis(400) && left < Duration::from_millis(600));
        let later = give_up_at(Some(SystemTime::now() + Duration::from_secs(60)));
        assert!(later - now <= RESPONSE_TIMEOUT + Duration::from_millis(100));
        assert!(give_up_at(None) - now >= RESPONSE_TIMEOUT);
    }

    #[test]
    fn bare_endpoints_become_urls() {
        assert_eq!(normalize_url("cache.example"), "redis://cache.example:6379");
        assert_eq!(
            normalize_url("cache.example:7000"),
            "redis://cache.example:7000"
        );
        assert_eq!(normalize_url("redis://x:1/2"), "redis://x:1/2");
    }
}

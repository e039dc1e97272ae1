//! Writes that must reach replicas before they are answered (`min_replicas`): the connections
//! they run on, apart from the shared one, and the `WAIT` that follows each.
//!
//! # Connections of their own
//!
//! `WAIT n timeout` blocks the connection it is sent on until `n` replicas acknowledged, or the
//! timeout passed: Redis reads nothing more from that client meanwhile. On the shared
//! multiplexed connection ([`crate::link`]) everything else the node asks (history reads,
//! sessions, other publishes) would queue behind each `WAIT`, for its whole timeout when no
//! replica answers. So these writes run on connections of their own.
//!
//! # The write and its `WAIT` on one connection
//!
//! Redis remembers, per client, the replication offset just after that client's last write, and
//! `WAIT` waits for replicas to acknowledge that offset: it covers the writes of the connection
//! it is sent on, and a connection that wrote nothing gets its answer at once. So the append
//! itself runs on the dedicated connection, and its `WAIT` follows it there. A connection is one
//! write's alone from the write until its `WAIT` answers, so the offset waited for is that
//! write's (the replication stream is ordered: everything before it is covered too).
//!
//! A repeat (an idempotency key already stored) writes nothing, yet its first append, made on any
//! connection of any node, may be on no replica (it was answered "unconfirmed"). So the script
//! rewrites the key's record with itself (same value, same expiry): a write after the first
//! append, on this connection, whose `WAIT` then covers the first append too. A retry is answered
//! stored only once replicas hold the message, as its first attempt would have been.
//!
//! Reading the replicas' offsets instead (`INFO replication`) would need no write, but learns of
//! acknowledgements replicas send once a second; `WAIT` asks them at once (`REPLCONF GETACK`).
//!
//! # Bounded
//!
//! At most [`CONNECTIONS_PER_PRIMARY`] per primary, each carrying one write at a time. A write
//! that gets none before its deadline is refused without being sent ([`StoreError::Unavailable`],
//! as when Redis does not answer in time): not stored, retry later.
//!
//! # Cluster
//!
//! A room's connection goes to the primary that owns its partition's slot, read from
//! `CLUSTER SLOTS` over the shared link and corrected by the redirects Redis answers (`MOVED`,
//! and `ASK` while a slot migrates). A connection that fails makes the owner read again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, FromRedisValue, IntoConnectionInfo,
    RedisError, ScriptInvocation, Value,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use twine_store::StoreError;

use crate::REDIRECT_ATTEMPTS;
use crate::keys::{PARTITIONS, partition_slot};
use crate::link::{Link, RESPONSE_TIMEOUT};

/// Connections per primary for writes that wait for replicas. A healthy replica confirms within
/// a round trip, so a few carry thousands of publishes a second; with none confirming, as many
/// publishes per primary wait out their timeout at once and the rest are refused.
pub const CONNECTIONS_PER_PRIMARY: usize = 8;

/// Why a write that waits for replicas was not answered stored.
#[derive(Debug, thiserror::Error)]
pub enum ReplicatedError {
    #[error("no connection for publishes awaiting replicas came free in time ({0} per primary)")]
    Busy(usize),
    #[error("no connection to {node} for publishes awaiting replicas: {source}")]
    Connect { node: String, source: RedisError },
    #[error("the primary owning slot {slot} is not known: {reason}")]
    Owner { slot: u16, reason: String },
    #[error("Redis Cluster named an unreadable address: {0}")]
    Address(String),
    #[error("Redis did not answer in time")]
    Timeout,
    /// Redis refused the write or failed; classified as the shared connection's errors are.
    #[error(transparent)]
    Write(RedisError),
    #[error("{held} of {wanted} replicas confirmed the message in time")]
    Unconfirmed { held: u32, wanted: u32 },
    #[error("WAIT failed: {0}")]
    Wait(String),
}

impl ReplicatedError {
    /// Whether the write ran, only its confirmation failing.
    pub fn written(&self) -> bool {
        matches!(
            self,
            ReplicatedError::Unconfirmed { .. } | ReplicatedError::Wait(_)
        )
    }
}

impl From<ReplicatedError> for StoreError {
    fn from(e: ReplicatedError) -> StoreError {
        match e {
            // Stored (or a repeat of a stored message): what is unknown is whether replicas hold
            // it.
            e if e.written() => StoreError::Unconfirmed(e.to_string()),
            ReplicatedError::Write(e) if crate::was_sent(&e) => crate::unanswered(e),
            ReplicatedError::Write(e) => crate::classify(e),
            // Sent, and no answer in time: Redis may have run it in time.
            ReplicatedError::Timeout => StoreError::Unanswered(e.to_string()),
            // Nothing was sent.
            e => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// How many replicas must hold a write, and how long `WAIT` waits for them.
#[derive(Clone, Copy, Debug)]
pub struct Wanted {
    pub replicas: u32,
    pub timeout: Duration,
}

/// The dedicated connections, per primary. Shared by every clone of a store.
pub struct Replicated {
    /// The first seed's settings (credentials, database), with each primary's address put in.
    seed: ConnectionInfo,
    cluster: bool,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    /// On a cluster: each partition's primary (`host:port`), as last learned.
    owners: RwLock<Vec<Option<String>>>,
}

/// One primary's connections: a permit per connection in use, the idle ones kept.
struct Pool {
    client: redis::Client,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<MultiplexedConnection>>,
}

/// A connection held by one write. Dropped without [`Lease::release`] (it failed, or timed out
/// with a reply still to come), the connection is closed.
struct Lease {
    pool: Arc<Pool>,
    conn: MultiplexedConnection,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    fn release(self) {
        let Lease {
            pool,
            conn,
            _permit,
        } = self;
        pool.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }
}

/// Where a write goes next.
enum Target {
    /// The owner of the slot as known.
    Owner,
    /// A node a redirect named; `asking` while the slot migrates there (`ASK`).
    Node { node: String, asking: bool },
}

impl Replicated {
    pub fn new(seed: &str, cluster: bool) -> Result<Replicated, StoreError> {
        let seed = seed
            .into_connection_info()
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
        Ok(Replicated {
            seed,
            cluster,
            pools: Mutex::default(),
            owners: RwLock::new(vec![None; PARTITIONS]),
        })
    }

    /// Runs `script` on a dedicated connection of `partition`'s primary and, when `confirm` says
    /// its answer needs replicas, `WAIT`s there for them. `give_up`: when a write still waiting
    /// for a connection (or a cluster's slots) is refused instead.
    pub async fn run<T: FromRedisValue>(
        &self,
        link: &Link,
        partition: usize,
        script: &ScriptInvocation<'_>,
        confirm: impl Fn(&T) -> bool,
        wanted: Wanted,
        give_up: Instant,
    ) -> Result<T, ReplicatedError> {
        let mut target = Target::Owner;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (node, asking) = match target {
                Target::Owner => (self.owner(link, partition).await?, false),
                Target::Node { node, asking } => (node, asking),
            };
            let mut lease = self.lease(&node, give_up).await.inspect_err(|e| {
                if matches!(e, ReplicatedError::Connect { .. }) {
                    self.forget(partition);
                }
            })?;
            let written = tokio::time::timeout(RESPONSE_TIMEOUT, async {
                if asking {
                    redis::cmd("ASKING")
                        .query_async::<()>(&mut lease.conn)
                        .await?;
                }
                script.invoke_async::<T>(&mut lease.conn).await
            })
            .await;
            let answer = match written {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) if e.is_cluster_error() && attempt < REDIRECT_ATTEMPTS => {
                    // Redirected before the script ran: try where Redis says.
                    lease.release();
                    target = match e.redirect_node() {
                        Some((to, _)) => {
                            let moved = !matches!(e.code(), Some("ASK"));
                            if moved {
                                self.learn(partition, to);
                            }
                            Target::Node {
                                node: to.to_owned(),
                                asking: !moved,
                            }
                        }
                        None => {
                            // TRYAGAIN, CLUSTERDOWN: a slot migrating or a failover under way.
                            tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt)))
                                .await;
                            Target::Owner
                        }
                    };
                    continue;
                }
                Ok(Err(e)) => {
                    if e.code().is_some() && !e.is_cluster_error() {
                        // Redis answered (a refusal): the connection is sound.
                        lease.release();
                    } else {
                        self.forget(partition);
                    }
                    return Err(ReplicatedError::Write(e));
                }
                Err(_) => {
                    self.forget(partition);
                    return Err(ReplicatedError::Timeout);
                }
            };
            if confirm(&answer) {
                match wait(&mut lease, wanted).await {
                    Ok(()) => {}
                    // Redis answered: the connection is sound.
                    Err(e @ ReplicatedError::Unconfirmed { .. }) => {
                        lease.release();
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            lease.release();
            return Ok(answer);
        }
    }

    /// The primary that owns `partition`: the one primary, or on a cluster its slot's owner as
    /// known, read from `CLUSTER SLOTS` when not.
    async fn owner(&self, link: &Link, partition: usize) -> Result<String, ReplicatedError> {
        if !self.cluster {
            return Ok(String::new());
        }
        if let Some(owner) = self.known_owner(partition) {
            return Ok(owner);
        }
        let slot = partition_slot(partition);
        let slots: Value = tokio::time::timeout(
            RESPONSE_TIMEOUT,
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut link.clone()),
        )
        .await
        .map_err(|_| ReplicatedError::Owner {
            slot,
            reason: "CLUSTER SLOTS did not answer in time".into(),
        })?
        .map_err(|e| ReplicatedError::Owner {
            slot,
            reason: e.to_string(),
        })?;
        let ranges = crate::subscriber::parse_slots(&slots);
        {
            let mut owners = self.owners.write().unwrap_or_else(|e| e.into_inner());
            for (p, owner) in owners.iter_mut().enumerate() {
                let slot = partition_slot(p);
                *owner = ranges
                    .iter()
                    .find(|(start, end, _)| (*start..=*end).contains(&slot))
                    .map(|(_, _, node)| node.clone());
            }
        }
        self.known_owner(partition)
            .ok_or_else(|| ReplicatedError::Owner {
                slot,
                reason: "no primary serves it".into(),
            })
    }

    fn known_owner(&self, partition: usize) -> Option<String> {
        self.owners.read().unwrap_or_else(|e| e.into_inner())[partition].clone()
    }

    /// A redirect named `partition`'s new owner.
    fn learn(&self, partition: usize, node: &str) {
        self.owners.write().unwrap_or_else(|e| e.into_inner())[partition] = Some(node.to_owned());
    }

    /// A connection to `partition`'s owner failed: it may have failed over; read it again.
    fn forget(&self, partition: usize) {
        if self.cluster {
            self.owners.write().unwrap_or_else(|e| e.into_inner())[partition] = None;
        }
    }

    /// A connection to `node` for one write, waiting until `give_up` for one to come free.
    async fn lease(&self, node: &str, give_up: Instant) -> Result<Lease, ReplicatedError> {
        let pool = self.pool(node)?;
        let permit = tokio::time::timeout_at(give_up.into(), pool.permits.clone().acquire_owned())
            .await
            .map_err(|_| ReplicatedError::Busy(CONNECTIONS_PER_PRIMARY))?
            .expect("the semaphore is never closed");
        let idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                // The client waits for replies as long as each call allows (see `run`): a `WAIT`
                // takes up to its own timeout.
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(RESPONSE_TIMEOUT))
                    .set_response_timeout(None);
                pool.client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|source| ReplicatedError::Connect {
                        node: self.display(node),
                        source,
                    })?
            }
        };
        Ok(Lease {
            pool,
            conn,
            _permit: permit,
        })
    }

    fn display(&self, node: &str) -> String {
        if node.is_empty() {
            self.seed.addr().to_string()
        } else {
            node.to_owned()
        }
    }

    /// `node`'s pool (`""`: the one primary), made on first use.
    fn pool(&self, node: &str) -> Result<Arc<Pool>, ReplicatedError> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(node) {
            return Ok(pool.clone());
        }
        let info = if node.is_empty() {
            self.seed.clone()
        } else {
            let (host, port) = node
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
                .ok_or_else(|| ReplicatedError::Address(node.to_owned()))?;
            self.seed.clone().set_addr(ConnectionAddr::Tcp(host, port))
        };
        let client = redis::Client::open(info).map_err(|source| ReplicatedError::Connect {
            node: self.display(node),
            source,
        })?;
        let pool = Arc::new(Pool {
            client,
            permits: Arc::new(Semaphore::new(CONNECTIONS_PER_PRIMARY)),
            idle: Mutex::default(),
        });
        pools.insert(node.to_owned(), pool.clone());
        Ok(pool)
    }
}

/// `WAIT`s on `lease`'s connection, right after its write, for the replicas `wanted`.
async fn wait(lease: &mut Lease, wanted: Wanted) -> Result<(), ReplicatedError> {
    // `WAIT n 0` would block for ever.
    let timeout = wanted.timeout.max(Duration::from_millis(1));
    let mut cmd = redis::cmd("WAIT");
    cmd.arg(wanted.replicas).arg(timeout.as_millis() as u64);
    let held: i64 =
        tokio::time::timeout(timeout + RESPONSE_TIMEOUT, cmd.query_async(&mut lease.conn))
            .await
            .map_err(|_| ReplicatedError::Wait("Redis did not answer WAIT in time".into()))?
            .map_err(|e| ReplicatedError::Wait(e.to_string()))?;
    let held = u32::try_from(held).unwrap_or(0);
    if held < wanted.replicas {
        return Err(ReplicatedError::Unconfirmed {
            held,
            wanted: wanted.replicas,
        });
    }
    Ok(())
}

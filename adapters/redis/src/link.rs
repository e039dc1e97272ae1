//! The connection commands and scripts go over: one Redis primary (a [`ConnectionManager`]
//! that reconnects by itself) or a Redis Cluster (a cluster connection that follows the slot map).
//! Which one is found out from the first seed (`INFO cluster`), as Centrifugo does: the same
//! `--redis-url` works for both, and a comma-separated list gives a cluster several seeds.
//!
//! Pub/sub never goes over this connection (see [`crate::subscriber`]), nor do appends that wait
//! for replicas: their `WAIT` would hold up everything queued behind it (see `replicated`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// How long a command may take before Redis counts as unavailable.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to one primary or to a cluster. Cloning shares it.
#[derive(Clone)]
pub enum Link {
    Primary(ConnectionManager),
    Cluster(Arc<ClusterLink>),
}

/// A cluster connection, made again when commands time out. A primary that stops answering
/// without closing its connections (paused, partitioned) is replaced by its replica, but the
/// connection keeps waiting on it: nothing tells it the slots moved until the old primary answers
/// again. A fresh connection reads the slots anew.
pub struct ClusterLink {
    client: ClusterClient,
    conn: RwLock<ClusterConnection>,
    rebuilding: AtomicBool,
    last_rebuilt: Mutex<Instant>,
}

/// Least time between two rebuilds of the cluster connection.
const REBUILD_EVERY: Duration = Duration::from_secs(1);

impl ClusterLink {
    fn current(&self) -> ClusterConnection {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A command timed out: the slots may have moved under a silent primary.
    fn timed_out(self: &Arc<Self>) {
        let recently = self
            .last_rebuilt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            < REBUILD_EVERY;
        if recently || self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            match link.client.get_async_connection().await {
                Ok(fresh) => {
                    tracing::info!(
                        "Redis Cluster commands timed out; connected anew to read the slots"
                    );
                    *link.conn.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                }
                Err(e) => tracing::warn!("Redis Cluster connection not made anew: {e}"),
            }
            *link.last_rebuilt.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            link.rebuilding.store(false, Ordering::Release);
        });
    }
}

/// The seeds of `--redis-url`: one URL, or a comma-separated list (a cluster's nodes).
pub fn seeds(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(crate::normalize_url)
        .collect()
}

impl Link {
    /// Connects to what `seeds` name, finding out whether it is a cluster.
    pub async fn connect(seeds: &[String]) -> Result<Link, RedisError> {
        let first = redis::Client::open(seeds[0].as_str())?;
        let mut probe = first.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut probe)
            .await?;
        if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
            let client: ClusterClient = ClusterClientBuilder::new(seeds.to_vec())
                .connection_timeout(RESPONSE_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                // A redirect is followed at once; a slot being migrated (TRYAGAIN) or a cluster
                // failing over is retried briefly, within a publish's deadline.
                .retries(4)
                .min_retry_wait(20)
                .max_retry_wait(200)
                .build()?;
            let conn = client.get_async_connection().await?;
            return Ok(Link::Cluster(Arc::new(ClusterLink {
                client,
                conn: RwLock::new(conn),
                rebuilding: AtomicBool::new(false),
                last_rebuilt: Mutex::new(Instant::now()),
            })));
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        Ok(Link::Primary(
            first.get_connection_manager_with_config(config).await?,
        ))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Link::Cluster(_))
    }

    /// Sends `cmd` to the primary that owns `slot` (the one primary, without a cluster).
    pub async fn on_slot(&mut self, cmd: Cmd, slot: u16) -> Result<Value, RedisError> {
        match self {
            Link::Primary(conn) => cmd.query_async(conn).await,
            Link::Cluster(link) => {
                let route = Route::new(slot, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let result = link.current().route_command(cmd, routing).await;
                noticed(link, &result);
                result
            }
        }
    }
}

/// Rebuilds the cluster connection when `result` timed out.
fn noticed<T>(link: &Arc<ClusterLink>, result: &Result<T, RedisError>) {
    if result.as_ref().is_err_and(RedisError::is_timeout) {
        link.timed_out();
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Primary(conn) => conn.req_packed_command(cmd),
            Link::Cluster(link) => Box::pin(async move {
                let result = link.current().req_packed_command(cmd).await;
                noticed(link, &result);
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Primary(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Cluster(link) => Box::pin(async move {
                let result = link
                    .current()
                    .req_packed_commands(pipeline, offset, count)
                    .await;
                noticed(link, &result);
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Primary(conn) => conn.get_db(),
            Link::Cluster(link) => link.current().get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_urls_is_a_list_of_seeds() {
        assert_eq!(
            seeds("redis://a:7000, b:7001,,c"),
            ["redis://a:7000", "redis://b:7001", "redis://c:6379"]
        );
    }
}

//! Chooses the history and session stores from the configuration, once, at start-up. Nothing
//! else in the server knows which one runs.
//!
//! | configured | history | sessions and presence | nodes |
//! |---|---|---|---|
//! | nothing | memory (bounded in bytes) | memory (bounded) | one |
//! | Redis | Redis | Redis | many |
//! | Redis + DynamoDB | Redis (recent), written behind to DynamoDB (whole window) | Redis | many |
//! | DynamoDB | DynamoDB, written before a publish is accepted | memory | one |

use std::sync::Arc;

use twine_store::{
    Fleet, History, MemoryFleet, MemoryOptions, MemoryPresence, MemoryStore, Presence,
    SessionStore, StoreError, Tiered, WriteThrough,
};
use twine_store_dynamodb::{DynamoArchive, DynamoOptions};
use twine_store_redis::{RedisOptions, RedisStore};

use crate::config::Config;
use crate::metrics::{MeteredHistory, MeteredSessions, Metrics};

pub struct Stores {
    pub history: Arc<dyn History>,
    pub sessions: Arc<dyn SessionStore>,
    pub presence: Arc<dyn Presence>,
    /// Where the nodes announce themselves, and whether other nodes share it.
    pub fleet: (Arc<dyn Fleet>, bool),
}

impl Stores {
    /// The same stores, with every call timed and counted in `metrics`.
    pub fn metered(self, metrics: &Arc<Metrics>) -> Stores {
        Stores {
            history: Arc::new(MeteredHistory {
                inner: self.history,
                metrics: metrics.clone(),
            }),
            sessions: Arc::new(MeteredSessions {
                inner: self.sessions,
                metrics: metrics.clone(),
            }),
            presence: self.presence,
            fleet: self.fleet,
        }
    }

    pub async fn from_config(config: &Config) -> Result<Stores, StoreError> {
        let archive = match &config.dynamodb_table {
            Some(table) => {
                let options = DynamoOptions {
                    table: table.clone(),
                    create_table: config.dynamodb_create_table,
                    window: config.recovery_window,
                };
                Some(Arc::new(DynamoArchive::from_env(options).await?))
            }
            None => None,
        };
        let memory = || {
            MemoryStore::new(MemoryOptions {
                window: config.recovery_window,
                max_per_room: config.history_per_room as usize,
                history_bytes: config.history_memory as usize,
                session_bytes: config.session_memory as usize,
                max_rooms_per_session: config.max_rooms as usize,
            })
        };
        let mut cluster = false;
        let stores = match (config.redis_url(), archive) {
            (Some(url), archive) => {
                let options = RedisOptions {
                    prefix: config.redis_prefix.clone(),
                    history_window: config.redis_history(),
                    session_window: config.recovery_window,
                    max_per_room: config.history_per_room as usize,
                    archive_backlog_max: archive.as_ref().map(|_| config.archive_backlog_max),
                    max_rooms_per_session: config.max_rooms as usize,
                    min_replicas: config.redis_min_replicas,
                    min_replicas_timeout: config.redis_min_replicas_timeout,
                };
                let redis = RedisStore::connect(url, options).await?;
                cluster = redis.is_cluster();
                let history: Arc<dyn History> = match archive {
                    Some(archive) => {
                        redis.spawn_archiver(archive.clone());
                        Arc::new(Tiered::new(Arc::new(redis.clone()), archive))
                    }
                    None => Arc::new(redis.clone()),
                };
                Stores {
                    history,
                    sessions: Arc::new(redis.clone()),
                    presence: Arc::new(redis.clone()),
                    fleet: (Arc::new(redis), true),
                }
            }
            (None, Some(archive)) => Stores {
                history: Arc::new(WriteThrough::new(archive, config.recovery_window)),
                sessions: Arc::new(memory()),
                presence: Arc::new(MemoryPresence::new()),
                fleet: (Arc::new(MemoryFleet::new()), false),
            },
            (None, None) => {
                let memory = memory();
                Stores {
                    history: Arc::new(memory.clone()),
                    sessions: Arc::new(memory),
                    presence: Arc::new(MemoryPresence::new()),
                    fleet: (Arc::new(MemoryFleet::new()), false),
                }
            }
        };
        tracing::info!(
            redis = config.redis_url().is_some(),
            redis_cluster = cluster,
            redis_prefix = %config.redis_prefix,
            redis_history = ?config.redis_history(),
            dynamodb_table = config.dynamodb_table.as_deref().unwrap_or("-"),
            window = ?config.recovery_window,
            "stores: {}",
            match (config.redis_url(), &config.dynamodb_table) {
                (Some(_), Some(_)) if cluster =>
                    "Redis Cluster, written behind to DynamoDB (many nodes)",
                (Some(_), Some(_)) => "Redis, written behind to DynamoDB (many nodes)",
                (Some(_), None) if cluster => "Redis Cluster (many nodes)",
                (Some(_), None) => "Redis (many nodes)",
                (None, Some(_)) => "DynamoDB with sessions in memory (one node)",
                (None, None) => "in memory (one node; history and sessions end with the process)",
            }
        );
        Ok(stores)
    }
}

//! Chooses the history and session stores from the configuration, once, at start-up. Nothing
//! else in the server knows which one runs.

use std::sync::Arc;

use twine_store::{History, MemoryStore, SessionStore, StoreError};
use twine_store_redis::{RedisOptions, RedisStore};

use crate::config::Config;

pub struct Stores {
    pub history: Arc<dyn History>,
    pub sessions: Arc<dyn SessionStore>,
}

impl Stores {
    pub async fn from_config(config: &Config) -> Result<Stores, StoreError> {
        match config.redis_url() {
            Some(url) => {
                let options = RedisOptions {
                    prefix: config.redis_prefix.clone(),
                    history_window: config.recovery_window,
                    session_window: config.recovery_window,
                    max_per_room: config.history_per_room as usize,
                };
                let redis = RedisStore::connect(url, options).await?;
                tracing::info!(
                    prefix = %config.redis_prefix,
                    window = ?config.recovery_window,
                    per_room = config.history_per_room,
                    "stores: Redis (shared by every node using this prefix)"
                );
                Ok(Stores {
                    history: Arc::new(redis.clone()),
                    sessions: Arc::new(redis),
                })
            }
            None => {
                let memory =
                    MemoryStore::new(config.recovery_window, config.history_per_room as usize);
                tracing::info!(
                    window = ?config.recovery_window,
                    per_room = config.history_per_room,
                    "stores: in memory (single node; history and sessions end with the process)"
                );
                Ok(Stores {
                    history: Arc::new(memory.clone()),
                    sessions: Arc::new(memory),
                })
            }
        }
    }
}

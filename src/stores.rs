//! Chooses the history and session stores from the configuration, once, at start-up. Nothing
//! else in the server knows which one runs.

use std::sync::Arc;

use twine_store::{History, MemoryStore, SessionStore};

use crate::config::Config;

pub struct Stores {
    pub history: Arc<dyn History>,
    pub sessions: Arc<dyn SessionStore>,
}

impl Stores {
    pub fn from_config(config: &Config) -> Stores {
        let memory = MemoryStore::new(config.recovery_window, config.history_per_room as usize);
        tracing::info!(
            window = ?config.recovery_window,
            per_room = config.history_per_room,
            "stores: in memory (single node; history and sessions end with the process)"
        );
        Stores {
            history: Arc::new(memory.clone()),
            sessions: Arc::new(memory),
        }
    }
}

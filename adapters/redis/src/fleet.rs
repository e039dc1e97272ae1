//! The fleet's announcements in Redis: one hash, `<prefix>:fleet`, node → when its announcement
//! expires and the announcement. Each announcement is one script that also drops the nodes that
//! stopped announcing, so any live node's call clears a dead one out.

use std::time::Duration;

use async_trait::async_trait;
use twine_store::{Announced, Fleet, StoreError};

use crate::{RedisStore, classify, corrupt, scripts};

#[async_trait]
impl Fleet for RedisStore {
    async fn announce(
        &self,
        node: &str,
        info: &str,
        ttl: Duration,
    ) -> Result<Vec<Announced>, StoreError> {
        let flat: Vec<String> = scripts::FLEET_ANNOUNCE
            .key(self.keys.fleet())
            .arg(node)
            .arg(info)
            .arg((ttl.as_millis() as u64).max(1))
            .invoke_async(&mut self.link.clone())
            .await
            .map_err(classify)?;
        if !flat.len().is_multiple_of(2) {
            return Err(corrupt("the fleet's announcements come in pairs"));
        }
        Ok(flat
            .chunks_exact(2)
            .map(|pair| Announced {
                node: pair[0].clone(),
                info: pair[1].clone(),
            })
            .collect())
    }

    async fn leave(&self, node: &str) -> Result<(), StoreError> {
        redis::cmd("HDEL")
            .arg(self.keys.fleet())
            .arg(node)
            .query_async::<()>(&mut self.link.clone())
            .await
            .map_err(classify)
    }
}

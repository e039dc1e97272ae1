//! The fleet: the nodes serving one deployment, each announcing itself about once a second. An
//! announcement is kept for a time to live; a node that stops announcing drops out when it runs
//! out. What a node says of itself is opaque here (the server's JSON).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::StoreError;

/// One node's announcement, as another node reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    pub node: String,
    pub info: String,
}

/// Where the nodes of a deployment announce themselves.
#[async_trait]
pub trait Fleet: Send + Sync + 'static {
    /// Records `node`'s announcement `info`, kept until `ttl` from now unless announced again,
    /// and returns every node announced and not expired, this one included, in no order.
    async fn announce(
        &self,
        node: &str,
        info: &str,
        ttl: Duration,
    ) -> Result<Vec<Announced>, StoreError>;

    /// Takes `node` out now (it stopped).
    async fn leave(&self, node: &str) -> Result<(), StoreError>;
}

/// A fleet in one process: the nodes of a test, or a node alone. Cloning shares it.
#[derive(Clone, Default)]
pub struct MemoryFleet {
    nodes: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

impl MemoryFleet {
    pub fn new() -> MemoryFleet {
        MemoryFleet::default()
    }
}

#[async_trait]
impl Fleet for MemoryFleet {
    async fn announce(
        &self,
        node: &str,
        info: &str,
        ttl: Duration,
    ) -> Result<Vec<Announced>, StoreError> {
        let now = Instant::now();
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.insert(node.to_owned(), (info.to_owned(), now + ttl));
        nodes.retain(|_, (_, until)| *until > now);
        Ok(nodes
            .iter()
            .map(|(node, (info, _))| Announced {
                node: node.clone(),
                info: info.clone(),
            })
            .collect())
    }

    async fn leave(&self, node: &str) -> Result<(), StoreError> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.remove(node);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_fleet_passes_the_fleet_conformance_suite() {
        crate::conformance::run_fleet(|| {
            let fleet = MemoryFleet::new();
            (Arc::new(fleet.clone()), Arc::new(fleet))
        })
        .await;
    }
}

//! Presence on this node: its connections' entries in the shared presence store, the heartbeat
//! that keeps them alive (and sweeps out those of nodes that stopped), and the changes from
//! every node announced to this node's members of each room.
//!
//! A change reaches clients as a `presence` event, `{room, action, member}`, where `member` is
//! `{id, user?, data}`: the connection's id, the token's subject when it connected with one, and
//! the data it entered with.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use socketioxide::socket::Sid;
use twine_store::{Change, Member, Presence, PresenceFeed, StoreError};

use crate::fanout::Fanout;

/// Presence of this node's connections.
pub struct PresenceHub {
    store: Arc<dyn Presence>,
    ttl: Duration,
    max_members: usize,
    /// Entries this node's connections hold, refreshed by its heartbeat.
    local: Mutex<HashSet<(Arc<str>, Sid)>>,
}

/// What a room is told about a member.
#[derive(Serialize)]
struct Info<'a> {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    data: &'a RawValue,
}

/// The `presence` event.
#[derive(Serialize)]
struct Announcement<'a> {
    room: &'a str,
    action: &'static str,
    member: &'a RawValue,
}

/// The `presence:members` reply and `GET /api/rooms/{room}/presence`.
#[derive(Serialize)]
pub struct Members {
    pub room: String,
    pub members: Vec<Box<RawValue>>,
}

impl PresenceHub {
    /// Starts the heartbeat and the announcing of `feed`'s changes through `fanout`.
    pub fn start(
        store: Arc<dyn Presence>,
        feed: PresenceFeed,
        fanout: Arc<Fanout>,
        ttl: Duration,
        max_members: usize,
    ) -> Arc<PresenceHub> {
        let hub = Arc::new(PresenceHub {
            store,
            ttl,
            max_members,
            local: Mutex::default(),
        });
        tokio::spawn(announce(feed, fanout));
        tokio::spawn(heartbeat(Arc::downgrade(&hub), ttl / 3));
        hub
    }

    fn local(&self) -> MutexGuard<'_, HashSet<(Arc<str>, Sid)>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters (or updates) connection `sid` in `room` with `data`.
    pub async fn enter(
        &self,
        room: &Arc<str>,
        sid: Sid,
        user: Option<&str>,
        data: &RawValue,
    ) -> Result<Change, StoreError> {
        let info = Info {
            id: sid.to_string(),
            user,
            data,
        };
        let member = Member {
            id: info.id.clone(),
            info: serde_json::to_string(&info).expect("presence info serializes"),
        };
        let change = self
            .store
            .enter(room, &member, self.ttl, self.max_members)
            .await?;
        self.local().insert((room.clone(), sid));
        Ok(change)
    }

    /// Takes connection `sid` out of `room`.
    pub async fn leave(&self, room: &Arc<str>, sid: Sid) -> Result<(), StoreError> {
        if self.local().remove(&(room.clone(), sid)) {
            self.store.leave(room, sid.as_str()).await?;
        }
        Ok(())
    }

    /// Whether connection `sid` is present in `room`.
    pub fn is_present(&self, room: &Arc<str>, sid: Sid) -> bool {
        self.local().contains(&(room.clone(), sid))
    }

    pub async fn members(&self, room: &str) -> Result<Members, StoreError> {
        let members = self
            .store
            .members(room)
            .await?
            .into_iter()
            .filter_map(|m| RawValue::from_string(m.info).ok())
            .collect();
        Ok(Members {
            room: room.to_owned(),
            members,
        })
    }
}

/// Keeps this node's entries alive and drops those whose node stopped keeping them, until the
/// hub is gone.
async fn heartbeat(hub: std::sync::Weak<PresenceHub>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        let entries: Vec<(Arc<str>, Sid)> = hub.local().iter().cloned().collect();
        if !entries.is_empty() {
            let sids: Vec<String> = entries.iter().map(|(_, sid)| sid.to_string()).collect();
            let pairs: Vec<(&str, &str)> = entries
                .iter()
                .zip(&sids)
                .map(|((room, _), sid)| (room.as_ref(), sid.as_str()))
                .collect();
            if let Err(e) = hub.store.refresh(&pairs, hub.ttl).await {
                tracing::warn!("presence heartbeat failed: {e}");
            }
        }
        if let Err(e) = hub.store.expire().await {
            tracing::warn!("presence sweep failed: {e}");
        }
    }
}

/// Announces every presence change to this node's members of its room.
async fn announce(mut feed: PresenceFeed, fanout: Arc<Fanout>) {
    while let Some(event) = feed.recv().await {
        let Ok(member) = RawValue::from_string(event.member.info) else {
            tracing::warn!(room = %event.room, "ignoring a presence change with unreadable member data");
            continue;
        };
        let announcement = Announcement {
            room: &event.room,
            action: event.change.as_str(),
            member: &member,
        };
        let data = serde_json::value::to_raw_value(&announcement).expect("announcements serialize");
        fanout.announce(Arc::from(event.room), "presence", Arc::from(data));
    }
    tracing::warn!("the presence feed closed; presence changes are no longer announced");
}

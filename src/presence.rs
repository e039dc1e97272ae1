//! Presence on this node: its connections' entries in the shared presence store, the heartbeat
//! that keeps them alive (and sweeps out those of nodes that stopped), the changes from every
//! node announced to this node's members of each room, and member listings.
//!
//! A connection's changes are not written one by one. Each is kept as the member's pending state
//! (the last one wins) and every `--presence-interval` the node writes each room's pending changes
//! as one batch, which every node announces to its members of the room as one `presence` event,
//! `{room, changes: [{action, member}, ...]}` (`member` is `{id, user?, data}`: the connection's
//! id, its token's subject, the data it entered with). So a member changes at most once per
//! interval whatever it sends, one batch holds at most [`MAX_BATCH_BYTES`] of member data (the
//! rest waits for the next), and a room's members get one event per interval and node however
//! many enter: presence costs what a message to the room costs, at a bounded rate.
//!
//! Listings are served from a snapshot of the room, read and encoded at most once per interval
//! per room, in pages of [`PAGE_MEMBERS`] members (at most [`PAGE_BYTES`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use crate::transport::Sid;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use twine_store::{Member, Presence, PresenceEvent, PresenceFeed, StoreError, Update};

use crate::fanout::Fanout;
use crate::metrics::{Limit, Metrics};
use crate::outbox::Outbox;

/// Most member data (ids and info) one batch of a room's changes carries; the rest of the room's
/// pending changes wait for the next interval, oldest first.
pub const MAX_BATCH_BYTES: usize = 64 * 1024;
/// Members per page of a listing.
pub const PAGE_MEMBERS: usize = 100;
/// Most bytes of one page of a listing (a page has at least one member).
pub const PAGE_BYTES: usize = 64 * 1024;
/// Rooms written at once by one tick.
const APPLY_CONCURRENCY: usize = 16;
/// Listings kept before stale ones are dropped.
const MAX_CACHED_LISTINGS: usize = 4096;

/// How presence is bounded on this node.
#[derive(Clone, Copy, Debug)]
pub struct PresenceOptions {
    /// How long an entry lasts without its node's heartbeat.
    pub ttl: Duration,
    pub max_members: usize,
    /// How often pending changes are written and announced (and listings read again).
    pub interval: Duration,
}

/// Presence of this node's connections.
pub struct PresenceHub {
    store: Arc<dyn Presence>,
    options: PresenceOptions,
    metrics: Arc<Metrics>,
    local: Mutex<Local>,
    listings: Mutex<HashMap<Arc<str>, Arc<Listing>>>,
}

/// This node's members, by room.
#[derive(Default)]
struct Local {
    rooms: HashMap<Arc<str>, LocalRoom>,
    /// Rooms with pending changes.
    dirty: HashSet<Arc<str>>,
}

#[derive(Default)]
struct LocalRoom {
    members: HashMap<Sid, Entry>,
    /// Members with a pending change, in the order they first changed since their last write.
    queue: VecDeque<Sid>,
}

struct Entry {
    /// The store holds the member (as far as this node knows).
    stored: bool,
    /// A change of the member is being written.
    writing: bool,
    pending: Option<Pending>,
    /// Where to say an enter was refused.
    outbox: Weak<Outbox>,
}

/// A room's changes taken to be written together, each with the connection it is for.
type Batch = (Arc<str>, Vec<(Sid, Update)>);

#[derive(Clone)]
enum Pending {
    /// Enter, or update: what the room is told about the member.
    Enter(String),
    Leave,
}

impl Entry {
    fn new(outbox: Weak<Outbox>) -> Entry {
        Entry {
            stored: false,
            writing: false,
            pending: None,
            outbox,
        }
    }

    fn present(&self) -> bool {
        match self.pending {
            Some(Pending::Enter(_)) => true,
            Some(Pending::Leave) => false,
            None => self.stored,
        }
    }
}

/// An `update` from a connection that is not present.
#[derive(Debug, thiserror::Error)]
#[error("not present in the room: enter it first")]
pub struct NotPresent;

/// What a room is told about a member.
#[derive(Serialize)]
struct Info<'a> {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    data: &'a RawValue,
}

/// One change of a `presence` event.
#[derive(Serialize)]
struct Announced<'a> {
    action: &'static str,
    member: &'a RawValue,
}

/// The `presence` event.
#[derive(Serialize)]
struct Announcement<'a> {
    room: &'a str,
    changes: Vec<Announced<'a>>,
}

/// A page of a room's members: the `presence:members` reply and `GET /api/rooms/{room}/presence`.
#[derive(Serialize)]
pub struct Members<'a> {
    pub room: &'a str,
    pub members: &'a [Box<RawValue>],
    /// Ask again with `after` set to this for the next page; `null` on the last.
    pub next: Option<&'a str>,
}

/// A room's members as read once, sorted by id, with its pages encoded.
pub struct Snapshot {
    ids: Vec<String>,
    members: Vec<Box<RawValue>>,
    /// Where each page starts, and its encoding.
    pages: Vec<(usize, Arc<RawValue>)>,
    all: OnceLock<Arc<RawValue>>,
    room: Arc<str>,
}

struct Listing {
    read_at: Instant,
    snapshot: OnceCell<Arc<Snapshot>>,
}

impl Snapshot {
    fn new(room: Arc<str>, mut members: Vec<Member>) -> Snapshot {
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let (ids, members): (Vec<String>, Vec<Box<RawValue>>) = members
            .into_iter()
            .filter_map(|m| RawValue::from_string(m.info).ok().map(|info| (m.id, info)))
            .unzip();
        let mut pages = Vec::new();
        let mut start = 0;
        while start < members.len() || (start == 0 && pages.is_empty()) {
            let mut end = start;
            let mut bytes = 0;
            while end < members.len() && end - start < PAGE_MEMBERS && (bytes < PAGE_BYTES) {
                bytes += members[end].get().len();
                end += 1;
            }
            let page = Members {
                room: &room,
                members: &members[start..end],
                next: (end < members.len()).then(|| ids[end - 1].as_str()),
            };
            let encoded = serde_json::value::to_raw_value(&page).expect("pages serialize");
            pages.push((start, Arc::from(encoded)));
            if end == members.len() {
                break;
            }
            start = end;
        }
        Snapshot {
            ids,
            members,
            pages,
            all: OnceLock::new(),
            room,
        }
    }

    /// The page of members after id `after` (from the first when `None`).
    pub fn page(&self, after: Option<&str>) -> Arc<RawValue> {
        let from = after.map_or(0, |after| {
            self.ids.partition_point(|id| id.as_str() <= after)
        });
        let at = self.pages.partition_point(|(start, _)| *start <= from);
        match at.checked_sub(1).map(|i| &self.pages[i]) {
            Some((start, page)) if *start == from => page.clone(),
            // A cursor between page starts (the members changed): a page of its own.
            _ => {
                let end = (from + PAGE_MEMBERS).min(self.members.len());
                let page = Members {
                    room: &self.room,
                    members: &self.members[from..end],
                    next: (end < self.members.len()).then(|| self.ids[end - 1].as_str()),
                };
                Arc::from(serde_json::value::to_raw_value(&page).expect("pages serialize"))
            }
        }
    }

    /// Every member at once (for backends holding the API key).
    pub fn all(&self) -> Arc<RawValue> {
        self.all
            .get_or_init(|| {
                let page = Members {
                    room: &self.room,
                    members: &self.members,
                    next: None,
                };
                Arc::from(serde_json::value::to_raw_value(&page).expect("pages serialize"))
            })
            .clone()
    }
}

impl PresenceHub {
    /// Starts the writing of pending changes, the heartbeat, and the announcing of `feed`'s
    /// changes through `fanout`.
    pub fn start(
        store: Arc<dyn Presence>,
        feed: PresenceFeed,
        fanout: Arc<Fanout>,
        options: PresenceOptions,
        metrics: Arc<Metrics>,
    ) -> Arc<PresenceHub> {
        let hub = Arc::new(PresenceHub {
            store,
            options,
            metrics,
            local: Mutex::default(),
            listings: Mutex::default(),
        });
        tokio::spawn(announce(feed, fanout));
        tokio::spawn(write_pending(Arc::downgrade(&hub), options.interval));
        tokio::spawn(heartbeat(Arc::downgrade(&hub), options.ttl / 3));
        hub
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters connection `sid` in `room` with `data` (or updates it), at the next interval.
    /// `update_only` refuses a connection not present.
    pub fn enter(
        &self,
        room: &Arc<str>,
        sid: Sid,
        user: Option<&str>,
        data: &RawValue,
        update_only: bool,
        outbox: &Arc<Outbox>,
    ) -> Result<(), NotPresent> {
        let info = Info {
            id: sid.to_string(),
            user,
            data,
        };
        let info = serde_json::to_string(&info).expect("presence info serializes");
        let mut local = self.local();
        let known = local
            .rooms
            .get(room)
            .and_then(|r| r.members.get(&sid))
            .is_some_and(Entry::present);
        if update_only && !known {
            return Err(NotPresent);
        }
        let entry = Entry::new(Arc::downgrade(outbox));
        local.change(room, sid, entry, Pending::Enter(info));
        Ok(())
    }

    /// Takes connection `sid` out of `room`, at the next interval.
    pub fn leave(&self, room: &Arc<str>, sid: Sid) {
        let mut local = self.local();
        let Some(local_room) = local.rooms.get_mut(room) else {
            return;
        };
        match local_room.members.get(&sid) {
            Some(entry) if entry.stored || entry.writing => {
                local.change(room, sid, Entry::new(Weak::new()), Pending::Leave);
            }
            // Never written: nothing to take out.
            Some(_) => {
                local_room.members.remove(&sid);
                if local_room.members.is_empty() {
                    local.rooms.remove(room);
                }
            }
            None => {}
        }
    }

    /// Whether connection `sid` is (or is about to be) present in `room`.
    pub fn is_present(&self, room: &Arc<str>, sid: Sid) -> bool {
        self.local()
            .rooms
            .get(room)
            .and_then(|r| r.members.get(&sid))
            .is_some_and(Entry::present)
    }

    /// The room's members as read at most one interval ago.
    pub async fn snapshot(&self, room: &Arc<str>) -> Result<Arc<Snapshot>, StoreError> {
        let listing = {
            let mut listings = self.listings.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = |l: &Listing| l.read_at.elapsed() < self.options.interval;
            match listings.get(room) {
                Some(listing) if fresh(listing) => listing.clone(),
                _ => {
                    if listings.len() >= MAX_CACHED_LISTINGS {
                        listings.retain(|_, l| fresh(l));
                    }
                    let listing = Arc::new(Listing {
                        read_at: Instant::now(),
                        snapshot: OnceCell::new(),
                    });
                    listings.insert(room.clone(), listing.clone());
                    listing
                }
            }
        };
        listing
            .snapshot
            .get_or_try_init(|| async {
                let members = self.store.members(room).await?;
                Ok(Arc::new(Snapshot::new(room.clone(), members)))
            })
            .await
            .cloned()
    }

    /// The room's members read now (for backends holding the API key, whom listings do not
    /// need to hold back).
    pub async fn read(&self, room: &Arc<str>) -> Result<Snapshot, StoreError> {
        let members = self.store.members(room).await?;
        Ok(Snapshot::new(room.clone(), members))
    }

    /// Writes every room's pending changes (up to a batch each) and settles the outcomes.
    async fn write_pending(&self) {
        let batches = self.local().take_batches();
        futures_util::stream::iter(batches)
            .for_each_concurrent(APPLY_CONCURRENCY, |(room, taken)| async move {
                let updates: Vec<Update> = taken.iter().map(|(_, u)| u.clone()).collect();
                let outcome = self
                    .store
                    .apply(&room, &updates, self.options.ttl, self.options.max_members)
                    .await;
                self.settle(&room, taken, outcome);
            })
            .await;
    }

    fn settle(
        &self,
        room: &Arc<str>,
        taken: Vec<(Sid, Update)>,
        outcome: Result<Vec<String>, StoreError>,
    ) {
        let refused = match outcome {
            Ok(refused) => refused,
            Err(e) => {
                // Tried again at the next interval, unless the member changed meanwhile.
                tracing::warn!(%room, "presence changes not written: {e}");
                let mut local = self.local();
                for (sid, update) in taken {
                    local.retry(room, sid, update);
                }
                return;
            }
        };
        let mut refusals = Vec::new();
        {
            let mut local = self.local();
            for (sid, update) in taken {
                let was_refused = matches!(&update, Update::Enter(m) if refused.contains(&m.id));
                if let Some(outbox) = local.written(room, sid, &update, was_refused) {
                    refusals.push(outbox);
                }
            }
        }
        for outbox in refusals {
            self.metrics.limit(Limit::PresenceMembers);
            let message = format!(
                "room {room} has {} members present already",
                self.options.max_members
            );
            outbox.notify(
                "error",
                &serde_json::json!({"event": "presence:enter", "message": message}),
            );
        }
    }
}

impl Local {
    /// Gives `sid` in `room` a pending change (the last one wins), making its entry from
    /// `fresh` if it has none.
    fn change(&mut self, room: &Arc<str>, sid: Sid, fresh: Entry, change: Pending) {
        let local_room = self.rooms.entry(room.clone()).or_default();
        let entry = local_room.members.entry(sid).or_insert(fresh);
        if entry.pending.is_none() {
            local_room.queue.push_back(sid);
        }
        entry.pending = Some(change);
        self.dirty.insert(room.clone());
    }

    /// Takes each dirty room's pending changes, up to a batch per room.
    fn take_batches(&mut self) -> Vec<Batch> {
        let mut batches = Vec::new();
        for room in std::mem::take(&mut self.dirty) {
            let Some(local_room) = self.rooms.get_mut(&room) else {
                continue;
            };
            let mut taken = Vec::new();
            let mut bytes = 0;
            while bytes < MAX_BATCH_BYTES
                && let Some(sid) = local_room.queue.pop_front()
            {
                let Some(entry) = local_room.members.get_mut(&sid) else {
                    continue;
                };
                let id = sid.to_string();
                let update = match entry.pending.take() {
                    Some(Pending::Enter(info)) => Update::Enter(Member { id, info }),
                    Some(Pending::Leave) => Update::Leave(id),
                    None => continue,
                };
                entry.writing = true;
                bytes += match &update {
                    Update::Enter(m) => m.id.len() + m.info.len(),
                    Update::Leave(id) => id.len(),
                };
                taken.push((sid, update));
            }
            if !local_room.queue.is_empty() {
                self.dirty.insert(room.clone());
            }
            if !taken.is_empty() {
                batches.push((room, taken));
            }
        }
        batches
    }

    /// A write failed: `update` is pending again unless a newer change replaced it.
    fn retry(&mut self, room: &Arc<str>, sid: Sid, update: Update) {
        let Some(entry) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.members.get_mut(&sid))
        else {
            return;
        };
        entry.writing = false;
        if entry.pending.is_some() {
            return;
        }
        let change = match update {
            Update::Enter(member) => Pending::Enter(member.info),
            Update::Leave(_) => Pending::Leave,
        };
        self.change(room, sid, Entry::new(Weak::new()), change);
    }

    /// `update` was written (or refused): the entry follows. Returns where to say an enter was
    /// refused.
    fn written(
        &mut self,
        room: &Arc<str>,
        sid: Sid,
        update: &Update,
        refused: bool,
    ) -> Option<Arc<Outbox>> {
        let local_room = self.rooms.get_mut(room)?;
        let entry = local_room.members.get_mut(&sid)?;
        entry.writing = false;
        let mut refusal = None;
        match update {
            Update::Enter(_) if refused => refusal = entry.outbox.upgrade(),
            Update::Enter(_) => entry.stored = true,
            Update::Leave(_) => entry.stored = false,
        }
        if entry.pending.is_none() && !entry.stored {
            local_room.members.remove(&sid);
            if local_room.members.is_empty() {
                self.rooms.remove(room);
            }
        }
        refusal
    }

    /// The entries the store holds, for the heartbeat.
    fn stored(&self) -> Vec<(Arc<str>, Sid)> {
        self.rooms
            .iter()
            .flat_map(|(room, r)| {
                r.members
                    .iter()
                    .filter(|(_, e)| e.stored)
                    .map(move |(sid, _)| (room.clone(), *sid))
            })
            .collect()
    }
}

/// Writes pending changes every `every`, until the hub is gone.
async fn write_pending(hub: Weak<PresenceHub>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        hub.write_pending().await;
    }
}

/// Keeps this node's entries alive and drops those whose node stopped keeping them, until the
/// hub is gone.
async fn heartbeat(hub: Weak<PresenceHub>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        let entries = hub.local().stored();
        if !entries.is_empty() {
            let sids: Vec<String> = entries.iter().map(|(_, sid)| sid.to_string()).collect();
            let pairs: Vec<(&str, &str)> = entries
                .iter()
                .zip(&sids)
                .map(|((room, _), sid)| (room.as_ref(), sid.as_str()))
                .collect();
            if let Err(e) = hub.store.refresh(&pairs, hub.options.ttl).await {
                tracing::warn!("presence heartbeat failed: {e}");
            }
        }
        if let Err(e) = hub.store.expire().await {
            tracing::warn!("presence sweep failed: {e}");
        }
    }
}

/// The `presence` event for a batch of changes, or `None` when it has none readable.
fn announcement(event: &PresenceEvent) -> Option<Box<RawValue>> {
    let members: Vec<(&'static str, Box<RawValue>)> = event
        .changes
        .iter()
        .filter_map(|(change, member)| {
            let info = RawValue::from_string(member.info.clone()).ok()?;
            Some((change.as_str(), info))
        })
        .collect();
    if members.is_empty() {
        return None;
    }
    let changes = members
        .iter()
        .map(|(action, member)| Announced { action, member })
        .collect();
    let announcement = Announcement {
        room: &event.room,
        changes,
    };
    Some(serde_json::value::to_raw_value(&announcement).expect("announcements serialize"))
}

/// Announces every batch of presence changes to this node's members of its room.
async fn announce(mut feed: PresenceFeed, fanout: Arc<Fanout>) {
    // The rooms it carries are those the node's live feed listens to: the rooms it serves.
    while let Some(event) = feed.events.recv().await {
        match announcement(&event) {
            Some(data) => fanout.announce(Arc::from(event.room), "presence", Arc::from(data)),
            None => {
                tracing::warn!(room = %event.room, "ignoring presence changes with unreadable member data");
            }
        }
    }
    tracing::warn!("the presence feed closed; presence changes are no longer announced");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> Member {
        Member {
            id: id.into(),
            info: format!(r#"{{"id":"{id}","data":{{}}}}"#),
        }
    }

    #[test]
    fn pages_follow_ids_and_stay_within_their_bounds() {
        let members: Vec<Member> = (0..250).map(|i| member(&format!("m{i:03}"))).collect();
        let snapshot = Snapshot::new(Arc::from("r"), members);
        let first: serde_json::Value = serde_json::from_str(snapshot.page(None).get()).unwrap();
        assert_eq!(first["members"].as_array().unwrap().len(), PAGE_MEMBERS);
        assert_eq!(first["next"], "m099");
        let second: serde_json::Value =
            serde_json::from_str(snapshot.page(Some("m099")).get()).unwrap();
        assert_eq!(second["members"][0]["id"], "m100");
        let last: serde_json::Value =
            serde_json::from_str(snapshot.page(Some("m199")).get()).unwrap();
        assert_eq!(last["members"].as_array().unwrap().len(), 50);
        assert!(last["next"].is_null());
        let between: serde_json::Value =
            serde_json::from_str(snapshot.page(Some("m150")).get()).unwrap();
        assert_eq!(
            between["members"][0]["id"], "m151",
            "a cursor between pages"
        );
        let all: serde_json::Value = serde_json::from_str(snapshot.all().get()).unwrap();
        assert_eq!(all["members"].as_array().unwrap().len(), 250);

        let big = format!(r#"{{"id":"x","data":"{}"}}"#, "y".repeat(40_000));
        let large: Vec<Member> = (0..3)
            .map(|i| Member {
                id: format!("{i}"),
                info: big.clone(),
            })
            .collect();
        let snapshot = Snapshot::new(Arc::from("r"), large);
        let first: serde_json::Value = serde_json::from_str(snapshot.page(None).get()).unwrap();
        assert_eq!(
            first["members"].as_array().unwrap().len(),
            2,
            "stops after the member that passes the byte bound"
        );
        let empty = Snapshot::new(Arc::from("r"), Vec::new());
        let page: serde_json::Value = serde_json::from_str(empty.page(None).get()).unwrap();
        assert_eq!(page["members"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn a_members_changes_coalesce_and_a_batch_is_bounded() {
        let mut local = Local::default();
        let room: Arc<str> = Arc::from("r");
        let fresh = || Entry::new(Weak::new());
        let sid = Sid::new();
        for n in 0..100 {
            local.change(
                &room,
                sid,
                fresh(),
                Pending::Enter(format!("{{\"n\":{n}}}")),
            );
        }
        let batches = local.take_batches();
        assert_eq!(batches.len(), 1);
        let (_, taken) = &batches[0];
        assert_eq!(taken.len(), 1, "one change per member per interval");
        assert!(
            matches!(&taken[0].1, Update::Enter(m) if m.info == "{\"n\":99}"),
            "the last wins"
        );
        assert!(local.take_batches().is_empty(), "nothing left");

        let big = "z".repeat(1000);
        let sids: Vec<Sid> = (0..200).map(|_| Sid::new()).collect();
        for sid in &sids {
            local.change(&room, *sid, fresh(), Pending::Enter(big.clone()));
        }
        let mut written = Vec::new();
        loop {
            let batches = local.take_batches();
            let Some((_, taken)) = batches.into_iter().next() else {
                break;
            };
            let bytes: usize = taken.len() * (1000 + 16);
            assert!(
                bytes < MAX_BATCH_BYTES + 1100,
                "a batch holds {bytes} bytes"
            );
            written.extend(taken.into_iter().map(|(sid, _)| sid));
        }
        assert_eq!(written, sids, "the rest follows, oldest first");
    }
}

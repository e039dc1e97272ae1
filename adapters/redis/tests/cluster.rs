//! The Redis store on a real Redis Cluster (three primaries with a replica each): the same
//! conformance suites as on one primary, rooms spread over every primary with each fed only to
//! the node that listens, and appends that wait for a replica.

mod redis_server;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use redis_server::RedisCluster;
use twine_store::{FeedEvent, History, Publish, SessionStore};
use twine_store_redis::keys::{Keys, slot_of};
use twine_store_redis::{RedisOptions, RedisStore};

fn options(prefix: &str) -> RedisOptions {
    let mut options = RedisOptions::new(prefix, Duration::from_secs(3600), 1000);
    options.max_rooms_per_session = twine_store::conformance::SESSION_ROOM_LIMIT;
    options
}

/// One cluster for every check: starting one takes seconds.
#[tokio::test]
async fn the_redis_store_works_the_same_on_a_cluster() {
    let cluster = RedisCluster::start();
    let store = RedisStore::connect(&cluster.url(), options("c"))
        .await
        .unwrap();
    assert!(store.is_cluster(), "found out from the seeds");

    let next = AtomicU32::new(0);
    twine_store::conformance::run_all(|| {
        let prefixed = store.with_prefix(format!("t{}", next.fetch_add(1, Ordering::SeqCst)));
        let history: Arc<dyn History> = Arc::new(prefixed.clone());
        let sessions: Arc<dyn SessionStore> = Arc::new(prefixed);
        (history, sessions)
    })
    .await;

    let other_node = RedisStore::connect(&cluster.url(), options("c"))
        .await
        .unwrap();
    twine_store::conformance::run_presence(|| {
        let prefix = format!("p{}", next.fetch_add(1, Ordering::SeqCst));
        let a: Arc<dyn twine_store::Presence> = Arc::new(store.with_prefix(prefix.clone()));
        let b: Arc<dyn twine_store::Presence> = Arc::new(other_node.with_prefix(prefix));
        (a, b)
    })
    .await;
    twine_store::conformance::run_fleet(|| {
        let prefix = format!("f{}", next.fetch_add(1, Ordering::SeqCst));
        let a: Arc<dyn twine_store::Fleet> = Arc::new(store.with_prefix(prefix.clone()));
        let b: Arc<dyn twine_store::Fleet> = Arc::new(other_node.with_prefix(prefix));
        (a, b)
    })
    .await;

    rooms_spread_over_every_primary_and_each_is_fed_where_listened(&cluster, &store, &other_node)
        .await;
    an_append_waits_for_a_replica_when_asked(&cluster, &store).await;
}

async fn rooms_spread_over_every_primary_and_each_is_fed_where_listened(
    cluster: &RedisCluster,
    publisher: &RedisStore,
    serving: &RedisStore,
) {
    let publisher = publisher.with_prefix("spread");
    let serving = serving.with_prefix("spread");
    let keys = Keys::new("spread");
    let rooms: Vec<String> = (0..30).map(|i| format!("room-{i}")).collect();
    // `redis-cli --cluster create` gives three primaries these ranges.
    let owners: BTreeSet<u16> = rooms
        .iter()
        .map(|room| match slot_of(keys.history(room).as_bytes()) {
            0..=5460 => 0,
            5461..=10922 => 1,
            _ => 2,
        })
        .collect();
    assert_eq!(
        owners.len(),
        3,
        "the rooms' slots fall in every primary's range"
    );
    assert_eq!(cluster.primaries().len(), 3);
    let mut feed = serving.feed(1 << 20).await.unwrap();
    for room in &rooms[..15] {
        feed.rooms.listen(room).await.unwrap();
    }
    for room in &rooms {
        publisher.append(Publish::new(room, "{}")).await.unwrap();
    }
    let mut fed = BTreeSet::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), feed.events.recv()).await
    {
        if let FeedEvent::Message { message, .. } = event {
            feed.budget.release(message.size());
            fed.insert(message.room);
        }
    }
    let listened: BTreeSet<String> = rooms[..15].iter().cloned().collect();
    assert_eq!(
        fed, listened,
        "every listened room, from every primary, and no other"
    );
    assert_eq!(feed.budget.stats.received.load(Ordering::Relaxed), 15);
}

/// How many `MOVED` redirects the cluster's nodes have answered.
fn redirects(cluster: &RedisCluster) -> u64 {
    cluster
        .ports
        .iter()
        .map(|port| {
            cluster
                .cli(*port, &["INFO", "errorstats"])
                .lines()
                .find_map(|line| line.strip_prefix("errorstat_MOVED:count="))
                .map_or(0, |count| count.trim().parse().unwrap())
        })
        .sum()
}

async fn an_append_waits_for_a_replica_when_asked(cluster: &RedisCluster, store: &RedisStore) {
    let redirected = redirects(cluster);
    let safe = store.with_prefix("replicated").with_min_replicas(1);
    let appended = safe.append(Publish::new("room", "{}")).await.unwrap();
    assert!(!appended.repeated, "confirmed by the primary's replica");
    // On every primary (rooms of each one's slots), on connections to the room's own primary.
    for i in 0..30 {
        let room = format!("room-{i}");
        let keyed = Publish::new(&room, "{}").with_key(Some("k"));
        let first = safe.append(keyed).await.unwrap();
        let again = safe.append(keyed).await.unwrap();
        assert!(!first.repeated && again.repeated, "{room}");
        assert_eq!(again.message.position, first.message.position, "{room}");
        assert_eq!(
            safe.repeat(&keyed).await.unwrap(),
            Some(first.message.position),
            "{room}"
        );
    }
    assert_eq!(
        redirects(cluster),
        redirected,
        "each went straight to its room's primary"
    );
    let impossible = store.with_prefix("replicated").with_min_replicas(2);
    let refused = impossible.append(Publish::new("room", "{}")).await;
    assert!(
        matches!(refused, Err(twine_store::StoreError::Unconfirmed(_))),
        "only one replica per primary: {refused:?}"
    );
}

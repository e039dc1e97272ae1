//! Live delivery out of a real `redis-server`: a node is fed only the rooms it listens to, and a
//! subscription Redis drops is made again, its rooms reported so they catch up.

mod redis_server;

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis_server::RedisServer;
use twine_store::{Feed, FeedEvent, History, Publish};
use twine_store_redis::{RedisOptions, RedisStore};

fn options(prefix: &str) -> RedisOptions {
    RedisOptions::new(prefix, Duration::from_secs(3600), 1000)
}

/// Every event the feed yields within `ms`.
async fn drain(feed: &mut Feed, ms: u64) -> Vec<FeedEvent> {
    let mut events = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(ms), feed.events.recv()).await
    {
        if let FeedEvent::Message { message, .. } = &event {
            feed.budget.release(message.size());
        }
        events.push(event);
    }
    events
}

fn rooms_of(events: &[FeedEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            FeedEvent::Message { message, .. } => Some(message.room.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_node_is_fed_only_the_rooms_it_listens_to() {
    let server = RedisServer::start();
    let serving = RedisStore::connect(&server.url(), options("only"))
        .await
        .unwrap();
    let publisher = RedisStore::connect(&server.url(), options("only"))
        .await
        .unwrap();
    let mut feed = serving.feed(1 << 20).await.unwrap();
    feed.rooms.listen("mine").await.unwrap();
    for n in 0..20 {
        let room = if n % 2 == 0 { "mine" } else { "not-mine" };
        publisher
            .append(Publish::new(room, &format!("{{\"n\":{n}}}")))
            .await
            .unwrap();
    }
    let events = drain(&mut feed, 500).await;
    assert_eq!(rooms_of(&events), vec!["mine"; 10]);
    assert_eq!(
        feed.budget.stats.received.load(Ordering::Relaxed),
        10,
        "the other room's messages never reached this node"
    );
    feed.rooms.unlisten("mine");
    tokio::time::sleep(Duration::from_millis(100)).await;
    publisher.append(Publish::new("mine", "{}")).await.unwrap();
    assert!(
        drain(&mut feed, 300).await.is_empty(),
        "nothing after the last member left"
    );
}

#[tokio::test]
async fn a_subscription_redis_drops_is_made_again_and_its_rooms_catch_up() {
    let server = RedisServer::start();
    let serving = RedisStore::connect(&server.url(), options("kill"))
        .await
        .unwrap();
    let mut feed = serving.feed(1 << 20).await.unwrap();
    for room in ["a", "b"] {
        feed.rooms.listen(room).await.unwrap();
    }
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 1, "one pub/sub connection for every room");
    let events = drain(&mut feed, 1000).await;
    let mut gaps: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            FeedEvent::Gap(room) => Some(room.clone()),
            _ => None,
        })
        .collect();
    gaps.sort();
    assert_eq!(gaps, ["a", "b"], "both rooms catch up from the history");
    serving.append(Publish::new("a", "{}")).await.unwrap();
    assert_eq!(rooms_of(&drain(&mut feed, 500).await), ["a"], "fed again");
    assert_eq!(feed.budget.stats.resubscribed.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_room_left_and_joined_again_at_once_stays_fed_without_a_gap() {
    let server = RedisServer::start();
    let serving = RedisStore::connect(&server.url(), options("churn"))
        .await
        .unwrap();
    let mut feed = serving.feed(1 << 20).await.unwrap();
    feed.rooms.listen("room").await.unwrap();
    // A member leaves and another joins before Redis confirms the leave, many times over: the
    // confirmations of the node's own leaves are not Redis dropping the room.
    for _ in 0..50 {
        feed.rooms.unlisten("room");
        feed.rooms.listen("room").await.unwrap();
    }
    serving.append(Publish::new("room", "{}")).await.unwrap();
    let events = drain(&mut feed, 500).await;
    assert_eq!(rooms_of(&events), ["room"], "still fed once");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, FeedEvent::Gap(_) | FeedEvent::GapAll)),
        "no catch-up for a subscription Redis never dropped: {}",
        events.len()
    );
}

//! What a publish promises when things go wrong, against a real `redis-server`: a retry through
//! another node stores nothing twice, and an append Redis runs after its caller gave up is not
//! stored at all.

mod redis_server;

use std::time::{Duration, SystemTime};

use redis_server::RedisServer;
use twine_store::{Feed, FeedEvent, History, Message, PageLimit, Position, Publish, StoreError};
use twine_store_redis::keys::Keys;
use twine_store_redis::{RedisOptions, RedisStore};

fn options(prefix: &str) -> RedisOptions {
    let mut options = RedisOptions::new(prefix, Duration::from_secs(3600), 1000);
    options.max_rooms_per_session = 100;
    options
}

/// The next message on the feed; a gap notice (a pause can provoke one) is skipped, since it
/// carries no message.
async fn next_message(feed: &mut Feed) -> Message {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), feed.events.recv())
            .await
            .expect("the feed delivers within 5 s")
            .expect("the feed stays open");
        if let FeedEvent::Message { message, .. } = event {
            feed.budget.release(message.size());
            return message;
        }
    }
}

/// A feed of `rooms`, in place.
async fn feed_of(store: &RedisStore, rooms: &[&str]) -> Feed {
    let feed = store.feed(1 << 20).await.unwrap();
    for room in rooms {
        feed.rooms.listen(room).await.unwrap();
    }
    feed
}

/// How many scripts Redis has run (or refused to run): every store call is one.
async fn scripts_run(server: &RedisServer) -> u64 {
    let Some(stats) = server.info_line("commandstats", "cmdstat_evalsha").await else {
        return 0;
    };
    let calls = stats
        .split(',')
        .find_map(|field| field.strip_prefix("calls="))
        .expect("commandstats count calls");
    calls.parse().expect("a count")
}

async fn stored(store: &RedisStore, room: &str) -> Vec<Message> {
    store
        .read_page(room, Position::ZERO, Position::MAX, PageLimit::count(100))
        .await
        .unwrap()
        .messages
}

#[tokio::test]
async fn a_keyed_publish_retried_through_another_node_is_stored_and_fed_once() {
    let server = RedisServer::start();
    let node_a = RedisStore::connect(&server.url(), options("keys"))
        .await
        .unwrap();
    let node_b = RedisStore::connect(&server.url(), options("keys"))
        .await
        .unwrap();
    let mut feed = feed_of(&node_a, &["room"]).await;
    let publish = Publish::new("room", "{\"n\":1}").with_key(Some("order 17/~!"));

    let first = node_a.append(publish).await.unwrap();
    let retried = node_b.append(publish).await.unwrap();
    assert!(!first.repeated && retried.repeated);
    assert_eq!(retried.message, first.message, "answered with the original");
    let reused = node_b
        .append(Publish::new("room", "{\"n\":9}").with_key(publish.key))
        .await;
    assert!(matches!(reused, Err(StoreError::KeyReused)), "{reused:?}");

    let next = node_b
        .append(Publish::new("room", "{\"n\":2}"))
        .await
        .unwrap();
    assert_eq!(
        stored(&node_a, "room").await,
        vec![first.message.clone(), next.message.clone()]
    );
    assert!(stored(&node_a, "other").await.is_empty());
    assert_eq!(next_message(&mut feed).await, first.message);
    assert_eq!(next_message(&mut feed).await, next.message, "fed once");

    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(Keys::new("keys").key_record("room", "order 17/~!"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        ttl_ms > 3_500_000 && ttl_ms <= 3_600_000,
        "the key lives for the history window: {ttl_ms} ms"
    );
}

/// Redis frozen mid-publish (as a stalled or overloaded server is) runs the queued append only
/// after the caller was told it failed; the deadline makes Redis refuse it then, so "failed"
/// stays true.
#[tokio::test]
async fn an_append_redis_runs_after_its_deadline_is_neither_stored_nor_fed() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), options("paused"))
        .await
        .unwrap();
    let mut feed = feed_of(&store, &["warm", "room"]).await;
    // Loads the script, so the frozen call is the append itself rather than a script upload.
    let warm = store.append(Publish::new("warm", "{}")).await.unwrap();
    assert_eq!(next_message(&mut feed).await, warm.message);
    let scripts_before = scripts_run(&server).await;

    server.pause();
    let deadline = SystemTime::now() + Duration::from_secs(1);
    let late = store
        .append(Publish::new("room", "{\"late\":true}").with_deadline(Some(deadline)))
        .await;
    server.resume();
    assert!(
        matches!(
            late,
            Err(StoreError::Unanswered(_) | StoreError::Expired(_))
        ),
        "the caller is told its outcome is unknown (it was sent) or that it was refused: {late:?}"
    );

    // The append reached Redis and ran once Redis resumed: only then is its absence telling.
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while scripts_run(&server).await == scripts_before {
        assert!(
            std::time::Instant::now() < give_up,
            "Redis ran the queued append"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stored(&store, "room").await.is_empty(), "not stored");
    let refused = server.info_line("errorstats", "errorstat_EXPIRED").await;
    assert_eq!(
        refused.as_deref(),
        Some("count=1"),
        "refused by its deadline"
    );
    assert_eq!(store.last_position("room").await.unwrap(), Position::ZERO);
    let next = store
        .append(Publish::new("room", "{\"late\":false}"))
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut feed).await,
        next.message,
        "not fed: the next message on the feed is the one after"
    );
}

//! Publishes that wait for replicas (`min_replicas`), against real `redis-server`s: waiting
//! holds up nothing else the store does, a publish is answered stored only once replicas hold
//! it (its retries too), a working replica confirms publishes, and publishes beyond the
//! connections set apart for waiting are refused, not stored.

mod redis_server;

use std::time::{Duration, Instant, SystemTime};

use redis_server::RedisServer;
use twine_store::{History, PageLimit, Position, Progress, Publish, SessionStore, StoreError};
use twine_store_redis::{CONNECTIONS_PER_PRIMARY, RedisOptions, RedisStore};

/// How long the caller of a publish gives the store, as the server does.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(1);

fn options(prefix: &str, timeout: Duration) -> RedisOptions {
    let mut options = RedisOptions::new(prefix, Duration::from_secs(3600), 1000);
    options.max_rooms_per_session = 100;
    options.min_replicas = 1;
    options.min_replicas_timeout = timeout;
    options
}

/// `publish` with the deadline the server gives its publishes.
fn timely(publish: Publish<'_>) -> Publish<'_> {
    publish.with_deadline(Some(SystemTime::now() + PUBLISH_DEADLINE))
}

async fn stored(store: &RedisStore, room: &str) -> Vec<Position> {
    store
        .read_page(room, Position::ZERO, Position::MAX, PageLimit::count(100))
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|m| m.position)
        .collect()
}

/// Runs `call`, failing when it takes `within` or longer.
async fn quick<T>(what: &str, within: Duration, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = call.await;
    let took = started.elapsed();
    assert!(
        took < within,
        "{what} took {took:?} while publishes waited for replicas"
    );
    out
}

#[tokio::test]
async fn other_calls_answer_at_once_while_publishes_wait_for_replicas() {
    let server = RedisServer::start();
    let wait = Duration::from_millis(1500);
    let store = RedisStore::connect(&server.url(), options("busy", wait))
        .await
        .unwrap();
    store
        .with_min_replicas(0)
        .append(Publish::new("read", "{\"n\":0}"))
        .await
        .unwrap();
    store.join("session", "read", Position::ZERO).await.unwrap();

    // No replica: each publish waits for the whole timeout.
    let waiting: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let payload = format!("{{\"i\":{i}}}");
                store
                    .append(timely(Publish::new("waiting", &payload)))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let within = Duration::from_millis(400);
    let page = quick("a history read", within, async {
        store
            .read_page("read", Position::ZERO, Position::MAX, PageLimit::count(10))
            .await
    })
    .await
    .expect("history is read");
    assert_eq!(page.messages.len(), 1);
    quick("the last position", within, store.last_position("read"))
        .await
        .expect("the last position is read");
    let session = quick("a session load", within, store.load("session"))
        .await
        .expect("the session is loaded")
        .expect("the session exists");
    assert!(session.rooms.contains_key("read"));
    quick(
        "a join",
        within,
        store.join("session", "other", Position::ZERO),
    )
    .await
    .expect("the room is joined");
    let progress = [Progress {
        room: "read".into(),
        handled: Position(1),
        listened: true,
    }];
    quick("an advance", within, store.advance("session", &progress))
        .await
        .expect("the session advances");
    quick("a health check", within, store.check())
        .await
        .expect("Redis answers");
    quick(
        "an append waiting for no replica",
        within,
        store
            .with_min_replicas(0)
            .append(timely(Publish::new("read", "{\"n\":1}"))),
    )
    .await
    .expect("stored without waiting");

    for publish in waiting {
        let answer = publish.await.unwrap();
        assert!(
            matches!(answer, Err(StoreError::Unconfirmed(_))),
            "stored, not confirmed: {answer:?}"
        );
    }
    assert_eq!(stored(&store, "waiting").await.len(), 4);
}

#[tokio::test]
async fn a_retry_is_unconfirmed_until_a_replica_holds_the_message() {
    let primary = RedisServer::start();
    let store = RedisStore::connect(&primary.url(), options("retry", Duration::from_millis(300)))
        .await
        .unwrap();
    let publish = Publish::new("room", "{\"n\":1}").with_key(Some("order-1"));

    let first = store.append(timely(publish)).await;
    assert!(
        matches!(first, Err(StoreError::Unconfirmed(_))),
        "no replica: {first:?}"
    );
    let positions = stored(&store, "room").await;
    assert_eq!(positions.len(), 1, "stored on the primary");

    for _ in 0..2 {
        let retried = store.append(timely(publish)).await;
        assert!(
            matches!(retried, Err(StoreError::Unconfirmed(_))),
            "a retry is not stored either while no replica holds it: {retried:?}"
        );
        let probed = store.repeat(&publish).await;
        assert!(
            matches!(probed, Err(StoreError::Unconfirmed(_))),
            "nor is a probe of its key: {probed:?}"
        );
    }

    let replica = RedisServer::replica_of(&primary);
    primary.await_replicas(1).await;
    let settled = store.append(timely(publish)).await.unwrap();
    assert!(settled.repeated, "the first append's message");
    assert_eq!(settled.message.position, positions[0]);
    assert_eq!(store.repeat(&publish).await.unwrap(), Some(positions[0]));
    assert_eq!(stored(&store, "room").await, positions, "stored once");
    drop(replica);
}

#[tokio::test]
async fn a_working_replica_confirms_publishes_and_a_stalled_one_does_not() {
    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    primary.await_replicas(1).await;
    let store = RedisStore::connect(
        &primary.url(),
        options("confirmed", Duration::from_millis(500)),
    )
    .await
    .unwrap();

    let publishes: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let payload = format!("{{\"i\":{i}}}");
                let room = format!("room-{}", i % 5);
                store.append(timely(Publish::new(&room, &payload))).await
            })
        })
        .collect();
    for publish in publishes {
        let appended = publish.await.unwrap().expect("confirmed by the replica");
        assert!(!appended.repeated);
    }
    let keyed = Publish::new("room-0", "{\"k\":1}").with_key(Some("k-1"));
    let first = store.append(timely(keyed)).await.unwrap();
    let again = store.append(timely(keyed)).await.unwrap();
    assert!(!first.repeated && again.repeated);
    assert_eq!(again.message.position, first.message.position);

    // A replica that stops acknowledging: nothing is answered stored.
    replica.pause();
    let stalled = Publish::new("room-0", "{\"k\":2}").with_key(Some("k-2"));
    let refused = store.append(timely(stalled)).await;
    assert!(
        matches!(refused, Err(StoreError::Unconfirmed(_))),
        "the replica is stalled: {refused:?}"
    );
    let retried = store.append(timely(stalled)).await;
    assert!(
        matches!(retried, Err(StoreError::Unconfirmed(_))),
        "still stalled: {retried:?}"
    );
    replica.resume();
    primary.await_replicas(1).await;
    let settled = store.append(timely(stalled)).await.unwrap();
    assert!(settled.repeated);
    assert_eq!(stored(&store, "room-0").await.len(), 8 + 2);
}

#[tokio::test]
async fn a_publish_that_gets_no_connection_in_time_is_refused_and_not_stored() {
    let server = RedisServer::start();
    // Longer than a publish's deadline: the first publishes hold every connection past it.
    let wait = Duration::from_millis(1500);
    let store = RedisStore::connect(&server.url(), options("full", wait))
        .await
        .unwrap();
    let publishes: Vec<_> = (0..CONNECTIONS_PER_PRIMARY + 3)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let payload = format!("{{\"i\":{i}}}");
                store.append(timely(Publish::new("room", &payload))).await
            })
        })
        .collect();
    let (mut unconfirmed, mut refused) = (0, 0);
    for publish in publishes {
        match publish.await.unwrap() {
            Err(StoreError::Unconfirmed(_)) => unconfirmed += 1,
            Err(StoreError::Unavailable(_)) => refused += 1,
            other => panic!("no replica, so not confirmed: {other:?}"),
        }
    }
    assert_eq!((unconfirmed, refused), (CONNECTIONS_PER_PRIMARY, 3));
    assert_eq!(
        stored(&store, "room").await.len(),
        CONNECTIONS_PER_PRIMARY,
        "a refused publish is not stored"
    );
}

//! The store conformance suite, and what only a shared store must show, against a real
//! `redis-server`.

mod redis_server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use redis_server::RedisServer;
use twine_store::testing::MemoryArchive;
use twine_store::{Archive, History, Message, PageLimit, Position, Publish, SessionStore};
use twine_store_redis::{RedisOptions, RedisStore};

fn options(prefix: &str) -> RedisOptions {
    let mut options = RedisOptions::new(prefix, Duration::from_secs(3600), 1000);
    options.max_rooms_per_session = twine_store::conformance::SESSION_ROOM_LIMIT;
    options
}

async fn append(store: &RedisStore, room: &str, payload: &str) -> Message {
    store
        .append(Publish::new(room, payload))
        .await
        .unwrap()
        .message
}

/// Everything `room` holds, in one page.
async fn read_all(store: &RedisStore, room: &str) -> twine_store::Page {
    store
        .read_page(room, Position::ZERO, Position::MAX, PageLimit::count(1000))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_redis_store_passes_the_conformance_suite() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), options("unused"))
        .await
        .unwrap();
    let next = AtomicU32::new(0);
    twine_store::conformance::run_all(|| {
        let prefixed = store.with_prefix(format!("t{}", next.fetch_add(1, Ordering::SeqCst)));
        let history: Arc<dyn History> = Arc::new(prefixed.clone());
        let sessions: Arc<dyn SessionStore> = Arc::new(prefixed);
        (history, sessions)
    })
    .await;
}

#[tokio::test]
async fn two_nodes_appending_to_one_room_get_distinct_increasing_positions() {
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url(), options("nodes"))
        .await
        .unwrap();
    let b = RedisStore::connect(&server.url(), options("nodes"))
        .await
        .unwrap();
    let appends = (0..400).map(|i| {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { append(&node, "room", "{}").await.position })
    });
    let mut positions = Vec::new();
    for task in appends {
        positions.push(task.await.unwrap());
    }
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), 400, "every position is distinct");
    let page = a
        .read_page(
            "room",
            Position::ZERO,
            Position::MAX,
            PageLimit::count(1000),
        )
        .await
        .unwrap();
    let stored: Vec<Position> = page.messages.iter().map(|m| m.position).collect();
    assert_eq!(stored, positions, "stored in position order");
}

#[tokio::test]
async fn retention_by_count_is_done_by_redis_and_reported() {
    let server = RedisServer::start();
    let mut opts = options("count");
    opts.max_per_room = 3;
    let store = RedisStore::connect(&server.url(), opts).await.unwrap();
    let mut appended = Vec::new();
    for _ in 0..5 {
        appended.push(append(&store, "room", "{}").await);
    }
    let page = read_all(&store, "room").await;
    assert_eq!(page.messages, appended[2..].to_vec());
    assert!(page.truncated, "two were trimmed");
    let page = store
        .read_page(
            "room",
            appended[1].position,
            Position::MAX,
            PageLimit::count(100),
        )
        .await
        .unwrap();
    assert!(!page.truncated, "nothing after the second was trimmed");
    let start = store
        .replay_start("room", Position::ZERO, Position::MAX, 100)
        .await
        .unwrap();
    assert!(
        start.truncated,
        "a replay from before the trimmed ones is told"
    );
}

#[tokio::test]
async fn sessions_and_history_expire_on_the_redis_side() {
    let server = RedisServer::start();
    let mut opts = options("ttl");
    opts.history_window = Duration::from_millis(300);
    opts.session_window = Duration::from_millis(300);
    let store = RedisStore::connect(&server.url(), opts).await.unwrap();
    store
        .append(Publish::new("room", "{}").with_key(Some("k")))
        .await
        .unwrap();
    store.join("sid", "room", Position(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.load("sid").await.unwrap(), None);
    let page = read_all(&store, "room").await;
    assert!(page.messages.is_empty());
    let again = store
        .append(Publish::new("room", "{}").with_key(Some("k")))
        .await
        .unwrap();
    assert!(
        !again.repeated,
        "keys are forgotten with the history window"
    );
}

#[tokio::test]
async fn an_unreachable_redis_is_reported_unavailable() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), options("down"))
        .await
        .unwrap();
    drop(server);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = store.append(Publish::new("room", "{}")).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(store.check().await.is_err());
}

#[tokio::test]
async fn accepted_messages_are_written_behind_to_the_archive() {
    let server = RedisServer::start();
    let mut opts = options("behind");
    opts.archive_backlog_max = Some(10_000);
    let store = RedisStore::connect(&server.url(), opts).await.unwrap();
    let archive = Arc::new(MemoryArchive::default());
    let archiver = store.spawn_archiver(archive.clone());
    let mut appended = Vec::new();
    for i in 0..500 {
        appended.push(append(&store, ["a", "b"][i % 2], "{}").await);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.backlog().await.unwrap() != Some(0) {
        assert!(std::time::Instant::now() < deadline, "backlog drains");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for room in ["a", "b"] {
        let archived = archive
            .read_page(room, Position::ZERO, Position::MAX, PageLimit::count(1000))
            .await
            .unwrap()
            .messages;
        let expected: Vec<_> = appended
            .iter()
            .filter(|m| m.room == room)
            .cloned()
            .collect();
        assert_eq!(archived, expected, "room {room} archived completely, once");
    }
    archiver.abort();
}

#[tokio::test]
async fn a_full_backlog_refuses_publishes_instead_of_losing_them() {
    let server = RedisServer::start();
    let mut opts = options("full");
    // Each partition holds its share of the backlog: five for the room's.
    opts.archive_backlog_max = Some(5 * twine_store_redis::keys::PARTITIONS as u64);
    let store = RedisStore::connect(&server.url(), opts).await.unwrap();
    for _ in 0..5 {
        append(&store, "room", "{}").await;
    }
    let err = store.append(Publish::new("room", "{}")).await.unwrap_err();
    assert!(matches!(err, twine_store::StoreError::Full(_)), "{err}");
    let page = read_all(&store, "room").await;
    assert_eq!(page.messages.len(), 5, "the refused message was not stored");
}

#[tokio::test]
async fn unarchived_messages_outlive_the_redis_window() {
    let server = RedisServer::start();
    let mut opts = options("keep");
    opts.history_window = Duration::from_millis(200);
    opts.archive_backlog_max = Some(10_000);
    let store = RedisStore::connect(&server.url(), opts).await.unwrap();
    let first = append(&store, "room", "{}").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    append(&store, "room", "{}").await;
    let page = read_all(&store, "room").await;
    assert_eq!(
        page.messages.first(),
        Some(&first),
        "not archived yet, so not trimmed"
    );
}

#[tokio::test]
async fn retention_by_window_is_done_by_redis_and_reported() {
    let server = RedisServer::start();
    let mut opts = options("window");
    opts.history_window = Duration::from_millis(300);
    let store = RedisStore::connect(&server.url(), opts).await.unwrap();
    let first = append(&store, "room", "{}").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = append(&store, "room", "{}").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = append(&store, "room", "{}").await;
    let page = read_all(&store, "room").await;
    assert_eq!(
        page.messages,
        vec![second, third],
        "the first left the window"
    );
    assert!(page.truncated);
    let page = store
        .read_page("room", first.position, Position::MAX, PageLimit::count(10))
        .await
        .unwrap();
    assert!(!page.truncated, "nothing after the first was trimmed");
}

#[tokio::test]
async fn an_excess_kept_for_the_archive_is_trimmed_once_archived() {
    let server = RedisServer::start();
    let mut opts = options("excess");
    opts.max_per_room = 3;
    opts.archive_backlog_max = Some(10_000);
    let store = RedisStore::connect(&server.url(), opts).await.unwrap();
    let mut appended = Vec::new();
    for _ in 0..6 {
        appended.push(append(&store, "room", "{}").await);
    }
    let page = read_all(&store, "room").await;
    assert_eq!(
        page.messages, appended,
        "none archived yet, so none trimmed"
    );
    let archiver = store.spawn_archiver(Arc::new(MemoryArchive::default()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.backlog().await.unwrap() != Some(0) {
        assert!(std::time::Instant::now() < deadline, "backlog drains");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    archiver.abort();
    appended.push(append(&store, "room", "{}").await);
    let page = read_all(&store, "room").await;
    assert_eq!(
        page.messages,
        appended[4..].to_vec(),
        "the whole excess goes at once"
    );
    assert!(page.truncated);
}

#[tokio::test]
async fn cursors_written_before_the_listened_flag_are_read_and_advanced() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), options("cursor"))
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("HSET")
        .arg("cursor:s:sid")
        .arg("room")
        .arg("10:15")
        .query_async(&mut conn)
        .await
        .unwrap();
    let session = store.load("sid").await.unwrap().unwrap();
    assert_eq!(session.rooms["room"].resume_after(), Position(15));
    assert!(!session.rooms["room"].listened);
    let progress = twine_store::Progress {
        listened: true,
        ..twine_store::Progress::new("room", Position(20))
    };
    store.advance("sid", &[progress]).await.unwrap();
    store
        .advance("sid", &[twine_store::Progress::new("room", Position(30))])
        .await
        .unwrap();
    let stored: String = redis::cmd("HGET")
        .arg("cursor:s:sid")
        .arg("room")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, "10:30:1", "moved on, and still listened");
}

#[tokio::test]
async fn redis_presence_passes_the_presence_conformance_suite_across_two_nodes() {
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url(), options("unused"))
        .await
        .unwrap();
    let b = RedisStore::connect(&server.url(), options("unused"))
        .await
        .unwrap();
    let next = AtomicU32::new(0);
    twine_store::conformance::run_presence(|| {
        let prefix = format!("p{}", next.fetch_add(1, Ordering::SeqCst));
        let a: Arc<dyn twine_store::Presence> = Arc::new(a.with_prefix(prefix.clone()));
        let b: Arc<dyn twine_store::Presence> = Arc::new(b.with_prefix(prefix));
        (a, b)
    })
    .await;
}

#[tokio::test]
async fn redis_fleet_passes_the_fleet_conformance_suite_across_two_nodes() {
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url(), options("unused"))
        .await
        .unwrap();
    let b = RedisStore::connect(&server.url(), options("unused"))
        .await
        .unwrap();
    let next = AtomicU32::new(0);
    twine_store::conformance::run_fleet(|| {
        let prefix = format!("f{}", next.fetch_add(1, Ordering::SeqCst));
        let a: Arc<dyn twine_store::Fleet> = Arc::new(a.with_prefix(prefix.clone()));
        let b: Arc<dyn twine_store::Fleet> = Arc::new(b.with_prefix(prefix));
        (a, b)
    })
    .await;
}

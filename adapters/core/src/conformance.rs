//! The behaviour every store must show, as one suite each implementation runs against its own
//! backend (in memory here; a real server for the others), with a fresh store per check.

use std::sync::Arc;

use crate::{Archive, FeedEvent, History, Message, Position, SessionStore};

/// A fresh, empty pair of stores (for a shared backend: under a key prefix of its own).
pub trait StoreFactory: Fn() -> (Arc<dyn History>, Arc<dyn SessionStore>) {}
impl<F: Fn() -> (Arc<dyn History>, Arc<dyn SessionStore>)> StoreFactory for F {}

/// Runs every check, panicking on the first failure with a message naming it.
pub async fn run_all(factory: impl StoreFactory) {
    let (h, _) = factory();
    positions_are_unique_and_increasing_per_room(h).await;
    let (h, _) = factory();
    read_after_is_exclusive_bounded_and_ordered(h).await;
    let (h, _) = factory();
    a_limit_keeps_the_newest_and_says_so(h).await;
    let (h, _) = factory();
    rooms_are_independent(h).await;
    let (h, _) = factory();
    the_feed_carries_every_append_in_order(h).await;
    let (_, s) = factory();
    sessions_remember_rooms_and_acks(s).await;
    let (_, s) = factory();
    acks_never_move_back_and_ignore_unknown_rooms(s).await;
}

/// Appends in a tight loop land many in one millisecond: positions must still be distinct and
/// increasing, and readable in that order.
pub async fn positions_are_unique_and_increasing_per_room(h: Arc<dyn History>) {
    let mut appended = Vec::new();
    for i in 0..500 {
        appended.push(h.append("room", &format!("{{\"i\":{i}}}")).await.unwrap());
    }
    for pair in appended.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "positions must strictly increase: {} then {}",
            pair[0].position,
            pair[1].position
        );
    }
    let now = Position::now_ms();
    let first = appended[0].position.0;
    assert!(
        first.abs_diff(now) < 60_000,
        "positions are milliseconds since the epoch (got {first}, clock {now})"
    );
    let page = h
        .read_after("room", Position::ZERO, Position::MAX, 1000)
        .await
        .unwrap();
    assert_eq!(
        page.messages, appended,
        "read back exactly what was appended"
    );
    assert!(!page.truncated);
    assert_eq!(
        h.last_position("room").await.unwrap(),
        appended.last().unwrap().position
    );
}

pub async fn read_after_is_exclusive_bounded_and_ordered(h: Arc<dyn History>) {
    let mut appended = Vec::new();
    for i in 0..10 {
        appended.push(h.append("room", &format!("{{\"i\":{i}}}")).await.unwrap());
    }
    let page = h
        .read_after("room", appended[3].position, appended[7].position, 100)
        .await
        .unwrap();
    assert_eq!(page.messages, appended[4..=7].to_vec());
    assert!(!page.truncated);
    let page = h
        .read_after("room", appended[9].position, Position::MAX, 100)
        .await
        .unwrap();
    assert!(page.messages.is_empty(), "nothing after the newest");
    let page = h
        .read_after("absent", Position::ZERO, Position::MAX, 100)
        .await
        .unwrap();
    assert!(page.messages.is_empty() && !page.truncated);
    assert_eq!(h.last_position("absent").await.unwrap(), Position::ZERO);
}

pub async fn a_limit_keeps_the_newest_and_says_so(h: Arc<dyn History>) {
    let mut appended = Vec::new();
    for i in 0..20 {
        appended.push(h.append("room", &format!("{{\"i\":{i}}}")).await.unwrap());
    }
    let page = h
        .read_after("room", Position::ZERO, Position::MAX, 5)
        .await
        .unwrap();
    assert_eq!(page.messages, appended[15..].to_vec());
    assert!(page.truncated, "15 older messages were left out");
    let page = h
        .read_after("room", appended[14].position, Position::MAX, 5)
        .await
        .unwrap();
    assert_eq!(page.messages, appended[15..].to_vec());
    assert!(!page.truncated, "exactly the limit is not a truncation");
}

pub async fn rooms_are_independent(h: Arc<dyn History>) {
    let a = h.append("a", "{\"x\":1}").await.unwrap();
    let b = h.append("b", "{\"x\":2}").await.unwrap();
    let page = h
        .read_after("a", Position::ZERO, Position::MAX, 10)
        .await
        .unwrap();
    assert_eq!(page.messages, vec![a]);
    let page = h
        .read_after("b", Position::ZERO, Position::MAX, 10)
        .await
        .unwrap();
    assert_eq!(page.messages, vec![b.clone()]);
    assert_eq!(b.payload, "{\"x\":2}", "payload text is kept as given");
}

pub async fn the_feed_carries_every_append_in_order(h: Arc<dyn History>) {
    let mut feed = h.subscribe().await.unwrap();
    let mut appended = Vec::new();
    for i in 0..50 {
        let room = if i % 2 == 0 { "even" } else { "odd" };
        appended.push(h.append(room, &format!("{{\"i\":{i}}}")).await.unwrap());
    }
    for expected in appended {
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), feed.recv())
            .await
            .expect("the feed delivers within 5 s")
            .expect("the feed stays open");
        assert_eq!(got, FeedEvent::Message(expected));
    }
}

pub async fn sessions_remember_rooms_and_acks(s: Arc<dyn SessionStore>) {
    assert_eq!(s.load("nobody").await.unwrap(), None);
    s.join("sid", "a", Position(10)).await.unwrap();
    s.join("sid", "b", Position(20)).await.unwrap();
    s.advance("sid", &[("a".into(), Position(15))])
        .await
        .unwrap();
    s.join("sid", "a", Position(99)).await.unwrap();
    let session = s.load("sid").await.unwrap().expect("session exists");
    assert_eq!(session.rooms.len(), 2);
    assert_eq!(
        session.rooms["a"].joined_at,
        Position(10),
        "rejoin keeps the cursor"
    );
    assert_eq!(session.rooms["a"].resume_after(), Position(15));
    assert_eq!(session.rooms["b"].resume_after(), Position(20));
    s.leave("sid", "a").await.unwrap();
    let session = s.load("sid").await.unwrap().unwrap();
    assert!(!session.rooms.contains_key("a"));
    assert_eq!(s.load("other").await.unwrap(), None, "sessions are private");
}

pub async fn acks_never_move_back_and_ignore_unknown_rooms(s: Arc<dyn SessionStore>) {
    s.join("sid", "a", Position(10)).await.unwrap();
    s.advance("sid", &[("a".into(), Position(50))])
        .await
        .unwrap();
    s.advance(
        "sid",
        &[("a".into(), Position(40)), ("zz".into(), Position(7))],
    )
    .await
    .unwrap();
    let session = s.load("sid").await.unwrap().unwrap();
    assert_eq!(session.rooms["a"].acked, Position(50));
    assert!(!session.rooms.contains_key("zz"));
}

/// Runs every archive check against fresh archives from `factory`.
pub async fn run_archive(factory: impl Fn() -> Arc<dyn Archive>) {
    archives_read_back_in_order_across_pages(factory()).await;
    archive_writes_are_idempotent(factory()).await;
    archive_limits_keep_the_newest(factory()).await;
}

fn messages(room: &str, count: u64, payload_bytes: usize) -> Vec<Message> {
    let base = Position::now_ms();
    (0..count)
        .map(|i| Message {
            room: room.to_owned(),
            position: Position(base + i),
            payload: format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(payload_bytes)),
        })
        .collect()
}

/// Larger than one DynamoDB `Query` page (1 MB), so readers must follow the pages.
pub async fn archives_read_back_in_order_across_pages(a: Arc<dyn Archive>) {
    let written = messages("big", 1500, 1000);
    for chunk in written.chunks(100) {
        a.put(chunk).await.unwrap();
    }
    let page = a
        .read_after("big", Position::ZERO, Position::MAX, 5000)
        .await
        .unwrap();
    assert_eq!(
        page.messages.len(),
        written.len(),
        "every message across pages"
    );
    assert_eq!(page.messages, written);
    assert!(!page.truncated);
    assert_eq!(
        a.last_position("big").await.unwrap(),
        written[1499].position
    );
    assert_eq!(a.last_position("none").await.unwrap(), Position::ZERO);
}

pub async fn archive_writes_are_idempotent(a: Arc<dyn Archive>) {
    let written = messages("again", 10, 10);
    a.put(&written).await.unwrap();
    a.put(&written[3..7]).await.unwrap();
    let page = a
        .read_after("again", written[1].position, written[8].position, 100)
        .await
        .unwrap();
    assert_eq!(
        page.messages,
        written[2..=8].to_vec(),
        "no duplicates, bounds honoured"
    );
}

pub async fn archive_limits_keep_the_newest(a: Arc<dyn Archive>) {
    let written = messages("limited", 30, 10);
    a.put(&written).await.unwrap();
    let page = a
        .read_after("limited", Position::ZERO, Position::MAX, 7)
        .await
        .unwrap();
    assert_eq!(page.messages, written[23..].to_vec());
    assert!(page.truncated);
}

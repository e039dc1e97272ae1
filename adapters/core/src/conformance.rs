//! The behaviour every store must show, as one suite each implementation runs against its own
//! backend (in memory here; a real server for the others), with a fresh store per check.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::{
    Archive, Change, FeedEvent, Fleet, History, Joined, Member, Message, PageLimit, Position,
    Presence, Progress, Publish, ReplayStart, SessionStore, StoreError, Update,
};

/// Rooms per session the stores handed to [`run_all`] must be configured with.
pub const SESSION_ROOM_LIMIT: usize = 5;

/// A fresh, empty pair of stores (for a shared backend: under a key prefix of its own), allowing
/// [`SESSION_ROOM_LIMIT`] rooms per session.
pub trait StoreFactory: Fn() -> (Arc<dyn History>, Arc<dyn SessionStore>) {}
impl<F: Fn() -> (Arc<dyn History>, Arc<dyn SessionStore>)> StoreFactory for F {}

/// Runs every check, panicking on the first failure with a message naming it.
pub async fn run_all(factory: impl StoreFactory) {
    let (h, _) = factory();
    positions_are_unique_and_increasing_per_room(h).await;
    let (h, _) = factory();
    pages_are_exclusive_bounded_and_ordered(h).await;
    let (h, _) = factory();
    pages_stop_at_their_count_or_bytes(h).await;
    let (h, _) = factory();
    a_capped_replay_starts_at_the_newest_and_says_so(h).await;
    let (h, _) = factory();
    rooms_are_independent(h).await;
    let (h, _) = factory();
    the_feed_carries_every_append_in_order(h).await;
    let (h, _) = factory();
    a_full_feed_reports_the_room_instead_and_the_history_has_it(h).await;
    let (h, _) = factory();
    a_repeated_key_stores_nothing_and_answers_the_first_append(h).await;
    let (h, _) = factory();
    a_stored_key_is_found_by_its_identity_before_appending(h).await;
    let (h, _) = factory();
    an_append_past_its_deadline_is_not_stored(h).await;
    let (_, s) = factory();
    sessions_remember_rooms_and_acks(s).await;
    let (_, s) = factory();
    acks_never_move_back_and_ignore_unknown_rooms(s).await;
    let (_, s) = factory();
    a_session_holds_a_bounded_number_of_rooms(s).await;
}

async fn append(h: &dyn History, room: &str, payload: &str) -> Message {
    h.append(Publish::new(room, payload)).await.unwrap().message
}

async fn append_n(h: &dyn History, room: &str, n: usize) -> Vec<Message> {
    let mut appended = Vec::new();
    for i in 0..n {
        appended.push(append(h, room, &format!("{{\"i\":{i}}}")).await);
    }
    appended
}

/// Everything in `room` after `after`, read page by page.
async fn read_all(h: &dyn History, room: &str, after: Position, limit: PageLimit) -> Vec<Message> {
    let mut after = after;
    let mut read = Vec::new();
    loop {
        let page = h
            .read_page(room, after, Position::MAX, limit)
            .await
            .unwrap();
        assert!(!page.truncated, "nothing was dropped");
        let more = page.more;
        if let Some(last) = page.messages.last() {
            after = last.position;
        }
        read.extend(page.messages);
        if !more {
            return read;
        }
    }
}

/// Appends in a tight loop land many in one millisecond: positions must still be distinct and
/// increasing, and readable in that order.
pub async fn positions_are_unique_and_increasing_per_room(h: Arc<dyn History>) {
    let appended = append_n(&*h, "room", 500).await;
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
    let read = read_all(&*h, "room", Position::ZERO, PageLimit::count(64)).await;
    assert_eq!(read, appended, "read back exactly what was appended");
    assert_eq!(
        h.last_position("room").await.unwrap(),
        appended.last().unwrap().position
    );
}

pub async fn pages_are_exclusive_bounded_and_ordered(h: Arc<dyn History>) {
    let appended = append_n(&*h, "room", 10).await;
    let page = h
        .read_page(
            "room",
            appended[3].position,
            appended[7].position,
            PageLimit::count(100),
        )
        .await
        .unwrap();
    assert_eq!(page.messages, appended[4..=7].to_vec());
    assert!(!page.truncated && !page.more);
    let page = h
        .read_page(
            "room",
            appended[9].position,
            Position::MAX,
            PageLimit::count(100),
        )
        .await
        .unwrap();
    assert!(page.messages.is_empty(), "nothing after the newest");
    let page = h
        .read_page("absent", Position::ZERO, Position::MAX, PageLimit::count(9))
        .await
        .unwrap();
    assert!(page.messages.is_empty() && !page.truncated && !page.more);
    assert_eq!(h.last_position("absent").await.unwrap(), Position::ZERO);
}

pub async fn pages_stop_at_their_count_or_bytes(h: Arc<dyn History>) {
    let pad = "x".repeat(1000);
    let mut appended = Vec::new();
    for i in 0..20 {
        appended.push(append(&*h, "room", &format!("{{\"i\":{i},\"pad\":\"{pad}\"}}")).await);
    }
    let page = h
        .read_page("room", Position::ZERO, Position::MAX, PageLimit::count(5))
        .await
        .unwrap();
    assert_eq!(page.messages, appended[..5].to_vec(), "the oldest five");
    assert!(page.more);
    let limit = PageLimit {
        count: 100,
        bytes: 2500,
    };
    let page = h
        .read_page("room", appended[4].position, Position::MAX, limit)
        .await
        .unwrap();
    assert_eq!(
        page.messages,
        appended[5..8].to_vec(),
        "stops after the message that passes the bytes"
    );
    let limit = PageLimit {
        count: 100,
        bytes: 1,
    };
    let page = h
        .read_page("room", appended[18].position, Position::MAX, limit)
        .await
        .unwrap();
    assert_eq!(page.messages, appended[19..].to_vec(), "at least one");
    assert!(!page.more);
}

pub async fn a_capped_replay_starts_at_the_newest_and_says_so(h: Arc<dyn History>) {
    let appended = append_n(&*h, "room", 20).await;
    let start = h
        .replay_start("room", Position::ZERO, Position::MAX, 5)
        .await
        .unwrap();
    assert_eq!(
        start,
        ReplayStart {
            after: appended[14].position,
            truncated: true
        },
        "the newest five follow"
    );
    let start = h
        .replay_start("room", appended[14].position, Position::MAX, 5)
        .await
        .unwrap();
    assert_eq!(
        start,
        ReplayStart {
            after: appended[14].position,
            truncated: false
        },
        "exactly the cap is not a truncation"
    );
    let start = h
        .replay_start("room", Position::ZERO, appended[9].position, 5)
        .await
        .unwrap();
    assert_eq!(start.after, appended[4].position, "counted up to `until`");
}

pub async fn rooms_are_independent(h: Arc<dyn History>) {
    let a = append(&*h, "a", "{\"x\":1}").await;
    let b = append(&*h, "b", "{\"x\":2}").await;
    let all = PageLimit::count(10);
    let page = h
        .read_page("a", Position::ZERO, Position::MAX, all)
        .await
        .unwrap();
    assert_eq!(page.messages, vec![a]);
    let page = h
        .read_page("b", Position::ZERO, Position::MAX, all)
        .await
        .unwrap();
    assert_eq!(page.messages, vec![b.clone()]);
    assert_eq!(b.payload, "{\"x\":2}", "payload text is kept as given");
}

async fn next_event(feed: &mut crate::Feed) -> FeedEvent {
    let event = tokio::time::timeout(Duration::from_secs(5), feed.events.recv())
        .await
        .expect("the feed delivers within 5 s")
        .expect("the feed stays open");
    if let FeedEvent::Message { message, .. } = &event {
        feed.budget.release(message.size());
    }
    event
}

/// A feed of `rooms`, in place.
async fn feed_of(h: &dyn History, rooms: &[&str]) -> crate::Feed {
    let feed = h.feed(1 << 20).await.unwrap();
    for room in rooms {
        feed.rooms.listen(room).await.unwrap();
    }
    feed
}

/// The next message of `room` on the feed (stores that feed every room feed others too).
async fn next_of(feed: &mut crate::Feed, room: &str) -> Message {
    loop {
        match next_event(feed).await {
            FeedEvent::Message { message, .. } if message.room == room => return message,
            FeedEvent::Message { .. } => {}
            other => panic!("a message, not {other:?}"),
        }
    }
}

pub async fn the_feed_carries_every_append_in_order(h: Arc<dyn History>) {
    let mut feed = feed_of(&*h, &["even", "odd"]).await;
    let mut appended = Vec::new();
    for i in 0..50 {
        let room = if i % 2 == 0 { "even" } else { "odd" };
        appended.push(append(&*h, room, &format!("{{\"i\":{i}}}")).await);
    }
    // Order is promised within a room: rooms may come over different connections.
    let mut fed: std::collections::HashMap<String, Vec<FeedEvent>> = Default::default();
    for _ in 0..appended.len() {
        let event = next_event(&mut feed).await;
        let FeedEvent::Message { message, .. } = &event else {
            panic!("a message, not {event:?}");
        };
        fed.entry(message.room.clone()).or_default().push(event);
    }
    for room in ["even", "odd"] {
        let mut prev = Position::ZERO;
        let expected: Vec<FeedEvent> = appended
            .iter()
            .filter(|m| m.room == room)
            .map(|m| {
                let event = FeedEvent::Message {
                    message: m.clone(),
                    prev,
                };
                prev = m.position;
                event
            })
            .collect();
        assert_eq!(
            fed[room], expected,
            "{room}: in order, each naming the one before it"
        );
    }
}

pub async fn a_full_feed_reports_the_room_instead_and_the_history_has_it(h: Arc<dyn History>) {
    let first = append(&*h, "full", "{\"n\":0}").await;
    let feed = h.feed(first.size() * 2).await.unwrap();
    feed.rooms.listen("full").await.unwrap();
    let mut feed = feed;
    let mut appended = Vec::new();
    for n in 1..=5 {
        appended.push(append(&*h, "full", &format!("{{\"n\":{n}}}")).await);
    }
    let mut events = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), feed.events.recv()).await
    {
        events.push(event);
    }
    let messages: Vec<Message> = events
        .iter()
        .filter_map(|e| match e {
            FeedEvent::Message { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(messages, appended[..2], "what fits is fed, in order");
    assert_eq!(
        events.last(),
        Some(&FeedEvent::Gap("full".into())),
        "the rest is reported once, as the room's gap"
    );
    let read = read_all(&*h, "full", messages[1].position, PageLimit::count(10)).await;
    assert_eq!(read, appended[2..], "and the history has it");
}

pub async fn a_repeated_key_stores_nothing_and_answers_the_first_append(h: Arc<dyn History>) {
    let mut feed = feed_of(&*h, &["room"]).await;
    let first = h
        .append(Publish::new("room", "{\"n\":1}").with_key(Some("k-1")))
        .await
        .unwrap();
    assert!(!first.repeated);
    let again = h
        .append(Publish::new("room", "{\"n\":1}").with_key(Some("k-1")))
        .await
        .unwrap();
    assert!(again.repeated, "the retry is recognised");
    assert_eq!(
        again.message, first.message,
        "and answered with the original"
    );
    let other = h
        .append(Publish::new("room", "{\"n\":2}").with_key(Some("k-1")))
        .await;
    assert!(
        matches!(other, Err(StoreError::KeyReused)),
        "a key reused for another message is refused: {other:?}"
    );
    let elsewhere = h
        .append(Publish::new("another room", "{\"n\":1}").with_key(Some("k-1")))
        .await
        .unwrap();
    assert!(!elsewhere.repeated, "a key is its room's own");
    let next = append(&*h, "room", "{\"n\":3}").await;
    let read = read_all(&*h, "room", Position::ZERO, PageLimit::count(10)).await;
    assert_eq!(
        read,
        vec![first.message.clone(), next.clone()],
        "stored once"
    );
    assert_eq!(next_of(&mut feed, "room").await, first.message);
    assert_eq!(next_of(&mut feed, "room").await, next, "fed once");
}

pub async fn a_stored_key_is_found_by_its_identity_before_appending(h: Arc<dyn History>) {
    let sent = "{\"text\":\"hi\"}";
    let stamped = |n: u32| format!("{{\"text\":\"hi\",\"stamp\":{n}}}");
    let first_payload = stamped(1);
    let first = h
        .append(
            Publish::new("room", &first_payload)
                .with_key(Some("m-1"))
                .with_identity(Some(sent)),
        )
        .await
        .unwrap();
    let second_payload = stamped(2);
    let retry = Publish::new("room", &second_payload)
        .with_key(Some("m-1"))
        .with_identity(Some(sent));
    assert_eq!(
        h.repeat(&retry).await.unwrap(),
        Some(first.message.position),
        "a retry of the same identity is found, whatever its payload became"
    );
    let again = h.append(retry).await.unwrap();
    assert!(again.repeated, "and appending it stores nothing");
    assert_eq!(again.message.position, first.message.position);
    let other = Publish::new("room", sent)
        .with_key(Some("m-1"))
        .with_identity(Some("{\"text\":\"bye\"}"));
    assert!(matches!(h.repeat(&other).await, Err(StoreError::KeyReused)));
    let unknown = Publish::new("room", sent).with_key(Some("m-2"));
    assert_eq!(h.repeat(&unknown).await.unwrap(), None);
    assert_eq!(h.repeat(&Publish::new("room", sent)).await.unwrap(), None);
    let read = read_all(&*h, "room", Position::ZERO, PageLimit::count(10)).await;
    assert_eq!(read, vec![first.message], "stored once");
}

pub async fn an_append_past_its_deadline_is_not_stored(h: Arc<dyn History>) {
    let past = SystemTime::now() - Duration::from_secs(5);
    let late = h
        .append(Publish::new("room", "{}").with_deadline(Some(past)))
        .await;
    assert!(matches!(late, Err(StoreError::Expired(_))), "got {late:?}");
    let future = SystemTime::now() + Duration::from_secs(30);
    let timely = h
        .append(Publish::new("room", "{}").with_deadline(Some(future)))
        .await
        .unwrap();
    let read = read_all(&*h, "room", Position::ZERO, PageLimit::count(10)).await;
    assert_eq!(read, vec![timely.message], "only the timely one is stored");
}

pub async fn sessions_remember_rooms_and_acks(s: Arc<dyn SessionStore>) {
    assert_eq!(s.load("nobody").await.unwrap(), None);
    assert_eq!(
        s.join("sid", "a", Position(10)).await.unwrap(),
        Joined::Added
    );
    s.join("sid", "b", Position(20)).await.unwrap();
    s.advance("sid", &[Progress::new("a", Position(15))])
        .await
        .unwrap();
    assert_eq!(
        s.join("sid", "a", Position(99)).await.unwrap(),
        Joined::Already
    );
    let session = s.load("sid").await.unwrap().expect("session exists");
    assert_eq!(session.rooms.len(), 2);
    assert_eq!(
        session.rooms["a"].joined_at,
        Position(10),
        "rejoin keeps the cursor"
    );
    assert_eq!(session.rooms["a"].resume_after(), Position(15));
    assert_eq!(session.rooms["b"].resume_after(), Position(20));
    assert!(!session.rooms["a"].listened);
    s.leave("sid", "a").await.unwrap();
    let session = s.load("sid").await.unwrap().unwrap();
    assert!(!session.rooms.contains_key("a"));
    assert_eq!(s.load("other").await.unwrap(), None, "sessions are private");
}

pub async fn acks_never_move_back_and_ignore_unknown_rooms(s: Arc<dyn SessionStore>) {
    s.join("sid", "a", Position(10)).await.unwrap();
    let listened = Progress {
        listened: true,
        ..Progress::new("a", Position(50))
    };
    s.advance("sid", &[listened]).await.unwrap();
    s.advance(
        "sid",
        &[
            Progress::new("a", Position(40)),
            Progress::new("zz", Position(7)),
        ],
    )
    .await
    .unwrap();
    let session = s.load("sid").await.unwrap().unwrap();
    assert_eq!(session.rooms["a"].acked, Position(50));
    assert!(session.rooms["a"].listened, "listened stays once set");
    assert!(!session.rooms.contains_key("zz"));
}

pub async fn a_session_holds_a_bounded_number_of_rooms(s: Arc<dyn SessionStore>) {
    for i in 0..SESSION_ROOM_LIMIT {
        let joined = s.join("sid", &format!("r{i}"), Position(1)).await.unwrap();
        assert_eq!(joined, Joined::Added);
    }
    assert_eq!(
        s.join("sid", "one-too-many", Position(1)).await.unwrap(),
        Joined::Full
    );
    assert_eq!(
        s.join("sid", "r0", Position(1)).await.unwrap(),
        Joined::Already,
        "rooms it holds can still be joined again"
    );
    s.leave("sid", "r0").await.unwrap();
    assert_eq!(
        s.join("sid", "now-there-is-room", Position(1))
            .await
            .unwrap(),
        Joined::Added
    );
    let session = s.load("sid").await.unwrap().unwrap();
    assert_eq!(session.rooms.len(), SESSION_ROOM_LIMIT);
}

/// Runs every archive check against fresh archives from `factory`.
pub async fn run_archive(factory: impl Fn() -> Arc<dyn Archive>) {
    archives_read_back_in_order_across_pages(factory()).await;
    archive_writes_are_idempotent(factory()).await;
    archive_replays_start_at_the_newest(factory()).await;
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
    let mut read = Vec::new();
    let mut after = Position::ZERO;
    loop {
        let page = a
            .read_page("big", after, Position::MAX, PageLimit::count(1200))
            .await
            .unwrap();
        let Some(last) = page.messages.last() else {
            break;
        };
        after = last.position;
        read.extend(page.messages);
    }
    assert_eq!(read.len(), written.len(), "every message across pages");
    assert_eq!(read, written);
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
        .read_page(
            "again",
            written[1].position,
            written[8].position,
            PageLimit::count(100),
        )
        .await
        .unwrap();
    assert_eq!(
        page.messages,
        written[2..=8].to_vec(),
        "no duplicates, bounds honoured"
    );
    assert!(!page.more);
}

pub async fn archive_replays_start_at_the_newest(a: Arc<dyn Archive>) {
    let written = messages("limited", 30, 10);
    a.put(&written).await.unwrap();
    let start = a
        .replay_start("limited", Position::ZERO, Position::MAX, 7)
        .await
        .unwrap();
    assert_eq!(
        start,
        ReplayStart {
            after: written[22].position,
            truncated: true
        }
    );
    let start = a
        .replay_start("limited", written[22].position, Position::MAX, 7)
        .await
        .unwrap();
    assert!(!start.truncated);
    let page = a
        .read_page("limited", start.after, Position::MAX, PageLimit::count(3))
        .await
        .unwrap();
    assert_eq!(page.messages, written[23..26].to_vec());
    assert!(page.more);
}

/// Runs every presence check against fresh stores from `factory`: two handles on one shared
/// presence (two nodes; the same handle twice for a one-node store).
pub async fn run_presence(factory: impl Fn() -> (Arc<dyn Presence>, Arc<dyn Presence>)) {
    let (a, b) = factory();
    presence_changes_reach_every_node(a, b).await;
    let (a, b) = factory();
    members_without_a_heartbeat_expire_once(a, b).await;
    let (a, _) = factory();
    a_room_holds_a_bounded_number_of_members(a).await;
}

fn member(id: &str, name: &str) -> Member {
    Member {
        id: id.into(),
        info: format!("{{\"id\":\"{id}\",\"data\":{{\"name\":\"{name}\"}}}}"),
    }
}

fn enter(id: &str, name: &str) -> Update {
    Update::Enter(member(id, name))
}

/// The next batch of changes fed, as (room, [(change, member id, member info)]).
async fn next_batch(feed: &mut crate::PresenceFeed) -> (String, Vec<(Change, String, String)>) {
    let event = tokio::time::timeout(Duration::from_secs(5), feed.events.recv())
        .await
        .expect("a presence change within 5 s")
        .expect("the presence feed is open");
    let changes = event
        .changes
        .into_iter()
        .map(|(change, m)| (change, m.id, m.info))
        .collect();
    (event.room, changes)
}

async fn nothing_fed(feed: &mut crate::PresenceFeed, why: &str) {
    let next = tokio::time::timeout(Duration::from_millis(300), feed.events.recv()).await;
    assert!(next.is_err(), "{why}: {next:?}");
}

/// A presence feed of `rooms`, in place.
async fn presence_feed_of(p: &dyn Presence, rooms: &[&str]) -> crate::PresenceFeed {
    let feed = p.subscribe().await.unwrap();
    for room in rooms {
        feed.rooms.listen(room).await.unwrap();
    }
    feed
}

pub async fn presence_changes_reach_every_node(a: Arc<dyn Presence>, b: Arc<dyn Presence>) {
    let mut feed = presence_feed_of(&*b, &["r", "other"]).await;
    let ttl = Duration::from_secs(60);
    let refused = a.apply("r", &[enter("m1", "ann")], ttl, 10).await.unwrap();
    assert!(refused.is_empty());
    a.apply("r", &[enter("m1", "anne"), enter("m2", "bob")], ttl, 10)
        .await
        .unwrap();
    b.apply("other", &[enter("m3", "cy")], ttl, 10)
        .await
        .unwrap();
    assert_eq!(
        next_batch(&mut feed).await,
        (
            "r".into(),
            vec![(Change::Enter, "m1".into(), member("m1", "ann").info)]
        )
    );
    assert_eq!(
        next_batch(&mut feed).await,
        (
            "r".into(),
            vec![
                (Change::Update, "m1".into(), member("m1", "anne").info),
                (Change::Enter, "m2".into(), member("m2", "bob").info),
            ]
        ),
        "one batch is fed as one event, in order; entering again is an update"
    );
    assert_eq!(next_batch(&mut feed).await.0, "other");
    let mut members = b.members("r").await.unwrap();
    members.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(members, [member("m1", "anne"), member("m2", "bob")]);
    a.apply("r", &[Update::Leave("m2".into())], ttl, 10)
        .await
        .unwrap();
    assert_eq!(
        next_batch(&mut feed).await,
        (
            "r".into(),
            vec![(Change::Leave, "m2".into(), member("m2", "bob").info)]
        ),
        "any node may take a member out; the leave tells what it had"
    );
    a.apply("r", &[Update::Leave("m2".into())], ttl, 10)
        .await
        .unwrap();
    nothing_fed(&mut feed, "leaving twice changes nothing").await;
    assert_eq!(a.members("r").await.unwrap(), [member("m1", "anne")]);
    assert!(a.members("nobody-here").await.unwrap().is_empty());
}

pub async fn members_without_a_heartbeat_expire_once(a: Arc<dyn Presence>, b: Arc<dyn Presence>) {
    let short = Duration::from_millis(300);
    a.apply("r", &[enter("kept", "k"), enter("dies", "d")], short, 10)
        .await
        .unwrap();
    let mut feed = presence_feed_of(&*b, &["r"]).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    a.refresh(&[("r", "kept")], Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<String> = a
        .members("r")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["kept"], "an expired member is not listed");
    // Both nodes sweep; the member leaves once.
    a.expire().await.unwrap();
    b.expire().await.unwrap();
    assert_eq!(
        next_batch(&mut feed).await,
        (
            "r".into(),
            vec![(Change::Leave, "dies".into(), member("dies", "d").info)]
        )
    );
    nothing_fed(&mut feed, "an expired member leaves once").await;
    a.refresh(&[("r", "dies")], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        a.members("r").await.unwrap().len(),
        1,
        "a refresh does not bring one back"
    );
}

pub async fn a_room_holds_a_bounded_number_of_members(p: Arc<dyn Presence>) {
    let ttl = Duration::from_secs(60);
    let mut feed = presence_feed_of(&*p, &["r"]).await;
    let refused = p
        .apply(
            "r",
            &[enter("1", "a"), enter("2", "b"), enter("3", "c")],
            ttl,
            2,
        )
        .await
        .unwrap();
    assert_eq!(refused, ["3"], "the newcomer over the bound is refused");
    let (_, changes) = next_batch(&mut feed).await;
    assert_eq!(changes.len(), 2, "and not announced");
    let refused = p.apply("r", &[enter("2", "bb")], ttl, 2).await.unwrap();
    assert!(refused.is_empty(), "a member already in may still update");
    let refused = p
        .apply("r", &[Update::Leave("1".into()), enter("3", "c")], ttl, 2)
        .await
        .unwrap();
    assert!(refused.is_empty(), "a place freed in the batch is taken");
    assert_eq!(p.members("r").await.unwrap().len(), 2);
}

/// Runs every fleet check against fresh fleets from `factory`: two handles on one shared fleet
/// (two nodes).
pub async fn run_fleet(factory: impl Fn() -> (Arc<dyn Fleet>, Arc<dyn Fleet>)) {
    let (a, b) = factory();
    every_node_sees_every_announced_node(a, b).await;
    let (a, b) = factory();
    a_node_drops_out_when_it_stops_announcing_or_leaves(a, b).await;
}

fn nodes(announced: &[crate::Announced]) -> Vec<(String, String)> {
    let mut nodes: Vec<_> = announced
        .iter()
        .map(|a| (a.node.clone(), a.info.clone()))
        .collect();
    nodes.sort();
    nodes
}

pub async fn every_node_sees_every_announced_node(a: Arc<dyn Fleet>, b: Arc<dyn Fleet>) {
    let ttl = Duration::from_secs(60);
    let first = a.announce("node-a", "{\"s\":1}", ttl).await.unwrap();
    assert_eq!(nodes(&first), [("node-a".into(), "{\"s\":1}".into())]);
    let seen = b.announce("node-b", "{\"s\":2}", ttl).await.unwrap();
    assert_eq!(
        nodes(&seen),
        [
            ("node-a".into(), "{\"s\":1}".into()),
            ("node-b".into(), "{\"s\":2}".into())
        ]
    );
    let again = a.announce("node-a", "{\"s\":3}", ttl).await.unwrap();
    assert_eq!(
        nodes(&again),
        [
            ("node-a".into(), "{\"s\":3}".into()),
            ("node-b".into(), "{\"s\":2}".into())
        ],
        "the newest announcement replaces the last"
    );
}

pub async fn a_node_drops_out_when_it_stops_announcing_or_leaves(
    a: Arc<dyn Fleet>,
    b: Arc<dyn Fleet>,
) {
    let long = Duration::from_secs(60);
    a.announce("node-a", "a", Duration::from_millis(300))
        .await
        .unwrap();
    b.announce("node-c", "c", long).await.unwrap();
    let both = b.announce("node-b", "b", long).await.unwrap();
    assert_eq!(both.len(), 3);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = b.announce("node-b", "b", long).await.unwrap();
    assert_eq!(
        nodes(&later),
        [("node-b".into(), "b".into()), ("node-c".into(), "c".into())],
        "node-a stopped announcing and ran out"
    );
    a.leave("node-c").await.unwrap();
    let left = b.announce("node-b", "b", long).await.unwrap();
    assert_eq!(nodes(&left), [("node-b".into(), "b".into())]);
}

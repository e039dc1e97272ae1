//! The protocol in-process: connections over the in-memory [`FakeTransport`], against a node on
//! the in-memory store, driven event by event. Recovery's hold / replay / release, its catch-up
//! from the store, a client over its send queue, a drop during a replay, and the connection's
//! events, each checked as a client sees them: which events, in which order, with which data.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Request, header};
use twine_store::{Position, Publish};

use super::connection::Connection;
use super::*;
use crate::auth::ApiKey;
use crate::config::Config;
use crate::state::AppState;
use crate::stores::Stores;
use crate::transport::Transport;
use crate::transport::fake::FakeTransport;

/// A node on the in-memory store, configured by `args`.
async fn node(args: &[&str]) -> Arc<AppState> {
    node_with(args, |_| {}).await
}

/// A node on the in-memory store whose stores `change` replaces before it starts.
async fn node_with(args: &[&str], change: impl FnOnce(&mut Stores)) -> Arc<AppState> {
    let args = std::iter::once("twine").chain(args.iter().copied());
    let config = Config::from_sources(args, Vec::new()).expect("a valid configuration");
    let mut stores = Stores::from_config(&config).await.expect("memory stores");
    change(&mut stores);
    let (key, _) = ApiKey::configured_or_generated(Some("test-key"));
    AppState::start(config, key, stores).await.expect("started")
}

/// A session store that stops answering while paused, as a paused Redis does (each call fails
/// as the Redis store's timeout does), and answers again once resumed.
struct PausingSessions {
    inner: Arc<dyn twine_store::SessionStore>,
    paused: std::sync::atomic::AtomicBool,
    calls_while_paused: std::sync::atomic::AtomicUsize,
}

impl PausingSessions {
    fn wrap(stores: &mut Stores) -> Arc<PausingSessions> {
        let pausing = Arc::new(PausingSessions {
            inner: stores.sessions.clone(),
            paused: Default::default(),
            calls_while_paused: Default::default(),
        });
        stores.sessions = pausing.clone();
        pausing
    }

    fn pause(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::Release);
    }

    async fn answer(&self) -> Result<(), twine_store::StoreError> {
        if self.paused.load(std::sync::atomic::Ordering::Acquire) {
            self.calls_while_paused
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(twine_store::StoreError::Unavailable("paused".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl twine_store::SessionStore for PausingSessions {
    async fn load(
        &self,
        id: &str,
    ) -> Result<Option<twine_store::Session>, twine_store::StoreError> {
        self.answer().await?;
        self.inner.load(id).await
    }
    async fn join(
        &self,
        id: &str,
        room: &str,
        at: Position,
    ) -> Result<twine_store::Joined, twine_store::StoreError> {
        self.answer().await?;
        self.inner.join(id, room, at).await
    }
    async fn leave(&self, id: &str, room: &str) -> Result<(), twine_store::StoreError> {
        self.answer().await?;
        self.inner.leave(id, room).await
    }
    async fn advance(
        &self,
        id: &str,
        progress: &[twine_store::Progress],
    ) -> Result<(), twine_store::StoreError> {
        self.answer().await?;
        self.inner.advance(id, progress).await
    }
}

/// A backend on a free port for the hooks' in-process tests: every hook path answers `answer`
/// after `delay`, and its calls are counted. Returns its base URL (`<url>/publish`, ...).
async fn backend(
    delay: Duration,
    answer: serde_json::Value,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::routing::post;
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/{hook}",
        post(move || {
            let counted = counted.clone();
            let answer = answer.clone();
            async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                tokio::time::sleep(delay).await;
                axum::Json(answer)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

/// A backend whose publish hook allows every publish after `delay`: its publish hook's URL.
async fn slow_backend(delay: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let (url, calls) = backend(delay, serde_json::json!({"allow": true})).await;
    (format!("{url}/publish"), calls)
}

/// Publishes `{"n": n}` to `room`, as `POST /api/twine` does.
async fn publish(app: &AppState, room: &str, n: u64) -> Position {
    let payload = format!("{{\"n\":{n}}}");
    let appended = app.history.append(Publish::new(room, &payload)).await;
    appended.expect("stored").message.position
}

/// Session `session` subscribes to `room` and goes away; `1..=n` are published to the room
/// meanwhile.
async fn away_with_backlog(app: &Arc<AppState>, session: &str, room: &str, n: u64) {
    let first = Client::connect(app, session, FakeTransport::new());
    first.subscribe(room).await;
    first.drop_connection().await;
    for n in 1..=n {
        publish(app, room, n).await;
    }
}

/// Publishes a marker (`{"marker": k}`, no `n`) to `room`; returns `k`.
async fn publish_marker(app: &AppState, room: &str) -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let payload = format!("{{\"marker\":{k}}}");
    app.history
        .append(Publish::new(room, &payload))
        .await
        .expect("stored");
    k
}

/// Whether a message carrying marker `k` is among what `transport` was handed.
fn has_marker(transport: &FakeTransport, k: u64) -> bool {
    transport
        .of("message")
        .iter()
        .any(|m| m["marker"].as_u64() == Some(k))
}

/// One client: its transport as the test sees it, its connection, and the node it is on.
struct Client {
    transport: Arc<FakeTransport>,
    connection: Arc<Connection>,
    app: Arc<AppState>,
}

impl Client {
    /// Connects with the `twineid` cookie `session`, its transport `transport`.
    fn connect(app: &Arc<AppState>, session: &str, transport: Arc<FakeTransport>) -> Client {
        let grant = app.tokens.admit(None).expect("no tokens required");
        Client::connect_with(app, session, transport, grant, None)
    }

    /// As [`Client::connect`], with what its token granted and its replay's start.
    fn connect_with(
        app: &Arc<AppState>,
        session: &str,
        transport: Arc<FakeTransport>,
        grant: crate::auth::Grant,
        replay_not_before: Option<tokio::time::Instant>,
    ) -> Client {
        let mut headers = HeaderMap::new();
        let cookie = format!("twineid={session}");
        headers.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        let session = SessionHandle::for_request(&headers, app.sessions.clone());
        let connection = Connection::open(
            app,
            transport.clone(),
            session,
            replay_not_before,
            grant,
            None,
            Vec::new(),
        );
        connection.connected();
        Client {
            transport,
            connection,
            app: app.clone(),
        }
    }

    fn send(&self, event: &str, arg: serde_json::Value) {
        self.connection
            .on_event(&serde_json::json!([event, arg]).to_string(), None);
    }

    /// Sends `event` asking for an acknowledgement, and waits for it.
    async fn ask(&self, event: &str, arg: serde_json::Value) -> serde_json::Value {
        let acks = self.transport.of("ack").len();
        let event = serde_json::json!([event, arg]).to_string();
        self.connection
            .on_event(&event, Some(self.transport.reply()));
        eventually(|| self.transport.of("ack").len() > acks).await;
        self.transport.of("ack")[acks].clone()
    }

    /// Subscribes and waits for `roomJoined`.
    async fn subscribe(&self, room: &str) {
        let joined = self.transport.of("roomJoined").len();
        self.send("subscribe", room.into());
        eventually(|| self.transport.of("roomJoined").len() > joined).await;
    }

    /// Acknowledges everything received so far, as a stock client does.
    fn acknowledge(&self) {
        let messages = self.transport.of("message");
        let last = messages.last().expect("something to acknowledge");
        self.send("updateSessionTS", last["timestamp"].clone());
    }

    /// Waits until the client has received the messages numbered `n`.
    async fn receives(&self, n: impl IntoIterator<Item = u64>) {
        let want: Vec<u64> = n.into_iter().collect();
        let received = || self.transport.numbers();
        if tokio::time::timeout(Duration::from_secs(5), async {
            while received().len() < want.len() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .is_err()
        {
            panic!("received {:?}, want {want:?}", received());
        }
        // Nothing more arrives either: a marker published after them to each of the client's
        // rooms has arrived (a room's messages arrive in order), so anything else would have too.
        self.nothing_more_on_its_way().await;
        assert_eq!(received(), want);
    }

    /// The rooms the client is in, as its `roomJoined` and `roomLeft` events tell.
    fn rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = Vec::new();
        for e in self.transport.emitted() {
            let text = e.data.as_str().unwrap_or("");
            if let Some(room) = text.strip_prefix("You have joined room: ") {
                rooms.retain(|r| r != room);
                rooms.push(room.to_owned());
            } else if let Some(room) = text.strip_prefix("You have left room: ") {
                rooms.retain(|r| r != room);
            }
        }
        rooms
    }

    /// Returns once a marker published to each of the client's rooms has reached it: whatever
    /// was published to them before has been delivered by then.
    async fn nothing_more_on_its_way(&self) {
        assert!(
            !self.transport.is_cut(),
            "a cut client gets no marker: show nothing reached it through another member"
        );
        let mut markers = Vec::new();
        for room in self.rooms() {
            markers.push(publish_marker(&self.app, &room).await);
        }
        let transport = self.transport.clone();
        eventually(|| markers.iter().all(|&k| has_marker(&transport, k))).await;
    }

    /// Drops the connection, as a transport closing does, and waits until it has ended.
    async fn drop_connection(&self) {
        self.transport.cut();
        self.connection.end();
        eventually(|| self.transport.was_released()).await;
    }
}

/// The `roomJoined` event's data, as the contract words it.
fn joined(room: &str) -> serde_json::Value {
    format!("You have joined room: {room}").into()
}

async fn eventually(mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the condition holds within 5 s");
}

#[tokio::test]
async fn subscribe_delivers_live_and_unsubscribe_stops_it() {
    let app = node(&[]).await;
    let client = Client::connect(&app, "s1", FakeTransport::new());
    client.subscribe("news").await;
    assert_eq!(client.transport.of("roomJoined"), [joined("news")]);
    let position = publish(&app, "news", 1).await;
    client.receives([1]).await;
    let message = &client.transport.of("message")[0];
    assert_eq!(message["room"], "news");
    assert_eq!(message["timestamp"], position.0);
    client.send("unsubscribe", "news".into());
    eventually(|| client.transport.of("roomLeft") == ["You have left room: news"]).await;
    publish(&app, "news", 2).await;
    client.receives([1]).await;
}

#[tokio::test]
async fn a_returning_session_gets_every_missed_message_in_publish_order_then_live() {
    let app = node(&[]).await;
    let first = Client::connect(&app, "s1", FakeTransport::new());
    first.subscribe("a").await;
    first.subscribe("b").await;
    publish(&app, "a", 1).await;
    first.receives([1]).await;
    first.acknowledge();
    first.drop_connection().await;

    for n in 2..=11 {
        publish(&app, if n % 3 == 0 { "b" } else { "a" }, n).await;
        // Positions are per room, in milliseconds: publishes to two rooms within one may be
        // merged in either order.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let again = Client::connect(&app, "s1", FakeTransport::new());
    let mut rooms = again.transport.of("roomJoined");
    eventually(|| {
        rooms = again.transport.of("roomJoined");
        rooms.len() == 2
    })
    .await;
    rooms.sort_by_key(|room| room.to_string());
    assert_eq!(rooms, [joined("a"), joined("b")]);
    again.receives(2..=11).await;
    publish(&app, "b", 12).await;
    again.receives(2..=12).await;
    // The rooms came back before any message.
    let events: Vec<String> = again
        .transport
        .emitted()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(&events[..2], ["roomJoined", "roomJoined"]);
}

#[tokio::test]
async fn messages_published_during_a_replay_follow_it_exactly() {
    // A small send queue: the replay waits on the client, and the hold overflows into the
    // store's catch-up while it waits.
    let app = node(&["--max-payload", "2048", "--send-queue", "4096"]).await;
    away_with_backlog(&app, "s1", "room", 100).await;

    let slow = FakeTransport::held();
    let again = Client::connect(&app, "s1", slow.clone());
    // The replay has filled what the client does not read and waits for it to drain: nothing
    // more is sent until it does.
    eventually(|| slow.waited_on()).await;
    assert!(
        slow.numbers().len() < 100,
        "the replay waits for a client that does not read"
    );
    for n in 101..=400 {
        publish(&app, "room", n).await;
    }
    slow.write();
    again.receives(1..=400).await;
    assert!(!slow.is_cut());
}

#[tokio::test]
async fn a_live_client_over_its_send_queue_is_cut_and_recovers_what_it_missed() {
    let app = node(&["--max-payload", "2048", "--send-queue", "4096"]).await;
    let stuck = FakeTransport::new();
    let client = Client::connect(&app, "s1", stuck.clone());
    client.subscribe("room").await;
    publish(&app, "room", 1).await;
    client.receives([1]).await;
    client.acknowledge();
    stuck.hold();
    for n in 2..=200 {
        publish(&app, "room", n).await;
    }
    eventually(|| stuck.is_cut()).await;
    client.connection.end();
    eventually(|| stuck.was_released()).await;

    let again = Client::connect(&app, "s1", FakeTransport::new());
    again.receives(2..=200).await;
}

#[tokio::test]
async fn a_drop_during_a_replay_loses_nothing_on_the_next_connection() {
    let app = node(&["--max-payload", "2048", "--send-queue", "4096"]).await;
    away_with_backlog(&app, "s1", "room", 150).await;
    let slow = FakeTransport::held();
    let dropped = Client::connect(&app, "s1", slow.clone());
    eventually(|| slow.numbers().len() >= 10).await;
    let tenth = slow.of("message")[9]["timestamp"].clone();
    dropped.send("updateSessionTS", tenth);
    dropped.drop_connection().await;
    for n in 151..=160 {
        publish(&app, "room", n).await;
    }
    // Ten were acknowledged: the next connection gets the rest, once.
    let again = Client::connect(&app, "s1", FakeTransport::new());
    again.receives(11..=160).await;
}

#[tokio::test]
async fn a_bad_room_or_a_flood_is_answered_with_an_error_event() {
    let app = node(&["--event-rate", "10", "--event-burst", "10"]).await;
    let client = Client::connect(&app, "s1", FakeTransport::new());
    client.send("subscribe", "bad\u{7}room".into());
    client.send("subscribe", serde_json::json!(42));
    eventually(|| client.transport.of("error").len() == 2).await;
    let errors = client.transport.of("error");
    assert!(errors.iter().all(|e| e["event"] == "subscribe"));
    assert!(client.transport.of("roomJoined").is_empty());

    for _ in 0..100 {
        client.send("unsubscribe", "nowhere".into());
    }
    eventually(|| {
        client
            .transport
            .of("error")
            .iter()
            .any(|e| e["message"].as_str().unwrap_or("").contains("faster"))
    })
    .await;
    // Refused events leave the session as it was.
    let session = app.sessions.load("s1").await.unwrap();
    assert!(session.is_none_or(|s| s.rooms.is_empty()));
}

#[tokio::test]
async fn an_ended_connection_handles_nothing_and_lets_go_of_its_transport() {
    let app = node(&[]).await;
    let client = Client::connect(&app, "s1", FakeTransport::new());
    client.subscribe("news").await;
    client.drop_connection().await;
    let witness = Client::connect(&app, "s2", FakeTransport::new());
    witness.subscribe("news").await;
    client.send("subscribe", "other".into());
    publish(&app, "news", 1).await;
    // The room's delivery of 1 is over once a later message reached another member.
    witness.receives([1]).await;
    assert_eq!(client.transport.of("roomJoined"), [joined("news")]);
    assert!(client.transport.numbers().is_empty());
    witness.drop_connection().await;
    assert_eq!(app.metrics.connections.get(), 0);
}

#[tokio::test]
async fn a_client_publishes_where_its_token_allows_once_per_id() {
    let app = node(&["--auth", "optional", "--client-publish", "token"]).await;
    let (token, _) = app.tokens.mint(None, None, Some(vec!["chat".into()]), None);
    let auth = serde_json::json!({ "token": token }).to_string();
    let grant = app.tokens.admit(Some(&auth)).unwrap();
    let client = Client::connect_with(&app, "s1", FakeTransport::new(), grant, None);
    client.subscribe("chat").await;

    let message = serde_json::json!({"room_id": "chat", "payload": {"n": 1}, "id": "m-1"});
    let first = client.ask("publish", message.clone()).await;
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["repeated"], false);
    let again = client.ask("publish", message).await;
    assert_eq!(again["repeated"], true);
    assert_eq!(again["timestamp"], first["timestamp"]);
    client.receives([1]).await;

    let elsewhere = serde_json::json!({"room_id": "news", "payload": {"n": 2}});
    let refused = client.ask("publish", elsewhere).await;
    assert_eq!(refused["ok"], false);
    assert!(refused["reason"].as_str().unwrap().contains("news"));
    // Without an acknowledgement, a refusal is an `error` event.
    client.send(
        "publish",
        serde_json::json!({"room_id": "chat", "payload": "text"}),
    );
    eventually(|| {
        client
            .transport
            .of("error")
            .iter()
            .any(|e| e["event"] == "publish")
    })
    .await;
    let page = app
        .history
        .read_page(
            "news",
            Position::ZERO,
            Position::MAX,
            twine_store::PageLimit::count(10),
        )
        .await
        .unwrap();
    assert!(page.messages.is_empty(), "nothing refused was stored");
}

#[tokio::test]
async fn client_publishing_is_off_unless_configured() {
    let app = node(&[]).await;
    let client = Client::connect(&app, "s1", FakeTransport::new());
    let answer = client
        .ask(
            "publish",
            serde_json::json!({"room_id": "chat", "payload": {}}),
        )
        .await;
    assert_eq!(answer["ok"], false);
    assert!(answer["reason"].as_str().unwrap().contains("off"));
}

#[tokio::test(start_paused = true)]
async fn a_pages_replay_waits_for_its_grace() {
    let app = node(&["--replay-grace", "300ms"]).await;
    let first = Client::connect(&app, "s1", FakeTransport::new());
    first.subscribe("news").await;
    first.drop_connection().await;
    publish(&app, "news", 1).await;

    let page = parts(&[("origin", "https://app.example")]);
    let not_before = replay_not_before(&page, app.config.replay_grace);
    let grant = app.tokens.admit(None).unwrap();
    let client = Client::connect_with(&app, "s1", FakeTransport::new(), grant, not_before);
    let transport = &client.transport;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(transport.of("roomJoined"), [joined("news")]);
    assert!(transport.numbers().is_empty(), "not before the grace");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(transport.numbers(), [1]);
}

fn parts(headers: &[(&str, &str)]) -> Parts {
    let mut request = Request::get("/socket.io/?EIO=4&transport=websocket");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (mut parts, ()) = request.body(()).unwrap().into_parts();
    parts.extensions.insert(Received(std::time::Instant::now()));
    parts
}

#[test]
fn pages_get_the_grace_and_programs_do_not() {
    let grace = Duration::from_millis(250);
    assert!(replay_not_before(&parts(&[("origin", "https://app.example")]), grace).is_some());
    let browser = [("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/156")];
    assert!(replay_not_before(&parts(&browser), grace).is_some());
    assert!(replay_not_before(&parts(&[("user-agent", "python-requests/2.32")]), grace).is_none());
    assert!(replay_not_before(&parts(&[]), grace).is_none());
    let page = [("origin", "https://app.example")];
    assert!(replay_not_before(&parts(&page), Duration::ZERO).is_none());
    assert!(is_websocket_handshake(&parts(&[])));
}

#[tokio::test]
async fn a_session_the_store_cannot_load_is_loaded_when_it_answers_again_with_nothing_lost() {
    let mut pausing = None;
    let app = node_with(&[], |stores| pausing = Some(PausingSessions::wrap(stores))).await;
    let sessions = pausing.unwrap();
    let first = Client::connect(&app, "s1", FakeTransport::new());
    first.subscribe("news").await;
    first.drop_connection().await;
    publish(&app, "news", 1).await;

    // The client comes back while the store pauses: it stays connected, and what it asks for
    // waits instead of failing.
    sessions.pause(true);
    let again = Client::connect(&app, "s1", FakeTransport::new());
    again.send("subscribe", "sports".into());
    eventually(|| {
        sessions
            .calls_while_paused
            .load(std::sync::atomic::Ordering::Acquire)
            >= 3
    })
    .await;
    assert!(
        again.transport.of("error").is_empty(),
        "no error the library cannot show"
    );
    assert!(!again.transport.is_cut());
    publish(&app, "news", 2).await;
    publish(&app, "sports", 3).await;

    sessions.pause(false);
    eventually(|| again.transport.of("roomJoined").len() == 2).await;
    again.receives([1, 2]).await;
    publish(&app, "sports", 4).await;
    again.receives([1, 2, 4]).await;
    let session = app.sessions.load("s1").await.unwrap().unwrap();
    assert!(
        session.rooms.contains_key("sports"),
        "the join was recorded once the store answered"
    );
}

#[tokio::test]
async fn acknowledgements_the_store_missed_are_stored_once_it_answers() {
    let mut pausing = None;
    let app = node_with(&["--ack-flush", "20ms"], |stores| {
        pausing = Some(PausingSessions::wrap(stores))
    })
    .await;
    let sessions = pausing.unwrap();
    let client = Client::connect(&app, "s1", FakeTransport::new());
    client.subscribe("news").await;
    for n in 1..=5 {
        publish(&app, "news", n).await;
    }
    client.receives(1..=5).await;
    sessions.pause(true);
    client.acknowledge();
    tokio::time::sleep(Duration::from_millis(200)).await;
    sessions.pause(false);
    // The flusher's next rounds store what it kept.
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.drop_connection().await;
    publish(&app, "news", 6).await;
    let again = Client::connect(&app, "s1", FakeTransport::new());
    again.receives([6]).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_no_more_than_its_event_queue() {
    let app = node(&["--max-payload", "2048", "--send-queue", "4096"]).await;
    away_with_backlog(&app, "s1", "busy", 200).await;
    // Its replay waits on it: whatever it sends waits behind the replay.
    let stalled = FakeTransport::held();
    let client = Client::connect(&app, "s1", stalled.clone());
    eventually(|| !stalled.numbers().is_empty()).await;
    let pad = "x".repeat(900);
    for i in 0..5_000 {
        // Publishing is off: refused as decoded, never queued.
        client.send(
            "publish",
            serde_json::json!({"room_id": "busy", "payload": {"pad": pad}}),
        );
        client.send("subscribe", format!("room-{i}").into());
        client.send(
            "presence:enter",
            serde_json::json!({"room": "busy", "data": {"pad": pad}}),
        );
    }
    let max = app.config.event_queue as usize;
    assert!(
        app.queued_events.used() <= max,
        "{} bytes waiting, the bound is {max}",
        app.queued_events.used()
    );
    client.drop_connection().await;
    assert_eq!(
        app.queued_events.used(),
        0,
        "a gone connection holds nothing"
    );
}

#[tokio::test]
async fn a_slow_publish_hook_does_not_delay_the_same_clients_subscribe() {
    let (url, calls) = slow_backend(Duration::from_millis(1_500)).await;
    let app = node(&[
        "--client-publish",
        "hook",
        "--publish-hook-url",
        &url,
        "--hook-secret",
        "s",
    ])
    .await;
    let client = Arc::new(Client::connect(&app, "s1", FakeTransport::new()));
    client.subscribe("chat").await;
    let publishing = {
        let client = client.clone();
        tokio::spawn(async move {
            let message = serde_json::json!({"room_id": "chat", "payload": {"n": 1}});
            client.ask("publish", message).await
        })
    };
    eventually(|| calls.load(std::sync::atomic::Ordering::Acquire) == 1).await;
    let asked = std::time::Instant::now();
    client.subscribe("news").await;
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "the subscribe waited {:?} behind the hook",
        asked.elapsed()
    );
    let answer = publishing.await.unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
}

#[tokio::test]
async fn a_client_publish_over_the_nodes_admission_is_refused_without_asking_the_hook() {
    let (url, calls) = slow_backend(Duration::ZERO).await;
    let app = node(&[
        "--client-publish",
        "hook",
        "--publish-hook-url",
        &url,
        "--hook-secret",
        "s",
        "--client-publish-rate",
        "1",
        "--client-publish-burst",
        "1",
    ])
    .await;
    let client = Client::connect(&app, "s1", FakeTransport::new());
    let message = serde_json::json!({"room_id": "chat", "payload": {"n": 1}});
    let first = client.ask("publish", message.clone()).await;
    assert_eq!(first["ok"], true, "{first}");
    let second = client.ask("publish", message).await;
    assert_eq!(second["ok"], false);
    assert!(
        second["reason"].as_str().unwrap().contains("rate"),
        "{second}"
    );
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::Acquire),
        1,
        "the hook was asked once"
    );
}

#[tokio::test]
async fn the_subscribe_hook_decides_and_a_backend_too_slow_takes_its_failure_outcome() {
    let refusing = serde_json::json!({"allow": false, "reason": "members only"});
    let (url, calls) = backend(Duration::ZERO, refusing).await;
    let hooked = |url: &str| {
        [
            "--subscribe-hook-url".to_owned(),
            format!("{url}/subscribe"),
            "--hook-secret".to_owned(),
            "s".to_owned(),
            "--hook-timeout".to_owned(),
            "200ms".to_owned(),
        ]
    };
    let args = hooked(&url);
    let app = node(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let client = Client::connect(&app, "s1", FakeTransport::new());
    client.send("subscribe", "vip".into());
    eventually(|| !client.transport.of("error").is_empty()).await;
    assert_eq!(client.transport.of("error")[0]["message"], "members only");
    assert!(client.transport.of("roomJoined").is_empty());
    assert_eq!(calls.load(std::sync::atomic::Ordering::Acquire), 1);

    let (slow, _) = backend(Duration::from_secs(5), serde_json::json!({"allow": true})).await;
    let mut args = hooked(&slow).to_vec();
    args.extend(["--subscribe-hook-failure".to_owned(), "allow".to_owned()]);
    let app = node(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let client = Client::connect(&app, "s1", FakeTransport::new());
    let asked = std::time::Instant::now();
    client.subscribe("vip").await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the hook's timeout decided"
    );
}

#[tokio::test]
async fn a_drained_connection_stores_what_its_client_acknowledged_then_closes() {
    let app = node(&[]).await;
    let client = Client::connect(&app, "s1", FakeTransport::new());
    client.subscribe("news").await;
    let witness = Client::connect(&app, "s2", FakeTransport::new());
    witness.subscribe("news").await;
    for n in 1..=3 {
        publish(&app, "news", n).await;
    }
    client.receives(1..=3).await;
    client.acknowledge();
    crate::drain::Drained::drain(client.connection.clone());
    eventually(|| client.transport.is_cut()).await;
    // Nothing more reaches it once drained (4 has reached another member of the room, and a
    // marker after it); what it acknowledged was stored before the close.
    publish(&app, "news", 4).await;
    witness.receives(1..=4).await;
    assert_eq!(client.transport.numbers(), [1, 2, 3]);
    client.connection.end();
    eventually(|| client.transport.was_released()).await;
    let again = Client::connect(&app, "s1", FakeTransport::new());
    again.receives([4]).await;
}

#[tokio::test(start_paused = true)]
async fn presence_is_announced_once_an_interval_to_the_rooms_members() {
    let app = node(&["--presence-interval", "1s"]).await;
    let ada = Client::connect(&app, "ada", FakeTransport::new());
    let bob = Client::connect(&app, "bob", FakeTransport::new());
    ada.subscribe("team").await;
    bob.subscribe("team").await;
    ada.send(
        "presence:enter",
        serde_json::json!({"room": "team", "data": {"n": 1}}),
    );
    for n in 2..=5 {
        ada.send(
            "presence:update",
            serde_json::json!({"room": "team", "data": {"n": n}}),
        );
    }
    // Ada, newly present, got the room's first page; Bob hears of her within one interval,
    // once, with her last data.
    eventually(|| !ada.transport.of("presence:members").is_empty()).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let heard = bob.transport.of("presence");
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(heard[0].to_string().contains(r#""n":5"#), "{heard:?}");
    bob.send("presence:members", "team".into());
    eventually(|| !bob.transport.of("presence:members").is_empty()).await;
    assert!(
        bob.transport.of("presence:members")[0]
            .to_string()
            .contains(r#""n":5"#)
    );
}

//! One Socket.IO connection: its session, what it was sent (so an acknowledgement can be resolved
//! to exact per-room positions) and the order its events are handled in.
//!
//! Socket.IO runs each event handler as its own task, so two events sent back to back could be
//! handled out of order. Each event therefore takes a ticket while it is decoded (synchronously, in
//! arrival order) and its handler waits for its turn. Recovery holds the first turn, so events a
//! client sends right after connecting run after its rooms are restored. Acknowledgements, one per
//! message received, only record their timestamp as they are decoded; they are resolved and
//! stored at most once a second and when the connection ends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use socketioxide::adapter::Adapter;
use socketioxide::handler::{FromMessage, Value};
use socketioxide::socket::Socket;
use tokio::sync::watch;
use twine_store::Position;

use crate::fanout::Seq;
use crate::session::SessionHandle;
use crate::state::AppState;

/// How often, at most, a flowing stream of acknowledgements is resolved and stored. Clients
/// acknowledge every message; resolving each would cost more than delivering it.
const ACK_FLUSH_EVERY: Duration = Duration::from_secs(1);

pub struct Connection {
    pub session: SessionHandle,
    pub app: Arc<AppState>,
    /// Newest acknowledged timestamp not yet resolved and stored (0: none).
    latest_ack: AtomicU64,
    /// Wall-clock ms of the last time acknowledgements were resolved.
    last_ack_flush: AtomicU64,
    tickets: AtomicU64,
    turn: watch::Sender<u64>,
    first_turn: Mutex<Option<Ticket>>,
    sent: Mutex<Sent>,
}

/// What this connection was sent, for resolving acknowledgements.
#[derive(Default)]
struct Sent {
    /// Rooms delivered live, with the broadcast sequence number live delivery started after.
    live: HashMap<String, Seq>,
    /// Rooms being recovered, not yet live.
    recovering: Vec<String>,
    /// Messages sent before going live (replay and the seam buffer), in order, not yet
    /// acknowledged. They precede every live message.
    replayed: VecDeque<(String, Position)>,
    /// Newest replayed position per room.
    replayed_up_to: HashMap<String, Position>,
    /// Whether the client acknowledges messages at all.
    acknowledges: bool,
    /// Recovery could not replay everything: stored positions must not move on, or the messages
    /// it missed would be skipped by the next recovery too.
    frozen: bool,
}

impl Connection {
    /// A new connection; its first turn is reserved for recovery (see [`Connection::first_turn`]).
    pub fn new(session: SessionHandle, app: Arc<AppState>) -> Arc<Connection> {
        let conn = Arc::new(Connection {
            session,
            app,
            latest_ack: AtomicU64::new(0),
            last_ack_flush: AtomicU64::new(0),
            tickets: AtomicU64::new(0),
            turn: watch::Sender::new(0),
            first_turn: Mutex::new(None),
            sent: Mutex::new(Sent::default()),
        });
        let ticket = conn.ticket();
        *lock(&conn.first_turn) = Some(ticket);
        conn
    }

    /// The next place in line.
    pub fn ticket(self: &Arc<Self>) -> Ticket {
        Ticket {
            conn: Some(self.clone()),
            number: self.tickets.fetch_add(1, Ordering::SeqCst),
        }
    }

    /// The ticket reserved at creation, ahead of every event.
    pub fn first_turn(&self) -> Option<Ticket> {
        lock(&self.first_turn).take()
    }

    fn sent(&self) -> MutexGuard<'_, Sent> {
        lock(&self.sent)
    }

    pub fn is_live(&self, room: &str) -> bool {
        self.sent().live.contains_key(room)
    }

    pub fn recovering(&self, rooms: &[String]) {
        self.sent().recovering = rooms.to_vec();
    }

    pub fn replayed(&self, room: &str, position: Position) {
        let mut sent = self.sent();
        sent.replayed.push_back((room.to_owned(), position));
        sent.replayed_up_to.insert(room.to_owned(), position);
    }

    pub fn went_live(&self, room: &str, after: Seq) {
        let mut sent = self.sent();
        sent.recovering.retain(|r| r != room);
        sent.live.insert(room.to_owned(), after);
    }

    pub fn left(&self, room: &str) {
        let mut sent = self.sent();
        sent.live.remove(room);
        sent.replayed.retain(|(r, _)| r != room);
        sent.replayed_up_to.remove(room);
    }

    /// Keeps the session's stored positions where they are for the rest of this connection.
    pub fn freeze_positions(&self) {
        self.sent().frozen = true;
    }

    pub fn live_rooms(&self) -> Vec<String> {
        self.sent().live.keys().cloned().collect()
    }

    pub fn recovering_rooms(&self) -> Vec<String> {
        self.sent().recovering.clone()
    }

    /// Records an acknowledgement as it arrives (acknowledgements arrive in the order the client
    /// handled its messages, so the newest one covers the others). Returns whether it is time to
    /// resolve and store it ([`Connection::flush_acks`]).
    pub fn note_ack(&self, position: Position) -> bool {
        self.latest_ack.store(position.0, Ordering::SeqCst);
        let now = Position::now_ms();
        let last = self.last_ack_flush.load(Ordering::SeqCst);
        now.saturating_sub(last) >= ACK_FLUSH_EVERY.as_millis() as u64
            && self
                .last_ack_flush
                .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// Resolves the newest acknowledgement not yet stored and stores the positions it covers.
    pub async fn flush_acks(&self) {
        let latest = self.latest_ack.swap(0, Ordering::SeqCst);
        if latest == 0 {
            return;
        }
        let handled = self.acknowledge(Position(latest)).await;
        if handled.is_empty() {
            tracing::debug!(
                position = latest,
                "acknowledged timestamp not among recent messages"
            );
        }
        if let Err(e) = self.session.advance(&handled).await {
            tracing::warn!("acknowledgement not stored: {e}");
        }
    }

    /// Resolves "the client handled the message it was sent with this timestamp, and everything
    /// sent before it" into the newest handled position per room. Empty when no message with that
    /// timestamp was sent recently.
    async fn acknowledge(&self, position: Position) -> Vec<(String, Position)> {
        let links: Vec<(String, Seq)> = {
            let mut sent = self.sent();
            sent.acknowledges = true;
            if sent.frozen {
                return Vec::new();
            }
            if let Some(index) = sent.replayed.iter().position(|(_, p)| *p == position) {
                return newest_per_room(sent.replayed.drain(..=index));
            }
            sent.live.iter().map(|(r, s)| (r.clone(), *s)).collect()
        };
        let Some(live) = self.app.fanout.resolve_ack(position, &links).await else {
            return Vec::new();
        };
        // Everything replayed went out before any live message.
        let mut sent = self.sent();
        let mut handled = newest_per_room(sent.replayed.drain(..));
        handled.extend(live);
        handled
    }

    /// For a client that never acknowledges, the newest position sent per room: where its next
    /// recovery starts. Empty for a client that acknowledges, whose acknowledgements are exact.
    pub async fn last_sent(&self) -> Vec<(String, Position)> {
        let (live, mut positions) = {
            let sent = self.sent();
            if sent.acknowledges || sent.frozen {
                return Vec::new();
            }
            let positions: HashMap<String, Position> = sent.replayed_up_to.clone();
            (sent.live.keys().cloned().collect::<Vec<_>>(), positions)
        };
        for room in live {
            if let Some(last) = self.app.fanout.last_broadcast(&room).await {
                positions.insert(room, last);
            }
        }
        positions.into_iter().collect()
    }
}

fn newest_per_room(sent: impl Iterator<Item = (String, Position)>) -> Vec<(String, Position)> {
    let mut newest: HashMap<String, Position> = HashMap::new();
    for (room, position) in sent {
        let entry = newest.entry(room).or_default();
        *entry = (*entry).max(position);
    }
    newest.into_iter().collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A place in a connection's line of events.
pub struct Ticket {
    conn: Option<Arc<Connection>>,
    number: u64,
}

impl Ticket {
    /// Waits until every earlier ticket of the connection is done.
    pub async fn wait(mut self) -> Turn {
        let conn = self.conn.take().expect("a ticket is waited on once");
        let mut turn = conn.turn.subscribe();
        // The sender lives in `conn`, so the channel cannot close while we wait.
        let _ = turn.wait_for(|t| *t == self.number).await;
        Turn { conn }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // An unused ticket must still pass its turn on, or the connection's later events would
        // wait forever.
        if let Some(conn) = self.conn.take() {
            let ticket = Ticket {
                conn: Some(conn),
                number: self.number,
            };
            tokio::spawn(async move { drop(ticket.wait().await) });
        }
    }
}

/// The connection's turn; the next ticket's turn starts when this is dropped.
pub struct Turn {
    conn: Arc<Connection>,
}

impl std::ops::Deref for Turn {
    type Target = Arc<Connection>;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.conn.turn.send_modify(|t| *t += 1);
    }
}

/// Extractor giving an event handler its ticket, taken as the event is decoded. Put it last.
pub struct InTurn(pub Ticket);

/// The socket has no [`Connection`]: it was not admitted by this server's middleware.
#[derive(Debug, thiserror::Error)]
#[error("socket has no connection state")]
pub struct NotAdmitted;

impl<A: Adapter> FromMessage<A> for InTurn {
    type Error = NotAdmitted;
    fn from_message(s: Arc<Socket<A>>, _: Value, _: Option<i64>) -> Result<Self, NotAdmitted> {
        let conn = s.extensions.get::<Arc<Connection>>().ok_or(NotAdmitted)?;
        Ok(InTurn(conn.ticket()))
    }
}

/// Extractor for `updateSessionTS`: records the acknowledged timestamp while the event is decoded,
/// in arrival order, so the handler (run as a task of its own) needs no turn unless it is time to
/// store. Put it last.
pub struct AckArrival {
    pub conn: Arc<Connection>,
    /// The timestamp, when the argument is one.
    pub position: Option<Position>,
    /// Whether this handler should resolve and store the acknowledgements now.
    pub flush: bool,
}

impl<A: Adapter> FromMessage<A> for AckArrival {
    type Error = NotAdmitted;
    fn from_message(s: Arc<Socket<A>>, v: Value, _: Option<i64>) -> Result<Self, NotAdmitted> {
        let conn = s.extensions.get::<Arc<Connection>>().ok_or(NotAdmitted)?;
        // The event as JSON text: ["updateSessionTS", <timestamp>].
        let position = v
            .as_str()
            .and_then(|text| serde_json::from_str::<Vec<serde_json::Value>>(text).ok())
            .and_then(|args| args.get(1).and_then(super::events::timestamp));
        let flush = position.is_some_and(|p| conn.note_ack(p));
        Ok(AckArrival {
            conn,
            position,
            flush,
        })
    }
}

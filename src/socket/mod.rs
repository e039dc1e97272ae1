//! Socket.IO on the `/socket.io` path: admitting each connection and sending to it.
//!
//! A connection is admitted by a middleware that runs before the server answers the client's
//! namespace connect, so its session is known and every event handler is registered before the
//! client can send anything. Recovery then runs as the connection's first turn.

pub mod connection;
mod events;
pub use events::MAX_ROOM_BYTES;
mod recovery;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use socketioxide::extract::{Extension, SocketRef};
use socketioxide::handler::ConnectHandler;
use socketioxide::{SendError, SocketError, SocketIo};

use crate::session::SessionHandle;
use crate::state::AppState;
use connection::Connection;

/// How long a replayed message may wait for room in a slow client's send buffer.
const SEND_PATIENCE: Duration = Duration::from_secs(30);

/// Serves the Twine events on the default namespace.
pub fn register(io: &SocketIo, app: Arc<AppState>) {
    io.ns(
        "/",
        on_connect.with(move |s: SocketRef| {
            let app = app.clone();
            async move {
                admit(&s, app);
                Ok::<(), Infallible>(())
            }
        }),
    );
}

fn admit(s: &SocketRef, app: Arc<AppState>) {
    let session = SessionHandle::for_request(&s.req_parts().headers, app.sessions.clone());
    s.extensions.insert(Connection::new(session, app));
    s.on("subscribe", events::subscribe);
    s.on("unsubscribe", events::unsubscribe);
    s.on("updateSessionTS", events::update_session_ts);
    s.on("stateRecovery", events::state_recovery);
    s.on_disconnect(events::disconnect);
}

async fn on_connect(s: SocketRef, Extension(conn): Extension<Arc<Connection>>) {
    if let Some(ticket) = conn.first_turn() {
        let turn = ticket.wait().await;
        recovery::recover(&turn, &s).await;
    }
}

/// Sends an event, logging (not failing) when the socket is gone: the client then recovers what
/// it missed on its next connection.
fn emit<T: Serialize + ?Sized>(s: &SocketRef, event: &str, data: &T) {
    if let Err(e) = s.emit(event, data) {
        tracing::debug!(sid = %s.id, event, "not sent: {e}");
    }
}

/// Sends an event, waiting while the client's send buffer is full. Fails when the socket is gone
/// or stays full for [`SEND_PATIENCE`].
async fn send_in_order<T: Serialize + ?Sized>(
    s: &SocketRef,
    event: &str,
    data: &T,
) -> Result<(), SendError> {
    let deadline = tokio::time::Instant::now() + SEND_PATIENCE;
    loop {
        match s.emit(event, data) {
            Err(SendError::Socket(SocketError::InternalChannelFull))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            result => return result,
        }
    }
}

/// The `error` event sent when a client event is refused.
#[derive(Serialize)]
struct EventError<'a> {
    event: &'a str,
    message: String,
}

fn reject(s: &SocketRef, event: &str, message: impl Into<String>) {
    let message = message.into();
    tracing::debug!(sid = %s.id, event, %message, "event refused");
    emit(s, "error", &EventError { event, message });
}

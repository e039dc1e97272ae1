//! The one seam between this server and the Socket.IO wire: what a connection's outbox, its
//! recovery and its event handling need of the connection they serve, as one small trait.
//!
//! [`socketio`] implements it over socketioxide (its socket) and this server's network edge (the
//! byte meter that counts what waits to be written, the cut that closes a transport, the `pid`
//! added to a CONNECT reply). In tests, [`fake`] implements it in memory, so recovery (hold,
//! replay, release, catch-up) and a connection's events run in-process against the in-memory
//! store, deterministically.

#[cfg(test)]
pub mod fake;
pub mod socketio;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::value::RawValue;
pub use socketioxide::socket::Sid;

/// Bytes an event costs on the wire besides its data and offset: Engine.IO's `4`, Socket.IO's
/// `2`, the brackets, quotes and comma around the event name (a lower bound, so a count never
/// runs ahead of what the transport writes).
const FRAMING: usize = 6;

/// What an event with `data` (and a recovery offset) costs in a send queue, in bytes.
pub fn cost(event: &str, data: &RawValue, offset: Option<&str>) -> usize {
    let offset = offset.map_or(0, |o| o.len() + 3);
    data.get().len() + event.len() + FRAMING + offset
}

/// Why a transport did not take an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Its queue of packets is full: try again once it drains.
    #[error("the transport's queue is full")]
    Full,
    /// The connection is gone.
    #[error("the transport is closed")]
    Closed,
}

/// The answer to one client event that asked for an acknowledgement, sent once.
pub trait Reply: Send + Sync + 'static {
    fn send(self: Box<Self>, data: &RawValue);
}

/// A future a transport answers with.
pub type Waiting<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One client's connection, as the rest of the server sees it.
pub trait Transport: Send + Sync + 'static {
    fn sid(&self) -> Sid;

    /// Hands the event `event` with `data` (and a Socket.IO recovery offset as its last
    /// argument) to the connection, encoded once, counted as queued until written. Never waits.
    fn emit(&self, event: &str, data: &RawValue, offset: Option<&str>) -> Result<(), Refused>;

    /// Bytes handed to it and not yet written to the network.
    fn queued(&self) -> usize;

    /// How long it has had something queued without its queue emptying.
    fn backlog_age(&self) -> Duration;

    /// Resolves once fewer than `limit` bytes are queued, or the connection was cut.
    fn drained_below(&self, limit: usize) -> Waiting<'_>;

    /// Closes the connection's transport from the server's side: the client sees it close and
    /// reconnects by itself.
    fn cut(&self);

    fn is_cut(&self) -> bool;

    /// The connection's Socket.IO CONNECT reply, not yet sent, must carry `pid`.
    fn reply_with_pid(&self, pid: &str);

    /// The connection ended: let go of what ties its socket to it.
    fn release(&self);
}

//! The [`Transport`] of a socketioxide socket: events emitted on it, its bytes counted by the
//! connection's [`SendMeter`] (added as handed over, taken off as written, by the network edge),
//! cut through the meter (which fails the WebSocket's reads and writes, or refuses its
//! long-polling requests), and the CONNECT reply's `pid` left for the edge to add.

pub mod frames;
pub mod meter;
pub mod polling;
pub mod query;

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::{FromMessageParts, MessageHandler, Value};
use socketioxide::socket::Socket;
use socketioxide::{SendError, SocketError};

use super::{Refused, Reply, Sid, Transport, Waiting, cost};
use meter::SendMeter;

/// A socketioxide socket and its byte meter.
pub struct SocketTransport {
    socket: SocketRef,
    meter: Arc<SendMeter>,
}

impl SocketTransport {
    pub fn new(socket: SocketRef, meter: Arc<SendMeter>) -> Arc<SocketTransport> {
        Arc::new(SocketTransport { socket, meter })
    }
}

/// The acknowledgement an event asked for, if it asked for one.
pub fn reply(
    socket: &Arc<Socket<LocalAdapter>>,
    data: &mut Value,
    ack: Option<i64>,
) -> Option<Box<dyn Reply>> {
    ack?;
    let Ok(sender) = AckSender::from_message_parts(socket, data, &ack);
    Some(Box::new(AckReply(sender)))
}

struct AckReply(AckSender<LocalAdapter>);

impl Reply for AckReply {
    fn send(self: Box<Self>, data: &RawValue) {
        if let Err(e) = self.0.send(data) {
            tracing::debug!("acknowledgement not sent: {e}");
        }
    }
}

/// Marks this crate's socket handlers apart from socketioxide's closure handlers.
pub struct Handled;

/// Takes events after the connection ended: none are handled.
struct Ignored;

impl MessageHandler<LocalAdapter, Handled> for Ignored {
    fn call(&self, _: Arc<Socket<LocalAdapter>>, _: Value, _: Option<i64>) {}
}

impl Transport for SocketTransport {
    fn sid(&self) -> Sid {
        self.socket.id
    }

    fn emit(&self, event: &str, data: &RawValue, offset: Option<&str>) -> Result<(), Refused> {
        // Counted before the transport has it: its writer may write it (and count it written)
        // before `emit` returns, and what is written before it is counted would stay counted.
        let bytes = cost(event, data, offset);
        self.meter.add(bytes);
        let emitted = match offset {
            Some(offset) => self.socket.emit(event, &(data, offset)),
            None => self.socket.emit(event, data),
        };
        emitted.map_err(|e| {
            self.meter.withdraw(bytes);
            match e {
                SendError::Socket(SocketError::InternalChannelFull) => Refused::Full,
                _ => Refused::Closed,
            }
        })
    }

    fn queued(&self) -> usize {
        self.meter.queued()
    }

    fn backlog_age(&self) -> Duration {
        self.meter.backlog_age()
    }

    fn drained_below(&self, limit: usize) -> Waiting<'_> {
        Box::pin(self.meter.drained_below(limit))
    }

    fn cut(&self) {
        self.meter.cut();
    }

    fn is_cut(&self) -> bool {
        self.meter.is_cut()
    }

    fn reply_with_pid(&self, pid: &str) {
        self.meter.reply_with_pid(pid);
    }

    fn release(&self) {
        // The socket's event handler keeps the connection, and the connection keeps the socket:
        // let go of each other.
        self.socket.on_fallback(Ignored);
    }
}

//! What one client is sent: messages encoded once for every recipient, the client's send budget
//! in bytes, and the acknowledgement bookkeeping of what it was sent ([`acks`]).
//!
//! Live delivery never waits on a client: one that falls more than its budget behind is cut (its
//! transport closes; it recovers what it missed when it reconnects). A replay and the replies to
//! the client's own events wait for room instead, so they are never dropped.

pub mod acks;
pub mod offsets;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use twine_store::{Message, Position, Progress};

use crate::metrics::{Limit, Metrics};
use crate::transport::{Refused, Sid, Transport, cost};
use acks::{Mode, Sent, Slot};
/// How often a sender waiting on a full transport queue looks again.
const FULL_QUEUE_RETRY: Duration = Duration::from_millis(5);

/// A message as clients receive it, encoded once: the payload object with `timestamp` and `room`
/// added.
pub struct Encoded {
    pub room: Arc<str>,
    pub position: Position,
    json: Box<RawValue>,
}

impl Encoded {
    pub fn new(message: &Message) -> Encoded {
        Encoded::with_room(Arc::from(message.room.as_str()), message)
    }

    pub fn with_room(room: Arc<str>, message: &Message) -> Encoded {
        let fields = format!(
            "\"timestamp\":{},\"room\":{}",
            message.position.0,
            serde_json::to_string(&*room).expect("a string serializes")
        );
        // The payload is a JSON object kept as text: append the fields before its closing brace
        // rather than parse and re-serialize the whole of it.
        let body = message.payload.trim();
        let json = match body.strip_prefix('{').and_then(|b| b.strip_suffix('}')) {
            Some(inner) if inner.trim().is_empty() => format!("{{{fields}}}"),
            Some(inner) => format!("{{{inner},{fields}}}"),
            None => {
                tracing::warn!(%room, position = %message.position, "stored payload is not a JSON object; sending it empty");
                format!("{{{fields}}}")
            }
        };
        let json = RawValue::from_string(json).unwrap_or_else(|e| {
            tracing::warn!(%room, position = %message.position, "stored payload is not valid JSON ({e}); sending it empty");
            RawValue::from_string(format!("{{{fields}}}")).expect("fields are JSON")
        });
        Encoded {
            room,
            position: message.position,
            json,
        }
    }

    /// The JSON clients receive.
    pub fn json(&self) -> &str {
        self.json.get()
    }

    /// The JSON clients receive, to send elsewhere (as a page of history).
    pub fn into_json(self) -> Box<RawValue> {
        self.json
    }
}

/// The client is gone or was cut: stop sending to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client is gone")]
pub struct Gone;

/// One client's outgoing side.
pub struct Outbox {
    transport: Arc<dyn Transport>,
    metrics: Arc<Metrics>,
    budget: usize,
    /// How long a waiting send may see no progress before the client counts as stalled.
    patience: Duration,
    sent: Mutex<Sent>,
    closed: AtomicBool,
    /// Acknowledgements wait for the node's flusher.
    flush_pending: AtomicBool,
}

impl Outbox {
    pub fn new(
        transport: Arc<dyn Transport>,
        budget: usize,
        patience: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Outbox> {
        Arc::new(Outbox {
            transport,
            metrics,
            budget,
            patience,
            sent: Mutex::default(),
            closed: AtomicBool::new(false),
            flush_pending: AtomicBool::new(false),
        })
    }

    fn sent(&self) -> MutexGuard<'_, Sent> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.transport.is_cut()
    }

    /// No more sends: the connection ended.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Closes the client's transport from the server's side; it reconnects and recovers.
    pub fn cut(&self, limit: Limit, why: &str) {
        if !self.transport.is_cut() {
            tracing::info!(sid = %self.transport.sid(), queued = self.transport.queued(), "cutting a client: {why}");
            self.metrics.limit(limit);
        }
        self.close();
        self.transport.cut();
    }

    /// Emits under the bookkeeping lock, so what is recorded as sent is in send order.
    fn emit_locked(
        &self,
        sent: &mut Sent,
        event: &str,
        data: &RawValue,
        record: Option<(Slot, Position)>,
    ) -> Result<(), Refused> {
        if let Some((slot, position)) = record {
            sent.sent(slot, position);
        }
        // Socket.IO's recovery takes the last string argument of any event as its offset: every
        // event whose data is a message or a string carries the offset after it.
        let offset = match event {
            "message" | "roomJoined" | "roomLeft" | "recovery" => sent.offset(),
            _ => None,
        };
        self.transport.emit(event, data, offset.as_deref())
    }

    /// A live message. Never waits: a client over its budget is cut.
    pub fn deliver(&self, message: &Encoded, slot: Slot) -> Result<(), Gone> {
        self.send_now("message", &message.json, Some((slot, message.position)))
    }

    /// A live event that is not a message (a presence change): not recorded, never replayed.
    /// Never waits: a client over its budget is cut.
    pub fn announce(&self, event: &str, data: &RawValue) -> Result<(), Gone> {
        self.send_now(event, data, None)
    }

    fn send_now(
        &self,
        event: &str,
        data: &RawValue,
        record: Option<(Slot, Position)>,
    ) -> Result<(), Gone> {
        if self.is_closed() {
            return Err(Gone);
        }
        if self.transport.queued() + cost(event, data, None) > self.budget {
            self.cut(Limit::SendQueue, "over its send queue");
            return Err(Gone);
        }
        let mut sent = self.sent();
        match self.emit_locked(&mut sent, event, data, record) {
            Ok(()) => Ok(()),
            Err(Refused::Full) => {
                drop(sent);
                self.cut(Limit::SendQueue, "its transport queue is full");
                Err(Gone)
            }
            Err(Refused::Closed) => {
                self.close();
                Err(Gone)
            }
        }
    }

    /// Sends an event, waiting while the client is over its budget; fails only when the client
    /// is gone or stalled (no progress for the patience), and then cuts it.
    async fn send_waiting(
        &self,
        event: &str,
        data: &RawValue,
        record: Option<(Slot, Position)>,
    ) -> Result<(), Gone> {
        let size = cost(event, data, None);
        loop {
            if self.is_closed() {
                return Err(Gone);
            }
            if self.transport.queued() + size > self.budget {
                let room = self.budget.saturating_sub(size).max(1);
                if tokio::time::timeout(self.patience, self.transport.drained_below(room))
                    .await
                    .is_err()
                {
                    self.cut(Limit::Stalled, "stalled: nothing it was sent was read");
                    return Err(Gone);
                }
                continue;
            }
            let emitted = {
                let mut sent = self.sent();
                self.emit_locked(&mut sent, event, data, record)
            };
            match emitted {
                Ok(()) => return Ok(()),
                Err(Refused::Full) => {
                    tokio::time::sleep(FULL_QUEUE_RETRY).await;
                }
                Err(Refused::Closed) => {
                    self.close();
                    return Err(Gone);
                }
            }
        }
    }

    /// A replayed message, in order, waiting for room.
    pub async fn replay(&self, message: &Encoded, slot: Slot) -> Result<(), Gone> {
        self.send_waiting("message", &message.json, Some((slot, message.position)))
            .await?;
        self.metrics.replayed.inc();
        Ok(())
    }

    /// A reply to the client (`roomJoined`, `recoveryTruncated`, ...), in order, waiting for room.
    pub async fn send<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), Gone> {
        let json = serde_json::value::to_raw_value(data).expect("replies serialize");
        self.send_waiting(event, &json, None).await
    }

    /// [`Outbox::send`] of a reply encoded already (a page of a listing, shared by many).
    pub async fn send_encoded(&self, event: &str, data: &RawValue) -> Result<(), Gone> {
        self.send_waiting(event, data, None).await
    }

    /// A notice the client may lose if it is not reading (an `error` for an event it flooded).
    pub fn notify<T: Serialize + ?Sized>(&self, event: &str, data: &T) {
        let json = serde_json::value::to_raw_value(data).expect("notices serialize");
        if self.is_closed() || self.transport.queued() + cost(event, &json, None) > self.budget {
            return;
        }
        let mut sent = self.sent();
        if let Err(e) = self.emit_locked(&mut sent, event, &json, None) {
            tracing::debug!(sid = %self.transport.sid(), event, "not sent: {e}");
        }
    }

    pub fn add_room(&self, name: Arc<str>, listened_before: bool) -> Slot {
        self.sent().add_room(name, listened_before)
    }

    pub fn remove_room(&self, slot: Slot) {
        self.sent().remove_room(slot);
    }

    pub fn acknowledge_each_message(&self) {
        self.sent().set_mode(Mode::PerMessage);
    }

    /// From now on the client's events carry Socket.IO recovery offsets.
    pub fn give_offsets(&self) {
        self.sent().give_offsets();
    }

    /// See [`Sent::has_up_to`].
    pub fn has_up_to(&self, slot: Slot, position: Position) {
        self.sent().has_up_to(slot, position);
    }

    pub fn freeze_positions(&self) {
        self.sent().freeze();
    }

    /// Applies an acknowledgement; whether it matched a message sent here.
    pub fn ack(&self, position: Position) -> bool {
        self.sent().ack(position)
    }

    /// See [`Sent::settled`].
    pub fn settled(&self) -> bool {
        self.sent().settled()
    }

    /// Closes the transport from the server's side without counting it as a bound reached (the
    /// node is stopping); the client reconnects elsewhere.
    pub fn close_transport(&self) {
        self.close();
        self.transport.cut();
    }

    /// See [`Sent::progress`].
    pub fn progress(&self, ending: bool) -> Vec<Progress> {
        self.sent().progress(ending)
    }

    pub fn queued(&self) -> usize {
        self.transport.queued()
    }

    /// See [`Transport::backlog_age`].
    pub fn backlog_age(&self) -> Duration {
        self.transport.backlog_age()
    }

    /// Waits until less than half the budget is queued (or the client is gone), so what follows
    /// fits.
    pub async fn half_drained(&self) -> Result<(), Gone> {
        let half = self.budget / 2;
        if tokio::time::timeout(self.patience, self.transport.drained_below(half))
            .await
            .is_err()
        {
            self.cut(Limit::Stalled, "stalled: nothing it was sent was read");
        }
        if self.is_closed() { Err(Gone) } else { Ok(()) }
    }

    /// The connection this outbox sends to.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    pub fn sid(&self) -> Sid {
        self.transport.sid()
    }

    /// Whether the flusher must be told: the first acknowledgement since the last flush.
    pub fn mark_for_flush(&self) -> bool {
        !self.flush_pending.swap(true, Ordering::AcqRel)
    }

    /// The flusher took this outbox's acknowledgements.
    pub fn flushed(&self) {
        self.flush_pending.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &str) -> Message {
        Message {
            room: "news \"today\"".into(),
            position: Position(1_700_000_000_123),
            payload: payload.into(),
        }
    }

    fn decoded(payload: &str) -> serde_json::Value {
        serde_json::from_str(Encoded::new(&message(payload)).json()).unwrap()
    }

    #[test]
    fn the_payload_gets_timestamp_and_room() {
        assert_eq!(
            decoded(r#"{"a":1,"nested":{"b":[1,2]}}"#),
            serde_json::json!({
                "a": 1, "nested": {"b": [1, 2]},
                "timestamp": 1_700_000_000_123u64, "room": "news \"today\""
            })
        );
        assert_eq!(
            decoded(" { } "),
            serde_json::json!({"timestamp": 1_700_000_000_123u64, "room": "news \"today\""})
        );
    }

    #[test]
    fn the_added_fields_win_over_the_payloads_own() {
        let got = decoded(r#"{"timestamp":"mine","room":"mine"}"#);
        assert_eq!(got["timestamp"], 1_700_000_000_123u64);
        assert_eq!(got["room"], "news \"today\"");
    }

    #[test]
    fn a_corrupt_stored_payload_is_sent_empty() {
        assert_eq!(decoded("[1,2]").as_object().unwrap().len(), 2);
        assert_eq!(decoded("{\"a\":").as_object().unwrap().len(), 2);
    }

    #[test]
    fn deep_payloads_are_not_parsed_again() {
        let deep = format!("{{\"d\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
        let encoded = Encoded::new(&message(&deep));
        assert!(encoded.json().ends_with(r#""room":"news \"today\""}"#));
    }
}

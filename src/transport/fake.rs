//! A [`Transport`] in memory, for in-process tests: it records every event it is handed, counts
//! their bytes as queued until the test lets them be written (at once, unless it is held), and
//! can be cut.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::Notify;

use super::{Refused, Reply, Sid, Transport, Waiting, cost};

/// One event handed over: its name, its data and its recovery offset.
#[derive(Clone, Debug)]
pub struct Emitted {
    pub event: String,
    pub data: serde_json::Value,
    pub offset: Option<String>,
}

pub struct FakeTransport {
    sid: Sid,
    emitted: Mutex<Vec<Emitted>>,
    queued: AtomicUsize,
    /// Handed-over bytes stay queued until [`FakeTransport::write`].
    held: AtomicBool,
    cut: AtomicBool,
    drained: Notify,
    /// Someone waits for the queued bytes to drain.
    waited_on: AtomicBool,
    pid: Mutex<Option<String>>,
    released: AtomicBool,
}

impl FakeTransport {
    /// A connection that writes everything at once.
    pub fn new() -> Arc<FakeTransport> {
        Arc::new(FakeTransport {
            sid: Sid::new(),
            emitted: Mutex::default(),
            queued: AtomicUsize::new(0),
            held: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            drained: Notify::new(),
            waited_on: AtomicBool::new(false),
            pid: Mutex::default(),
            released: AtomicBool::new(false),
        })
    }

    /// A connection whose client does not read until [`FakeTransport::write`].
    pub fn held() -> Arc<FakeTransport> {
        let transport = FakeTransport::new();
        transport.held.store(true, Ordering::Release);
        transport
    }

    /// From now on the client does not read: what it is handed stays queued.
    pub fn hold(&self) {
        self.held.store(true, Ordering::Release);
    }

    /// Lets everything queued be written, and what comes later be written at once.
    pub fn write(&self) {
        self.held.store(false, Ordering::Release);
        self.queued.store(0, Ordering::Release);
        self.drained.notify_waiters();
    }

    pub fn emitted(&self) -> Vec<Emitted> {
        self.emitted.lock().unwrap().clone()
    }

    /// The data of every event named `event`, in order.
    pub fn of(&self, event: &str) -> Vec<serde_json::Value> {
        self.emitted()
            .into_iter()
            .filter(|e| e.event == event)
            .map(|e| e.data)
            .collect()
    }

    /// The `n` field of every message, in order.
    pub fn numbers(&self) -> Vec<u64> {
        self.of("message")
            .iter()
            .filter_map(|m| m["n"].as_u64())
            .collect()
    }

    /// An acknowledgement for one event: it arrives among the events, named `ack`.
    pub fn reply(self: &Arc<Self>) -> Box<dyn Reply> {
        Box::new(FakeReply(self.clone()))
    }

    /// Whether the connection has waited for its queued bytes to drain (it stopped sending).
    pub fn waited_on(&self) -> bool {
        self.waited_on.load(Ordering::Acquire)
    }

    pub fn pid(&self) -> Option<String> {
        self.pid.lock().unwrap().clone()
    }

    pub fn was_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }
}

impl Transport for FakeTransport {
    fn sid(&self) -> Sid {
        self.sid
    }

    fn emit(&self, event: &str, data: &RawValue, offset: Option<&str>) -> Result<(), Refused> {
        if self.is_cut() {
            return Err(Refused::Closed);
        }
        if self.held.load(Ordering::Acquire) {
            self.queued
                .fetch_add(cost(event, data, offset), Ordering::AcqRel);
        }
        let data = serde_json::from_str(data.get()).expect("events are JSON");
        self.emitted.lock().unwrap().push(Emitted {
            event: event.to_owned(),
            data,
            offset: offset.map(str::to_owned),
        });
        Ok(())
    }

    fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn backlog_age(&self) -> Duration {
        Duration::ZERO
    }

    fn drained_below(&self, limit: usize) -> Waiting<'_> {
        Box::pin(async move {
            loop {
                let drained = self.drained.notified();
                if self.queued() < limit || self.is_cut() {
                    return;
                }
                self.waited_on.store(true, Ordering::Release);
                drained.await;
            }
        })
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.drained.notify_waiters();
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    fn reply_with_pid(&self, pid: &str) {
        *self.pid.lock().unwrap() = Some(pid.to_owned());
    }

    fn release(&self) {
        self.released.store(true, Ordering::Release);
    }
}

struct FakeReply(Arc<FakeTransport>);

impl Reply for FakeReply {
    fn send(self: Box<Self>, data: &RawValue) {
        let data = serde_json::from_str(data.get()).expect("replies are JSON");
        self.0.emitted.lock().unwrap().push(Emitted {
            event: "ack".into(),
            data,
            offset: None,
        });
    }
}

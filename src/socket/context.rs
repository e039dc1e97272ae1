//! What a connection's commands work on: who the client is (its session, its grant), where its
//! events go (its outbox), which rooms it is in, and whether it is leaving. [`super::command`]
//! applies each command to a [`Context`]; [`super::connection`] owns one and runs its lanes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::auth::Grant;
use crate::outbox::Outbox;
use crate::outbox::acks::Slot;
use crate::rate::{Limiter, limiter};
use crate::session::SessionHandle;
use crate::state::AppState;
use crate::transport::Sid;

/// Member listings (pages of `presence:members`) one connection may ask for per second, and at
/// once: with pages of at most 64 KiB, at most 128 KiB a second.
pub const LISTINGS_PER_SECOND: u32 = 2;
const LISTING_BURST: u32 = 20;

/// How long a connection whose request the app's backend refused waits before its next one is
/// asked, at first and at most: each refusal in a row doubles it, an allowed request resets it.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const LAST_BACKOFF: Duration = Duration::from_secs(5);

/// How the connection is in one room.
#[derive(Clone, Copy)]
pub struct Membership {
    pub slot: Slot,
    /// Live; otherwise held for its replay.
    pub live: bool,
}

/// The `error` event sent when a client event is refused.
#[derive(Serialize)]
pub struct EventError<'a> {
    pub event: &'a str,
    pub message: &'a str,
}

pub struct Context {
    pub sid: Sid,
    pub app: Arc<AppState>,
    pub outbox: Arc<Outbox>,
    pub session: SessionHandle,
    /// What the connection's token allows.
    pub grant: Grant,
    pub listings: Limiter,
    /// Rooms the connection is in (live) or recovering (held), by name.
    rooms: Mutex<HashMap<Arc<str>, Membership>>,
    /// Draining or ended: retries give up, nothing new is queued.
    leaving: AtomicBool,
    /// Until when requests that need the app's backend are refused at once, and the next wait.
    backoff: Mutex<(Option<Instant>, Duration)>,
}

impl Context {
    pub fn new(
        app: Arc<AppState>,
        outbox: Arc<Outbox>,
        session: SessionHandle,
        grant: Grant,
    ) -> Context {
        Context {
            sid: outbox.sid(),
            app,
            outbox,
            session,
            grant,
            listings: limiter(LISTINGS_PER_SECOND, LISTING_BURST),
            rooms: Mutex::default(),
            leaving: AtomicBool::new(false),
            backoff: Mutex::new((None, FIRST_BACKOFF)),
        }
    }

    /// Waits out the backoff the backend's last refusals earned this connection before its next
    /// request asks it (its later events wait behind, within `--event-queue`): a crowd of
    /// clients the backend refuses cannot take every turn at the hooks from the clients it
    /// allows, and a client refused once is delayed, not refused again.
    pub async fn wait_for_backend(&self) {
        let until = self.backoff.lock().unwrap_or_else(|e| e.into_inner()).0;
        if let Some(until) = until.filter(|until| Instant::now() < *until) {
            self.app.metrics.limit(crate::metrics::Limit::HookRefusals);
            tokio::time::sleep_until(until).await;
        }
    }

    /// The backend answered one of this connection's requests: refused, or allowed.
    pub fn backend_answered(&self, allowed: bool) {
        let mut backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        if allowed {
            *backoff = (None, FIRST_BACKOFF);
        } else {
            let wait = backoff.1;
            *backoff = (Some(Instant::now() + wait), (wait * 2).min(LAST_BACKOFF));
        }
    }

    /// Reads or changes the rooms the connection is in.
    pub fn rooms<T>(&self, f: impl FnOnce(&mut HashMap<Arc<str>, Membership>) -> T) -> T {
        f(&mut self.rooms.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether the connection is going (ended, cut, or drained): its retries stop.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire) || self.outbox.is_closed()
    }

    /// From now on the connection is going.
    pub fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
    }

    /// An `error` event for an event refused in its turn.
    pub async fn refuse(&self, event: &str, message: &str) {
        tracing::debug!(sid = %self.sid, event, message, "event refused");
        let _ = self
            .outbox
            .send("error", &EventError { event, message })
            .await;
    }

    /// Leaves `room` on this node (its session is left as it is).
    pub fn leave_room(&self, room: &Arc<str>, membership: Membership) {
        if membership.live {
            self.app.fanout.leave(room, self.sid);
        } else {
            self.app.fanout.unhold(room, self.sid);
        }
        self.outbox.remove_room(membership.slot);
        self.app.presence.leave(room, self.sid);
    }
}

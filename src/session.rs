//! Sessions: which session a connection belongs to (its `twineid` cookie), the session store
//! calls made on its behalf, and the node's flusher that stores acknowledged positions.
//!
//! A connection without a usable cookie gets a session of its own that is never stored, so no
//! other connection can reach it.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use cookie::Cookie;
use twine_store::{Joined, Position, Progress, Session, SessionStore, StoreError};

use crate::outbox::Outbox;

/// The cookie that carries the session id.
pub const COOKIE_NAME: &str = "twineid";

/// Longest session id accepted from a cookie.
const MAX_ID_LEN: usize = 128;

/// Sessions stored in one call by the flusher.
const FLUSH_BATCH: usize = 512;
/// Sessions whose acknowledgements the flusher keeps while the store does not take them.
const MAX_KEPT: usize = 100_000;

/// The `twineid` cookie of a request, if it has a usable one (1 to 128 characters of
/// `[A-Za-z0-9_-]`; anything else is treated as no cookie).
pub fn twineid(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE_NAME)
        .map(|c| c.value_trimmed().to_owned())
        .filter(|id| usable_id(id))
}

/// Whether `id` may name a session: 1 to 128 characters of `[A-Za-z0-9_-]`.
pub fn usable_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The session of one connection.
#[derive(Clone)]
pub struct SessionHandle {
    id: Option<Arc<str>>,
    store: Arc<dyn SessionStore>,
}

impl SessionHandle {
    /// The session named by the request's cookie, or a private unstored one.
    pub fn for_request(headers: &HeaderMap, store: Arc<dyn SessionStore>) -> SessionHandle {
        SessionHandle {
            id: twineid(headers).map(Arc::from),
            store,
        }
    }

    /// The session `id` (a Socket.IO recovery `pid`).
    pub fn named(id: &str, store: Arc<dyn SessionStore>) -> SessionHandle {
        SessionHandle {
            id: Some(Arc::from(id)),
            store,
        }
    }

    pub async fn load(&self) -> Result<Option<Session>, StoreError> {
        match &self.id {
            Some(id) => self.store.load(id).await,
            None => Ok(None),
        }
    }

    /// Adds `room`; a private session holds any room the connection may.
    pub async fn join(&self, room: &str, at: Position) -> Result<Joined, StoreError> {
        match &self.id {
            Some(id) => self.store.join(id, room, at).await,
            None => Ok(Joined::Added),
        }
    }

    pub async fn leave(&self, room: &str) -> Result<(), StoreError> {
        match &self.id {
            Some(id) => self.store.leave(id, room).await,
            None => Ok(()),
        }
    }

    pub async fn advance(&self, progress: &[Progress]) -> Result<(), StoreError> {
        match &self.id {
            Some(id) if !progress.is_empty() => self.store.advance(id, progress).await,
            _ => Ok(()),
        }
    }

    /// The session's id: its `twineid`, or its Socket.IO `pid`.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn is_stored(&self) -> bool {
        self.id.is_some()
    }
}

/// Stores the acknowledged positions of this node's connections every `every`, all at once,
/// rather than on each acknowledgement (one per message received). After a crash, at most
/// `every` of acknowledgements is lost: those messages are replayed once more.
pub struct Flusher {
    store: Arc<dyn SessionStore>,
    every: Duration,
    dirty: Mutex<Vec<(Arc<str>, Weak<Outbox>)>>,
    /// Acknowledgements the store did not take, stored again on the next flush.
    failed: Mutex<Vec<(Arc<str>, Vec<Progress>)>>,
}

impl Flusher {
    pub fn start(store: Arc<dyn SessionStore>, every: Duration) -> Arc<Flusher> {
        let flusher = Arc::new(Flusher {
            store,
            every,
            dirty: Mutex::default(),
            failed: Mutex::default(),
        });
        tokio::spawn(flusher.clone().run());
        flusher
    }

    /// `outbox` has acknowledgements to store for `session`.
    pub fn mark(&self, session: &SessionHandle, outbox: &Arc<Outbox>) {
        if let Some(id) = &session.id
            && outbox.mark_for_flush()
        {
            let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            dirty.push((id.clone(), Arc::downgrade(outbox)));
        }
    }

    async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush().await;
        }
    }

    /// Stores the acknowledgements waiting now, and tries again what the store does not take
    /// until `deadline` (the node is stopping).
    pub async fn flush_until(&self, deadline: tokio::time::Instant) {
        loop {
            self.flush().await;
            let kept = !self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
            if !kept {
                return;
            }
            if tokio::time::Instant::now() + self.every > deadline {
                tracing::warn!(
                    "acknowledgements not stored before the exit: the store did not answer"
                );
                return;
            }
            tokio::time::sleep(self.every).await;
        }
    }

    /// Stores the acknowledgements waiting now.
    pub async fn flush(&self) {
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        let batch: Vec<(Arc<str>, Vec<Progress>)> = dirty
            .into_iter()
            .filter_map(|(id, outbox)| {
                // A connection that is gone stores its final positions itself.
                let outbox = outbox.upgrade()?;
                outbox.flushed();
                Some((id, outbox.progress(false)))
            })
            .filter(|(_, progress)| !progress.is_empty())
            .collect();
        let mut batch = batch;
        // What a store that did not answer missed goes first: positions only move forward, so
        // storing an older one after a newer changes nothing.
        let failed = std::mem::take(&mut *self.failed.lock().unwrap_or_else(|e| e.into_inner()));
        if !failed.is_empty() {
            batch.splice(0..0, failed);
        }
        for chunk in batch.chunks(FLUSH_BATCH) {
            let sessions: Vec<(&str, &[Progress])> =
                chunk.iter().map(|(id, p)| (&**id, &p[..])).collect();
            if let Err(e) = self.store.advance_many(&sessions).await {
                tracing::warn!(
                    sessions = chunk.len(),
                    "acknowledgements not stored, kept for the next flush: {e}"
                );
                self.keep_failed(chunk);
            }
        }
    }

    /// Keeps acknowledgements the store did not take for the next flush, within
    /// [`MAX_KEPT`] sessions (past it the oldest are dropped: their clients' next recovery
    /// repeats what they acknowledged meanwhile).
    fn keep_failed(&self, chunk: &[(Arc<str>, Vec<Progress>)]) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.extend(chunk.iter().cloned());
        if failed.len() > MAX_KEPT {
            let over = failed.len() - MAX_KEPT;
            failed.drain(..over);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, cookie.parse().unwrap());
        h
    }

    #[test]
    fn finds_the_twineid_among_other_cookies() {
        let h = headers("a=1; twineid=0f8c1d2e-aaaa-4bbb-8ccc-123456789abc; b=2");
        assert_eq!(
            twineid(&h).as_deref(),
            Some("0f8c1d2e-aaaa-4bbb-8ccc-123456789abc")
        );
    }

    #[test]
    fn unusable_cookies_count_as_none() {
        assert_eq!(twineid(&headers("twineid=")), None);
        assert_eq!(twineid(&headers("twineid=a b")), None);
        assert_eq!(
            twineid(&headers(&format!("twineid={}", "x".repeat(200)))),
            None
        );
        assert_eq!(twineid(&headers("other=1")), None);
        assert_eq!(twineid(&HeaderMap::new()), None);
    }
}

//! Socket.IO's connection state recovery (`--socketio-recovery`), decided at admission, before
//! the CONNECT reply: that reply tells the client its session's `pid`, and `socket.recovered` is
//! true when the `pid` is the one it asked for.
//!
//! A client without a `twineid` cookie gets a session of its own, named by a fresh `pid`. When it
//! reconnects (to any node) its handshake carries `{pid, offset}`: the session's rooms come back,
//! each from where the offset puts it (from where it joined when the offset does not name it),
//! and everything after is replayed. A recovery that cannot be exact is refused instead: an
//! unknown or expired session, an offset this server did not write, or a room whose messages
//! after the offset are no longer kept. The client then starts afresh with a new `pid` and is
//! told why in a `recovery` event. Clients with a cookie keep the Twine flow.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use twine_store::{History, PageLimit, Position, Session, SessionStore, StoreError};

use crate::auth::Signer;
use crate::outbox::offsets::Offset;
use crate::state::AppState;

/// Rooms checked against the history at once.
const CHECK_CONCURRENCY: usize = 16;

/// What the handshake's auth object says about recovery.
#[derive(Default, Deserialize)]
struct Asked {
    pid: Option<String>,
    offset: Option<String>,
}

/// The `recovery` event, the first event a client under Socket.IO's recovery gets.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Notice {
    pub recovered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How a connection under Socket.IO's recovery starts.
pub struct Resume {
    /// The session's id, told to the client as its `pid`.
    pub pid: String,
    /// The session to recover, its cursors moved to where the offset puts each room; `None`
    /// for a fresh session.
    pub session: Option<Session>,
    pub notice: Notice,
}

/// How the `pid`s handed out are made and recognised.
pub struct Pids<'a> {
    pub signer: &'a Signer,
    /// How long a `pid` may name a session that never joined a room (the recovery window).
    pub window: Duration,
}

impl Pids<'_> {
    /// A fresh `pid`: `<id>_<issued, unix seconds in base 36>_<signature>`, so a `pid` this
    /// deployment handed out is recognised without storing anything, and a `pid` a client made
    /// up is not.
    fn issue(&self) -> String {
        let body = format!(
            "{}_{}",
            uuid::Uuid::new_v4().simple(),
            base36(unix_seconds())
        );
        let signature = self.signer.sign_hex(body.as_bytes());
        format!("{body}_{}", &signature[..SIGNATURE_HEX])
    }

    /// Whether `pid` was handed out here within the window.
    fn issued_here(&self, pid: &str) -> bool {
        let Some((body, signature)) = pid.rsplit_once('_') else {
            return false;
        };
        let Some(issued) = body
            .rsplit_once('_')
            .and_then(|(_, t)| u64::from_str_radix(t, 36).ok())
        else {
            return false;
        };
        self.signer.verify_hex(body.as_bytes(), signature)
            && unix_seconds().saturating_sub(issued) <= self.window.as_secs()
    }
}

/// Hex digits of a `pid`'s signature kept (128 bits).
const SIGNATURE_HEX: usize = 32;

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit((n % 36) as u32, 36).expect("a base-36 digit"));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

impl Resume {
    fn fresh(pids: &Pids<'_>, reason: Option<String>) -> Resume {
        Resume {
            pid: pids.issue(),
            session: None,
            notice: Notice {
                recovered: false,
                reason,
            },
        }
    }

    /// Decides from the handshake's auth object (JSON text).
    pub async fn decide(auth: Option<&str>, app: &AppState) -> Resume {
        let pids = Pids {
            signer: &app.signer,
            window: app.config.recovery_window,
        };
        let max_rooms = app.config.max_rooms as usize;
        Resume::decide_with(auth, app.sessions.as_ref(), &app.history, &pids, max_rooms).await
    }

    async fn decide_with(
        auth: Option<&str>,
        sessions: &dyn SessionStore,
        history: &Arc<dyn History>,
        pids: &Pids<'_>,
        max_rooms: usize,
    ) -> Resume {
        let asked: Asked = auth
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        let Some(pid) = asked.pid.filter(|p| crate::session::usable_id(p)) else {
            return Resume::fresh(pids, None);
        };
        let text = asked.offset.as_deref().unwrap_or_default();
        let offset = match Offset::decode(text, max_rooms) {
            Ok(offset) => offset,
            Err(e) => return Resume::fresh(pids, Some(e.to_string())),
        };
        let session = match sessions.load(&pid).await {
            Ok(Some(session)) => session,
            // A session is stored once it joins a room: one that never did is all in its empty
            // offset, if this deployment handed out its `pid` (a client cannot name its own).
            Ok(None) if offset.is_empty() && pids.issued_here(&pid) => Session::default(),
            Ok(None) => {
                return Resume::fresh(pids, Some("the session expired or is unknown".into()));
            }
            Err(e) => {
                tracing::warn!("session not loaded for recovery: {e}");
                return Resume::fresh(pids, Some("the session could not be loaded".into()));
            }
        };
        let session = placed(session, &offset);
        match first_gap(&session, history).await {
            Ok(None) => Resume {
                pid,
                session: Some(session),
                notice: Notice {
                    recovered: true,
                    reason: None,
                },
            },
            Ok(Some(room)) => Resume::fresh(
                pids,
                Some(format!(
                    "messages of room {room} after the offset are no longer kept"
                )),
            ),
            Err(e) => {
                tracing::warn!("history not read for recovery: {e}");
                Resume::fresh(pids, Some("missed messages could not be read".into()))
            }
        }
    }
}

/// `session` with each room's cursor where `offset` puts it.
fn placed(mut session: Session, offset: &Offset) -> Session {
    let positions = {
        let names: Vec<&str> = session.rooms.keys().map(String::as_str).collect();
        offset.positions(&names)
    };
    for (cursor, position) in session.rooms.values_mut().zip(positions) {
        if let Some(position) = position {
            cursor.acked = position;
        }
    }
    session
}

/// The first room of `session` whose messages after its cursor were partly dropped.
async fn first_gap(
    session: &Session,
    history: &Arc<dyn History>,
) -> Result<Option<String>, StoreError> {
    let rooms: Vec<(String, Position)> = session
        .rooms
        .iter()
        .map(|(room, cursor)| (room.clone(), cursor.resume_after()))
        .collect();
    let gaps: Vec<Option<String>> = futures_util::stream::iter(rooms)
        .map(|(room, after)| {
            let history = history.clone();
            async move {
                let page = history
                    .read_page(&room, after, Position::MAX, PageLimit::count(1))
                    .await?;
                Ok::<_, StoreError>(page.truncated.then_some(room))
            }
        })
        .buffered(CHECK_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(gaps.into_iter().flatten().next())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use twine_store::{MemoryOptions, MemoryStore, Publish};

    use super::*;
    use crate::outbox::offsets;

    fn store() -> MemoryStore {
        let mut options = MemoryOptions::new(Duration::from_secs(3600), 3);
        options.max_rooms_per_session = 10;
        MemoryStore::new(options)
    }

    async fn decide(store: &MemoryStore, auth: &str) -> Resume {
        let history: Arc<dyn History> = Arc::new(store.clone());
        let signer = Signer::new(b"secret");
        let pids = Pids {
            signer: &signer,
            window: Duration::from_secs(3600),
        };
        Resume::decide_with(Some(auth), store, &history, &pids, 10).await
    }

    #[tokio::test]
    async fn a_known_session_comes_back_where_the_offset_puts_each_room() {
        let store = store();
        store.join("p1", "a", Position(10)).await.unwrap();
        store.join("p1", "b", Position(20)).await.unwrap();
        let offset = offsets::encode([("a", Position(15))].into_iter());
        let auth = format!(r#"{{"pid":"p1","offset":"{offset}"}}"#);
        let resume = decide(&store, &auth).await;
        assert_eq!(resume.pid, "p1");
        assert!(resume.notice.recovered);
        let session = resume.session.unwrap();
        assert_eq!(session.rooms["a"].resume_after(), Position(15));
        assert_eq!(
            session.rooms["b"].resume_after(),
            Position(20),
            "a room the offset does not name resumes from its join"
        );
    }

    #[tokio::test]
    async fn what_cannot_be_recovered_exactly_starts_afresh_and_says_why() {
        let store = store();
        store.join("p1", "a", Position(0)).await.unwrap();
        let fresh = decide(&store, "{}").await;
        assert!(!fresh.notice.recovered && fresh.notice.reason.is_none());
        assert_ne!(fresh.pid, "p1");

        let roomless = format!(r#"{{"pid":"{}","offset":""}}"#, fresh.pid);
        let roomless = decide(&store, &roomless).await;
        assert!(
            roomless.notice.recovered,
            "a pid handed out here that never joined a room: nothing to lose"
        );
        assert_eq!(roomless.pid, fresh.pid);
        let made_up = decide(&store, r#"{"pid":"never-joined","offset":""}"#).await;
        assert!(!made_up.notice.recovered, "a pid the client made up");
        assert_ne!(made_up.pid, "never-joined");
        let other = Pids {
            signer: &Signer::new(b"another deployment"),
            window: Duration::from_secs(3600),
        };
        assert!(!other.issued_here(&fresh.pid));
        let expired = Pids {
            signer: &Signer::new(b"secret"),
            window: Duration::ZERO,
        };
        let old = Pids {
            signer: &Signer::new(b"secret"),
            window: Duration::from_secs(3600),
        };
        let body = format!(
            "{}_{}",
            uuid::Uuid::new_v4().simple(),
            base36(unix_seconds() - 10)
        );
        let signature = Signer::new(b"secret").sign_hex(body.as_bytes());
        let ten_seconds_old = format!("{body}_{}", &signature[..SIGNATURE_HEX]);
        assert!(old.issued_here(&ten_seconds_old));
        assert!(!expired.issued_here(&ten_seconds_old), "past the window");
        let unknown = decide(&store, r#"{"pid":"nobody","offset":"1.1"}"#).await;
        assert_eq!(
            unknown.notice.reason.as_deref(),
            Some("the session expired or is unknown")
        );
        let foreign = decide(&store, r#"{"pid":"p1","offset":"MTIz-socket.io"}"#).await;
        assert_eq!(
            foreign.notice.reason.as_deref(),
            Some("the offset could not be read")
        );
        // Three kept per room: the first of five is dropped.
        for n in 0..5 {
            store
                .append(Publish::new("a", &format!("{{\"n\":{n}}}")))
                .await
                .unwrap();
        }
        let old = decide(&store, r#"{"pid":"p1","offset":""}"#).await;
        assert!(!old.notice.recovered);
        assert!(old.notice.reason.unwrap().contains("room a"));
        assert!(old.session.is_none());
    }
}

//! The Admin UI's login: the `{username, password}` of the namespace's handshake auth checked
//! against `--admin-username` and the bcrypt hash `--admin-password-hash`, or a session id this
//! node handed out on an earlier login (the UI sends it when it reconnects).
//!
//! A bcrypt check costs milliseconds of CPU by design, so checks are bounded: per client address
//! ([`ATTEMPTS_BURST`] at once, then one each [`ATTEMPT_EVERY`]), across the node (one at a
//! time, off the async workers), and a refused check never says which half was wrong.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::rate::{Limiter, limiter_every};

/// Password checks one client address may make at once, and how often one more.
pub const ATTEMPTS_BURST: u32 = 5;
pub const ATTEMPT_EVERY: Duration = Duration::from_secs(12);
/// Client addresses whose attempts are remembered; past it the oldest memory is dropped.
const ADDRESSES: usize = 10_000;
/// How long a session id logs in again, and how many are kept.
const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
const SESSIONS: usize = 1_000;

/// Why a login was refused (the Admin UI shows the message).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("invalid credentials")]
    Invalid,
    #[error("too many login attempts from this address; try again later")]
    TooMany,
}

/// What the UI sends in the namespace's handshake auth.
#[derive(Deserialize, Default)]
struct Credentials {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "sessionId")]
    session_id: Option<String>,
}

/// How a login succeeded.
#[derive(Debug, PartialEq, Eq)]
pub enum LoggedIn {
    /// With the password: a session id for the UI's next connect (none when too many are kept).
    Password(Option<String>),
    /// With a session id from an earlier login.
    Session,
}

pub struct Login {
    username: String,
    hash: String,
    attempts: Mutex<HashMap<IpAddr, Limiter>>,
    checking: Semaphore,
    sessions: Mutex<HashMap<String, Instant>>,
}

impl Login {
    pub fn new(username: &str, hash: &str) -> Login {
        Login {
            username: username.to_owned(),
            hash: hash.to_owned(),
            attempts: Mutex::default(),
            checking: Semaphore::new(1),
            sessions: Mutex::default(),
        }
    }

    /// Checks the handshake's `auth` (JSON text) from `address`.
    pub async fn check(
        &self,
        auth: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<LoggedIn, Refused> {
        let credentials: Credentials = auth
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        if let Some(id) = &credentials.session_id
            && self.session_valid(id)
        {
            return Ok(LoggedIn::Session);
        }
        let (Some(username), Some(password)) = (credentials.username, credentials.password) else {
            return Err(Refused::Invalid);
        };
        if !self.may_attempt(address) {
            return Err(Refused::TooMany);
        }
        let _one_at_a_time = self
            .checking
            .acquire()
            .await
            .map_err(|_| Refused::Invalid)?;
        let hash = self.hash.clone();
        let matches = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let name_matches = bool::from(username.as_bytes().ct_eq(self.username.as_bytes()));
        if matches && name_matches {
            Ok(LoggedIn::Password(self.new_session()))
        } else {
            Err(Refused::Invalid)
        }
    }

    /// Takes one attempt from `address`'s allowance (attempts without an address share one).
    fn may_attempt(&self, address: Option<IpAddr>) -> bool {
        let key = address.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        if attempts.len() >= ADDRESSES && !attempts.contains_key(&key) {
            // Forgetting lets at most ATTEMPTS_BURST more through per address already seen.
            attempts.clear();
        }
        attempts
            .entry(key)
            .or_insert_with(|| limiter_every(ATTEMPT_EVERY, ATTEMPTS_BURST))
            .check()
            .is_ok()
    }

    fn session_valid(&self, id: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(id)
            .is_some_and(|until| Instant::now() < *until)
    }

    fn new_session(&self) -> Option<String> {
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, until| now < *until);
        if sessions.len() >= SESSIONS {
            return None;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        sessions.insert(id.clone(), now + SESSION_TTL);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "secret", cost 4.
    const HASH: &str = "$2a$04$5snF1R8CMaDqN.R6J3iF1.DQHEzrXnAFN8g8Qovnl10eGt1Gh9Kwe";

    #[tokio::test]
    async fn only_the_right_login_passes_and_attempts_are_bounded() {
        let login = Login::new("ops", HASH);
        let at = Some(IpAddr::from([10, 0, 0, 1]));
        let right = r#"{"username":"ops","password":"secret"}"#;
        let wrong = r#"{"username":"ops","password":"nope"}"#;
        let other = r#"{"username":"root","password":"secret"}"#;
        let Ok(LoggedIn::Password(Some(session))) = login.check(Some(right), at).await else {
            panic!("the right login is refused");
        };
        assert_eq!(login.check(Some(wrong), at).await, Err(Refused::Invalid));
        assert_eq!(login.check(Some(other), at).await, Err(Refused::Invalid));
        assert_eq!(login.check(None, at).await, Err(Refused::Invalid));
        let resumed = format!(r#"{{"sessionId":"{session}"}}"#);
        assert_eq!(login.check(Some(&resumed), at).await, Ok(LoggedIn::Session));
        let forged = r#"{"sessionId":"0000"}"#;
        assert_eq!(login.check(Some(forged), at).await, Err(Refused::Invalid));
        for _ in 0..ATTEMPTS_BURST {
            let _ = login.check(Some(wrong), at).await;
        }
        assert_eq!(login.check(Some(right), at).await, Err(Refused::TooMany));
        let elsewhere = Some(IpAddr::from([10, 0, 0, 2]));
        assert!(
            login.check(Some(right), elsewhere).await.is_ok(),
            "per address"
        );
    }
}

//! Engine.IO sessions that have not joined the Socket.IO namespace yet. A handshake costs the
//! node a session (engineioxide's tasks and queues, about 11 KB) until the client connects or
//! `--connect-timeout` closes it; a long-polling handshake is one short request, so the
//! connection limits never see a flood of them. Each handshake therefore takes a place in the
//! pending sessions, in total and per client address, and gives it back when the client joins the
//! namespace or its session ends; a handshake over either bound is refused before Engine.IO sees
//! it.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::limits::{ConnectionLimits, Place, Refusal};

/// The pending sessions' counts.
pub struct PendingSessions {
    limits: Arc<ConnectionLimits>,
}

/// A session's place among the pending ones, kept with its handshake request (engineioxide keeps
/// that request as long as the session lives, so the place goes with the session at the latest).
#[derive(Clone)]
pub struct Pending(Arc<Mutex<Option<Place>>>);

impl PendingSessions {
    /// `per_ip == 0` puts no bound per address.
    pub fn new(total: usize, per_ip: usize) -> PendingSessions {
        PendingSessions {
            limits: ConnectionLimits::new(total, per_ip),
        }
    }

    /// A place for a handshake from `ip`.
    pub fn admit(&self, ip: IpAddr) -> Result<Pending, Refusal> {
        let place = self.limits.admit(ip)?;
        Ok(Pending(Arc::new(Mutex::new(Some(place)))))
    }

    /// Sessions pending now.
    pub fn count(&self) -> usize {
        self.limits.open()
    }
}

impl Pending {
    /// The client joined the namespace: its session is no longer pending.
    pub fn joined(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_given_back_when_the_client_joins_or_its_session_ends() {
        let sessions = PendingSessions::new(10, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = sessions.admit(ip).unwrap();
        let second = sessions.admit(ip).unwrap();
        assert_eq!(sessions.admit(ip).err(), Some(Refusal::TooManyFromAddress));
        first.joined();
        first.joined();
        assert_eq!(sessions.count(), 1, "joined once, counted once");
        let kept = second.clone();
        drop(second);
        assert_eq!(sessions.count(), 1, "still held by the session's request");
        drop(kept);
        assert_eq!(sessions.count(), 0, "the session ended");
        assert!(sessions.admit(ip).is_ok());
    }
}

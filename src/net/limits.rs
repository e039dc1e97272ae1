//! How many TCP connections the node holds: in total and per client address. A connection over a
//! limit is answered at once and closed, so a flood cannot exhaust the node's open files and
//! leave every new client waiting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The counts, shared by the accept loop and every open connection's [`Place`].
pub struct ConnectionLimits {
    total: usize,
    per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The node holds `--max-connections`.
    Full,
    /// The address holds `--max-connections-per-ip`.
    TooManyFromAddress,
}

impl Refusal {
    /// The whole HTTP response the refused client gets before the connection is closed.
    pub fn response(self) -> Vec<u8> {
        let (status, body) = match self {
            Refusal::Full => (
                "503 Service Unavailable",
                "Service Unavailable: this node holds all the connections it may.",
            ),
            Refusal::TooManyFromAddress => (
                "429 Too Many Requests",
                "Too Many Requests: too many connections from this client address.",
            ),
        };
        format!(
            "HTTP/1.1 {status}\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// One admitted connection; dropping it frees its place.
pub struct Place {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    /// `per_ip == 0` puts no limit per address.
    pub fn new(total: usize, per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            total,
            per_ip: if per_ip == 0 { usize::MAX } else { per_ip },
            open: Mutex::default(),
        })
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Place, Refusal> {
        self.admit_from(ip, self.per_ip)
    }

    /// A connection from another node of the fleet: it carries many clients' requests (see
    /// [`crate::fleet::forward`]), so only the total bounds it.
    pub fn admit_fleet_member(self: &Arc<Self>, ip: IpAddr) -> Result<Place, Refusal> {
        self.admit_from(ip, usize::MAX)
    }

    fn admit_from(self: &Arc<Self>, ip: IpAddr, per_ip: usize) -> Result<Place, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.total {
            return Err(Refusal::Full);
        }
        let from_ip = open.by_ip.entry(ip).or_default();
        if *from_ip >= per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        *from_ip += 1;
        open.total += 1;
        Ok(Place {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(n) = open.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_in_total_and_per_address_and_free_on_close() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).err(), Some(Refusal::TooManyFromAddress));
        let _third = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).err(), Some(Refusal::Full));
        drop(first);
        assert!(
            limits.admit(a).is_ok(),
            "a closed connection frees its place"
        );
        assert_eq!(
            limits.open(),
            2,
            "the admitted one above was dropped at once"
        );
    }

    #[test]
    fn refusals_are_complete_http_responses() {
        for refusal in [Refusal::Full, Refusal::TooManyFromAddress] {
            let response = refusal.response();
            let text = std::str::from_utf8(&response).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(length, body.len(), "{head}");
        }
    }
}

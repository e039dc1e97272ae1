//! Source addresses and file limits for holding many connections from one machine. Each
//! loopback source address has its own ephemeral port range, so spreading connections over
//! 127.0.0.0/8 avoids running out of ports long before 100,000 connections.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};

/// Connections per source address before moving to the next one.
const PER_ADDRESS: u32 = 20_000;

/// Hands out 127.0.1.1, 127.0.1.2, ... so consecutive connections share an address until it has
/// `PER_ADDRESS` of them.
pub struct SourceAddrs {
    next: AtomicU32,
    per_address: u32,
}

impl SourceAddrs {
    pub const fn new() -> SourceAddrs {
        SourceAddrs::spread(PER_ADDRESS)
    }

    /// `per_address` connections per source address: fewer for clients that reconnect over and
    /// over, whose closed connections wait in TIME_WAIT on their address's ports for a minute.
    pub const fn spread(per_address: u32) -> SourceAddrs {
        SourceAddrs {
            next: AtomicU32::new(0),
            per_address,
        }
    }

    pub fn next(&self) -> IpAddr {
        let n = self.next.fetch_add(1, Ordering::Relaxed) / self.per_address;
        IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            1 + (n / 250) as u8,
            1 + (n % 250) as u8,
        ))
    }
}

/// The most connections one process can hold here: its open-files hard limit, less headroom.
pub fn connection_ceiling() -> usize {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((0, 0));
    (hard.saturating_sub(2_000) as usize).min(100_000)
}

/// Raises this process's open-files limit to its hard limit (root may raise the hard limit).
pub fn raise_open_files_limit() -> anyhow::Result<()> {
    let want = 1_048_576;
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let target = if hard < want {
        rlimit::setrlimit(rlimit::Resource::NOFILE, want, want)
            .map(|_| want)
            .unwrap_or(hard)
    } else {
        want
    };
    rlimit::setrlimit(rlimit::Resource::NOFILE, target, target.max(hard))?;
    Ok(())
}

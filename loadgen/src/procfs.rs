//! A process's resident memory and CPU time, from /proc: the servers', Redis's and the load
//! generator's own.

use anyhow::Context;

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS in /proc status")?;
    Ok(kb * 1024)
}

/// User plus system CPU time in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').context("stat format")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0) // USER_HZ is 100 on Linux
}

/// The local addresses (`IP:PORT`) of process `pid`'s established IPv4 TCP connections to any of
/// `peers` (by its sockets' inodes in `/proc/<pid>/fd` and `/proc/net/tcp`).
pub fn tcp_connections_to(
    pid: u32,
    peers: &[std::net::SocketAddr],
) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("reading /proc/{pid}/fd"))?
        .flatten()
    {
        if let Ok(link) = std::fs::read_link(fd.path())
            && let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    // `0100007F:1F90` is 127.0.0.1:8080: the address in host byte order (little-endian here).
    let addr = |hex: &str| -> Option<std::net::SocketAddr> {
        let (ip, port) = hex.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?.swap_bytes();
        Some(
            (
                std::net::Ipv4Addr::from(ip),
                u16::from_str_radix(port, 16).ok()?,
            )
                .into(),
        )
    };
    let table = std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local, remote, state (01: established), ..., inode
            if f.len() < 10 || f[3] != "01" || !inodes.contains(f[9]) {
                return None;
            }
            let remote = addr(f[2])?;
            peers.contains(&remote).then(|| addr(f[1]))?
        })
        .collect())
}

/// CPU time the whole machine spent busy (all cores, every process), in seconds.
pub fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let cpu = stat.lines().next().context("/proc/stat is empty")?;
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum();
    Ok(busy as f64 / 100.0)
}

/// CPU time of a process's live threads in seconds, to the nanosecond (the first field of each
/// thread's `schedstat`): where /proc/PID/stat's 10 ms ticks are too coarse, e.g. a burst of a
/// few milliseconds. Threads that have exited no longer count, so this is for short windows of
/// a process whose threads live on.
pub fn precise_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let mut ns = 0u64;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("reading /proc/{pid}/task"))?;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(ns as f64 / 1e9)
}

/// Summed over several processes (the nodes of a deployment).
pub fn total_precise_cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|&p| precise_cpu_seconds(p)).sum()
}

pub fn total_rss_bytes(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter().map(|&p| rss_bytes(p)).sum()
}

/// CPU time spent, over a window, by the servers, the load generator and Redis (every primary).
pub struct CpuWindow {
    servers: Vec<u32>,
    redis: Vec<u32>,
    started: std::time::Instant,
    server0: Vec<f64>,
    own0: f64,
    redis0: Vec<f64>,
    machine0: f64,
}

#[derive(Clone, Debug, Default)]
pub struct CpuSpent {
    pub wall: f64,
    pub server: f64,
    /// Each server process's share, in the order given.
    pub server_each: Vec<f64>,
    pub loadgen: f64,
    pub redis: f64,
    /// Each Redis process's share (the primaries of a cluster), in the order given.
    pub redis_each: Vec<f64>,
    /// Whether Redis's CPU time was read (the run has a Redis).
    pub measured_redis: bool,
    /// Everything else the machine ran meanwhile (other processes, the kernel's own work).
    pub other: f64,
}

fn each(pids: &[u32]) -> anyhow::Result<Vec<f64>> {
    pids.iter().map(|&p| cpu_seconds(p)).collect()
}

fn less(now: Vec<f64>, then: &[f64]) -> Vec<f64> {
    now.iter().zip(then).map(|(a, b)| a - b).collect()
}

impl CpuWindow {
    pub fn start(servers: &[u32], redis: &[u32]) -> anyhow::Result<CpuWindow> {
        Ok(CpuWindow {
            servers: servers.to_vec(),
            redis: redis.to_vec(),
            started: std::time::Instant::now(),
            server0: each(servers)?,
            own0: cpu_seconds(std::process::id())?,
            redis0: each(redis)?,
            machine0: machine_busy_seconds()?,
        })
    }

    pub fn spent(&self) -> anyhow::Result<CpuSpent> {
        let server_each = less(each(&self.servers)?, &self.server0);
        let redis_each = less(each(&self.redis)?, &self.redis0);
        let (server, redis) = (server_each.iter().sum(), redis_each.iter().sum());
        let loadgen = cpu_seconds(std::process::id())? - self.own0;
        let machine = machine_busy_seconds()? - self.machine0;
        Ok(CpuSpent {
            wall: self.started.elapsed().as_secs_f64(),
            server,
            server_each,
            loadgen,
            redis,
            redis_each,
            measured_redis: !self.redis.is_empty(),
            other: (machine - server - loadgen - redis).max(0.0),
        })
    }
}

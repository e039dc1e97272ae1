//! What Redis spent, asked of Redis itself over a few lines of RESP: its process id (for its CPU
//! time in /proc) and `INFO commandstats` (microseconds per call of each command); whether a
//! cluster node is ready; and the subscriptions Redis holds for a given client's connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Calls and microseconds of one command since the last reset.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CommandStat {
    pub calls: u64,
    pub usec: u64,
}

/// Sends one command and returns its reply as text (bulk and simple strings only).
async fn command(addr: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to Redis at {addr}"))?;
    let mut stream = BufReader::new(stream);
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.get_mut().write_all(request.as_bytes()).await?;
    let mut head = String::new();
    stream.read_line(&mut head).await?;
    match head.as_bytes().first() {
        Some(b'+') => Ok(head[1..].trim_end().to_owned()),
        Some(b'$') => {
            let len: usize = head[1..].trim_end().parse()?;
            let mut body = vec![0; len + 2];
            stream.read_exact(&mut body).await?;
            body.truncate(len);
            Ok(String::from_utf8(body)?)
        }
        Some(b'=') => {
            // RESP3 verbatim string: "txt:" then the text.
            let len: usize = head[1..].trim_end().parse()?;
            let mut body = vec![0; len + 2];
            stream.read_exact(&mut body).await?;
            body.truncate(len);
            Ok(String::from_utf8(body)?.chars().skip(4).collect())
        }
        _ => bail!("Redis answered {}", head.trim_end()),
    }
}

pub async fn ping(addr: SocketAddr) -> anyhow::Result<()> {
    command(addr, &["PING"]).await.map(|_| ())
}

pub async fn pid(addr: SocketAddr) -> anyhow::Result<u32> {
    let info = command(addr, &["INFO", "server"]).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .context("process_id in INFO server")?
        .trim()
        .parse()
        .context("process_id")
}

/// Whether a cluster node reports `cluster_state:ok` (it knows every slot's owner).
pub async fn cluster_ok(addr: SocketAddr) -> anyhow::Result<bool> {
    let info = command(addr, &["CLUSTER", "INFO"]).await?;
    Ok(info.lines().any(|l| l.trim() == "cluster_state:ok"))
}

pub async fn reset_stats(addr: SocketAddr) -> anyhow::Result<()> {
    command(addr, &["CONFIG", "RESETSTAT"]).await.map(|_| ())
}

/// `INFO commandstats`, by command name.
pub async fn command_stats(addr: SocketAddr) -> anyhow::Result<BTreeMap<String, CommandStat>> {
    let info = command(addr, &["INFO", "commandstats"]).await?;
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let mut stat = CommandStat::default();
        for field in fields.split(',') {
            match field.split_once('=') {
                Some(("calls", v)) => stat.calls = v.parse().unwrap_or(0),
                Some(("usec", v)) => stat.usec = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        out.insert(name.to_owned(), stat);
    }
    Ok(out)
}

/// What Redis holds for some clients' connections: channels (`SUBSCRIBE` and sharded `SSUBSCRIBE`)
/// and patterns (`PSUBSCRIBE`), from `CLIENT LIST` on each of `redis`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Subscriptions {
    pub connections: u64,
    pub channels: u64,
    pub patterns: u64,
}

/// The subscriptions of the clients whose addresses are `clients`, summed over `redis`.
pub async fn subscriptions(
    redis: &[SocketAddr],
    clients: &[SocketAddr],
) -> anyhow::Result<Subscriptions> {
    let mut found = Subscriptions::default();
    for &addr in redis {
        let list = command(addr, &["CLIENT", "LIST"]).await?;
        for line in list.lines() {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            let Some(client) = field("addr").and_then(|a| a.parse::<SocketAddr>().ok()) else {
                continue;
            };
            if !clients.contains(&client) {
                continue;
            }
            let count = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            found.connections += 1;
            found.channels += count("sub") + count("ssub");
            found.patterns += count("psub");
        }
    }
    Ok(found)
}

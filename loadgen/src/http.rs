//! The plain HTTP/1.1 requests of the Twine flow: fetching the cookie, minting a token,
//! publishing, reading `/metrics` and asking `/ready`, over loopback, without an HTTP client library (one small
//! request each, so the load generator spends little per publish).

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

pub async fn connect_from(source: IpAddr, target: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    Ok(socket.connect(target).await?)
}

/// A whole response to a `Connection: close` request.
async fn get(target: SocketAddr, source: Option<IpAddr>, path: &str) -> anyhow::Result<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    exchange(target, source, &request).await
}

/// Sends `request` on a new connection and reads until the server closes it.
async fn exchange(
    target: SocketAddr,
    source: Option<IpAddr>,
    request: &str,
) -> anyhow::Result<String> {
    let mut stream = match source {
        Some(source) => connect_from(source, target).await?,
        None => TcpStream::connect(target).await?,
    };
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// `POST /api/token` with the API key; returns the minted token.
pub async fn mint_token(target: SocketAddr, api_key: &str, claims: &str) -> anyhow::Result<String> {
    let request = format!(
        "POST /api/token HTTP/1.1\r\nHost: {target}\r\nAuthorization: {api_key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{claims}",
        claims.len()
    );
    let response = exchange(target, None, &request).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no body in the /api/token response")?;
    if head.split_whitespace().nth(1) != Some("201") {
        bail!(
            "POST /api/token answered {}",
            head.lines().next().unwrap_or("")
        );
    }
    let minted: serde_json::Value = serde_json::from_str(body).context("the minted token")?;
    minted["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in the /api/token answer")
}

/// `GET /set-cookie`; returns the `twineid=...` pair.
pub async fn fetch_cookie(source: IpAddr, target: SocketAddr) -> anyhow::Result<String> {
    let response = get(target, Some(source), "/set-cookie").await?;
    response
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim())
        })
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .context("no Set-Cookie in the /set-cookie response")
}

/// Our server's `twine_delivery_lag_seconds` from `GET /metrics`; `None` from a server without it.
pub async fn delivery_lag(target: SocketAddr) -> Option<f64> {
    metric(target, "twine_delivery_lag_seconds").await
}

/// A metric from `GET /metrics`, summed over its label sets; `None` from a server without it.
pub async fn metric(target: SocketAddr, name: &str) -> Option<f64> {
    sample_sum(&metrics(target).await?, name, &[])
}

/// The text of `GET /metrics`.
pub async fn metrics(target: SocketAddr) -> Option<String> {
    get(target, None, "/metrics").await.ok()
}

/// The samples of `name` in a `/metrics` text whose labels include every `key="value"` of
/// `labels`, summed; `None` when there are none.
pub fn sample_sum(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.as_bytes().first() {
                Some(b' ') if labels.is_empty() => rest,
                Some(b'{') => {
                    let end = rest.find('}')?;
                    let set: Vec<&str> = rest[1..end].split(',').collect();
                    if !labels.iter().all(|l| set.contains(l)) {
                        return None;
                    }
                    &rest[end + 1..]
                }
                _ => return None,
            };
            value.split_whitespace().next()?.parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The fleet as one node of ours sees it (`GET /api/fleet` with the API key): each node's address
/// and the sockets it holds; `None` from a server without it.
pub async fn fleet_sockets(target: SocketAddr, api_key: &str) -> Option<Vec<(String, usize)>> {
    let request = format!(
        "GET /api/fleet HTTP/1.1\r\nHost: {target}\r\nAuthorization: Bearer {api_key}\r\nConnection: close\r\n\r\n"
    );
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        exchange(target, None, &request),
    )
    .await
    .ok()?
    .ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if head.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    // The JSON object, whether or not the body came in chunks.
    let json = &body[body.find('{')?..=body.rfind('}')?];
    let fleet: serde_json::Value = serde_json::from_str(json).ok()?;
    fleet["nodes"]
        .as_array()?
        .iter()
        .map(|n| {
            Some((
                n["address"].as_str()?.to_owned(),
                n["sockets"].as_u64()? as usize,
            ))
        })
        .collect()
}

/// Whether `GET /ready` answers `200`: `Some(false)` for another answer or a refused
/// connection, `None` when no answer came within `patience`.
pub async fn ready(target: SocketAddr, patience: std::time::Duration) -> Option<bool> {
    match tokio::time::timeout(patience, get(target, None, "/ready")).await {
        Ok(Ok(response)) => Some(response.split_whitespace().nth(1) == Some("200")),
        Ok(Err(_)) => Some(false),
        Err(_) => None,
    }
}

/// A kept-alive connection that publishes with `POST /api/twine`.
pub struct Publisher {
    reader: BufReader<TcpStream>,
    target: SocketAddr,
    request: String,
}

/// A publish's answer: its status, and whether the connection may carry another request.
pub struct Answer {
    pub status: u16,
    pub reusable: bool,
}

/// A publish that got no whole answer.
#[derive(Debug)]
pub struct Unanswered {
    /// Some of an answer had arrived (the server read the request).
    pub answered: bool,
    pub error: anyhow::Error,
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl Publisher {
    pub async fn connect(target: SocketAddr) -> anyhow::Result<Publisher> {
        let stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        Ok(Publisher {
            reader: BufReader::new(stream),
            target,
            request: String::with_capacity(512),
        })
    }

    /// Whether the connection is still open as far as can be told without waiting: a server
    /// that closed it (an idle keep-alive timeout) has left an end of stream to read.
    pub fn is_open(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            // Bytes nobody asked for: the connection is out of step.
            return false;
        }
        let mut probe = [0u8; 1];
        match self.reader.get_ref().try_read(&mut probe) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }

    /// Publishes `payload` (a JSON object's text) to `room` and reads the answer.
    pub async fn publish(
        &mut self,
        api_key: &str,
        room: &str,
        payload: &str,
    ) -> Result<Answer, Unanswered> {
        let mut answered = false;
        self.exchange(api_key, room, payload, &mut answered)
            .await
            .map_err(|error| Unanswered { answered, error })
    }

    async fn exchange(
        &mut self,
        api_key: &str,
        room: &str,
        payload: &str,
        answered: &mut bool,
    ) -> anyhow::Result<Answer> {
        use std::fmt::Write as _;
        let body_len = r#"{"room_id":"","payload":}"#.len() + room.len() + payload.len();
        self.request.clear();
        let _ = write!(
            self.request,
            "POST /api/twine HTTP/1.1\r\nHost: {}\r\nAuthorization: {api_key}\r\nContent-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n{{\"room_id\":\"{room}\",\"payload\":{payload}}}",
            self.target,
        );
        self.reader
            .get_mut()
            .write_all(self.request.as_bytes())
            .await?;
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            bail!("connection closed before an answer");
        }
        *answered = true;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("status line {:?}", line.trim_end()))?;
        let mut length = 0usize;
        let mut chunked = false;
        let mut reusable = true;
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("connection closed mid-response");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse()?;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                } else if name.eq_ignore_ascii_case("connection") {
                    reusable = !value.eq_ignore_ascii_case("close");
                }
            }
        }
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim(), 16)?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
            }
        } else if length > 0 {
            let mut body = vec![0; length];
            self.reader.read_exact(&mut body).await?;
        }
        Ok(Answer { status, reusable })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_picked_by_label() {
        let text = "# TYPE twine_hook_calls counter\n\
            twine_hook_calls_total{hook=\"connect\",outcome=\"allowed\"} 7\n\
            twine_hook_calls_total{hook=\"connect\",outcome=\"busy\"} 1\n\
            twine_hook_calls_total{hook=\"publish\",outcome=\"allowed\"} 3\n\
            twine_hook_seconds_sum{hook=\"connect\"} 0.5\n\
            twine_connections 4\n";
        let calls = "twine_hook_calls_total";
        assert_eq!(sample_sum(text, calls, &["hook=\"connect\""]), Some(8.0));
        assert_eq!(sample_sum(text, calls, &[]), Some(11.0));
        assert_eq!(
            sample_sum(text, calls, &["hook=\"publish\"", "outcome=\"busy\""]),
            None
        );
        assert_eq!(
            sample_sum(text, "twine_hook_seconds_sum", &["hook=\"connect\""]),
            Some(0.5)
        );
        assert_eq!(sample_sum(text, "twine_connections", &[]), Some(4.0));
        assert_eq!(sample_sum(text, "twine_connections", &["hook=\"x\""]), None);
    }
}

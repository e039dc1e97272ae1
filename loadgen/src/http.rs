//! The plain HTTP/1.1 requests of the Twine flow: fetching the cookie, publishing, reading
//! `/metrics` and asking `/ready`, over loopback, without an HTTP client library (one small
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
    let mut stream = match source {
        Some(source) => connect_from(source, target).await?,
        None => TcpStream::connect(target).await?,
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
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
    let response = get(target, None, "/metrics").await.ok()?;
    let values: Vec<f64> = response
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.as_bytes().first() {
                Some(b' ') => rest,
                Some(b'{') => &rest[rest.find('}')? + 1..],
                _ => return None,
            };
            value.split_whitespace().next()?.parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
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

    /// Publishes `payload` (a JSON object's text) to `room` and reads the answer.
    pub async fn publish(
        &mut self,
        api_key: &str,
        room: &str,
        payload: &str,
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
        self.reader.read_line(&mut line).await?;
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

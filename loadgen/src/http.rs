//! The plain HTTP/1.1 requests of the Twine flow: fetching the cookie and publishing, over
//! loopback, without an HTTP client library (one small request each).

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

pub async fn connect_from(source: IpAddr, target: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    Ok(socket.connect(target).await?)
}

/// `GET /set-cookie`; returns the `twineid=...` pair.
pub async fn fetch_cookie(source: IpAddr, target: SocketAddr) -> anyhow::Result<String> {
    let mut stream = connect_from(source, target).await?;
    let request =
        format!("GET /set-cookie HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
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

/// A kept-alive connection that publishes with `POST /api/twine`.
pub struct Publisher {
    reader: BufReader<TcpStream>,
    target: SocketAddr,
    api_key: String,
}

impl Publisher {
    pub async fn connect(target: SocketAddr, api_key: &str) -> anyhow::Result<Publisher> {
        let stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        Ok(Publisher {
            reader: BufReader::new(stream),
            target,
            api_key: api_key.to_owned(),
        })
    }

    /// Publishes and waits for the status; fails unless it is 201.
    pub async fn publish(&mut self, room: &str, payload: &serde_json::Value) -> anyhow::Result<()> {
        let body = serde_json::json!({ "room_id": room, "payload": payload }).to_string();
        let request = format!(
            "POST /api/twine HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.target,
            self.api_key,
            body.len()
        );
        self.reader.get_mut().write_all(request.as_bytes()).await?;
        let mut status = String::new();
        self.reader.read_line(&mut status).await?;
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("connection closed mid-response");
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.trim().eq_ignore_ascii_case("chunked");
                }
            }
        }
        if chunked {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).await?;
                let size = usize::from_str_radix(size.trim(), 16)?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
            }
        } else {
            let mut body = vec![0; length];
            self.reader.read_exact(&mut body).await?;
        }
        if !status.contains(" 201 ") {
            bail!("publish answered {}", status.trim());
        }
        Ok(())
    }
}

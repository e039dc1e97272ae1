//! One simulated Twine client speaking Engine.IO v4 / Socket.IO v5 over WebSocket: handshake,
//! namespace connect, subscribe, heartbeats answered, messages decoded just enough to measure.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::http::connect_from;

/// What a benchmark publish carries, beside what the server adds.
#[derive(Deserialize)]
pub struct Delivered {
    pub timestamp: u64,
    /// Publish sequence number within the run.
    pub seq: u64,
    /// Publisher's clock at send, in microseconds since the epoch.
    pub sent_us: u64,
}

pub enum Event {
    Message(Delivered),
    Joined,
    Other,
}

pub struct Client {
    ws: WebSocketStream<TcpStream>,
}

fn config() -> WebSocketConfig {
    // Small buffers: 100,000 of these live in one process.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

impl Client {
    /// Opens the WebSocket transport and joins the default namespace.
    pub async fn connect(
        target: SocketAddr,
        source: IpAddr,
        cookie: Option<&str>,
    ) -> anyhow::Result<Client> {
        let stream = connect_from(source, target).await?;
        stream.set_nodelay(true)?;
        let mut request =
            format!("ws://{target}/socket.io/?EIO=4&transport=websocket").into_client_request()?;
        if let Some(cookie) = cookie {
            request
                .headers_mut()
                .insert("Cookie", HeaderValue::from_str(cookie)?);
        }
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config())).await?;
        let mut client = Client { ws };
        let open = client
            .next_text()
            .await?
            .context("closed before the Engine.IO open packet")?;
        if !open.starts_with('0') {
            bail!("expected the Engine.IO open packet, got {open:.40}");
        }
        client.send("40").await?;
        loop {
            let text = client
                .next_text()
                .await?
                .context("closed before the namespace connect")?;
            if text.starts_with("40") {
                return Ok(client);
            }
            if text.starts_with("44") {
                bail!("namespace connect refused: {text:.80}");
            }
        }
    }

    async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Frame::text(text)).await?;
        Ok(())
    }

    /// The next text frame, answering heartbeats on the way; `None` when the server closed.
    async fn next_text(&mut self) -> anyhow::Result<Option<String>> {
        while let Some(frame) = self.ws.next().await {
            match frame? {
                Frame::Text(text) if text.as_str() == "2" => self.send("3").await?,
                Frame::Text(text) => return Ok(Some(text.as_str().to_owned())),
                Frame::Close(_) => return Ok(None),
                _ => {}
            }
        }
        Ok(None)
    }

    pub async fn subscribe(&mut self, room: &str) -> anyhow::Result<()> {
        let packet = format!("42{}", serde_json::json!(["subscribe", room]));
        self.send(&packet).await
    }

    pub async fn acknowledge(&mut self, timestamp: u64) -> anyhow::Result<()> {
        self.send(&format!("42[\"updateSessionTS\",{timestamp}]"))
            .await
    }

    /// The next Socket.IO event; `None` when the connection ended.
    pub async fn next_event(&mut self) -> anyhow::Result<Option<Event>> {
        let Some(text) = self.next_text().await? else {
            return Ok(None);
        };
        let Some(body) = text.strip_prefix("42") else {
            return Ok(Some(Event::Other));
        };
        if body.starts_with("[\"message\"") {
            let (_, delivered): (String, Delivered) = serde_json::from_str(body)?;
            return Ok(Some(Event::Message(delivered)));
        }
        if body.starts_with("[\"roomJoined\"") {
            return Ok(Some(Event::Joined));
        }
        Ok(Some(Event::Other))
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

//! One simulated client speaking Engine.IO v4 / Socket.IO v5 over WebSocket: handshake,
//! namespace connect, subscribe, heartbeats answered, messages decoded just enough to measure.
//!
//! It connects either the Twine way (the `twineid` cookie on the handshake; the server finds the
//! session) or the way stock socket.io-client recovers a session (Socket.IO v5 connection state
//! recovery): the namespace connect reply carries a `pid`, each broadcast event carries an
//! offset as its last argument, and a reconnect sends `{"pid": ..., "offset": ...}` in the
//! connect packet, as `socket.io-client/lib/socket.ts` does. A token, when it has one, travels in
//! the same connect packet (`{"token": ...}`), and it may publish with an acknowledgement.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::http::connect_from;

/// What a benchmark publish carries, beside what the server adds.
pub struct Delivered {
    pub timestamp: u64,
    /// Publish sequence number within the run.
    pub seq: u64,
    /// Publisher's clock at send, in microseconds since the epoch.
    pub sent_us: u64,
    /// The Socket.IO recovery offset appended as the last argument, when the server sends one.
    pub offset: Option<String>,
}

pub enum Event {
    Message(Delivered),
    Joined,
    /// The acknowledgement (`43<id>[...]`) of an event sent with id `.0`; `.1` its arguments.
    Ack(u64, String),
    /// An `error` event: something the client asked was refused.
    Error,
    /// The server disconnected the namespace (`41`): socket.io-client does not reconnect after it.
    Kicked,
    Other,
}

/// How a client introduces itself.
#[derive(Default)]
pub struct Hello<'a> {
    /// The `twineid=...` cookie, sent on the WebSocket handshake.
    pub cookie: Option<&'a str>,
    /// A session to recover the Socket.IO v5 way: `(pid, offset)`.
    pub recover: Option<(&'a str, &'a str)>,
    /// A token (`POST /api/token`), sent as `auth.token`.
    pub token: Option<&'a str>,
}

pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// Events that arrived before the namespace connect reply (a recovering socket.io server
    /// sends the missed packets first), handed out before anything read later.
    early: VecDeque<String>,
    /// The `pid` of the namespace connect reply, when the server does connection state recovery.
    pub pid: Option<String>,
    /// Acknowledgements written but not flushed: one flush covers every frame read in a batch.
    unflushed: bool,
}

fn config() -> WebSocketConfig {
    // Small buffers: 20,000 of these live in one process. Writes are buffered so the
    // acknowledgements of a batch of frames go out in one write (see `next_text`).
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
}

/// The number after `"key":` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}

/// Decodes `["message",{...},"offset"?]` by looking for the three numbers it needs: a full JSON
/// parse per delivery would make the load generator, not the server, the limit.
fn decode_message(body: &str) -> anyhow::Result<Delivered> {
    let seq = number_after(body, "\"seq\":").context("message without seq")?;
    let sent_us = number_after(body, "\"sent_us\":").context("message without sent_us")?;
    let timestamp = number_after(body, "\"timestamp\":").unwrap_or(0);
    let offset = body.strip_suffix("\"]").and_then(|rest| {
        let at = rest.rfind('"')?;
        rest[..at].ends_with(',').then(|| rest[at + 1..].to_owned())
    });
    Ok(Delivered {
        timestamp,
        seq,
        sent_us,
        offset,
    })
}

impl Client {
    /// Opens the WebSocket transport and joins the default namespace.
    pub async fn connect(
        target: SocketAddr,
        source: IpAddr,
        hello: Hello<'_>,
    ) -> anyhow::Result<Client> {
        let stream = connect_from(source, target).await?;
        stream.set_nodelay(true)?;
        let mut request =
            format!("ws://{target}/socket.io/?EIO=4&transport=websocket").into_client_request()?;
        if let Some(cookie) = hello.cookie {
            request
                .headers_mut()
                .insert("Cookie", HeaderValue::from_str(cookie)?);
        }
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config())).await?;
        let mut client = Client {
            ws,
            early: VecDeque::new(),
            pid: None,
            unflushed: false,
        };
        let open = client
            .next_text()
            .await?
            .context("closed before the Engine.IO open packet")?;
        if !open.starts_with('0') {
            bail!("expected the Engine.IO open packet, got {open:.40}");
        }
        let mut auth = serde_json::Map::new();
        if let Some((pid, offset)) = hello.recover {
            auth.insert("pid".into(), pid.into());
            auth.insert("offset".into(), offset.into());
        }
        if let Some(token) = hello.token {
            auth.insert("token".into(), token.into());
        }
        if auth.is_empty() {
            client.send("40").await?;
        } else {
            let auth = serde_json::Value::Object(auth);
            client.send(&format!("40{auth}")).await?;
        }
        loop {
            let text = client
                .next_text()
                .await?
                .context("closed before the namespace connect")?;
            if let Some(reply) = text.strip_prefix("40") {
                if let Ok(data) = serde_json::from_str::<serde_json::Value>(reply) {
                    client.pid = data["pid"].as_str().map(str::to_owned);
                }
                return Ok(client);
            }
            if text.starts_with("44") {
                bail!("namespace connect refused: {text:.80}");
            }
            if text.starts_with("42") {
                client.early.push_back(text);
            }
        }
    }

    async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Frame::text(text)).await?;
        Ok(())
    }

    /// The next text frame, answering heartbeats on the way; `None` when the server closed.
    async fn next_text(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            let frame = if self.unflushed {
                match self.ws.next().now_or_never() {
                    Some(frame) => frame,
                    None => {
                        self.ws.flush().await?;
                        self.unflushed = false;
                        self.ws.next().await
                    }
                }
            } else {
                self.ws.next().await
            };
            let Some(frame) = frame else {
                return Ok(None);
            };
            match frame? {
                Frame::Text(text) if text.as_str() == "2" => self.send("3").await?,
                Frame::Text(text) => return Ok(Some(text.as_str().to_owned())),
                Frame::Close(_) => {
                    // Acknowledgements already written go out before the close reply, as a
                    // client that writes each one at once would have sent them.
                    if self.unflushed {
                        let _ = self.ws.flush().await;
                    }
                    return Ok(None);
                }
                _ => {}
            }
        }
    }

    pub async fn subscribe(&mut self, room: &str) -> anyhow::Result<()> {
        let packet = format!("42{}", serde_json::json!(["subscribe", room]));
        self.send(&packet).await
    }

    /// A client publish (`--client-publish`) into `room`, asking for acknowledgement `ack`: the
    /// argument is `POST /api/twine`'s body.
    pub async fn publish(
        &mut self,
        ack: u64,
        room: &str,
        payload: &serde_json::Value,
    ) -> anyhow::Result<()> {
        let arg = serde_json::json!({ "room_id": room, "payload": payload });
        self.send(&format!("42{ack}[\"publish\",{arg}]")).await
    }

    /// `updateSessionTS`, as twine-client-library sends for each message; written now, flushed
    /// with the others of its batch when nothing more is waiting to be read.
    pub async fn acknowledge(&mut self, timestamp: u64) -> anyhow::Result<()> {
        self.ws
            .feed(Frame::text(format!("42[\"updateSessionTS\",{timestamp}]")))
            .await?;
        self.unflushed = true;
        Ok(())
    }

    /// The next Socket.IO event; `None` when the connection ended.
    pub async fn next_event(&mut self) -> anyhow::Result<Option<Event>> {
        let text = match self.early.pop_front() {
            Some(text) => text,
            None => match self.next_text().await? {
                Some(text) => text,
                None => return Ok(None),
            },
        };
        if text == "41" {
            return Ok(Some(Event::Kicked));
        }
        if let Some(ack) = text.strip_prefix("43") {
            let digits = ack.bytes().take_while(u8::is_ascii_digit).count();
            if let Ok(id) = ack[..digits].parse() {
                return Ok(Some(Event::Ack(id, ack[digits..].to_owned())));
            }
        }
        let Some(body) = text.strip_prefix("42") else {
            return Ok(Some(Event::Other));
        };
        if body.starts_with("[\"message\"") {
            return Ok(Some(Event::Message(decode_message(body)?)));
        }
        if body.starts_with("[\"roomJoined\"") {
            return Ok(Some(Event::Joined));
        }
        if body.starts_with("[\"error\"") {
            return Ok(Some(Event::Error));
        }
        Ok(Some(Event::Other))
    }

    /// Closes the WebSocket: the server sees a transport close, after which both servers keep
    /// the session for recovery.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Drops the connection with no WebSocket close, cleanly (`--loss clean`): what was already
    /// written (acknowledgements) goes out first, then the TCP connection closes (FIN), so the
    /// server has the last acknowledgements and sees the close at once.
    pub async fn abandon(mut self) {
        let _ = self.ws.flush().await;
    }

    /// Drops the connection as a network that goes away does (`--loss silent`): acknowledgements
    /// written but not yet flushed are lost, and nothing more is sent, neither pong nor FIN, so
    /// the server learns of it only by its ping timeout (or by the client's next connection).
    /// The socket stays open meanwhile, what arrives on it read and dropped, until the server
    /// closes it or `hold` passes; it is then reset (`SO_LINGER` 0), never closed with a FIN.
    pub fn vanish(self, hold: std::time::Duration) {
        let mut ws = self.ws;
        let _ = ws.get_ref().set_zero_linger();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut sink = [0u8; 512];
            let _ = tokio::time::timeout(hold, async {
                while let Ok(n) = ws.get_mut().read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
            drop(ws);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_twine_and_socket_io_messages() {
        let ours = decode_message(
            r#"["message",{"seq":7,"sent_us":1700000000000001,"text":"x","timestamp":1700000000001,"room":"bench-0"}]"#,
        )
        .unwrap();
        assert_eq!(
            (ours.seq, ours.sent_us, ours.timestamp),
            (7, 1_700_000_000_000_001, 1_700_000_000_001)
        );
        assert!(ours.offset.is_none());
        let recovering = decode_message(
            r#"["message",{"seq":8,"sent_us":2,"timestamp":3,"room":"bench-0"},"1732000000000-0"]"#,
        )
        .unwrap();
        assert_eq!(recovering.seq, 8);
        assert_eq!(recovering.offset.as_deref(), Some("1732000000000-0"));
    }
}

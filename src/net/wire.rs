//! One accepted TCP connection. It counts the bytes written to it towards the Socket.IO
//! connection it carries (once that is known), and the server can cut it: its pending and later
//! reads and writes fail, so the transport closes even when the client has stopped reading. A
//! WebSocket handshake's OPEN packet, and the CONNECT reply of a connection to be told a `pid`,
//! are rewritten in their frames on their way out ([`crate::transport::socketio::frames`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::limits::Place;
use crate::transport::socketio::frames::Rewrite;
use crate::transport::socketio::meter::{Carrier, SendMeter};

/// The server's side of one TCP connection, shared with the requests it carries (as a request
/// extension).
pub struct Wire {
    pub peer: SocketAddr,
    meter: OnceLock<Arc<SendMeter>>,
    /// A rewrite of the wire's own (the WebSocket handshake's OPEN), before any connection's.
    rewrite: Mutex<Option<Rewrite>>,
    rewrite_pending: AtomicBool,
    cut: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
    /// Namespace connects asked over this connection that are being decided, and refused.
    connecting: AtomicU32,
    refused_connects: AtomicU32,
}

/// Namespace connects refused over one TCP connection before it is closed: a client whose
/// connect is refused may ask again (with a new token), not forever.
pub const MAX_REFUSED_CONNECTS: u32 = 8;
/// Namespace connects decided at once over one TCP connection (a few sessions' long-polling
/// requests can share a keep-alive connection).
pub const MAX_CONNECTING: u32 = 4;

/// A namespace connect being decided on a wire; the wire takes the next when it is dropped.
pub struct Connecting<'a>(&'a Wire);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.connecting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Wire {
    pub fn new(peer: SocketAddr) -> Arc<Wire> {
        Arc::new(Wire {
            peer,
            meter: OnceLock::new(),
            rewrite: Mutex::new(None),
            rewrite_pending: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
            connecting: AtomicU32::new(0),
            refused_connects: AtomicU32::new(0),
        })
    }

    /// From now on, bytes written here were queued for `meter`'s connection (this wire is its
    /// WebSocket).
    pub fn carry(self: &Arc<Self>, meter: &Arc<SendMeter>) {
        if self.meter.set(meter.clone()).is_ok() {
            let carrier: Arc<dyn Carrier> = self.clone();
            meter.carried_by(&carrier);
        }
    }

    /// The next packet `rewrite` waits for is rewritten on its way out.
    pub fn rewrite(&self, rewrite: Rewrite) {
        *self.rewrite.lock().unwrap_or_else(|e| e.into_inner()) = Some(rewrite);
        self.rewrite_pending.store(true, Ordering::Release);
    }

    /// What the next frames are looked at for: the wire's own rewrite, else the `pid` of the
    /// connection it carries.
    fn pending_rewrite(&self) -> Option<Rewrite> {
        if self.rewrite_pending.load(Ordering::Acquire) {
            return self
                .rewrite
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
        }
        let pid = self.meter.get()?.pending_pid()?;
        Some(Rewrite::Pid(pid))
    }

    /// The rewrite's packet went out.
    fn rewritten(&self, rewrite: &Rewrite) {
        match rewrite {
            Rewrite::Pid(_) => {
                if let Some(meter) = self.meter.get() {
                    meter.pid_sent();
                }
            }
            Rewrite::MaxPayload(_) => {
                self.rewrite_pending.store(false, Ordering::Release);
                self.rewrite
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
            }
        }
    }

    /// Starts deciding a namespace connect: at most [`MAX_CONNECTING`] at once per connection,
    /// and none after [`MAX_REFUSED_CONNECTS`] were refused (the connection is then closed).
    pub fn connecting(&self) -> Option<Connecting<'_>> {
        if self.refused_connects.load(Ordering::Acquire) >= MAX_REFUSED_CONNECTS {
            self.cut();
            return None;
        }
        self.connecting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CONNECTING).then_some(n + 1)
            })
            .ok()
            .map(|_| Connecting(self))
    }

    /// A namespace connect over this connection was refused.
    pub fn connect_refused(&self) {
        if self.refused_connects.fetch_add(1, Ordering::AcqRel) + 1 >= MAX_REFUSED_CONNECTS {
            self.cut();
        }
    }

    /// Fails every read and write from now on, including those waiting.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }
}

impl Carrier for Wire {
    fn cut(&self) {
        Wire::cut(self);
    }
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "cut by the server")
}

/// A TCP stream that reports to its [`Wire`] and holds its place in the connection limits.
pub struct MeteredStream {
    io: TcpStream,
    wire: Arc<Wire>,
    _place: Place,
    /// A rewritten frame not yet all written; it goes before anything else.
    rewritten: Vec<u8>,
}

impl MeteredStream {
    pub fn new(io: TcpStream, wire: Arc<Wire>, place: Place) -> MeteredStream {
        MeteredStream {
            io,
            wire,
            _place: place,
            rewritten: Vec::new(),
        }
    }

    /// Writes what is left of a rewritten frame; ready once it is all written.
    fn poll_rewritten(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.rewritten.is_empty() {
            let polled = Pin::new(&mut self.io).poll_write(cx, &self.rewritten);
            match self.written(cx, polled) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.rewritten.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// While a packet waits to be rewritten: how much of `buf` to write as it is (up to the
    /// packet's frame), or the frame taken from `buf` and rewritten.
    fn rewrite(&mut self, buf: &[u8]) -> Option<io::Result<usize>> {
        let rewrite = self.wire.pending_rewrite()?;
        let at = rewrite.find_frame(buf)?;
        if at > 0 {
            return Some(Ok(at));
        }
        let (replaced, frame) = rewrite.frame(buf)?;
        self.wire.rewritten(&rewrite);
        self.rewritten = frame;
        Some(Ok(replaced))
    }
}

impl AsyncRead for MeteredStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.wire.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if polled.is_pending() {
            self.wire.reader.register(cx.waker());
            if self.wire.is_cut() {
                return Poll::Ready(Err(cut_error()));
            }
        }
        polled
    }
}

impl MeteredStream {
    /// Counts what a write took, or arranges for a waiting write to see a cut.
    fn written(
        &self,
        cx: &Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if let Some(meter) = self.wire.meter.get() {
                    meter.written(n);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                self.wire.writer.register(cx.waker());
                if self.wire.is_cut() {
                    return Poll::Ready(Err(cut_error()));
                }
                Poll::Pending
            }
            failed => failed,
        }
    }
}

impl AsyncWrite for MeteredStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.wire.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        std::task::ready!(self.poll_rewritten(cx))?;
        let polled = match self.rewrite(buf) {
            Some(Ok(taken)) if !self.rewritten.is_empty() => {
                // `taken` bytes of `buf` are now in `rewritten`: accepted, written from there.
                let _ = self.poll_rewritten(cx)?;
                return Poll::Ready(Ok(taken));
            }
            Some(Ok(before)) => Pin::new(&mut self.io).poll_write(cx, &buf[..before]),
            Some(Err(e)) => return Poll::Ready(Err(e)),
            None => Pin::new(&mut self.io).poll_write(cx, buf),
        };
        self.written(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.wire.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        if self.wire.pending_rewrite().is_some() || !self.rewritten.is_empty() {
            // One buffer at a time until the packet is out, so it is looked for whole.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return self.poll_write(cx, first);
        }
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.written(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_rewritten(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_rewritten(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

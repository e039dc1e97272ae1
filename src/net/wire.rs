//! One accepted TCP connection. It counts the bytes written to it towards the Socket.IO
//! connection it carries (once that is known), and the server can cut it: its pending and later
//! reads and writes fail, so the transport closes even when the client has stopped reading.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::limits::Slot;
use super::meter::SendMeter;

/// The server's side of one TCP connection, shared with the requests it carries (as a request
/// extension).
pub struct Wire {
    pub peer: SocketAddr,
    meter: OnceLock<Arc<SendMeter>>,
    cut: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Wire {
    pub fn new(peer: SocketAddr) -> Arc<Wire> {
        Arc::new(Wire {
            peer,
            meter: OnceLock::new(),
            cut: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        })
    }

    /// From now on, bytes written here were queued for `meter`'s connection (this wire is its
    /// WebSocket).
    pub fn carry(self: &Arc<Self>, meter: &Arc<SendMeter>) {
        if self.meter.set(meter.clone()).is_ok() {
            meter.carried_by(self);
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

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "cut by the server")
}

/// A TCP stream that reports to its [`Wire`] and holds its place in the connection limits.
pub struct MeteredStream {
    io: TcpStream,
    wire: Arc<Wire>,
    _slot: Slot,
}

impl MeteredStream {
    pub fn new(io: TcpStream, wire: Arc<Wire>, slot: Slot) -> MeteredStream {
        MeteredStream {
            io,
            wire,
            _slot: slot,
        }
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
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
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
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.written(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

//! A deadline on a whole request body, from when its headers arrived: a client trickling an
//! endless body one byte at a time would never trip a timeout between frames.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::BoxError;
use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// The body did not arrive before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

pin_project! {
    /// The timer is made on the first poll: a WebSocket handshake's empty body is never polled,
    /// and its request lives as long as the socket.
    pub struct Deadline<B> {
        #[pin]
        body: B,
        at: Instant,
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> Deadline<B> {
    pub fn new(body: B, timeout: Duration) -> Deadline<B> {
        Deadline {
            body,
            at: Instant::now() + timeout,
            deadline: None,
        }
    }
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let at = *this.at;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        // Checked first: a body that always has one more byte ready must still end.
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimedOut.into())));
        }
        this.body
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

//! Long-polling responses on their way out: the handshake's OPEN packet and the CONNECT reply
//! rewritten ([`super::frames`]), and every body's bytes counted as written for its connection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::frames::Rewrite;
use super::meter::SendMeter;

/// The polling handshake's response, telling clients `max_payload`, its session id naming
/// `node` when the fleet shares sessions' requests ([`crate::fleet::forward`]).
pub async fn handshake(response: Response, max_payload: u64, node: Option<&str>) -> Response {
    rewritten(response, |open| {
        let open = Rewrite::MaxPayload(max_payload).polling(open)?;
        Some(match node {
            Some(node) => super::frames::with_node(&open, node).unwrap_or(open),
            None => open,
        })
    })
    .await
}

/// A poll's response for the connection `meter` counts: its CONNECT reply, if the connection
/// waits for it with a `pid` and it is in this response, gets the `pid`; its bytes count as
/// written as they leave.
pub async fn response(response: Response, meter: Arc<SendMeter>) -> Response {
    let response = match meter.pending_pid() {
        Some(pid) => {
            rewritten(response, |payload| {
                let with_pid = Rewrite::Pid(pid).polling(payload)?;
                meter.pid_sent();
                Some(with_pid)
            })
            .await
        }
        None => response,
    };
    response.map(|body| Body::new(Counted { body, meter }))
}

/// `response` with its body replaced by what `rewrite` makes of it, or as it was when `rewrite`
/// gives `None`. Engine.IO builds long-polling bodies whole in memory, so reading one whole holds
/// nothing more.
async fn rewritten(response: Response, rewrite: impl FnOnce(&[u8]) -> Option<Vec<u8>>) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!("long-polling response not read: {e}");
            return Response::from_parts(parts, Body::empty());
        }
    };
    match rewrite(&bytes) {
        Some(new) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(new))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

/// A long-polling response body whose bytes count as written for its connection.
struct Counted {
    body: Body,
    meter: Arc<SendMeter>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.meter.written(data.len());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

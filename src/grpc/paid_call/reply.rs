//! The upstream's reply on its way to the client, streamed: the headers are passed on as soon as
//! they arrive, every message frame as the service sends it, and the final status decides the
//! payment **before** it is passed on:
//! - `grpc-status: 0` commits the payment (to its end whoever stops waiting, see `pending`); the
//!   service's trailers follow only once it is recorded. A commit that fails replaces them with its
//!   own status and message. What was streamed before cannot be taken back: a client that read
//!   messages and then gets a commit error has been served without paying (the seed's rule, that
//!   an unrecorded call is not reported as paid, is kept for the status).
//! - any other status rolls the payment back and passes the trailers unchanged;
//! - a reply that ends with no status, a stream that breaks, a client message above the limit,
//!   or the call's deadline passing, roll the payment back at once and end the reply with the
//!   gateway's own status (INTERNAL, UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED). At the
//!   deadline the upstream stream is reset (dropped), so a hung service holds nothing.
//!
//! Memory: one frame is held at a time. The next frame is read from the service only when the
//! client's connection took the previous one (hyper waits for send capacity before polling the
//! body), so a call holds at most the HTTP/2 windows of its two streams, whatever the reply's size.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use tokio::time::Instant;

use super::body::BoxError;
use super::deadline::CallDeadline;
use super::error::{GRPC_CONTENT_TYPE, GRPC_STATUS, PaidCallError, status_of_http};
use super::pending::Pending;
use crate::chain::ChainReader;
use crate::escrow::metrics::EscrowMetrics;

/// Everything the end of a forwarded call needs.
pub(super) struct Forwarded<C: ChainReader + 'static> {
    pub(super) pending: Pending<C>,
    pub(super) deadline: CallDeadline,
    /// Set when a later client message was above the limit (and broke the upstream stream).
    pub(super) exceeded: Arc<OnceLock<u64>>,
    pub(super) max_message_bytes: usize,
    pub(super) metrics: EscrowMetrics,
    /// When the call arrived, and when it was sent upstream.
    pub(super) arrived: Instant,
    pub(super) sent: Instant,
}

impl<C: ChainReader + 'static> Forwarded<C> {
    /// The client-message error that broke the call, if one did: it wins over what followed.
    fn message_too_large(&self) -> Option<PaidCallError> {
        let size = *self.exceeded.get()?;
        Some(PaidCallError::MessageTooLarge { size, max: self.max_message_bytes })
    }

    fn observe_failed(&self) {
        self.metrics
            .paid_call_duration
            .with_label_values(&["failed"])
            .observe(self.arrived.elapsed().as_secs_f64());
    }

    /// Ends the call with `error`: rolled back, the error's status for the client.
    pub(super) async fn fail(self, error: PaidCallError) -> PaidCallError {
        let error = self.message_too_large().unwrap_or(error);
        if matches!(error, PaidCallError::DeadlineExceeded { .. }) {
            self.metrics.paid_call_limits.with_label_values(&["deadline"]).inc();
        }
        tracing::info!(status = error.grpc_status(), %error, "paid call failed: payment rolled back");
        self.observe_failed();
        self.pending.rollback().await;
        error
    }

    /// Decides the payment on the service's final status (`status` of its trailers, or of its
    /// headers for a trailers-only reply) and answers what the client's final status is: `None`
    /// to pass the service's own, or the error that replaces it.
    pub(super) async fn finish(self, status: Option<&[u8]>) -> Option<PaidCallError> {
        self.metrics
            .paid_call_seconds
            .with_label_values(&["upstream"])
            .observe(self.sent.elapsed().as_secs_f64());
        if let Some(error) = self.message_too_large() {
            return Some(self.fail(error).await);
        }
        match status {
            Some(b"0") => {
                let metrics = self.metrics.clone();
                let arrived = self.arrived;
                let timer = metrics.paid_call_seconds.with_label_values(&["payment_commit"]).start_timer();
                let committed = self.pending.commit().await;
                timer.observe_duration();
                let outcome = if committed.is_ok() { "committed" } else { "failed" };
                metrics
                    .paid_call_duration
                    .with_label_values(&[outcome])
                    .observe(arrived.elapsed().as_secs_f64());
                committed.err().map(|error| {
                    tracing::warn!(%error, "the service answered but the payment was not recorded");
                    PaidCallError::Payment(error)
                })
            }
            Some(_) => {
                self.observe_failed();
                self.pending.rollback().await;
                None
            }
            None => Some(self.fail(PaidCallError::UpstreamNotGrpc { status: StatusCode::OK }).await),
        }
    }
}

/// The client's reply to a call whose upstream answered with `response`.
pub(super) async fn reply<C: ChainReader + 'static>(
    response: Response<Incoming>,
    forwarded: Forwarded<C>,
) -> Result<Response<Body>, PaidCallError> {
    let (mut head, body) = response.into_parts();
    head.headers.remove(CONTENT_LENGTH);
    if let Some(status) = head.headers.get(GRPC_STATUS).cloned() {
        // Trailers-only: the status is in the headers and nothing follows.
        drop(body);
        return match forwarded.finish(Some(status.as_bytes())).await {
            None => Ok(Response::from_parts(head, Body::empty())),
            Some(error) => Err(error),
        };
    }
    let grpc = head
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(GRPC_CONTENT_TYPE.as_bytes()));
    if head.status != StatusCode::OK || !grpc {
        drop(body);
        let code = status_of_http(head.status);
        tracing::warn!(status = %head.status, code, "the service's reply is not gRPC");
        return Err(forwarded.fail(PaidCallError::UpstreamNotGrpc { status: head.status }).await);
    }
    Ok(Response::from_parts(head, Body::new(StreamBody::new(stream(body, forwarded)))))
}

/// What is left to do of a streamed reply.
enum State<C: ChainReader + 'static> {
    /// Boxed: the payment transaction makes it large, and it moves at every frame.
    Streaming(Box<(Incoming, Forwarded<C>)>),
    Done,
}

fn stream<C: ChainReader + 'static>(
    body: Incoming,
    forwarded: Forwarded<C>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send {
    futures::stream::unfold(State::Streaming(Box::new((body, forwarded))), |state| async move {
        let State::Streaming(mut streaming) = state else { return None };
        let deadline = streaming.1.deadline.at;
        let next = tokio::time::timeout_at(deadline, streaming.0.frame()).await;
        let (body, forwarded) = match next {
            Ok(Some(Ok(frame))) if frame.is_data() => {
                let data = frame.into_data().unwrap_or_default();
                return Some((Ok(Frame::data(data)), State::Streaming(streaming)));
            }
            _ => *streaming,
        };
        let trailers = match next {
            Ok(Some(Ok(frame))) => {
                let trailers = frame.into_trailers().unwrap_or_default();
                match forwarded.finish(trailers.get(GRPC_STATUS).map(|v| v.as_bytes())).await {
                    None => trailers,
                    Some(error) => error.trailers(),
                }
            }
            Ok(None) => forwarded.finish(None).await.map(|error| error.trailers()).unwrap_or_default(),
            Ok(Some(Err(error))) => {
                tracing::warn!(error = %super::error_chain(&error), "the service's reply broke off");
                forwarded.fail(PaidCallError::UpstreamUnavailable).await.trailers()
            }
            Err(_elapsed) => {
                // Dropping the body resets the upstream stream: the service is told to stop.
                drop(body);
                let error = forwarded.deadline.exceeded();
                forwarded.fail(error).await.trailers()
            }
        };
        Some((Ok(Frame::trailers(trailers)), State::Done))
    })
}

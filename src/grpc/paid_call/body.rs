//! The client's request body on its way upstream: read up to its first whole message before the
//! call is forwarded, then passed on frame by frame as it arrives (client and bidirectional streams
//! flow both ways at once), every message checked against [`MessageLimit`]. Nothing is buffered
//! beyond the frames of the first message.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};

use super::error::PaidCallError;
use super::framing::MessageLimit;

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body sent upstream: the client's frames, checked message by message.
pub(super) type ForwardBody = UnsyncBoxBody<Bytes, BoxError>;

/// The request read up to its first whole message (or its end), and what remains of it.
pub(super) struct FirstMessage {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<Body>,
}

pub(super) async fn read_first_message(
    mut body: Body,
    limit: &mut MessageLimit,
) -> Result<FirstMessage, PaidCallError> {
    let mut frames = VecDeque::new();
    while limit.complete_messages() == 0 {
        match body.frame().await {
            None => return Ok(FirstMessage { frames, rest: None }),
            Some(Err(error)) => {
                tracing::info!(%error, "the client's request broke off");
                return Err(PaidCallError::ClientCancelled);
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    limit
                        .feed(data)
                        .map_err(|size| PaidCallError::MessageTooLarge { size, max: limit.max() })?;
                }
                let trailers = frame.is_trailers();
                frames.push_back(frame);
                if trailers {
                    return Ok(FirstMessage { frames, rest: None });
                }
            }
        }
    }
    Ok(FirstMessage { frames, rest: Some(body) })
}

/// The client's request body as sent upstream: the frames read already, then the rest, each message
/// checked; a message above the limit is recorded in `exceeded` and breaks the stream.
pub(super) fn forward_body(
    first: FirstMessage,
    limit: MessageLimit,
    exceeded: Arc<OnceLock<u64>>,
) -> ForwardBody {
    struct State {
        frames: VecDeque<Frame<Bytes>>,
        rest: Option<Body>,
        limit: MessageLimit,
        exceeded: Arc<OnceLock<u64>>,
    }
    let state = State { frames: first.frames, rest: first.rest, limit, exceeded };
    let stream = futures::stream::unfold(state, |mut state| async move {
        if let Some(frame) = state.frames.pop_front() {
            return Some((Ok(frame), state));
        }
        let body = state.rest.as_mut()?;
        match body.frame().await {
            None => None,
            Some(Err(error)) => {
                state.rest = None;
                Some((Err(BoxError::from(error)), state))
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && let Err(size) = state.limit.feed(data)
                {
                    let _ = state.exceeded.set(size);
                    state.rest = None;
                    let error = PaidCallError::MessageTooLarge { size, max: state.limit.max() };
                    return Some((Err(BoxError::from(error)), state));
                }
                Some((Ok(frame), state))
            }
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

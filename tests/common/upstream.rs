//! An example upstream AI service for the paid-call tests: a raw HTTP/2 cleartext gRPC server on a
//! free loopback port. Messages are opaque bytes in gRPC framing; no protobuf is involved.
//!
//! Methods (any other path behaves as `Echo`):
//! - `/example.Echo/Echo`: replies with the request's messages, then `grpc-status: 0`.
//! - `/example.Echo/Fail`: a trailers-only reply, `grpc-status: 13`, `grpc-message: upstream failed`.
//! - `/example.Echo/Stream`: replies with [`STREAMED_MESSAGES`] messages (the first request message
//!   followed by the byte 1, 2, 3), then `grpc-status: 0`.
//! - `/example.Echo/Slow`: waits [`SLOW_CALL`], then echoes.
//! - `/example.Echo/Gated`: replies with the first request message at once, then waits until the
//!   test opens the gate ([`Upstream::open_gate`]), then sends the byte 2 and `grpc-status: 0`.
//! - `/example.Echo/Bidi`: echoes every request message as soon as it has arrived whole; ends
//!   with `grpc-status: 0` when the request ends.
//! - `/example.Echo/Big`: the first request message is a number N in decimal text; replies with N
//!   messages of [`BIG_MESSAGE_BYTES`] each, made as they are sent, then `grpc-status: 0`.
//! - `/example.Echo/Hang`: sends its headers and then nothing, until the caller resets the stream
//!   (counted in [`Upstream::hangs_reset`]).
//!
//! Every call is counted, with the metadata it arrived with.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const FAIL: &str = "/example.Echo/Fail";
pub const STREAM: &str = "/example.Echo/Stream";
pub const SLOW: &str = "/example.Echo/Slow";
pub const ECHO: &str = "/example.Echo/Echo";
pub const GATED: &str = "/example.Echo/Gated";
pub const BIDI: &str = "/example.Echo/Bidi";
pub const BIG: &str = "/example.Echo/Big";
pub const HANG: &str = "/example.Echo/Hang";
/// The size of each message of a `Big` reply.
pub const BIG_MESSAGE_BYTES: usize = 1024 * 1024;
pub const FAILURE_STATUS: u32 = 13;
pub const FAILURE_MESSAGE: &str = "upstream failed";
pub const STREAMED_MESSAGES: usize = 3;
pub const SLOW_CALL: Duration = Duration::from_millis(2500);

type ReplyBody = UnsyncBoxBody<Bytes, Infallible>;

/// What the service shares between its calls and the test.
#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<ReceivedCall>>,
    gate: tokio::sync::Notify,
    gate_open: std::sync::atomic::AtomicBool,
    hangs_reset: AtomicUsize,
}

/// One call as the service received it.
#[derive(Debug, Clone)]
pub struct ReceivedCall {
    pub path: String,
    pub headers: HeaderMap,
}

impl ReceivedCall {
    /// The `snet-user-address` the ledger added, if any.
    pub fn user_address(&self) -> Option<String> {
        self.headers.get("snet-user-address").map(|v| v.to_str().unwrap().to_owned())
    }
}

/// The running service; stopped when dropped.
pub struct Upstream {
    pub url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let serving = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(request, serving.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, shared, task }
    }

    /// The `host:port` it listens on.
    pub fn address(&self) -> std::net::SocketAddr {
        self.url.trim_start_matches("http://").parse().unwrap()
    }

    /// How many calls arrived.
    pub fn call_count(&self) -> usize {
        self.shared.calls.lock().unwrap().len()
    }

    pub fn calls(&self) -> Vec<ReceivedCall> {
        self.shared.calls.lock().unwrap().clone()
    }

    pub fn last_call(&self) -> ReceivedCall {
        self.shared.calls.lock().unwrap().last().cloned().expect("the service was called")
    }

    /// Lets every `Gated` call (waiting or to come) finish.
    pub fn open_gate(&self) {
        self.shared.gate_open.store(true, Ordering::SeqCst);
        self.shared.gate.notify_waiters();
    }

    /// How many `Hang` calls saw their stream reset by the caller.
    pub fn hangs_reset(&self) -> usize {
        self.shared.hangs_reset.load(Ordering::SeqCst)
    }
}

async fn answer(request: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<ReplyBody>, Infallible> {
    let path = request.uri().path().to_owned();
    shared
        .calls
        .lock()
        .unwrap()
        .push(ReceivedCall { path: path.clone(), headers: request.headers().clone() });
    match path.as_str() {
        BIDI => return Ok(streamed(bidi(request.into_body()))),
        HANG => return Ok(streamed(hang(shared))),
        GATED | BIG => return Ok(streamed_after_first(path, request.into_body(), shared).await),
        _ => {}
    }
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(reply(vec![], Some(status(13, "request broke off")))),
    };
    let first = split_messages(&body).into_iter().next().unwrap_or_default();
    Ok(match path.as_str() {
        FAIL => {
            let mut response = reply(vec![], None);
            response.headers_mut().extend(status(FAILURE_STATUS, FAILURE_MESSAGE));
            response
        }
        STREAM => {
            let messages = (1..=STREAMED_MESSAGES as u8)
                .map(|i| Frame::data(frame_message(&[first.as_slice(), &[i]].concat())))
                .collect();
            reply(messages, Some(status(0, "")))
        }
        SLOW => {
            tokio::time::sleep(SLOW_CALL).await;
            reply(vec![Frame::data(body)], Some(status(0, "")))
        }
        _ => reply(vec![Frame::data(body)], Some(status(0, ""))),
    })
}

/// `Gated` and `Big`: they answer once the first request message is whole, without waiting for the
/// request to end (the rest of it is read and dropped as it comes).
async fn streamed_after_first(path: String, mut body: Incoming, shared: Arc<Shared>) -> Response<ReplyBody> {
    let mut buffer = Vec::new();
    let first = loop {
        if let Some(message) = take_message(&mut buffer) {
            break message;
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    buffer.extend_from_slice(data);
                }
            }
            Some(Err(_)) => return reply(vec![], Some(status(13, "request broke off"))),
            None => break take_message(&mut buffer).unwrap_or_default(),
        }
    };
    tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
    if path == GATED {
        return streamed(gated(first, shared));
    }
    let count: usize = std::str::from_utf8(&first).ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    let message = frame_message(&vec![7u8; BIG_MESSAGE_BYTES]);
    let frames = futures::stream::iter(0..count)
        .map(move |_| Frame::data(message.clone()))
        .chain(futures::stream::once(async { Frame::trailers(status(0, "")) }));
    streamed(frames)
}

/// The first message at once, the rest when the gate opens.
fn gated(first: Vec<u8>, shared: Arc<Shared>) -> impl futures::Stream<Item = Frame<Bytes>> + Send {
    let head = futures::stream::once(async move { Frame::data(frame_message(&first)) });
    let tail = futures::stream::once(async move {
        loop {
            let opened = shared.gate.notified();
            if shared.gate_open.load(Ordering::SeqCst) {
                break;
            }
            opened.await;
        }
        futures::stream::iter([Frame::data(frame_message(&[2])), Frame::trailers(status(0, ""))])
    })
    .flatten();
    head.chain(tail)
}

/// Each request message echoed as soon as it is whole.
fn bidi(body: Incoming) -> impl futures::Stream<Item = Frame<Bytes>> + Send {
    futures::stream::unfold((body, Vec::<u8>::new(), false), |(mut body, mut buffer, ended)| async move {
        if ended {
            return None;
        }
        loop {
            if let Some(message) = take_message(&mut buffer) {
                return Some((Frame::data(frame_message(&message)), (body, buffer, false)));
            }
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        buffer.extend_from_slice(data);
                    }
                }
                Some(Err(_)) => {
                    return Some((Frame::trailers(status(13, "request broke off")), (body, buffer, true)));
                }
                None => return Some((Frame::trailers(status(0, "")), (body, buffer, true))),
            }
        }
    })
}

/// Headers, then nothing until the stream is dropped.
fn hang(shared: Arc<Shared>) -> impl futures::Stream<Item = Frame<Bytes>> + Send {
    struct CountReset(Arc<Shared>);
    impl Drop for CountReset {
        fn drop(&mut self) {
            self.0.hangs_reset.fetch_add(1, Ordering::SeqCst);
        }
    }
    futures::stream::once(async move {
        let _reset = CountReset(shared);
        std::future::pending::<Frame<Bytes>>().await
    })
}

/// Takes the first whole gRPC message off the front of `buffer`, if one is there.
pub fn take_message(buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
    if buffer.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes(buffer[1..5].try_into().unwrap()) as usize;
    if buffer.len() < 5 + len {
        return None;
    }
    let message = buffer[5..5 + len].to_vec();
    buffer.drain(..5 + len);
    Some(message)
}

fn streamed(frames: impl futures::Stream<Item = Frame<Bytes>> + Send + 'static) -> Response<ReplyBody> {
    let mut response = Response::new(StreamBody::new(frames.map(Ok::<_, Infallible>)).boxed_unsync());
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
    response
}

fn status(code: u32, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        headers.insert("grpc-message", HeaderValue::from_str(message).unwrap());
    }
    headers
}

fn reply(mut frames: Vec<Frame<Bytes>>, trailers: Option<HeaderMap>) -> Response<ReplyBody> {
    frames.extend(trailers.map(Frame::trailers));
    streamed(futures::stream::iter(frames))
}

/// One gRPC message on the wire: uncompressed flag, big-endian length, payload.
pub fn frame_message(payload: &[u8]) -> Bytes {
    let mut bytes = Vec::with_capacity(5 + payload.len());
    bytes.push(0);
    bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    bytes.extend_from_slice(payload);
    Bytes::from(bytes)
}

/// The payloads of a stream of gRPC messages (a truncated tail is dropped).
pub fn split_messages(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        if bytes.len() < 5 + len {
            break;
        }
        messages.push(bytes[5..5 + len].to_vec());
        bytes = &bytes[5 + len..];
    }
    messages
}

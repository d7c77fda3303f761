//! An example upstream AI service for the paid-call tests: a raw HTTP/2 cleartext gRPC server on a
//! free loopback port. Messages are opaque bytes in gRPC framing; no protobuf is involved.
//!
//! Methods (any other path behaves as `Echo`):
//! - `/example.Echo/Echo`: replies with the request's messages, then `grpc-status: 0`.
//! - `/example.Echo/Fail`: a trailers-only reply, `grpc-status: 13`, `grpc-message: upstream failed`.
//! - `/example.Echo/Stream`: replies with [`STREAMED_MESSAGES`] messages (the first request message
//!   followed by the byte 1, 2, 3), then `grpc-status: 0`.
//! - `/example.Echo/Slow`: waits [`SLOW_CALL`], then echoes.
//!
//! Every call is counted, with the metadata it arrived with.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Response};
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
pub const FAILURE_STATUS: u32 = 13;
pub const FAILURE_MESSAGE: &str = "upstream failed";
pub const STREAMED_MESSAGES: usize = 3;
pub const SLOW_CALL: Duration = Duration::from_millis(2500);

type Frames = futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

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
    calls: Arc<Mutex<Vec<ReceivedCall>>>,
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
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(request, recorded.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, calls, task }
    }

    /// How many calls arrived.
    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    pub fn calls(&self) -> Vec<ReceivedCall> {
        self.calls.lock().unwrap().clone()
    }

    pub fn last_call(&self) -> ReceivedCall {
        self.calls.lock().unwrap().last().cloned().expect("the service was called")
    }
}

async fn answer(
    request: Request<Incoming>,
    calls: Arc<Mutex<Vec<ReceivedCall>>>,
) -> Result<Response<StreamBody<Frames>>, Infallible> {
    let path = request.uri().path().to_owned();
    calls.lock().unwrap().push(ReceivedCall { path: path.clone(), headers: request.headers().clone() });
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(reply(vec![], Some(status(13, "request broke off")))),
    };
    Ok(match path.as_str() {
        FAIL => {
            let mut response = reply(vec![], None);
            response.headers_mut().extend(status(FAILURE_STATUS, FAILURE_MESSAGE));
            response
        }
        STREAM => {
            let first = split_messages(&body).into_iter().next().unwrap_or_default();
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

fn status(code: u32, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        headers.insert("grpc-message", HeaderValue::from_str(message).unwrap());
    }
    headers
}

fn reply(mut frames: Vec<Frame<Bytes>>, trailers: Option<HeaderMap>) -> Response<StreamBody<Frames>> {
    frames.extend(trailers.map(Frame::trailers));
    let items: Vec<Result<Frame<Bytes>, Infallible>> = frames.into_iter().map(Ok).collect();
    let mut response = Response::new(StreamBody::new(futures::stream::iter(items)));
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
    response
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

//! The paid-call gateway: every gRPC method that is not one of the ledger's own services is a call
//! of the provider's AI service, paid for in its metadata (escrow.md §3.1–3.3). The gateway checks
//! the payment, forwards the call to the configured upstream service, and records the payment when
//! the call succeeded. It works on raw HTTP/2, never on decoded messages: any message type passes,
//! and the seed's status 1000, which tonic's `Code` cannot express, is written as it is.
//!
//! Rules, in the order they are checked (the first failure is the one the client sees):
//! 1. **Method.** The method is the request path `/package.Service/Method`. Paths under `/escrow.` and
//!    `/training.Daemon/` belong to the daemon's own services: the escrow services answer the ones
//!    the ledger implements before a request gets here, so one that reaches the gateway is
//!    UNIMPLEMENTED and is never forwarded (design.md §8). A path without the two parts is
//!    UNIMPLEMENTED `malformed method name`, as grpc-go answers it. Every other path is a paid call.
//! 2. **Content type** `application/grpc…`, else INVALID_ARGUMENT: nothing that is not gRPC is
//!    forwarded.
//! 3. **Chain.** A gateway built without a payment service ([`PaidCallGateway::without_chain`])
//!    refuses every paid call with FAILED_PRECONDITION and forwards nothing. Not UNAVAILABLE: that
//!    code invites clients to retry, and nothing changes until the operator gives the chain settings.
//! 4. **Payment type** (`snet-payment-type`): absent means escrow; an unknown value is
//!    INVALID_ARGUMENT `unexpected "snet-payment-type", value: "<v>"`. `free-call`, `prepaid-call` and
//!    `train-call` are UNIMPLEMENTED with a message naming the type: the ledger implements only
//!    escrow, and UNIMPLEMENTED is also what the services of those flows answer (design.md §8),
//!    whereas FAILED_PRECONDITION would suggest that some state of the ledger could make them work.
//! 5. **Escrow headers**, parsed by `domain::headers` (id, nonce, amount, signature; INVALID_ARGUMENT
//!    with its messages). `-bin` values are base64 on the wire, padded or not, and are decoded first;
//!    a signature that is not base64 is INVALID_ARGUMENT `incorrect format "<key>": "<raw>"`, judged
//!    after the other headers so that the seed's order still decides which error wins.
//! 6. **Payment transaction**: `PaymentService::start(payment, path)` takes the channel's lease and
//!    validates (escrow.md §3.4–3.7). Its error is answered with `PaymentErrorCode::grpc_status()`
//!    (13, 16, 9 or the raw 1000) and its exact message; the call is not forwarded.
//! 7. **Message size.** The first request message is read before anything is forwarded; one whose
//!    announced length (the 4-byte big-endian length after the flag byte of the gRPC framing) is
//!    above `max_message_bytes` is RESOURCE_EXHAUSTED, the payment is rolled back, and the upstream
//!    never sees the call. Later messages of a client stream flow through with the same check: an
//!    oversized one resets the upstream stream, rolls the payment back and answers RESOURCE_EXHAUSTED.
//!    The limit is on the wire length (the compressed length of a compressed message). As in the
//!    seed, the payment is checked before the message is read, so a stale nonce wins over a size.
//!
//! **What is forwarded**: the same path and body bytes, over HTTP/2 cleartext (h2c, `http://` only)
//! to the upstream, with the client's metadata except
//! - every `snet-payment-*` header: the payment is settled here, and its signature is evidence kept
//!   in the ledger, not something the service needs (the CLI's `snet-payment-mpe-address` goes too);
//! - any `snet-user-address` the client sent: the gateway sets it to the channel's sender
//!   (checksummed), so a client cannot name somebody else;
//! - connection-level headers (`host`, `connection`, `content-length`, `te`, …); `te: trailers` is set
//!   as gRPC requires.
//!
//! **Outcome**: the call succeeded iff the upstream's `grpc-status` (in its trailers, or in its
//! headers for a trailers-only reply) is 0. Success commits the payment; if the commit fails, the
//! client gets the commit's error instead of the reply (the seed does the same: the service ran, but
//! nothing was recorded, so the client is not told it paid). A failure rolls the payment back and
//! passes the upstream's reply (status, message, headers, body) to the client unchanged; a reply with
//! no `grpc-status` at all gets the status that gRPC derives from its HTTP code. An upstream that
//! cannot be reached, or whose stream breaks, is UNAVAILABLE `the service is unavailable` (the cause
//! is logged, not sent), rolled back.
//!
//! **The reply is delivered whole**: the gateway collects the upstream's reply (body and trailers) up
//! to [`MAX_BUFFERED_REPLY_BYTES`] before deciding, so a server-streaming reply reaches the client
//! when the call completes, and a bidirectional call cannot ping-pong (the client would wait for a
//! reply the gateway holds). A later change may stream replies and commit on the trailers.
//!
//! **The lease** is renewed every `lease_ttl / 3` from the payment's start until the outcome is known,
//! then no more. A client that goes away drops the call: the payment is rolled back in a task of its
//! own at once rather than left to the lease's expiry.
//!
//! Every refusal is a valid gRPC reply: HTTP 200, `content-type: application/grpc`, and trailers-only
//! `grpc-status` (a decimal number) and `grpc-message` (percent-encoded as gRPC requires: every byte
//! outside 0x20–0x7E, and `%`). Nothing here panics on input.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::chain::ChainReader;
use crate::domain::EthAddress;
use crate::domain::headers::{
    CHANNEL_SIGNATURE, HeaderError, PaymentType, USER_ADDRESS, parse_payment, parse_payment_type,
};
use crate::domain::payment::PaymentError;
use crate::escrow::EscrowConfig;
use crate::escrow::payments::{PaymentService, PaymentTransaction};

/// Longest wait for the TCP connection to the upstream service.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of one upstream reply held while waiting for its status (the reply is delivered whole).
pub const MAX_BUFFERED_REPLY_BYTES: usize = 64 * 1024 * 1024;
/// A gRPC message on the wire: 1 flag byte, a 4-byte big-endian length, the payload.
const MESSAGE_PREFIX_BYTES: usize = 5;

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";
const GRPC_CONTENT_TYPE: &str = "application/grpc";
/// Metadata of the payment, never forwarded.
const PAYMENT_HEADER_PREFIX: &str = "snet-payment-";
/// gRPC's percent-encoding of `grpc-message`: controls, `%` and (always) every non-ASCII byte.
const GRPC_MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');
/// gRPC binary metadata: standard alphabet, padding optional.
const BINARY_METADATA: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// gRPC status codes used here; a payment error brings its own (`PaymentErrorCode::grpc_status`).
mod code {
    pub const CANCELLED: u32 = 1;
    pub const UNKNOWN: u32 = 2;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const FAILED_PRECONDITION: u32 = 9;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body sent upstream: the client's frames, checked message by message.
type ForwardBody = UnsyncBoxBody<Bytes, BoxError>;

/// Why a paid call was refused or failed; the message is what the client reads in `grpc-message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaidCallError {
    #[error("method {method} belongs to the daemon's own services and is not implemented by this ledger")]
    DaemonServiceNotImplemented { method: String },
    #[error("malformed method name: {path:?}")]
    MalformedMethod { path: String },
    #[error("content-type {content_type:?} is not application/grpc")]
    NotGrpc { content_type: String },
    #[error(
        "paid calls are refused: no chain is configured (set ethereum_rpc_url, mpe_address, group_id, \
         payment_address, price and upstream)"
    )]
    NoChain,
    #[error("payment type \"{payment_type}\" is not supported by this ledger: pay with \"escrow\"")]
    UnsupportedPaymentType { payment_type: &'static str },
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error("received message larger than max ({size} vs. {max})")]
    MessageTooLarge { size: u64, max: usize },
    #[error("the service's reply is larger than max ({max} bytes)")]
    ReplyTooLarge { max: usize },
    #[error("the service replied with HTTP status {status} and no gRPC status")]
    UpstreamNotGrpc { status: StatusCode },
    #[error("the service is unavailable")]
    UpstreamUnavailable,
    #[error("the client cancelled the call")]
    ClientCancelled,
}

impl PaidCallError {
    /// The gRPC status code the client sees.
    pub fn grpc_status(&self) -> u32 {
        match self {
            Self::DaemonServiceNotImplemented { .. }
            | Self::MalformedMethod { .. }
            | Self::UnsupportedPaymentType { .. } => code::UNIMPLEMENTED,
            Self::NotGrpc { .. } | Self::Header(_) => code::INVALID_ARGUMENT,
            Self::NoChain => code::FAILED_PRECONDITION,
            Self::Payment(error) => error.code.grpc_status(),
            Self::MessageTooLarge { .. } | Self::ReplyTooLarge { .. } => code::RESOURCE_EXHAUSTED,
            Self::UpstreamNotGrpc { status } => status_of_http(*status),
            Self::UpstreamUnavailable => code::UNAVAILABLE,
            Self::ClientCancelled => code::CANCELLED,
        }
    }

    /// A trailers-only gRPC reply carrying this error.
    pub fn into_response(self) -> Response<Body> {
        status_response(self.grpc_status(), &self.to_string())
    }
}

/// The status gRPC derives from the HTTP code of a reply that carries none of its own.
fn status_of_http(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        200 => code::INTERNAL,
        _ => code::UNKNOWN,
    }
}

/// A trailers-only gRPC reply: HTTP 200, `grpc-status` written as a number (1000 included).
pub fn status_response(status: u32, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    headers.insert(GRPC_STATUS, HeaderValue::from(status));
    let encoded = utf8_percent_encode(message, GRPC_MESSAGE_ESCAPES).to_string();
    // Percent-encoding leaves only visible ASCII and spaces, which a header value always accepts.
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert(GRPC_MESSAGE, value);
    }
    response
}

/// The upstream URL is not an `http://host:port` this gateway can call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid upstream {url:?}: {reason}")]
pub struct InvalidUpstream {
    pub url: String,
    pub reason: &'static str,
}

/// Where paid calls go: `http://host:port`, spoken as h2c.
struct Upstream {
    authority: Authority,
    client: Client<HttpConnector, ForwardBody>,
}

impl Upstream {
    fn new(url: &str) -> Result<Self, InvalidUpstream> {
        let invalid = |reason| InvalidUpstream { url: url.to_owned(), reason };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(invalid("TLS is not supported: use http:// (HTTP/2 cleartext)")),
            _ => return Err(invalid("the scheme must be http://")),
        }
        let authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("no path allowed: calls keep their own /package.Service/Method path"));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(UPSTREAM_CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
        Ok(Self { authority, client })
    }

    fn uri(&self, path_and_query: PathAndQuery) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

/// Everything a gateway with a chain needs.
struct PaidCalls<C: ChainReader + 'static> {
    payments: Arc<PaymentService<C>>,
    mpe: EthAddress,
    max_message_bytes: usize,
    upstream: Upstream,
}

/// The handler of every paid call; cheap to clone.
pub struct PaidCallGateway<C: ChainReader + 'static> {
    paid: Option<Arc<PaidCalls<C>>>,
}

impl<C: ChainReader + 'static> Clone for PaidCallGateway<C> {
    fn clone(&self) -> Self {
        Self { paid: self.paid.clone() }
    }
}

impl<C: ChainReader + 'static> PaidCallGateway<C> {
    /// A gateway that validates payments with `payments` (built on `config`: its MPE address and
    /// lease lifetime are used here) and forwards calls to `upstream` (`http://host:port`).
    pub fn new(
        payments: Arc<PaymentService<C>>,
        config: &EscrowConfig,
        upstream: &str,
        max_message_bytes: usize,
    ) -> Result<Self, InvalidUpstream> {
        let paid =
            PaidCalls { payments, mpe: config.mpe, max_message_bytes, upstream: Upstream::new(upstream)? };
        Ok(Self { paid: Some(Arc::new(paid)) })
    }

    /// A gateway of a ledger with no chain configured: every paid call is refused.
    pub fn without_chain() -> Self {
        Self { paid: None }
    }

    /// `router` with this gateway answering every request that no route of `router` matches.
    pub fn mount<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        router.fallback(move |request: Request<Body>| {
            let gateway = self.clone();
            async move { gateway.handle(request).await }
        })
    }

    /// Answers one call: a refusal, the upstream's reply, or the commit's error.
    #[tracing::instrument(skip_all, fields(method = %request.uri().path()))]
    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        match self.call(request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::info!(status = error.grpc_status(), %error, "paid call refused");
                error.into_response()
            }
        }
    }

    async fn call(&self, request: Request<Body>) -> Result<Response<Body>, PaidCallError> {
        let method = request.uri().path().to_owned();
        check_method(&method)?;
        check_content_type(request.headers())?;
        let paid = self.paid.as_ref().ok_or(PaidCallError::NoChain)?;
        let metadata = PaymentMetadata::of(request.headers());
        match parse_payment_type(metadata.values.as_slice())? {
            PaymentType::Escrow => {}
            other => return Err(PaidCallError::UnsupportedPaymentType { payment_type: other.as_str() }),
        }
        let payment = parse_payment(metadata.values.as_slice(), paid.mpe)?;
        if let Some(error) = metadata.undecodable_signature {
            return Err(error.into());
        }
        let phases = &paid.payments.metrics().paid_call_seconds;
        let timer = phases.with_label_values(&["payment_start"]).start_timer();
        let transaction = paid.payments.start(payment, &method).await?;
        timer.observe_duration();
        let sender = transaction.sender();
        tracing::debug!(channel = %transaction.payment().channel_id, %sender, "payment started");
        let pending = Pending { payments: paid.payments.clone(), transaction: Some(transaction) };
        let timer = phases.with_label_values(&["upstream"]).start_timer();
        let outcome = paid.renewing(&pending, paid.forward(request, sender)).await;
        timer.observe_duration();
        match outcome {
            Ok(reply) if reply.succeeded() => {
                let timer = phases.with_label_values(&["payment_commit"]).start_timer();
                pending.commit().await?;
                timer.observe_duration();
                Ok(reply.into_response())
            }
            Ok(reply) => {
                pending.rollback().await;
                reply.into_response_or_error()
            }
            Err(error) => {
                pending.rollback().await;
                Err(error)
            }
        }
    }
}

fn check_method(path: &str) -> Result<(), PaidCallError> {
    if path.starts_with("/escrow.") || path.starts_with("/training.Daemon/") {
        return Err(PaidCallError::DaemonServiceNotImplemented { method: path.to_owned() });
    }
    let well_formed = path
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(service, method)| !service.is_empty() && !method.is_empty() && !method.contains('/'));
    if well_formed { Ok(()) } else { Err(PaidCallError::MalformedMethod { path: path.to_owned() }) }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), PaidCallError> {
    let content_type = headers.get(CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match content_type {
        Some(content_type) if content_type.starts_with(GRPC_CONTENT_TYPE) => Ok(()),
        other => Err(PaidCallError::NotGrpc { content_type: other.unwrap_or_default() }),
    }
}

/// The call's `snet-*` metadata as `domain::headers` reads it: `-bin` values decoded.
struct PaymentMetadata {
    values: Vec<(String, Vec<u8>)>,
    /// A signature that is not base64; reported after the headers checked before it.
    undecodable_signature: Option<HeaderError>,
}

impl PaymentMetadata {
    fn of(headers: &HeaderMap) -> Self {
        let mut values = Vec::new();
        let mut undecodable_signature = None;
        for (name, value) in headers {
            let key = name.as_str();
            if !key.starts_with("snet-") {
                continue;
            }
            let raw = value.as_bytes();
            if !key.ends_with("-bin") {
                values.push((key.to_owned(), raw.to_vec()));
                continue;
            }
            match BINARY_METADATA.decode(raw) {
                Ok(decoded) => values.push((key.to_owned(), decoded)),
                Err(_) => {
                    if key == CHANNEL_SIGNATURE && undecodable_signature.is_none() {
                        undecodable_signature = Some(HeaderError(format!(
                            "incorrect format \"{key}\": \"{}\"",
                            String::from_utf8_lossy(raw)
                        )));
                    }
                    values.push((key.to_owned(), raw.to_vec()));
                }
            }
        }
        Self { values, undecodable_signature }
    }
}

/// A started payment waiting for the call's outcome. Dropped without an outcome (the client went
/// away and the call was abandoned), it rolls the payment back in a task of its own.
struct Pending<C: ChainReader + 'static> {
    payments: Arc<PaymentService<C>>,
    transaction: Option<PaymentTransaction>,
}

impl<C: ChainReader + 'static> Pending<C> {
    /// Records the payment in a task of its own: the service has run, so the commit runs to its end
    /// even if the client goes away meanwhile (a served call is recorded).
    async fn commit(mut self) -> Result<(), PaymentError> {
        let Some(transaction) = self.transaction.take() else { return Ok(()) };
        let payments = self.payments.clone();
        let outcome = tokio::spawn(async move { payments.commit(transaction).await })
            .await
            .map_err(|error| PaymentError::internal(format!("the payment commit task failed: {error}")))??;
        tracing::debug!(?outcome, "payment committed");
        Ok(())
    }

    async fn rollback(mut self) {
        if let Some(transaction) = self.transaction.take() {
            self.payments.rollback(transaction).await;
        }
    }
}

impl<C: ChainReader + 'static> Drop for Pending<C> {
    fn drop(&mut self) {
        if let Some(transaction) = self.transaction.take() {
            let payments = self.payments.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                tracing::info!("call abandoned: rolling its payment back");
                runtime.spawn(async move { payments.rollback(transaction).await });
            }
        }
    }
}

impl<C: ChainReader + 'static> PaidCalls<C> {
    /// Runs `work` while renewing the payment's lease (`PaymentService::while_renewing`).
    async fn renewing<T>(&self, pending: &Pending<C>, work: impl Future<Output = T>) -> T {
        match pending.transaction.as_ref() {
            Some(transaction) => self.payments.while_renewing(transaction.lease(), work).await,
            None => work.await,
        }
    }

    /// Sends the call upstream and collects the whole reply.
    async fn forward(
        &self,
        request: Request<Body>,
        sender: EthAddress,
    ) -> Result<UpstreamReply, PaidCallError> {
        let (parts, body) = request.into_parts();
        let mut limit = MessageLimit::new(self.max_message_bytes);
        let first = read_first_message(body, &mut limit).await?;
        let exceeded = Arc::new(OnceLock::new());
        let body = forward_body(first, limit, exceeded.clone());

        let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let uri = self.upstream.uri(path).map_err(|error| {
            tracing::warn!(%error, "cannot build the upstream URI");
            PaidCallError::UpstreamUnavailable
        })?;
        let mut upstream_request = Request::new(body);
        *upstream_request.method_mut() = parts.method;
        *upstream_request.uri_mut() = uri;
        *upstream_request.version_mut() = Version::HTTP_2;
        *upstream_request.headers_mut() = forwarded_headers(&parts.headers, sender);

        let result = match self.upstream.client.request(upstream_request).await {
            Ok(response) => collect_reply(response).await,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "upstream call failed");
                Err(PaidCallError::UpstreamUnavailable)
            }
        };
        // A later message above the limit broke the call: that, not the broken stream, is the error.
        if let Some(&size) = exceeded.get() {
            return Err(PaidCallError::MessageTooLarge { size, max: self.max_message_bytes });
        }
        result
    }
}

/// `error` and its sources, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The client's metadata as the service gets it (see the module doc).
fn forwarded_headers(client: &HeaderMap, sender: EthAddress) -> HeaderMap {
    const CONNECTION_LEVEL: [&str; 5] =
        ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];
    let mut headers = HeaderMap::with_capacity(client.len() + 2);
    for (name, value) in client {
        let key = name.as_str();
        let dropped = key.starts_with(PAYMENT_HEADER_PREFIX)
            || key == USER_ADDRESS
            || name == HOST
            || name == CONTENT_LENGTH
            || name == TE
            || CONNECTION_LEVEL.contains(&key);
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(TE, HeaderValue::from_static("trailers"));
    if let Ok(address) = HeaderValue::from_str(&sender.to_string()) {
        headers.insert(HeaderName::from_static(USER_ADDRESS), address);
    }
    headers
}

/// Follows the gRPC framing of a byte stream (flag byte, 4-byte big-endian length, payload) and
/// stops at the first message whose announced length is above the limit.
#[derive(Debug)]
struct MessageLimit {
    max: usize,
    prefix: [u8; MESSAGE_PREFIX_BYTES],
    prefix_read: usize,
    payload_left: u64,
    complete: u64,
}

impl MessageLimit {
    fn new(max: usize) -> Self {
        Self { max, prefix: [0; MESSAGE_PREFIX_BYTES], prefix_read: 0, payload_left: 0, complete: 0 }
    }

    /// Reads the next bytes of the stream; `Err(size)` names a message above the limit.
    fn feed(&mut self, mut data: &[u8]) -> Result<(), u64> {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let taken = data.len().min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                self.payload_left -= taken as u64;
                data = &data[taken..];
                if self.payload_left == 0 {
                    self.complete += 1;
                }
                continue;
            }
            let taken = data.len().min(MESSAGE_PREFIX_BYTES - self.prefix_read);
            self.prefix[self.prefix_read..self.prefix_read + taken].copy_from_slice(&data[..taken]);
            self.prefix_read += taken;
            data = &data[taken..];
            if self.prefix_read == MESSAGE_PREFIX_BYTES {
                self.prefix_read = 0;
                let [_, a, b, c, d] = self.prefix;
                let size = u64::from(u32::from_be_bytes([a, b, c, d]));
                if size > self.max as u64 {
                    return Err(size);
                }
                self.payload_left = size;
                if size == 0 {
                    self.complete += 1;
                }
            }
        }
        Ok(())
    }

    /// How many whole messages have gone by.
    fn complete_messages(&self) -> u64 {
        self.complete
    }
}

/// The request read up to its first whole message (or its end), and what remains of it.
struct FirstMessage {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<Body>,
}

async fn read_first_message(mut body: Body, limit: &mut MessageLimit) -> Result<FirstMessage, PaidCallError> {
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
                        .map_err(|size| PaidCallError::MessageTooLarge { size, max: limit.max })?;
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
fn forward_body(first: FirstMessage, limit: MessageLimit, exceeded: Arc<OnceLock<u64>>) -> ForwardBody {
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
                    let error = PaidCallError::MessageTooLarge { size, max: state.limit.max };
                    return Some((Err(BoxError::from(error)), state));
                }
                Some((Ok(frame), state))
            }
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

/// The upstream's whole reply.
struct UpstreamReply {
    status: StatusCode,
    headers: HeaderMap,
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

async fn collect_reply(response: Response<Incoming>) -> Result<UpstreamReply, PaidCallError> {
    let (head, mut body) = response.into_parts();
    let mut chunks = Vec::new();
    let mut trailers = None;
    let mut size = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            tracing::warn!(error = %error_chain(&error), "upstream reply broke off");
            PaidCallError::UpstreamUnavailable
        })?;
        match frame.into_data() {
            Ok(chunk) => {
                size = size.saturating_add(chunk.len());
                if size > MAX_BUFFERED_REPLY_BYTES {
                    return Err(PaidCallError::ReplyTooLarge { max: MAX_BUFFERED_REPLY_BYTES });
                }
                chunks.push(chunk);
            }
            Err(frame) => {
                if let Ok(map) = frame.into_trailers() {
                    trailers = Some(map);
                }
            }
        }
    }
    let mut headers = head.headers;
    headers.remove(CONTENT_LENGTH);
    Ok(UpstreamReply { status: head.status, headers, chunks, trailers })
}

impl UpstreamReply {
    /// `grpc-status` of the trailers, or of the headers for a trailers-only reply.
    fn grpc_status(&self) -> Option<&HeaderValue> {
        self.trailers
            .as_ref()
            .and_then(|trailers| trailers.get(GRPC_STATUS))
            .or_else(|| self.headers.get(GRPC_STATUS))
    }

    fn succeeded(&self) -> bool {
        self.grpc_status().is_some_and(|status| status.as_bytes() == b"0")
    }

    /// A failed reply passes unchanged when it carries a gRPC status.
    fn into_response_or_error(self) -> Result<Response<Body>, PaidCallError> {
        if self.grpc_status().is_none() {
            return Err(PaidCallError::UpstreamNotGrpc { status: self.status });
        }
        Ok(self.into_response())
    }

    fn into_response(self) -> Response<Body> {
        let body = if self.chunks.is_empty() && self.trailers.is_none() {
            Body::empty()
        } else {
            let frames = self.chunks.into_iter().map(Frame::data).chain(self.trailers.map(Frame::trailers));
            Body::new(StreamBody::new(futures::stream::iter(frames.map(Ok::<_, Infallible>))))
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7u8, len as usize));
        bytes
    }

    #[test]
    fn messages_are_counted_across_any_split_of_the_stream() {
        let stream: Vec<u8> = [message(3), message(0), message(10)].concat();
        for chunk in 1..=stream.len() {
            let mut limit = MessageLimit::new(10);
            for part in stream.chunks(chunk) {
                limit.feed(part).unwrap();
            }
            assert_eq!(limit.complete_messages(), 3, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_message_above_the_limit_is_named_as_soon_as_its_length_is_read() {
        let mut limit = MessageLimit::new(10);
        limit.feed(&message(10)).unwrap();
        assert_eq!(limit.feed(&message(11)[..5]), Err(11));
        let mut limit = MessageLimit::new(10);
        assert_eq!(limit.feed(&[0, 0xff, 0xff, 0xff, 0xff]), Err(u64::from(u32::MAX)));
    }

    #[test]
    fn grpc_message_is_percent_encoded_and_status_may_be_1000() {
        let response = status_response(1000, "nonce 100% wrong: ü\n");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(response.headers()[GRPC_STATUS], "1000");
        assert_eq!(response.headers()[GRPC_MESSAGE], "nonce 100%25 wrong: %C3%BC%0A");
    }

    #[test]
    fn daemon_services_and_malformed_paths_are_not_paid_calls() {
        assert!(check_method("/example.Calculator/add").is_ok());
        assert!(check_method("/Service/Method").is_ok());
        for path in ["/escrow.TokenService/GetToken", "/escrow.PaymentChannelStateService/GetChannelState"] {
            assert_eq!(check_method(path).unwrap_err().grpc_status(), code::UNIMPLEMENTED);
        }
        assert!(matches!(
            check_method("/training.Daemon/create_model"),
            Err(PaidCallError::DaemonServiceNotImplemented { .. })
        ));
        for path in ["/", "/a", "/a/", "//m", "/a/b/c", ""] {
            assert!(matches!(check_method(path), Err(PaidCallError::MalformedMethod { .. })), "{path}");
        }
    }

    #[test]
    fn binary_metadata_is_decoded_padded_or_not() {
        let mut headers = HeaderMap::new();
        headers.append(CHANNEL_SIGNATURE, HeaderValue::from_static("AQID"));
        headers.append("snet-x-bin", HeaderValue::from_static("AQ"));
        headers.append("snet-y-bin", HeaderValue::from_static("AQ=="));
        headers.append("other", HeaderValue::from_static("ignored"));
        let metadata = PaymentMetadata::of(&headers);
        assert_eq!(
            metadata.values,
            vec![
                (CHANNEL_SIGNATURE.to_owned(), vec![1, 2, 3]),
                ("snet-x-bin".to_owned(), vec![1]),
                ("snet-y-bin".to_owned(), vec![1]),
            ]
        );
        assert!(metadata.undecodable_signature.is_none());
        let mut headers = HeaderMap::new();
        headers.append(CHANNEL_SIGNATURE, HeaderValue::from_static("not base64!"));
        assert_eq!(
            PaymentMetadata::of(&headers).undecodable_signature.unwrap().0,
            "incorrect format \"snet-payment-channel-signature-bin\": \"not base64!\""
        );
    }

    #[test]
    fn the_service_gets_the_sender_and_none_of_the_payment_headers() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/grpc"),
            ("snet-payment-type", "escrow"),
            ("snet-payment-channel-id", "1"),
            ("snet-payment-channel-signature-bin", "AQID"),
            ("snet-payment-mpe-address", "0x00"),
            ("snet-user-address", "0xSomebodyElse"),
            ("te", "trailers"),
            ("host", "ledger"),
            ("grpc-timeout", "5S"),
            ("x-trace", "abc"),
        ] {
            client.append(name, HeaderValue::from_static(value));
        }
        let sender = EthAddress::from_slice(&[0xab; 20]).unwrap();
        let forwarded = forwarded_headers(&client, sender);
        let mut names: Vec<&str> = forwarded.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "grpc-timeout", "snet-user-address", "te", "x-trace"]);
        assert_eq!(forwarded[USER_ADDRESS], sender.to_string().as_str());
        assert_eq!(forwarded[TE], "trailers");
    }
}

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
//! 4. **Deadline** (`deadline`): the client's `grpc-timeout`, if any, must be well formed
//!    (INVALID_ARGUMENT `malformed grpc-timeout "<v>"`); the call's deadline is the earlier of it and
//!    `max_call_seconds` from the call's arrival.
//! 5. **Calls in flight**: beyond `max_concurrent_calls` a call is refused at once with
//!    RESOURCE_EXHAUSTED (never queued), before its payment is looked at.
//! 6. **Payment type** (`snet-payment-type`): absent means escrow; an unknown value is
//!    INVALID_ARGUMENT `unexpected "snet-payment-type", value: "<v>"`. `free-call`, `prepaid-call` and
//!    `train-call` are UNIMPLEMENTED with a message naming the type: the ledger implements only
//!    escrow, and UNIMPLEMENTED is also what the services of those flows answer (design.md §8),
//!    whereas FAILED_PRECONDITION would suggest that some state of the ledger could make them work.
//! 7. **Escrow headers**, parsed by `domain::headers` (id, nonce, amount, signature; INVALID_ARGUMENT
//!    with its messages). `-bin` values are base64 on the wire, padded or not, and are decoded first;
//!    a signature that is not base64 is INVALID_ARGUMENT `incorrect format "<key>": "<raw>"`, judged
//!    after the other headers so that the seed's order still decides which error wins.
//! 8. **Payment transaction**: `PaymentService::start(payment, path)` takes the channel's lease and
//!    validates (escrow.md §3.4–3.7). Its error is answered with `PaymentErrorCode::grpc_status()`
//!    (13, 16, 9 or the raw 1000) and its exact message; the call is not forwarded.
//! 9. **Message size.** The first request message is read before anything is forwarded; one whose
//!    announced length (the 4-byte big-endian length after the flag byte of the gRPC framing) is
//!    above `max_message_bytes` is RESOURCE_EXHAUSTED, the payment is rolled back, and the upstream
//!    never sees the call. Later messages of a client stream flow through with the same check: an
//!    oversized one resets the upstream stream, rolls the payment back and answers RESOURCE_EXHAUSTED.
//!    The limit is on the wire length (the compressed length of a compressed message). As in the
//!    seed, the payment is checked before the message is read, so a stale nonce wins over a size.
//!
//! **What is forwarded**: the same path and body bytes, over HTTP/2 to the upstream (`upstream`:
//! h2c for `http://`, TLS for `https://`), with the client's metadata except
//! - every `snet-payment-*` header: the payment is settled here, and its signature is evidence kept
//!   in the ledger, not something the service needs (the CLI's `snet-payment-mpe-address` goes too);
//! - any `snet-user-address` the client sent: the gateway sets it to the channel's sender
//!   (checksummed), so a client cannot name somebody else;
//! - the client's `grpc-timeout`: the service gets the time the call has left instead;
//! - connection-level headers (`host`, `connection`, `content-length`, `te`, …); `te: trailers` is set
//!   as gRPC requires.
//!
//! **Both directions stream** (`body`, `reply`): the client's messages go upstream as they arrive
//! and the service's reply reaches the client as it is sent, so server-streaming replies arrive
//! message by message and bidirectional calls can ping-pong. The payment is decided on the
//! service's final status, before that status is passed on (`reply` has the rules). An upstream
//! that cannot be reached, or whose stream breaks, is UNAVAILABLE `the service is unavailable`;
//! a call still running at its deadline is cut with DEADLINE_EXCEEDED (both rolled back, the lease
//! released at once).
//!
//! **Nothing internal reaches the client**: every message is fixed or made of what the client sent;
//! causes (URLs, SQL, host names) are logged.
//!
//! **The lease** is renewed from the payment's start until the outcome is known, and never left
//! behind: a client that goes away at any moment rolls the payment back in a task of its own,
//! except once the service's status 0 has arrived, when the commit runs to its end (`pending`).
//!
//! Every refusal is a valid gRPC reply: HTTP 200, `content-type: application/grpc`, and trailers-only
//! `grpc-status` (a decimal number) and `grpc-message` (percent-encoded as gRPC requires: every byte
//! outside 0x20–0x7E, and `%`). Nothing here panics on input.

mod body;
mod deadline;
mod error;
mod framing;
mod pending;
mod reply;
mod request;
mod upstream;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::uri::PathAndQuery;
use http::{Request, Response, Version};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::chain::ChainReader;
use crate::domain::headers::{PaymentType, parse_payment, parse_payment_type};
use crate::escrow::EscrowConfig;
use crate::escrow::payments::PaymentService;

use body::{forward_body, read_first_message};
use deadline::CallDeadline;
use framing::MessageLimit;
use pending::{CallSlot, Pending, start_payment};
use reply::Forwarded;
use request::{GRPC_TIMEOUT, PaymentMetadata, check_content_type, check_method, forwarded_headers};
use upstream::Upstream;

pub use deadline::{encode_grpc_timeout, parse_grpc_timeout};
pub use error::{DeadlineCause, PaidCallError, code, status_response};
pub use upstream::{InvalidUpstream, UPSTREAM_CONNECT_TIMEOUT};

/// How the gateway reaches the service and the limits of its calls.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// `http://host:port` (h2c) or `https://host:port` (HTTP/2 over TLS).
    pub upstream: String,
    /// The TLS client configuration of an `https://` upstream (`crate::tls::client_config`).
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// Largest gRPC message a client may send (RESOURCE_EXHAUSTED above).
    pub max_message_bytes: usize,
    /// Longest a paid call may run, whatever the client's own deadline (DEADLINE_EXCEEDED after).
    pub max_call_duration: Duration,
    /// Most paid calls in flight at once (RESOURCE_EXHAUSTED beyond).
    pub max_concurrent_calls: usize,
}

/// Everything a gateway with a chain needs.
struct PaidCalls<C: ChainReader + 'static> {
    payments: Arc<PaymentService<C>>,
    mpe: crate::domain::EthAddress,
    max_message_bytes: usize,
    max_call_duration: Duration,
    max_concurrent_calls: usize,
    calls: Arc<Semaphore>,
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
    /// A gateway that validates payments with `payments` (built on `config`: its MPE address is
    /// used here) and forwards calls as `settings` say.
    pub fn new(
        payments: Arc<PaymentService<C>>,
        config: &EscrowConfig,
        settings: &GatewaySettings,
    ) -> Result<Self, InvalidUpstream> {
        let paid = PaidCalls {
            payments,
            mpe: config.mpe,
            max_message_bytes: settings.max_message_bytes,
            max_call_duration: settings.max_call_duration,
            max_concurrent_calls: settings.max_concurrent_calls,
            calls: Arc::new(Semaphore::new(settings.max_concurrent_calls)),
            upstream: Upstream::new(&settings.upstream, settings.upstream_tls.clone())?,
        };
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

    /// Answers one call: a refusal, or the upstream's reply with the payment decided on its status.
    #[tracing::instrument(skip_all, fields(method = %request.uri().path()))]
    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let arrived = Instant::now();
        match self.call(request, arrived).await {
            Ok(response) => response,
            Err(Refusal { error, forwarded }) => {
                if !forwarded {
                    tracing::info!(status = error.grpc_status(), %error, "paid call refused");
                    if let Some(paid) = &self.paid {
                        let metrics = paid.payments.metrics();
                        metrics
                            .paid_call_duration
                            .with_label_values(&["refused"])
                            .observe(arrived.elapsed().as_secs_f64());
                    }
                }
                error.into_response()
            }
        }
    }

    async fn call(&self, request: Request<Body>, arrived: Instant) -> Result<Response<Body>, Refusal> {
        let method = request.uri().path().to_owned();
        check_method(&method)?;
        check_content_type(request.headers())?;
        let paid = self.paid.as_ref().ok_or(PaidCallError::NoChain)?;
        let timeout = request.headers().get(GRPC_TIMEOUT).map(|value| value.as_bytes());
        let deadline = CallDeadline::of(arrived, timeout, paid.max_call_duration)?;
        let metrics = paid.payments.metrics();
        let Ok(permit) = paid.calls.clone().try_acquire_owned() else {
            metrics.paid_call_limits.with_label_values(&["concurrency"]).inc();
            return Err(PaidCallError::CallsExhausted { max: paid.max_concurrent_calls }.into());
        };
        let slot = CallSlot::new(permit, metrics.paid_calls_in_flight.clone());
        let metadata = PaymentMetadata::of(request.headers());
        match parse_payment_type(metadata.values.as_slice()).map_err(PaidCallError::from)? {
            PaymentType::Escrow => {}
            other => {
                return Err(PaidCallError::UnsupportedPaymentType { payment_type: other.as_str() }.into());
            }
        }
        let payment = parse_payment(metadata.values.as_slice(), paid.mpe).map_err(PaidCallError::from)?;
        if let Some(error) = metadata.undecodable_signature {
            return Err(PaidCallError::from(error).into());
        }
        let timer = metrics.paid_call_seconds.with_label_values(&["payment_start"]).start_timer();
        let transaction =
            start_payment(&paid.payments, payment, &method).await.map_err(PaidCallError::from)?;
        timer.observe_duration();
        tracing::debug!(channel = %transaction.payment().channel_id, sender = %transaction.sender(), "payment started");
        let pending = Pending::new(paid.payments.clone(), transaction, slot);
        paid.forward(request, pending, deadline, arrived).await
    }
}

/// A call answered with an error: `forwarded` when the service had it (logged and counted there).
struct Refusal {
    error: PaidCallError,
    forwarded: bool,
}

impl<E: Into<PaidCallError>> From<E> for Refusal {
    fn from(error: E) -> Self {
        Self { error: error.into(), forwarded: false }
    }
}

impl<C: ChainReader + 'static> PaidCalls<C> {
    /// Sends the call upstream and answers with its reply as it streams; every failure on the way
    /// rolls the payment back.
    async fn forward(
        &self,
        request: Request<Body>,
        pending: Pending<C>,
        deadline: CallDeadline,
        arrived: Instant,
    ) -> Result<Response<Body>, Refusal> {
        let (parts, body) = request.into_parts();
        let sender = pending.sender().expect("a pending payment has its transaction");
        let exceeded = Arc::new(OnceLock::new());
        let mut forwarded = Forwarded {
            pending,
            deadline,
            exceeded: exceeded.clone(),
            max_message_bytes: self.max_message_bytes,
            metrics: self.payments.metrics().clone(),
            arrived,
            sent: arrived,
        };
        let sending = async {
            let mut limit = MessageLimit::new(self.max_message_bytes);
            let first = read_first_message(body, &mut limit).await?;
            let body = forward_body(first, limit, exceeded);
            let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
            let uri = self.upstream.uri(path).map_err(|error| {
                tracing::warn!(%error, "cannot build the upstream URI");
                PaidCallError::UpstreamUnavailable
            })?;
            let now = Instant::now();
            let timeout = deadline.remaining_header(now).ok_or_else(|| deadline.exceeded())?;
            let mut upstream_request = Request::new(body);
            *upstream_request.method_mut() = parts.method;
            *upstream_request.uri_mut() = uri;
            *upstream_request.version_mut() = Version::HTTP_2;
            *upstream_request.headers_mut() = forwarded_headers(&parts.headers, sender, &timeout);
            let response = self.upstream.send(upstream_request);
            Ok::<_, PaidCallError>((now, response))
        };
        let sent = match tokio::time::timeout_at(deadline.at, sending).await {
            Ok(Ok((now, response))) => {
                forwarded.sent = now;
                tokio::time::timeout_at(deadline.at, response).await
            }
            Ok(Err(error)) => return Err(self.failed(forwarded, error).await),
            Err(_elapsed) => return Err(self.failed(forwarded, deadline.exceeded()).await),
        };
        match sent {
            Ok(Ok(response)) => {
                reply::reply(response, forwarded).await.map_err(|error| Refusal { error, forwarded: true })
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error_chain(&error), "upstream call failed");
                Err(self.failed(forwarded, PaidCallError::UpstreamUnavailable).await)
            }
            Err(_elapsed) => Err(self.failed(forwarded, deadline.exceeded()).await),
        }
    }

    async fn failed(&self, forwarded: Forwarded<C>, error: PaidCallError) -> Refusal {
        Refusal { error: forwarded.fail(error).await, forwarded: true }
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

//! The paid-call gateway in the test process: served by axum on a free loopback port in front of
//! the example upstream of [`super::upstream`], on a real chain (ganache running the real
//! MultiPartyEscrow) and a real Postgres, and a raw HTTP/2 cleartext gRPC client that builds frames
//! by hand and reads the status as a number (so that the seed's raw status 1000 is visible).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mpe_ledger::chain::EthChain;
use mpe_ledger::domain::{Amount, ChannelEvent, ChannelId, EthAddress, PaymentChannelKey};
use mpe_ledger::escrow::EscrowConfig;
use mpe_ledger::escrow::channels::ChannelSource;
use mpe_ledger::escrow::metrics::EscrowMetrics;
use mpe_ledger::escrow::payments::PaymentService;
use mpe_ledger::grpc::paid_call::{GatewaySettings, PaidCallGateway};
use mpe_ledger::store::ChannelStore;
use mpe_ledger::store::leases::PgLeases;
use mpe_ledger::store::postgres::{PgChannelStore, PgLedger};
use tokio::task::JoinHandle;

use super::TestDb;
use super::escrow::escrow_config;
use super::ganache::{Account, Ganache, Mpe};
use super::upstream::{self, Upstream, frame_message, split_messages, take_message};

pub const PRICE: u64 = 10;
pub const GROUP: [u8; 32] = [7; 32];
pub const MAX_MESSAGE_BYTES: usize = 1024;
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// gRPC status codes the tests expect.
pub const OK: u32 = 0;
pub const INVALID_ARGUMENT: u32 = 3;
pub const DEADLINE_EXCEEDED: u32 = 4;
pub const RESOURCE_EXHAUSTED: u32 = 8;
pub const FAILED_PRECONDITION: u32 = 9;
pub const UNIMPLEMENTED: u32 = 12;
pub const INTERNAL: u32 = 13;
pub const UNAVAILABLE: u32 = 14;
pub const UNAUTHENTICATED: u32 = 16;
pub const INCORRECT_NONCE: u32 = 1000;

/// The gateway served by axum on a free loopback port; stopped when dropped.
pub struct Served {
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(gateway: PaidCallGateway<EthChain>) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // Another route beside the gateway, as on the public port.
    let app = gateway.mount(Router::new().route("/healthz", get(|| async { "ok\n" })));
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Served { address, task }
}

/// Metadata as it goes on the wire: text values, `-bin` values already base64.
pub type Metadata = Vec<(String, String)>;

/// A gRPC reply as a client reads it.
#[derive(Debug)]
pub struct Reply {
    pub status: u32,
    pub message: String,
    pub messages: Vec<Vec<u8>>,
}

pub type RequestBody = UnsyncBoxBody<Bytes, Infallible>;
/// The sending side of a request streamed by the test, frame by frame.
pub type RequestFrames = futures::channel::mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;

/// A raw HTTP/2 cleartext gRPC client: frames built by hand, status read as a number.
#[derive(Clone)]
pub struct RawClient {
    address: SocketAddr,
    sender: SendRequest<RequestBody>,
}

impl RawClient {
    pub async fn connect(address: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(connection);
        Self { address, sender }
    }

    pub async fn call(&self, path: &str, metadata: &Metadata, messages: &[&[u8]]) -> Reply {
        self.call_with_content_type(path, metadata, messages, "application/grpc").await
    }

    pub async fn call_with_content_type(
        &self,
        path: &str,
        metadata: &Metadata,
        messages: &[&[u8]],
        content_type: &str,
    ) -> Reply {
        let body: Vec<u8> = messages.iter().flat_map(|m| frame_message(m)).collect();
        self.send(path, metadata, content_type, Full::new(Bytes::from(body)).boxed_unsync()).await
    }

    /// A client stream whose messages leave one DATA frame at a time, `pause` apart.
    pub async fn call_paced(
        &self,
        path: &str,
        metadata: &Metadata,
        messages: Vec<Vec<u8>>,
        pause: Duration,
    ) -> Reply {
        let (frames, body) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, Infallible>>();
        tokio::spawn(async move {
            for message in messages {
                if frames.unbounded_send(Ok(Frame::data(frame_message(&message)))).is_err() {
                    return;
                }
                tokio::time::sleep(pause).await;
            }
        });
        self.send(path, metadata, "application/grpc", StreamBody::new(body).boxed_unsync()).await
    }

    async fn send(&self, path: &str, metadata: &Metadata, content_type: &str, body: RequestBody) -> Reply {
        let response = self.open(path, metadata, content_type, body).await;
        let headers = response.headers().clone();
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let messages = split_messages(&collected.to_bytes());
        let (status, message) =
            grpc_status(&trailers).or_else(|| grpc_status(&headers)).expect("a grpc-status");
        Reply { status, message, messages }
    }

    /// Sends the request and returns the reply's head with its body still to read.
    pub async fn open(
        &self,
        path: &str,
        metadata: &Metadata,
        content_type: &str,
        body: RequestBody,
    ) -> http::Response<Incoming> {
        let mut request = Request::post(format!("http://{}{path}", self.address))
            .header("content-type", content_type)
            .header("te", "trailers");
        for (key, value) in metadata {
            request = request.header(key.as_str(), value.as_str());
        }
        let request = request.body(body).unwrap();
        let mut sender = self.sender.clone();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "every reply is HTTP 200");
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        assert!(content_type.is_some_and(|t| t.starts_with("application/grpc")), "{:?}", response.headers());
        response
    }

    /// A call whose request the test streams itself, `first` sent at once (the gateway reads the
    /// first message before it forwards anything): the frames' sender and the reply, open.
    pub async fn open_streaming(
        &self,
        path: &str,
        metadata: &Metadata,
        first: &[u8],
    ) -> (RequestFrames, StreamingReply) {
        let (frames, body) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, Infallible>>();
        frames.unbounded_send(Ok(Frame::data(frame_message(first)))).unwrap();
        let response =
            self.open(path, metadata, "application/grpc", StreamBody::new(body).boxed_unsync()).await;
        let headers = response.headers().clone();
        (frames, StreamingReply { headers, body: response.into_body(), buffer: Vec::new() })
    }
}

/// A reply read message by message as it arrives.
pub struct StreamingReply {
    pub headers: HeaderMap,
    body: Incoming,
    buffer: Vec<u8>,
}

/// What the next read of a [`StreamingReply`] gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Message(Vec<u8>),
    /// The final status and message.
    Status(u32, String),
}

impl StreamingReply {
    /// The next whole message, or the final status (from the trailers, or the headers of a
    /// trailers-only reply).
    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(message) = take_message(&mut self.buffer) {
                return Next::Message(message);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        let (status, message) = grpc_status(&trailers).expect("trailers carry a grpc-status");
                        return Next::Status(status, message);
                    }
                },
                Some(Err(error)) => panic!("the reply broke off: {error}"),
                None => {
                    let (status, message) = grpc_status(&self.headers).expect("a grpc-status");
                    return Next::Status(status, message);
                }
            }
        }
    }

    /// Reads to the end: how many messages and bytes of payload came, and the final status.
    pub async fn drain(&mut self) -> (usize, u64, u32, String) {
        let (mut messages, mut bytes) = (0, 0);
        loop {
            match self.next().await {
                Next::Message(message) => {
                    messages += 1;
                    bytes += message.len() as u64;
                }
                Next::Status(status, message) => return (messages, bytes, status, message),
            }
        }
    }
}

pub fn grpc_status(headers: &HeaderMap) -> Option<(u32, String)> {
    let status = headers.get("grpc-status")?.to_str().unwrap().parse().unwrap();
    let message = headers.get("grpc-message").map_or(String::new(), |v| {
        percent_encoding::percent_decode_str(v.to_str().unwrap()).decode_utf8().unwrap().into_owned()
    });
    Some((status, message))
}

/// How a [`World`]'s gateway is set up; `Default` is what most tests use.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    pub lease_ttl: Duration,
    /// Replaces the running upstream's address (e.g. with a closed port).
    pub upstream_url: Option<String>,
    /// Where the gateway reads the chain, instead of the ganache the contract is deployed on.
    pub rpc_url: Option<String>,
    pub max_message_bytes: usize,
    pub max_call_duration: Duration,
    pub max_concurrent_calls: usize,
    /// Channels opened from the client to the provider (each with 1000 cogs).
    pub channels: usize,
}

impl Default for WorldOptions {
    fn default() -> Self {
        Self {
            lease_ttl: LEASE_TTL,
            upstream_url: None,
            rpc_url: None,
            max_message_bytes: MAX_MESSAGE_BYTES,
            max_call_duration: Duration::from_secs(300),
            max_concurrent_calls: 1024,
            channels: 1,
        }
    }
}

/// One chain, one database, channels from the client (account 1) to the provider (account 2),
/// the upstream service, and the gateway serving in front of it.
pub struct World<'a> {
    pub ganache: &'a Ganache,
    pub mpe: Mpe<'a>,
    pub db: TestDb,
    pub channel: ChannelId,
    /// Every channel opened, `channel` first.
    pub channels: Vec<ChannelId>,
    pub upstream: Upstream,
    pub served: Served,
    pub client: RawClient,
    pub metrics: EscrowMetrics,
    /// The gateway's payment service (e.g. for the leases it keeps renewed).
    pub payments: Arc<PaymentService<EthChain>>,
}

impl<'a> World<'a> {
    pub async fn new(ganache: &'a Ganache) -> Self {
        Self::build(ganache, WorldOptions::default()).await
    }

    pub async fn build(ganache: &'a Ganache, options: WorldOptions) -> Self {
        let mpe = Mpe::deploy(ganache).await;
        let client = ganache.account(1);
        mpe.mint_and_deposit(client, 10_000).await;
        let expiration = ganache.block_number().await + 1000;
        let mut channels = Vec::new();
        for _ in 0..options.channels.max(1) {
            let channel = mpe
                .open_channel(client, client.address, ganache.account(2).address, GROUP, 1000, expiration)
                .await;
            channels.push(channel);
        }
        let db = TestDb::new().await;
        let config = Arc::new(EscrowConfig {
            lease_ttl: options.lease_ttl,
            ..escrow_config(mpe.eth_address(), ganache.account(2).eth_address(), GROUP, PRICE)
        });
        let rpc_url = options.rpc_url.as_deref().unwrap_or(ganache.url());
        let chain = EthChain::connect(rpc_url, mpe.eth_address()).unwrap();
        let ledger = PgLedger::new(db.pool.clone(), db.metrics.clone());
        let metrics = EscrowMetrics::unregistered();
        let source =
            Arc::new(ChannelSource::new(ledger, chain, config.clone()).with_metrics(metrics.clone()));
        let leases = PgLeases::new(db.pool.clone(), db.metrics.clone());
        let payments = Arc::new(PaymentService::new(source, leases, config.clone()));
        let upstream = Upstream::start().await;
        let settings = GatewaySettings {
            upstream: options.upstream_url.unwrap_or_else(|| upstream.url.clone()),
            upstream_tls: None,
            max_message_bytes: options.max_message_bytes,
            max_call_duration: options.max_call_duration,
            max_concurrent_calls: options.max_concurrent_calls,
        };
        let gateway = PaidCallGateway::new(payments.clone(), &config, &settings).unwrap();
        let served = serve(gateway).await;
        let client = RawClient::connect(served.address).await;
        Self { ganache, mpe, db, channel: channels[0], channels, upstream, served, client, metrics, payments }
    }

    pub fn sender(&self) -> &Account {
        self.ganache.account(1)
    }

    /// The metadata snet-cli sends for a payment signed by `signer` on `channel`.
    pub fn metadata_for(&self, signer: &Account, channel: ChannelId, nonce: u64, amount: u64) -> Metadata {
        payment_metadata(&self.mpe, signer, channel, nonce, amount)
    }

    pub fn metadata(&self, nonce: u64, amount: u64) -> Metadata {
        self.metadata_for(self.sender(), self.channel, nonce, amount)
    }

    pub async fn call(&self, path: &str, metadata: &Metadata) -> Reply {
        self.client.call(path, metadata, &[b"hello"]).await
    }

    /// The amounts of `channel`'s `payment accepted` events, in order.
    pub async fn accepted_amounts_of(&self, channel: ChannelId) -> Vec<Amount> {
        PgChannelStore::new(self.db.pool.clone(), self.db.metrics.clone())
            .events(&PaymentChannelKey::new(channel))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|event| match event {
                ChannelEvent::PaymentAccepted { amount, .. } => Some(amount),
                _ => None,
            })
            .collect()
    }

    /// The amounts of the first channel's `payment accepted` events, in order.
    pub async fn accepted_amounts(&self) -> Vec<Amount> {
        self.accepted_amounts_of(self.channel).await
    }

    /// Everything a refused call must leave untouched.
    pub async fn snapshot(&self) -> (i64, Vec<String>) {
        (self.db.event_count().await, self.db.projections_snapshot().await)
    }

    pub async fn pay_successfully(&self, nonce: u64, amount: u64) {
        let reply = self.call(upstream::ECHO, &self.metadata(nonce, amount)).await;
        assert_eq!((reply.status, reply.message.as_str()), (OK, ""), "payment of {amount}");
    }

    /// The leases held now (a call that ended must leave none).
    pub async fn leases_held(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM ledger.leases WHERE token IS NOT NULL")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

/// The metadata snet-cli sends for a payment signed by `signer` on `channel` of `mpe`.
pub fn payment_metadata(
    mpe: &Mpe<'_>,
    signer: &Account,
    channel: ChannelId,
    nonce: u64,
    amount: u64,
) -> Metadata {
    payment_metadata_of(mpe.eth_address(), signer, channel, nonce, amount)
}

/// [`payment_metadata`] knowing only the contract's address (for tasks that outlive the chain's
/// borrow).
pub fn payment_metadata_of(
    mpe_address: EthAddress,
    signer: &Account,
    channel: ChannelId,
    nonce: u64,
    amount: u64,
) -> Metadata {
    let signature = super::ganache::sign_payment(&mpe_address, signer, channel, nonce, amount);
    [
        ("snet-payment-type", "escrow".to_owned()),
        ("snet-payment-channel-id", channel.to_string()),
        ("snet-payment-channel-nonce", nonce.to_string()),
        ("snet-payment-channel-amount", amount.to_string()),
        ("snet-payment-channel-signature-bin", STANDARD.encode(signature.0)),
        ("snet-payment-mpe-address", mpe_address.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub fn amounts(values: &[u64]) -> Vec<Amount> {
    values.iter().copied().map(Amount::from).collect()
}

pub fn with(metadata: &Metadata, key: &str, value: &str) -> Metadata {
    metadata.iter().map(|(k, v)| (k.clone(), if k == key { value.to_owned() } else { v.clone() })).collect()
}

pub fn without(metadata: &Metadata, key: &str) -> Metadata {
    metadata.iter().filter(|(k, _)| k != key).cloned().collect()
}

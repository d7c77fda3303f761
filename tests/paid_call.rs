//! Paid calls end to end: a raw HTTP/2 gRPC client (so that the seed's raw status 1000 is visible)
//! calls the ledger's gateway, served as the axum fallback, on a real chain (ganache running the real
//! MultiPartyEscrow) and a real Postgres; the gateway forwards to the example upstream service of
//! `common::upstream`. Every refusal asserts the code, the message, that the service was not called,
//! and that neither the event log nor any projection changed.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use common::TestDb;
use common::ganache::{Account, Ganache, Mpe};
use common::upstream::{self, Upstream, frame_message, split_messages};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mpe_ledger::chain::EthChain;
use mpe_ledger::domain::payment::Pricing;
use mpe_ledger::domain::{Amount, ChannelEvent, ChannelId, GroupId, PaymentChannelKey};
use mpe_ledger::escrow::EscrowConfig;
use mpe_ledger::escrow::channels::ChannelSource;
use mpe_ledger::escrow::payments::PaymentService;
use mpe_ledger::grpc::paid_call::PaidCallGateway;
use mpe_ledger::store::ChannelStore;
use mpe_ledger::store::leases::PgLeases;
use mpe_ledger::store::postgres::{PgChannelStore, PgLedger};
use tokio::task::JoinHandle;

const PRICE: u64 = 10;
const GROUP: [u8; 32] = [7; 32];
const MAX_MESSAGE_BYTES: usize = 1024;
const LEASE_TTL: Duration = Duration::from_secs(30);

/// gRPC status codes the tests expect.
const OK: u32 = 0;
const INVALID_ARGUMENT: u32 = 3;
const RESOURCE_EXHAUSTED: u32 = 8;
const FAILED_PRECONDITION: u32 = 9;
const UNIMPLEMENTED: u32 = 12;
const UNAVAILABLE: u32 = 14;
const UNAUTHENTICATED: u32 = 16;
const INCORRECT_NONCE: u32 = 1000;

/// The gateway served by axum on a free loopback port; stopped when dropped.
struct Served {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(gateway: PaidCallGateway<EthChain>) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // Another route beside the gateway, as on the public port.
    let app = gateway.mount(Router::new().route("/healthz", get(|| async { "ok\n" })));
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Served { address, task }
}

/// Metadata as it goes on the wire: text values, `-bin` values already base64.
type Metadata = Vec<(String, String)>;

/// A gRPC reply as a client reads it.
#[derive(Debug)]
struct Reply {
    status: u32,
    message: String,
    messages: Vec<Vec<u8>>,
}

type RequestBody = UnsyncBoxBody<Bytes, Infallible>;

/// A raw HTTP/2 cleartext gRPC client: frames built by hand, status read as a number.
#[derive(Clone)]
struct RawClient {
    address: SocketAddr,
    sender: SendRequest<RequestBody>,
}

impl RawClient {
    async fn connect(address: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(connection);
        Self { address, sender }
    }

    async fn call(&self, path: &str, metadata: &Metadata, messages: &[&[u8]]) -> Reply {
        self.call_with_content_type(path, metadata, messages, "application/grpc").await
    }

    async fn call_with_content_type(
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
    async fn call_paced(
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
        let headers = response.headers().clone();
        let content_type = headers.get("content-type").map(|v| v.to_str().unwrap().to_owned());
        assert!(content_type.is_some_and(|t| t.starts_with("application/grpc")), "{headers:?}");
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let messages = split_messages(&collected.to_bytes());
        let (status, message) =
            grpc_status(&trailers).or_else(|| grpc_status(&headers)).expect("a grpc-status");
        Reply { status, message, messages }
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<(u32, String)> {
    let status = headers.get("grpc-status")?.to_str().unwrap().parse().unwrap();
    let message = headers.get("grpc-message").map_or(String::new(), |v| {
        percent_encoding::percent_decode_str(v.to_str().unwrap()).decode_utf8().unwrap().into_owned()
    });
    Some((status, message))
}

/// One chain, one database, one channel from the client (account 1) to the provider (account 2),
/// the upstream service, and the gateway serving in front of it.
struct World<'a> {
    ganache: &'a Ganache,
    mpe: Mpe<'a>,
    db: TestDb,
    channel: ChannelId,
    upstream: Upstream,
    served: Served,
    client: RawClient,
}

impl<'a> World<'a> {
    async fn new(ganache: &'a Ganache) -> Self {
        Self::build(ganache, LEASE_TTL, None).await
    }

    /// `upstream_url` replaces the running upstream's address (e.g. with a closed port).
    async fn build(ganache: &'a Ganache, lease_ttl: Duration, upstream_url: Option<String>) -> Self {
        let mpe = Mpe::deploy(ganache).await;
        let client = ganache.account(1);
        mpe.mint_and_deposit(client, 10_000).await;
        let expiration = ganache.block_number().await + 1000;
        let channel = mpe
            .open_channel(client, client.address, ganache.account(2).address, GROUP, 1000, expiration)
            .await;
        let db = TestDb::new().await;
        let config = Arc::new(EscrowConfig {
            mpe: mpe.eth_address(),
            group_id: GroupId(GROUP),
            payment_address: ganache.account(2).eth_address(),
            expiration_threshold: 0,
            pricing: Pricing::Fixed(Amount::from(PRICE)),
            replica_id: "replica-a".to_owned(),
            lease_ttl,
            confirmations: 0,
            claim_log_lookback: 10_000,
            chain_cache_age: Duration::from_secs(5),
        });
        let chain = EthChain::connect(ganache.url(), mpe.eth_address()).unwrap();
        let ledger = PgLedger::new(db.pool.clone(), db.metrics.clone());
        let source = Arc::new(ChannelSource::new(ledger, chain, config.clone()));
        let leases = PgLeases::new(db.pool.clone(), db.metrics.clone());
        let payments = Arc::new(PaymentService::new(source, leases, config.clone()));
        let upstream = Upstream::start().await;
        let url = upstream_url.unwrap_or_else(|| upstream.url.clone());
        let gateway = PaidCallGateway::new(payments, &config, &url, MAX_MESSAGE_BYTES).unwrap();
        let served = serve(gateway).await;
        let client = RawClient::connect(served.address).await;
        Self { ganache, mpe, db, channel, upstream, served, client }
    }

    fn sender(&self) -> &Account {
        self.ganache.account(1)
    }

    /// The metadata snet-cli sends for a payment signed by `signer` on `channel`.
    fn metadata_for(&self, signer: &Account, channel: ChannelId, nonce: u64, amount: u64) -> Metadata {
        let signature = self.mpe.sign_payment(signer, channel, nonce, amount);
        [
            ("snet-payment-type", "escrow".to_owned()),
            ("snet-payment-channel-id", channel.to_string()),
            ("snet-payment-channel-nonce", nonce.to_string()),
            ("snet-payment-channel-amount", amount.to_string()),
            ("snet-payment-channel-signature-bin", STANDARD.encode(signature.0)),
            ("snet-payment-mpe-address", self.mpe.eth_address().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn metadata(&self, nonce: u64, amount: u64) -> Metadata {
        self.metadata_for(self.sender(), self.channel, nonce, amount)
    }

    async fn call(&self, path: &str, metadata: &Metadata) -> Reply {
        self.client.call(path, metadata, &[b"hello"]).await
    }

    /// The amounts of the channel's `payment accepted` events, in order.
    async fn accepted_amounts(&self) -> Vec<Amount> {
        PgChannelStore::new(self.db.pool.clone(), self.db.metrics.clone())
            .events(&PaymentChannelKey::new(self.channel))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|event| match event {
                ChannelEvent::PaymentAccepted { amount, .. } => Some(amount),
                _ => None,
            })
            .collect()
    }

    /// Everything a refused call must leave untouched.
    async fn snapshot(&self) -> (i64, Vec<String>) {
        (self.db.event_count().await, self.db.projections_snapshot().await)
    }

    async fn pay_successfully(&self, nonce: u64, amount: u64) {
        let reply = self.call(upstream::ECHO, &self.metadata(nonce, amount)).await;
        assert_eq!((reply.status, reply.message.as_str()), (OK, ""), "payment of {amount}");
    }
}

fn amounts(values: &[u64]) -> Vec<Amount> {
    values.iter().copied().map(Amount::from).collect()
}

fn with(metadata: &Metadata, key: &str, value: &str) -> Metadata {
    metadata.iter().map(|(k, v)| (k.clone(), if k == key { value.to_owned() } else { v.clone() })).collect()
}

fn without(metadata: &Metadata, key: &str) -> Metadata {
    metadata.iter().filter(|(k, _)| k != key).cloned().collect()
}

#[tokio::test]
async fn a_paid_unary_call_is_forwarded_with_the_sender_and_committed_once() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let reply = world.call(upstream::ECHO, &world.metadata(0, PRICE)).await;
    assert_eq!((reply.status, reply.message.as_str()), (OK, ""));
    assert_eq!(reply.messages, vec![b"hello".to_vec()], "the service's reply reaches the client");

    assert_eq!(world.upstream.call_count(), 1);
    let call = world.upstream.last_call();
    assert_eq!(call.path, upstream::ECHO);
    assert_eq!(call.user_address(), Some(world.sender().eth_address().to_string()), "checksummed sender");
    let payment_headers: Vec<&str> =
        call.headers.keys().map(|k| k.as_str()).filter(|k| k.starts_with("snet-payment-")).collect();
    assert!(payment_headers.is_empty(), "payment metadata is not forwarded: {payment_headers:?}");
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn three_calls_raising_the_amount_by_the_price_are_all_committed() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    for amount in [PRICE, 2 * PRICE, 3 * PRICE] {
        world.pay_successfully(0, amount).await;
    }
    assert_eq!(world.upstream.call_count(), 3);
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE, 2 * PRICE, 3 * PRICE]));
}

#[tokio::test]
async fn binary_metadata_is_accepted_without_base64_padding() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let signature = world.mpe.sign_payment(world.sender(), world.channel, 0, PRICE);
    let unpadded = STANDARD_NO_PAD.encode(signature.0);
    assert!(!unpadded.ends_with('='));
    let metadata = with(&world.metadata(0, PRICE), "snet-payment-channel-signature-bin", &unpadded);
    let reply = world.call(upstream::ECHO, &metadata).await;
    assert_eq!((reply.status, reply.message.as_str()), (OK, ""));
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn a_failing_upstream_call_passes_its_status_records_nothing_and_releases_the_lease() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let before = world.snapshot().await;
    let reply = world.call(upstream::FAIL, &world.metadata(0, PRICE)).await;
    assert_eq!((reply.status, reply.message.as_str()), (upstream::FAILURE_STATUS, upstream::FAILURE_MESSAGE));
    assert_eq!(world.upstream.call_count(), 1);
    assert_eq!(world.snapshot().await, before, "a failed call records nothing");
    // The lease was released and the same payment is still good.
    world.pay_successfully(0, PRICE).await;
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn a_stale_nonce_is_refused_with_raw_status_1000_and_not_forwarded() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay_successfully(0, PRICE).await;
    let before = world.snapshot().await;
    let reply = world.call(upstream::ECHO, &world.metadata(1, 2 * PRICE)).await;
    assert_eq!(
        (reply.status, reply.message.as_str()),
        (INCORRECT_NONCE, "incorrect payment channel nonce, latest: 0, sent: 1")
    );
    assert_eq!(world.upstream.call_count(), 1, "not forwarded");
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn a_replayed_payment_is_refused_as_zero_income_and_not_forwarded() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let metadata = world.metadata(0, PRICE);
    assert_eq!(world.call(upstream::ECHO, &metadata).await.status, OK);
    let before = world.snapshot().await;
    let reply = world.call(upstream::ECHO, &metadata).await;
    assert_eq!(
        (reply.status, reply.message.as_str()),
        (UNAUTHENTICATED, format!("income 0 does not equal to price {PRICE}").as_str())
    );
    assert_eq!(world.upstream.call_count(), 1, "not forwarded");
    assert_eq!(world.snapshot().await, before);
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn every_bad_request_is_refused_before_forwarding_and_changes_nothing() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay_successfully(0, PRICE).await;
    let good = world.metadata(0, 2 * PRICE);
    let id = world.channel.to_string();
    let unknown_channel = ChannelId::from(999);
    let oversized = vec![1u8; MAX_MESSAGE_BYTES + 1];

    struct Case {
        name: &'static str,
        path: &'static str,
        metadata: Metadata,
        message: Vec<u8>,
        content_type: &'static str,
        status: u32,
        error: String,
    }
    let case = |name, metadata: Metadata, status, error: &str| Case {
        name,
        path: upstream::ECHO,
        metadata,
        message: b"hello".to_vec(),
        content_type: "application/grpc",
        status,
        error: error.to_owned(),
    };
    let mut twice = good.clone();
    twice.push(("snet-payment-channel-id".to_owned(), id.clone()));
    let cases = vec![
        case(
            "missing header",
            without(&good, "snet-payment-channel-nonce"),
            INVALID_ARGUMENT,
            "missing \"snet-payment-channel-nonce\"",
        ),
        case(
            "header twice",
            twice,
            INVALID_ARGUMENT,
            &format!("too many values for key \"snet-payment-channel-id\": [{id} {id}]"),
        ),
        case(
            "non-decimal number",
            with(&good, "snet-payment-channel-amount", "0x14"),
            INVALID_ARGUMENT,
            "incorrect format \"snet-payment-channel-amount\": \"0x14\"",
        ),
        case(
            "signature not base64",
            with(&good, "snet-payment-channel-signature-bin", "***"),
            INVALID_ARGUMENT,
            "incorrect format \"snet-payment-channel-signature-bin\": \"***\"",
        ),
        case(
            "signature of the wrong length",
            with(&good, "snet-payment-channel-signature-bin", &STANDARD.encode([1, 2, 3])),
            UNAUTHENTICATED,
            "payment signature is not valid",
        ),
        case(
            "wrong signer",
            world.metadata_for(ganache.account(3), world.channel, 0, 2 * PRICE),
            UNAUTHENTICATED,
            "payment is not signed by channel signer/sender",
        ),
        case(
            "amount raised by more than the price",
            world.metadata(0, 2 * PRICE + 1),
            UNAUTHENTICATED,
            &format!("income {} does not equal to price {PRICE}", PRICE + 1),
        ),
        case(
            "amount not raised",
            world.metadata(0, PRICE),
            UNAUTHENTICATED,
            &format!("income 0 does not equal to price {PRICE}"),
        ),
        case(
            "unknown channel",
            world.metadata_for(world.sender(), unknown_channel, 0, PRICE),
            UNAUTHENTICATED,
            "payment channel \"{ID: 999}\" not found",
        ),
        case(
            "unknown payment type",
            with(&good, "snet-payment-type", "bitcoin"),
            INVALID_ARGUMENT,
            "unexpected \"snet-payment-type\", value: \"bitcoin\"",
        ),
        case(
            "free call",
            with(&good, "snet-payment-type", "free-call"),
            UNIMPLEMENTED,
            "payment type \"free-call\" is not supported by this ledger: pay with \"escrow\"",
        ),
        case(
            "prepaid call",
            with(&good, "snet-payment-type", "prepaid-call"),
            UNIMPLEMENTED,
            "payment type \"prepaid-call\" is not supported by this ledger: pay with \"escrow\"",
        ),
        Case {
            message: oversized,
            ..case(
                "oversized message",
                good.clone(),
                RESOURCE_EXHAUSTED,
                &format!(
                    "received message larger than max ({} vs. {MAX_MESSAGE_BYTES})",
                    MAX_MESSAGE_BYTES + 1
                ),
            )
        },
        Case {
            path: "/escrow.TokenService/GetToken",
            ..case(
                "token service",
                good.clone(),
                UNIMPLEMENTED,
                "method /escrow.TokenService/GetToken belongs to the daemon's own services and is not \
                 implemented by this ledger",
            )
        },
        Case {
            path: "/training.Daemon/create_model",
            ..case(
                "training service",
                good.clone(),
                UNIMPLEMENTED,
                "method /training.Daemon/create_model belongs to the daemon's own services and is not \
                 implemented by this ledger",
            )
        },
        Case {
            path: "/no-method",
            ..case("malformed method", good.clone(), UNIMPLEMENTED, "malformed method name: \"/no-method\"")
        },
        Case {
            content_type: "application/json",
            ..case(
                "not gRPC",
                good.clone(),
                INVALID_ARGUMENT,
                "content-type \"application/json\" is not application/grpc",
            )
        },
    ];

    let before = world.snapshot().await;
    for case in cases {
        let reply = world
            .client
            .call_with_content_type(case.path, &case.metadata, &[&case.message], case.content_type)
            .await;
        assert_eq!(
            (reply.status, reply.message.as_str()),
            (case.status, case.error.as_str()),
            "{}",
            case.name
        );
        assert!(reply.messages.is_empty(), "{}", case.name);
        assert_eq!(world.upstream.call_count(), 1, "{}: not forwarded", case.name);
        assert_eq!(world.snapshot().await, before, "{}: nothing recorded", case.name);
    }
    // Still serving, and no refusal kept the channel's lease.
    world.pay_successfully(0, 2 * PRICE).await;
    assert_eq!(world.upstream.call_count(), 2);
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE, 2 * PRICE]));
}

#[tokio::test]
async fn a_server_streaming_call_delivers_all_its_messages_and_commits_once() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let reply = world.call(upstream::STREAM, &world.metadata(0, PRICE)).await;
    assert_eq!((reply.status, reply.message.as_str()), (OK, ""));
    let expected: Vec<Vec<u8>> =
        (1..=upstream::STREAMED_MESSAGES as u8).map(|i| [&b"hello"[..], &[i]].concat()).collect();
    assert_eq!(reply.messages, expected);
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn a_client_streaming_call_forwards_every_message_and_commits_once() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let reply = world.client.call(upstream::ECHO, &world.metadata(0, PRICE), &[b"one", b"", b"three"]).await;
    assert_eq!((reply.status, reply.message.as_str()), (OK, ""));
    assert_eq!(reply.messages, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn an_oversized_later_message_of_a_stream_breaks_the_forwarded_call_and_records_nothing() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let before = world.snapshot().await;
    let oversized = vec![1u8; MAX_MESSAGE_BYTES + 1];
    let messages = vec![b"first".to_vec(), oversized];
    let reply = world
        .client
        .call_paced(upstream::ECHO, &world.metadata(0, PRICE), messages, Duration::from_millis(300))
        .await;
    assert_eq!(
        (reply.status, reply.message.as_str()),
        (
            RESOURCE_EXHAUSTED,
            format!("received message larger than max ({} vs. {MAX_MESSAGE_BYTES})", MAX_MESSAGE_BYTES + 1)
                .as_str()
        )
    );
    assert_eq!(world.upstream.call_count(), 1, "the call had started with its first message");
    assert_eq!(world.snapshot().await, before);
    world.pay_successfully(0, PRICE).await;
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn a_paced_client_stream_is_forwarded_whole() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let messages = vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()];
    let reply = world
        .client
        .call_paced(upstream::ECHO, &world.metadata(0, PRICE), messages.clone(), Duration::from_millis(100))
        .await;
    assert_eq!((reply.status, reply.message.as_str()), (OK, ""));
    assert_eq!(reply.messages, messages);
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn an_unreachable_upstream_is_unavailable_and_the_payment_is_rolled_back() {
    let ganache = Ganache::start().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let world = World::build(&ganache, LEASE_TTL, Some(closed)).await;
    let before = world.snapshot().await;
    for _ in 0..2 {
        // The second attempt is not "in progress": the first one released the lease.
        let reply = world.call(upstream::ECHO, &world.metadata(0, PRICE)).await;
        assert_eq!((reply.status, reply.message.as_str()), (UNAVAILABLE, "the service is unavailable"));
        assert_eq!(world.snapshot().await, before);
    }
}

#[tokio::test]
async fn a_long_call_keeps_its_lease_renewed_past_the_lease_lifetime() {
    let ganache = Ganache::start().await;
    let lease_ttl = Duration::from_secs(1);
    assert!(upstream::SLOW_CALL > 2 * lease_ttl);
    let world = World::build(&ganache, lease_ttl, None).await;
    let metadata = world.metadata(0, PRICE);
    let client = world.client.clone();
    let slow = tokio::spawn(async move { client.call(upstream::SLOW, &metadata, &[b"hello"]).await });
    tokio::time::sleep(lease_ttl + lease_ttl / 2).await;
    // Past the lease's lifetime, the channel is still held by the call in flight.
    let reply = world.call(upstream::ECHO, &world.metadata(0, PRICE)).await;
    assert_eq!(
        (reply.status, reply.message.as_str()),
        (
            FAILED_PRECONDITION,
            format!("another transaction on channel: {{ID: {}}} is in progress", world.channel).as_str()
        )
    );
    let reply = slow.await.unwrap();
    assert_eq!((reply.status, reply.message.as_str()), (OK, ""));
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
    // Renewal stopped with the call, and the commit released the lease.
    world.pay_successfully(0, 2 * PRICE).await;
}

#[tokio::test]
async fn a_call_abandoned_by_its_client_gives_the_lease_back_at_once() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    assert!(LEASE_TTL > 10 * upstream::SLOW_CALL, "only an explicit release can free the channel in time");
    let before = world.snapshot().await;
    let impatient = RawClient::connect(world.served.address).await;
    let metadata = world.metadata(0, PRICE);
    let call = tokio::spawn(async move { impatient.call(upstream::SLOW, &metadata, &[b"hello"]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.upstream.call_count(), 1, "the slow call is in flight");
    call.abort();
    let _ = call.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.snapshot().await, before, "nothing recorded for the abandoned call");
    // Well before the lease's expiry, the same payment goes through.
    world.pay_successfully(0, PRICE).await;
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn without_a_chain_paid_calls_are_refused_and_the_daemon_services_stay_unimplemented() {
    let served = serve(PaidCallGateway::<EthChain>::without_chain()).await;
    let client = RawClient::connect(served.address).await;
    let metadata: Metadata = vec![("snet-payment-type".to_owned(), "escrow".to_owned())];
    let reply = client.call(upstream::ECHO, &metadata, &[b"hello"]).await;
    assert_eq!(
        (reply.status, reply.message.as_str()),
        (
            FAILED_PRECONDITION,
            "paid calls are refused: no chain is configured (set ethereum_rpc_url, mpe_address, group_id, \
             payment_address, price and upstream)"
        )
    );
    let reply = client.call("/escrow.PaymentChannelStateService/GetChannelState", &metadata, &[b""]).await;
    assert_eq!(reply.status, UNIMPLEMENTED);
}

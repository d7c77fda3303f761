//! The escrow gRPC services over a real port, called with the generated tonic clients, against
//! ganache running the real MultiPartyEscrow and a real Postgres (escrow.md §5–6, the seed's
//! state_service_test and control_service_test as behaviour). Every refusal asserts status UNKNOWN,
//! the exact message, and that neither the event log nor any projection changed; so does every
//! read-only call.

mod common;

use std::sync::Arc;

use common::TestDb;
use common::escrow::escrow_config;
use common::ganache::{Account, Ganache, Mpe};
use mpe_ledger::chain::EthChain;
use mpe_ledger::domain::payment::Payment;
use mpe_ledger::domain::signature::{
    channel_state_message, list_in_progress_message, list_unclaimed_message, sign, start_claim_message,
    start_claim_multiple_message,
};
use mpe_ledger::domain::{Amount, ChannelId, Nonce};
use mpe_ledger::escrow::channels::ChannelSource;
use mpe_ledger::escrow::claims::ClaimService;
use mpe_ledger::escrow::payments::PaymentService;
use mpe_ledger::grpc::escrow_routes;
use mpe_ledger::grpc::proto::free_call_state_service_client::FreeCallStateServiceClient;
use mpe_ledger::grpc::proto::payment_channel_state_service_client::PaymentChannelStateServiceClient;
use mpe_ledger::grpc::proto::provider_control_service_client::ProviderControlServiceClient;
use mpe_ledger::grpc::proto::{
    ChannelStateReply, ChannelStateRequest, FreeCallStateRequest, GetFreeCallTokenRequest,
    GetPaymentsListRequest, PaymentReply, StartClaimRequest, StartMultipleClaimRequest,
};
use mpe_ledger::store::leases::PgLeases;
use mpe_ledger::store::postgres::PgLedger;
use tonic::transport::Channel;
use tonic::{Code, Status};

const PRICE: u64 = 10;
const GROUP: [u8; 32] = [7; 32];
const METHOD: &str = "/example.Calculator/add";
const EXPIRED: &str = "authentication failed as the signature passed has expired";
const OTHER_MPE: &str = "0xe9D09a6C296aCdd4c01b21f407ac93fdfC63E78C";
const NOT_A_PARTY: &str = "only channel signer/sender/receiver can get latest channel state";

/// One chain, one database, the escrow services on a loopback port, and one channel from the
/// client (account 1) to the provider (account 2).
struct World<'a> {
    ganache: &'a Ganache,
    mpe: Mpe<'a>,
    db: TestDb,
    channel: ChannelId,
    expiration: u64,
    payments: PaymentService<EthChain>,
    claims: Arc<ClaimService<EthChain>>,
    state: PaymentChannelStateServiceClient<Channel>,
    control: ProviderControlServiceClient<Channel>,
    free_calls: FreeCallStateServiceClient<Channel>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for World<'_> {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl<'a> World<'a> {
    async fn new(ganache: &'a Ganache) -> Self {
        Self::reading_the_chain_at(ganache, None).await
    }

    /// The contract is deployed on `ganache`, but the services read the chain at `rpc_url` when
    /// one is given (e.g. a closed port, for a chain that cannot be read).
    async fn reading_the_chain_at(ganache: &'a Ganache, rpc_url: Option<&str>) -> Self {
        let mpe = Mpe::deploy(ganache).await;
        let client = ganache.account(1);
        mpe.mint_and_deposit(client, 10_000).await;
        let expiration = ganache.block_number().await + 1000;
        let channel = mpe
            .open_channel(client, client.address, ganache.account(2).address, GROUP, 1000, expiration)
            .await;
        let db = TestDb::new().await;
        let config =
            Arc::new(escrow_config(mpe.eth_address(), ganache.account(2).eth_address(), GROUP, PRICE));
        let chain = EthChain::connect(rpc_url.unwrap_or(ganache.url()), mpe.eth_address()).unwrap();
        let ledger = PgLedger::new(db.pool.clone(), db.metrics.clone());
        let leases = PgLeases::new(db.pool.clone(), db.metrics.clone());
        let channels = Arc::new(ChannelSource::new(ledger, chain, config.clone()));
        let claims = Arc::new(ClaimService::new(channels.clone(), leases.clone(), config.clone()));
        let payments = PaymentService::new(channels.clone(), leases, config.clone());

        let router = escrow_routes(channels, claims.clone(), config).into_axum_router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let connection = Channel::from_shared(endpoint).unwrap().connect().await.unwrap();
        Self {
            ganache,
            mpe,
            db,
            channel,
            expiration,
            payments,
            claims,
            state: PaymentChannelStateServiceClient::new(connection.clone()),
            control: ProviderControlServiceClient::new(connection.clone()),
            free_calls: FreeCallStateServiceClient::new(connection),
            server,
        }
    }

    fn client(&self) -> &'a Account {
        self.ganache.account(1)
    }

    fn provider(&self) -> &'a Account {
        self.ganache.account(2)
    }

    fn stranger(&self) -> &'a Account {
        self.ganache.account(3)
    }

    /// Another channel from the client to the provider, signed for by `signer`.
    async fn open_channel(&self, signer: &Account) -> ChannelId {
        let expiration = self.ganache.block_number().await + 1000;
        self.mpe
            .open_channel(self.client(), signer.address, self.provider().address, GROUP, 1000, expiration)
            .await
    }

    /// Accepts and commits a payment on `channel`, signed by the client as the clients sign it.
    async fn pay_on(&self, channel: ChannelId, nonce: u64, amount: u64) {
        let payment = Payment {
            mpe: self.mpe.eth_address(),
            channel_id: channel,
            nonce: Nonce::from(nonce),
            amount: Amount::from(amount),
            signature: self.mpe.sign_payment(self.client(), channel, nonce, amount).0.to_vec(),
        };
        let transaction = self.payments.start(payment, METHOD).await.unwrap();
        self.payments.commit(transaction).await.unwrap();
    }

    async fn pay(&self, nonce: u64, amount: u64) {
        self.pay_on(self.channel, nonce, amount).await;
    }

    fn mpe_text(&self) -> String {
        self.mpe.eth_address().to_string()
    }

    async fn head(&self) -> u64 {
        self.ganache.block_number().await
    }

    /// Everything a refused or read-only request must leave untouched.
    async fn snapshot(&self) -> (i64, Vec<String>) {
        (self.db.event_count().await, self.db.projections_snapshot().await)
    }

    // --- requests signed as the clients sign them ------------------------------------------------

    fn state_request(&self, signer: &Account, channel: ChannelId, block: u64) -> ChannelStateRequest {
        let message = channel_state_message(&self.mpe.eth_address(), channel, block);
        ChannelStateRequest {
            channel_id: minimal_be(channel),
            signature: sign(&message, &signer.key.0).0.to_vec(),
            current_block: block,
        }
    }

    fn list_request(&self, list: List, signer: &Account, block: u64) -> GetPaymentsListRequest {
        let message = match list {
            List::Unclaimed => list_unclaimed_message(&self.mpe.eth_address(), block),
            List::InProgress => list_in_progress_message(&self.mpe.eth_address(), block),
        };
        GetPaymentsListRequest {
            mpe_address: self.mpe_text(),
            current_block: block,
            signature: sign(&message, &signer.key.0).0.to_vec(),
        }
    }

    fn start_claim_request(&self, signer: &Account, channel: ChannelId, nonce: u64) -> StartClaimRequest {
        let message = start_claim_message(&self.mpe.eth_address(), channel, Nonce::from(nonce));
        StartClaimRequest {
            mpe_address: self.mpe_text(),
            channel_id: minimal_be(channel),
            signature: sign(&message, &signer.key.0).0.to_vec(),
        }
    }

    fn multiple_claim_request(
        &self,
        signer: &Account,
        channels: &[ChannelId],
        block: u64,
    ) -> StartMultipleClaimRequest {
        let message = start_claim_multiple_message(&self.mpe.eth_address(), channels, block);
        StartMultipleClaimRequest {
            mpe_address: self.mpe_text(),
            channel_ids: channels.iter().map(|id| u64::try_from(id.0).unwrap()).collect(),
            current_block: block,
            signature: sign(&message, &signer.key.0).0.to_vec(),
        }
    }

    // --- calls -----------------------------------------------------------------------------------

    async fn channel_state(&self, request: ChannelStateRequest) -> Result<ChannelStateReply, Status> {
        self.state.clone().get_channel_state(request).await.map(tonic::Response::into_inner)
    }

    async fn list(&self, list: List, request: GetPaymentsListRequest) -> Result<Vec<PaymentReply>, Status> {
        let mut control = self.control.clone();
        let reply = match list {
            List::Unclaimed => control.get_list_unclaimed(request).await?,
            List::InProgress => control.get_list_in_progress(request).await?,
        };
        Ok(reply.into_inner().payments)
    }

    async fn start_claim(&self, request: StartClaimRequest) -> Result<PaymentReply, Status> {
        self.control.clone().start_claim(request).await.map(tonic::Response::into_inner)
    }

    async fn start_claims(&self, request: StartMultipleClaimRequest) -> Result<Vec<PaymentReply>, Status> {
        let reply = self.control.clone().start_claim_for_multiple_channels(request).await?;
        Ok(reply.into_inner().payments)
    }

    /// The provider's view of the claims in progress, asked correctly.
    async fn listed(&self, list: List) -> Vec<PaymentReply> {
        self.list(list, self.list_request(list, self.provider(), self.head().await)).await.unwrap()
    }

    fn payment_signature(&self, channel: ChannelId, nonce: u64, amount: u64) -> Vec<u8> {
        self.mpe.sign_payment(self.client(), channel, nonce, amount).0.to_vec()
    }
}

/// The two lists of the control service, signed alike with their own tags.
#[derive(Debug, Clone, Copy)]
enum List {
    Unclaimed,
    InProgress,
}

/// Minimal big-endian, as the clients send ids (`Web3.to_bytes`): channel 0 is one zero byte.
fn minimal_be(id: ChannelId) -> Vec<u8> {
    let bytes = id.to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(31);
    bytes[first..].to_vec()
}

/// A 32-byte big-endian integer, as replies carry them.
fn word(value: u64) -> Vec<u8> {
    Nonce::from(value).to_be_bytes().to_vec()
}

fn id_word(id: ChannelId) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// The message of a refusal, which must be status UNKNOWN.
fn refused<T: std::fmt::Debug>(result: Result<T, Status>) -> String {
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    status.message().to_owned()
}

fn with_v(mut signature: Vec<u8>, v: u8) -> Vec<u8> {
    signature[64] = v;
    signature
}

fn mismatch(address: &Account) -> String {
    format!("the address: {} does not match to what has been expected / registered", address.eth_address())
}

// --- GetChannelState ---------------------------------------------------------------------------

#[tokio::test]
async fn channel_state_of_a_channel_without_payments_is_its_nonce_alone_and_writes_nothing() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    assert_eq!(minimal_be(world.channel), vec![0], "the first channel of a fresh MPE is 0");
    let before = world.snapshot().await;

    let reply =
        world.channel_state(world.state_request(world.client(), world.channel, world.head().await)).await;

    assert_eq!(reply.unwrap(), ChannelStateReply { current_nonce: word(0), ..Default::default() });
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn channel_state_after_payments_gives_the_last_signed_payment_to_sender_and_recipient() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay(0, PRICE).await;
    world.pay(0, 2 * PRICE).await;
    let before = world.snapshot().await;
    let expected = ChannelStateReply {
        current_nonce: word(0),
        current_signed_amount: word(2 * PRICE),
        current_signature: world.payment_signature(world.channel, 0, 2 * PRICE),
        ..Default::default()
    };

    for party in [world.client(), world.provider()] {
        let reply = world.channel_state(world.state_request(party, world.channel, world.head().await)).await;
        assert_eq!(reply.unwrap(), expected, "asked by {}", party.eth_address());
    }
    // A 32-byte padded id is the same channel.
    let mut padded = world.state_request(world.client(), world.channel, world.head().await);
    padded.channel_id = id_word(world.channel);
    assert_eq!(world.channel_state(padded).await.unwrap(), expected);
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn channel_state_answers_a_signer_who_is_not_the_sender_and_refuses_a_stranger() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let signer = ganache.account(4);
    let channel = world.open_channel(signer).await;
    let before = world.snapshot().await;

    let reply = world.channel_state(world.state_request(signer, channel, world.head().await)).await;
    assert_eq!(reply.unwrap(), ChannelStateReply { current_nonce: word(0), ..Default::default() });
    for channel in [world.channel, channel] {
        let request = world.state_request(world.stranger(), channel, world.head().await);
        assert_eq!(refused(world.channel_state(request).await), NOT_A_PARTY);
    }
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn channel_state_during_a_pending_claim_carries_the_claimed_payment_of_the_old_nonce() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    for amount in [PRICE, 2 * PRICE, 3 * PRICE] {
        world.pay(0, amount).await;
    }
    let claim = world.claims.start_claim(world.channel).await.unwrap();
    let old_signature = world.payment_signature(world.channel, 0, 3 * PRICE);
    assert_eq!(claim.signature.0.to_vec(), old_signature);
    let ask = async || {
        world.channel_state(world.state_request(world.client(), world.channel, world.head().await)).await
    };

    // The claim has not reached the chain: nothing signed at nonce 1 yet, 32 zero bytes.
    let before = world.snapshot().await;
    assert_eq!(
        ask().await.unwrap(),
        ChannelStateReply {
            current_nonce: word(1),
            current_signed_amount: word(0),
            current_signature: vec![],
            old_nonce_signed_amount: word(3 * PRICE),
            old_nonce_signature: old_signature.clone(),
            ..Default::default()
        }
    );
    assert_eq!(world.snapshot().await, before);

    // A payment at the new nonce shows next to the old one.
    world.pay(1, PRICE).await;
    assert_eq!(
        ask().await.unwrap(),
        ChannelStateReply {
            current_nonce: word(1),
            current_signed_amount: word(PRICE),
            current_signature: world.payment_signature(world.channel, 1, PRICE),
            old_nonce_signed_amount: word(3 * PRICE),
            old_nonce_signature: old_signature,
            ..Default::default()
        }
    );

    // Once the claim is on chain the nonces agree again: no old fields.
    world
        .mpe
        .channel_claim(world.provider(), world.channel, 3 * PRICE, 3 * PRICE, &claim.signature, false)
        .await;
    assert_eq!(
        ask().await.unwrap(),
        ChannelStateReply {
            current_nonce: word(1),
            current_signed_amount: word(PRICE),
            current_signature: world.payment_signature(world.channel, 1, PRICE),
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn channel_state_after_a_reclaim_during_a_pending_claim_answers_at_the_chains_nonce_with_value_zero() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let expiration = world.head().await + 10;
    let channel = world
        .mpe
        .open_channel(
            world.client(),
            world.client().address,
            world.provider().address,
            GROUP,
            1000,
            expiration,
        )
        .await;
    world.pay_on(channel, 0, PRICE).await;
    world.claims.start_claim(channel).await.unwrap();
    world.pay_on(channel, 1, PRICE).await;
    ganache.mine(10).await;
    world.mpe.claim_timeout(world.client(), channel).await;
    let ask =
        async || world.channel_state(world.state_request(world.client(), channel, world.head().await)).await;
    // The chain's nonce is the ledger's and its value 0: the payment signed at nonce 1 is kept.
    let answer = ChannelStateReply {
        current_nonce: word(1),
        current_signed_amount: word(PRICE),
        current_signature: world.payment_signature(channel, 1, PRICE),
        ..Default::default()
    };
    let before = world.snapshot().await;
    assert_eq!(ask().await.unwrap(), answer);
    assert_eq!(world.snapshot().await, before);
    // The listing records the reclaim (one event) and no longer lists the voided claim.
    assert_eq!(world.listed(List::InProgress).await, vec![]);
    assert_eq!(world.db.event_count().await, before.0 + 1);
    assert_eq!(ask().await.unwrap(), answer);
}

#[tokio::test]
async fn channel_state_with_an_unusable_signature_is_incorrect_signature() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay(0, PRICE).await;
    let before = world.snapshot().await;
    let valid = world.state_request(world.client(), world.channel, world.head().await);

    for signature in [vec![], valid.signature[..64].to_vec(), vec![1], with_v(valid.signature.clone(), 99)] {
        let request = ChannelStateRequest { signature, ..valid.clone() };
        assert_eq!(refused(world.channel_state(request).await), "incorrect signature");
    }
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn channel_state_outside_five_blocks_of_the_head_has_expired() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let before = world.snapshot().await;
    let signed_at = world.head().await;
    let request = world.state_request(world.client(), world.channel, signed_at);
    assert!(world.channel_state(request.clone()).await.is_ok());

    ganache.mine(6).await;
    let head = world.head().await;
    assert_eq!(refused(world.channel_state(request).await), EXPIRED);
    // Five blocks either way pass, six do not.
    for (block, passes) in [(head - 5, true), (head + 5, true), (head - 6, false), (head + 6, false)] {
        let result = world.channel_state(world.state_request(world.client(), world.channel, block)).await;
        if passes {
            assert!(result.is_ok(), "block {block} at head {head}: {result:?}");
        } else {
            assert_eq!(refused(result), EXPIRED, "block {block} at head {head}");
        }
    }
    // The party check comes first: a stranger with a stale block is told he is no party.
    let stale = world.state_request(world.stranger(), world.channel, head - 6);
    assert_eq!(refused(world.channel_state(stale).await), NOT_A_PARTY);
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn channel_state_of_an_unknown_channel_is_not_found() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let before = world.snapshot().await;

    let request = world.state_request(world.client(), ChannelId::from(999), world.head().await);

    assert_eq!(refused(world.channel_state(request).await), "channel is not found, channelId: 999");
    // No channel id of the contract needs more than 32 bytes.
    let mut too_wide = world.state_request(world.client(), world.channel, world.head().await);
    too_wide.channel_id = [vec![1], id_word(world.channel)].concat();
    assert_eq!(
        refused(world.channel_state(too_wide).await),
        "channel_id is not a channel id: 33 bytes do not fit in a 256-bit integer"
    );
    assert_eq!(world.snapshot().await, before);
}

/// An RPC URL as hosted endpoints give them, with the API key in the path, on a closed port.
const UNREACHABLE_RPC_URL: &str = "http://127.0.0.1:9/v3/secret-api-key";

#[tokio::test]
async fn a_chain_that_cannot_be_read_is_answered_with_a_fixed_message_that_names_no_url() {
    let ganache = Ganache::start().await;
    let world = World::reading_the_chain_at(&ganache, Some(UNREACHABLE_RPC_URL)).await;
    let before = world.snapshot().await;
    let fixed = mpe_ledger::escrow::CHAIN_FAILURE;
    // The channel is read from the chain (with the seed's prefix), the block window against the
    // chain's head: neither can be read.
    let state = world.state_request(world.client(), world.channel, world.ganache.block_number().await);
    assert_eq!(refused(world.channel_state(state).await), format!("channel error:{fixed}"));
    let block = world.ganache.block_number().await;
    let unclaimed = world.list_request(List::Unclaimed, world.provider(), block);
    assert_eq!(refused(world.list(List::Unclaimed, unclaimed).await), fixed);
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn free_call_state_service_is_unimplemented() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let mut free_calls = world.free_calls.clone();

    let available = free_calls.get_free_calls_available(FreeCallStateRequest::default()).await.unwrap_err();
    let token = free_calls.get_free_call_token(GetFreeCallTokenRequest::default()).await.unwrap_err();

    assert_eq!(available.code(), Code::Unimplemented);
    assert_eq!(token.code(), Code::Unimplemented);
}

// --- GetListUnclaimed / GetListInProgress ------------------------------------------------------

#[tokio::test]
async fn unclaimed_lists_channels_with_a_signed_amount_without_signature_and_writes_nothing() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    assert_eq!(world.listed(List::Unclaimed).await, vec![]);
    world.pay(0, PRICE).await;
    world.pay(0, 2 * PRICE).await;
    let before = world.snapshot().await;
    let head = world.head().await;
    let expected = vec![PaymentReply {
        channel_id: id_word(world.channel),
        channel_nonce: word(0),
        signed_amount: word(2 * PRICE),
        signature: vec![],
        channel_expiry: word(world.expiration),
    }];

    assert_eq!(world.listed(List::Unclaimed).await, expected);
    // The MPE address is compared as an address: any letter case, with or without 0x.
    for mpe_address in [world.mpe_text().to_lowercase(), world.mpe_text()[2..].to_uppercase()] {
        let request = GetPaymentsListRequest {
            mpe_address,
            ..world.list_request(List::Unclaimed, world.provider(), head)
        };
        assert_eq!(world.list(List::Unclaimed, request).await.unwrap(), expected);
    }
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn list_requests_for_another_mpe_by_another_signer_or_at_a_stale_block_are_refused() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay(0, PRICE).await;
    let before = world.snapshot().await;
    let head = world.head().await;

    for list in [List::Unclaimed, List::InProgress] {
        for other in [OTHER_MPE, "not an address", ""] {
            let request = GetPaymentsListRequest {
                mpe_address: other.to_owned(),
                ..world.list_request(list, world.provider(), head)
            };
            assert_eq!(
                refused(world.list(list, request).await),
                format!("the mpeAddress: {other} passed does not match to what has been registered"),
                "{list:?}"
            );
        }
        let by_client = world.list_request(list, world.client(), head);
        assert_eq!(refused(world.list(list, by_client).await), mismatch(world.client()), "{list:?}");
        let valid = world.list_request(list, world.provider(), head);
        let short = GetPaymentsListRequest { signature: valid.signature[..64].to_vec(), ..valid.clone() };
        assert_eq!(refused(world.list(list, short).await), "incorrect signature length", "{list:?}");
        let bad_v = GetPaymentsListRequest { signature: with_v(valid.signature.clone(), 99), ..valid };
        assert_eq!(refused(world.list(list, bad_v).await), "incorrect signature data", "{list:?}");
        for block in [head + 6, head - 6] {
            let stale = world.list_request(list, world.provider(), block);
            assert_eq!(refused(world.list(list, stale).await), EXPIRED, "{list:?} at {block}, head {head}");
        }
        // The block window is checked before the signature.
        let stale_by_client = world.list_request(list, world.client(), head + 6);
        assert_eq!(refused(world.list(list, stale_by_client).await), EXPIRED, "{list:?}");
    }
    // A signature made for the other list does not serve: it recovers some other address.
    let swapped = GetPaymentsListRequest {
        signature: world.list_request(List::InProgress, world.provider(), head).signature,
        ..world.list_request(List::Unclaimed, world.provider(), head)
    };
    let message = refused(world.list(List::Unclaimed, swapped).await);
    assert!(message.starts_with("the address: 0x"), "{message}");
    assert!(message.ends_with(" does not match to what has been expected / registered"), "{message}");
    assert!(!message.contains(&world.provider().eth_address().to_string()), "{message}");
    assert_eq!(world.snapshot().await, before);
}

// --- StartClaim --------------------------------------------------------------------------------

#[tokio::test]
async fn start_claim_moves_the_last_payment_into_a_claim_listed_in_progress_until_it_lands() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay(0, PRICE).await;
    world.pay(0, 2 * PRICE).await;
    let (events_before, _) = world.snapshot().await;
    let request = world.start_claim_request(world.provider(), world.channel, 0);

    let reply = world.start_claim(request.clone()).await.unwrap();

    let signature = world.payment_signature(world.channel, 0, 2 * PRICE);
    assert_eq!(
        reply,
        PaymentReply {
            channel_id: id_word(world.channel),
            channel_nonce: word(0),
            signed_amount: word(2 * PRICE),
            signature: signature.clone(),
            channel_expiry: vec![],
        }
    );
    assert_eq!(world.db.event_count().await, events_before + 1, "one `claim started`");

    // The payment is no longer unclaimed; it is in progress, with what channelClaim needs.
    let listed = world.snapshot().await;
    assert_eq!(world.listed(List::Unclaimed).await, vec![]);
    let in_progress = vec![PaymentReply { channel_expiry: word(world.expiration), ..reply.clone() }];
    assert_eq!(world.listed(List::InProgress).await, in_progress);
    assert_eq!(world.snapshot().await, listed);

    // The same request again: signed over nonce 0, the channel is at 1, so it recovers another signer.
    let message = refused(world.start_claim(request).await);
    assert!(message.starts_with("the address: 0x"), "{message}");
    assert!(message.ends_with(" does not match to what has been expected / registered"), "{message}");
    assert_eq!(world.snapshot().await, listed);

    // The claim lands on chain; listing the claims in progress records it finished.
    let claim = mpe_ledger::domain::Signature::from_slice(&signature).unwrap();
    world.mpe.channel_claim(world.provider(), world.channel, 2 * PRICE, 2 * PRICE, &claim, false).await;
    assert_eq!(world.listed(List::InProgress).await, vec![]);
    assert_eq!(world.db.event_count().await, events_before + 2, "one `claim finished`");
}

#[tokio::test]
async fn start_claim_refusals_name_the_mpe_the_signer_or_the_channel_and_write_nothing() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let unpaid = world.open_channel(world.client()).await;
    world.pay(0, PRICE).await;
    let before = world.snapshot().await;
    let unknown = ChannelId::from(999);

    let other_mpe = StartClaimRequest {
        mpe_address: OTHER_MPE.to_owned(),
        ..world.start_claim_request(world.provider(), world.channel, 0)
    };
    assert_eq!(
        refused(world.start_claim(other_mpe).await),
        format!("the mpeAddress: {OTHER_MPE} passed does not match to what has been registered")
    );
    let by_client = world.start_claim_request(world.client(), world.channel, 0);
    assert_eq!(refused(world.start_claim(by_client).await), mismatch(world.client()));
    let valid = world.start_claim_request(world.provider(), world.channel, 0);
    let short = StartClaimRequest { signature: valid.signature[..64].to_vec(), ..valid };
    assert_eq!(refused(world.start_claim(short).await), "incorrect signature length");
    assert_eq!(
        refused(world.start_claim(world.start_claim_request(world.provider(), unpaid, 0)).await),
        format!("authorized amount is zero , hence nothing to claim on the channel Id: {unpaid}")
    );
    // An unknown channel: the provider, signing nonce 0, learns it is unknown; nobody else does.
    assert_eq!(
        refused(world.start_claim(world.start_claim_request(world.provider(), unknown, 0)).await),
        "channel Id 999 was not found on blockchain or storage"
    );
    assert_eq!(
        refused(world.start_claim(world.start_claim_request(world.stranger(), unknown, 0)).await),
        mismatch(world.stranger())
    );
    assert_eq!(world.snapshot().await, before);
}

// --- StartClaimForMultipleChannels -------------------------------------------------------------

#[tokio::test]
async fn start_claim_for_multiple_channels_claims_each_in_the_order_of_the_request() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let second = world.open_channel(world.client()).await;
    world.pay(0, PRICE).await;
    world.pay_on(second, 0, PRICE).await;
    world.pay_on(second, 0, 2 * PRICE).await;
    let (events_before, _) = world.snapshot().await;
    let claimed = |channel, amount| PaymentReply {
        channel_id: id_word(channel),
        channel_nonce: word(0),
        signed_amount: word(amount),
        signature: world.payment_signature(channel, 0, amount),
        channel_expiry: vec![],
    };

    let request =
        world.multiple_claim_request(world.provider(), &[second, world.channel], world.head().await);
    let reply = world.start_claims(request).await.unwrap();

    assert_eq!(reply, vec![claimed(second, 2 * PRICE), claimed(world.channel, PRICE)]);
    assert_eq!(world.db.event_count().await, events_before + 2);
    let listed: Vec<Vec<u8>> =
        world.listed(List::InProgress).await.into_iter().map(|p| p.channel_id).collect();
    assert_eq!(listed, vec![id_word(world.channel), id_word(second)]);
}

#[tokio::test]
async fn start_claim_for_multiple_channels_refuses_another_mpe_another_signer_and_a_stale_block() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay(0, PRICE).await;
    let before = world.snapshot().await;
    let head = world.head().await;
    let channels = [world.channel];

    let other_mpe = StartMultipleClaimRequest {
        mpe_address: OTHER_MPE.to_owned(),
        ..world.multiple_claim_request(world.provider(), &channels, head)
    };
    assert_eq!(
        refused(world.start_claims(other_mpe).await),
        format!("the mpeAddress: {OTHER_MPE} passed does not match to what has been registered")
    );
    let by_client = world.multiple_claim_request(world.client(), &channels, head);
    assert_eq!(refused(world.start_claims(by_client).await), mismatch(world.client()));
    let stale = world.multiple_claim_request(world.provider(), &channels, head + 6);
    assert_eq!(refused(world.start_claims(stale).await), EXPIRED);
    let valid = world.multiple_claim_request(world.provider(), &channels, head);
    let bad_v = StartMultipleClaimRequest { signature: with_v(valid.signature.clone(), 99), ..valid };
    assert_eq!(refused(world.start_claims(bad_v).await), "incorrect signature data");
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn start_claim_for_multiple_channels_stops_at_the_first_failure_and_keeps_the_claims_started() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let unpaid = world.open_channel(world.client()).await;
    let third = world.open_channel(world.client()).await;
    world.pay(0, PRICE).await;
    world.pay_on(third, 0, PRICE).await;
    let (events_before, _) = world.snapshot().await;

    let request =
        world.multiple_claim_request(world.provider(), &[world.channel, unpaid, third], world.head().await);
    assert_eq!(
        refused(world.start_claims(request).await),
        format!("authorized amount is zero , hence nothing to claim on the channel Id: {unpaid}")
    );

    // The claim started before the failure stays started and is listed; the one after never ran.
    assert_eq!(world.db.event_count().await, events_before + 1);
    let listed: Vec<Vec<u8>> =
        world.listed(List::InProgress).await.into_iter().map(|p| p.channel_id).collect();
    assert_eq!(listed, vec![id_word(world.channel)]);
    let unclaimed: Vec<Vec<u8>> =
        world.listed(List::Unclaimed).await.into_iter().map(|p| p.channel_id).collect();
    assert_eq!(unclaimed, vec![id_word(third)]);
}

//! End to end with the real SingularityNET clients: snet-cli 3.1.1 and snet-sdk 6.0.0 (Python, from
//! the test environment's virtualenv) pay for calls of the example Calculator service through
//! `mpe-ledger serve`, on ganache running the real MultiPartyEscrow and on a real Postgres. No
//! Registry and no IPFS: the clients are pointed at the ledger as tests/e2e/snet_cli.py and
//! tests/e2e/snet_sdk_calls.py describe.
//!
//! Over TLS too: the clients call an `https://` ledger whose certificate comes from a CA made at run
//! time, and the ledger reads the chain through `https://` (a TLS proxy in front of ganache).
//!
//! Every client command and its output is printed; run with `--nocapture` to see them:
//! `cargo test --test e2e -- --nocapture --test-threads 1`.

mod common;

use std::time::Duration;

use common::TestDb;
use common::e2e::{
    CliSetup, ExampleService, SdkCalls, SnetCli, accepted_increments, clients_trusting, cogs_to_fet,
    event_count, event_log, sdk_calls, sdk_calls_with_env, wait_for_event,
};
use common::e2e::{free_port, group_id_base64};
use common::ganache::{Account, Ganache, Mpe};
use common::ledger::{Ledger, LedgerSettings, LedgerTls, readme_ledger_toml, verify};
use common::tls::{TestCa, TlsFront, socket_of};
use mpe_ledger::chain::{ChainReader, EthChain};
use mpe_ledger::domain::{Amount, ChannelId, Nonce};

const PRICE: u64 = 10;
const GROUP_ID: [u8; 32] = [7; 32];
const ORG: &str = "testorg";
const SERVICE: &str = "calc";
const GROUP: &str = "default_group";
const ADD: &str = r#"{"a":2,"b":3}"#;
/// The value in cogs of the channel snet-cli opens itself.
const CHANNEL_VALUE: u64 = 1000;
/// The provider: the channels' recipient, the group's payment address, snet's treasurer.
const PROVIDER: usize = 2;

/// One chain with the contracts, one database, the example service.
struct World<'a> {
    ganache: &'a Ganache,
    mpe: Mpe<'a>,
    db: TestDb,
    service: ExampleService,
}

impl<'a> World<'a> {
    /// snet-cli set up for `client` and the provider at `endpoint`, with the channel snet itself
    /// opened (CHANNEL_VALUE cogs).
    async fn snet_cli_with_channel(&self, client: &Account, endpoint: &str) -> (SnetCli, ChannelId) {
        let (cli, setup) = SnetCli::setup(&CliSetup {
            ganache: self.ganache,
            mpe: &self.mpe,
            client,
            treasurer: self.provider(),
            org: ORG,
            service: SERVICE,
            group: GROUP,
            group_id: GROUP_ID,
            price: PRICE,
            endpoint: endpoint.to_owned(),
            open_channel: Some(CHANNEL_VALUE),
        })
        .await;
        let channel =
            setup.value_of("CHANNEL_ID").expect("snet opened a channel").parse().expect("a channel id");
        (cli, channel)
    }

    async fn new(ganache: &'a Ganache) -> Self {
        let mpe = Mpe::deploy(ganache).await;
        let db = TestDb::new().await;
        let service = ExampleService::start().await;
        println!(
            "chain {} (chain id = network id = 1337), token {}, MPE {}, example service {}",
            ganache.url(),
            mpe.token,
            mpe.address,
            service.url()
        );
        Self { ganache, mpe, db, service }
    }

    fn provider(&self) -> &Account {
        self.ganache.account(PROVIDER)
    }

    fn ledger_settings(&self, replica_id: &str) -> LedgerSettings {
        LedgerSettings {
            ethereum_rpc_url: self.ganache.url().to_owned(),
            mpe: self.mpe.address,
            group_id: GROUP_ID,
            payment_address: self.provider().address,
            price: PRICE,
            upstream: self.service.url(),
            replica_id: replica_id.to_owned(),
            tls: None,
            ethereum_rpc_ca_file: None,
            upstream_ca_file: None,
        }
    }

    async fn ledger(&self, replica_id: &str) -> Ledger {
        Ledger::start(&self.db.owner_url, &self.ledger_settings(replica_id)).await
    }

    /// `DATABASE_URL=… mpe-ledger serve --config ledger.toml` with the README's `ledger.toml`, its
    /// placeholders filled in for this chain and service; the directory holding it goes with it.
    async fn ledger_from_readme(&self) -> (Ledger, tempfile::TempDir) {
        let port = free_port();
        let toml = readme_ledger_toml(&[
            ("listen", format!("127.0.0.1:{port}")),
            ("ethereum_rpc_url", self.ganache.url().to_owned()),
            ("mpe_address", self.mpe.address.to_checksum(None)),
            ("group_id", group_id_base64(&GROUP_ID)),
            ("payment_address", checksummed(self.provider())),
            ("upstream", self.service.url()),
        ]);
        println!("\n----- ledger.toml -----\n{toml}----- end of ledger.toml -----");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("ledger.toml");
        std::fs::write(&path, toml).expect("write ledger.toml");
        (Ledger::start_with_config(&self.db.owner_url, &path, port, "replica-readme").await, dir)
    }

    fn eth(&self) -> EthChain {
        EthChain::connect(self.ganache.url(), self.mpe.eth_address()).expect("an RPC client")
    }

    /// `(nonce, value)` of `channel` on chain.
    async fn on_chain(&self, channel: ChannelId) -> (Nonce, Amount) {
        let read = self.eth().channel(channel).await.expect("channels(id)").expect("the channel exists");
        (read.channel.nonce, read.channel.value)
    }

    async fn print_event_log(&self) {
        println!("\n----- ledger.events -----");
        for line in event_log(&self.db.pool).await {
            println!("{line}");
        }
        println!("----- end of ledger.events -----");
    }
}

fn checksummed(account: &Account) -> String {
    account.address.to_checksum(None)
}

/// The three lines of `snet client get-channel-state`.
fn channel_state_lines(nonce: u64, signed: u64, unspent: u64) -> [String; 3] {
    [
        format!("current_nonce                  = {nonce}"),
        format!("current_signed_amount_in_cogs  = {signed}"),
        format!("current_unspent_amount_in_cogs = {unspent}"),
    ]
}

/// The README's "Put mpe-ledger in front of your AI service", step by step: `serve --config` with
/// its `ledger.toml` as written (placeholders filled in: its price, expiration threshold and the
/// default confirmations stand), then snet-cli as a user runs it: the client opens its channel with
/// snet, reads the channel state, makes two paid calls; the treasurer lists the unclaimed payments
/// and claims them on chain; the ledger records the claim as landed and the client sees the new
/// nonce.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_route_snet_cli_pays_through_the_ledger_and_the_treasurer_claims_on_chain() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let client = ganache.account(1);
    world.mpe.mint_and_deposit(client, 10_000).await;
    let (ledger, _config_dir) = world.ledger_from_readme().await;
    let endpoint = ledger.endpoint();

    let (cli, channel) = world.snet_cli_with_channel(client, &endpoint).await;
    let channel_text = channel.to_string();

    // The channel as the ledger first sees it: nothing signed yet.
    let state = cli.client(&["get-channel-state", &channel_text, &endpoint]).await;
    state.assert_success();
    for line in channel_state_lines(0, 0, CHANNEL_VALUE) {
        state.assert_stdout_contains(&line);
    }

    // Two paid calls, through the endpoint in the seeded service metadata.
    for _ in 0..2 {
        let call = cli.client(&["call", ORG, SERVICE, GROUP, "add", ADD, "-y", "--skip-update-check"]).await;
        call.assert_success().assert_stdout_contains("value: 5");
    }
    let calls = world.service.wait_for_calls(2).await;
    assert_eq!(calls.len(), 2, "the service got exactly the two paid calls: {calls:?}");
    assert!(calls.iter().all(|c| c["method"] == "/example.Calculator/add"), "{calls:?}");
    assert_eq!(world.service.user_addresses(), vec![Some(checksummed(client)); 2]);

    let state = cli.client(&["get-channel-state", &channel_text, &endpoint]).await;
    state.assert_success();
    for line in channel_state_lines(0, 2 * PRICE, CHANNEL_VALUE - 2 * PRICE) {
        state.assert_stdout_contains(&line);
    }

    // The treasurer sees the channel with 2 × price unclaimed.
    let unclaimed = cli.treasurer(&["print-unclaimed", "--endpoint", &endpoint]).await;
    unclaimed.assert_success();
    let owed = cogs_to_fet(u128::from(2 * PRICE));
    unclaimed.assert_stdout_contains(&format!("{channel}   0   {owed}"));
    unclaimed.assert_stdout_contains(&format!("# total_unclaimed_in_ASI(FET) = {owed}"));

    // claim-all: StartClaim at the ledger, then channelClaim on chain.
    let claim = cli.treasurer(&["claim-all", "--endpoint", &endpoint, "-y"]).await;
    claim.assert_success().assert_stdout_contains("ChannelClaim");
    let (nonce, value) = world.on_chain(channel).await;
    println!("on chain after claim-all: channel {channel} nonce {nonce} value {value}");
    assert_eq!(nonce, Nonce::from(1), "the claim landed on chain");
    assert_eq!(value, Amount::from(CHANNEL_VALUE - 2 * PRICE));
    // The README's configuration keeps the default confirmations: the claim counts once that
    // many blocks are on top of it.
    ganache.mine(mpe_ledger::escrow::DEFAULT_CONFIRMATIONS).await;

    // The ledger records the claim as landed: by itself, or when the control service next
    // lists the claims in progress (a second claim-all calls GetListInProgress first, which must
    // drop the finished claim, so it has nothing left to claim).
    let pool = &world.db.pool;
    if !wait_for_event(pool, "claim_landed", channel, Duration::from_secs(5)).await {
        println!("no claim_landed yet: a second claim-all makes the ledger list the claims in progress");
        let again = cli.treasurer(&["claim-all", "--endpoint", &endpoint, "-y"]).await;
        again.assert_success();
    }
    let finished = wait_for_event(pool, "claim_landed", channel, Duration::from_secs(30)).await;
    world.print_event_log().await;
    assert!(finished, "the ledger recorded claim_landed for channel {channel}");
    assert_eq!(event_count(pool, "claim_started", channel).await, 1);
    assert_eq!(event_count(pool, "claim_landed", channel).await, 1);
    assert_eq!(event_count(pool, "payment_accepted", channel).await, 2);

    // The client now sees nonce 1, nothing signed at it, and the claimed amount gone.
    let state = cli.client(&["get-channel-state", &channel_text, &endpoint]).await;
    state.assert_success();
    for line in channel_state_lines(1, 0, CHANNEL_VALUE - 2 * PRICE) {
        state.assert_stdout_contains(&line);
    }
    let unclaimed = cli.treasurer(&["print-unclaimed", "--endpoint", &endpoint]).await;
    unclaimed.assert_success().assert_stdout_contains("# total_unclaimed_in_ASI(FET) = 0");

    drop(ledger);
    // serve recorded the deployment, so every client signature (two payments, one claim) is
    // re-checked against the MPE address.
    verify(&world.db.owner_url)
        .await
        .assert_success()
        .assert_stdout_contains("verify: 3 client signature(s) re-checked");
}

/// snet-sdk with `PaidCallPaymentStrategy` and no channel of its own: it opens a channel of one
/// call's price and adds one price of funds on chain before every later call, so the ledger must
/// pick up each `channelAddFunds`. The last call is a paid server-streaming call.
#[tokio::test(flavor = "multi_thread")]
async fn snet_sdk_paid_calls_open_and_fund_their_channel_through_the_ledger() {
    const UNARY_CALLS: usize = 3;
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let client = ganache.account(3);
    world.mpe.mint_and_deposit(client, 10_000).await;
    let ledger = world.ledger("replica-sdk").await;

    let sdk = sdk_calls(&SdkCalls {
        ganache: &ganache,
        mpe: &world.mpe,
        client,
        payment_address: world.provider().address,
        group_id: GROUP_ID,
        price: PRICE,
        endpoints: vec![ledger.endpoint()],
        calls: UNARY_CALLS,
        stream: true,
        keep_going: false,
    })
    .await;
    sdk.run.assert_success();
    let paid_calls = UNARY_CALLS as u64 + 1;
    assert_eq!((sdk.successful_calls, sdk.failed_calls), (paid_calls, 0));
    for i in 1..=UNARY_CALLS {
        sdk.run.assert_stdout_contains(&format!("call {i} via {}: value=5", ledger.endpoint()));
    }
    sdk.run.assert_stdout_contains(&format!("stream via {}: values=2,3,5", ledger.endpoint()));

    let calls = world.service.wait_for_calls(paid_calls as usize).await;
    assert_eq!(calls.len(), paid_calls as usize, "{calls:?}");
    assert_eq!(world.service.user_addresses(), vec![Some(checksummed(client)); paid_calls as usize]);

    // The SDK's channel: the only one, holding exactly what was paid.
    let channel = ChannelId::from(0);
    let (nonce, value) = world.on_chain(channel).await;
    assert_eq!((nonce, value), (Nonce::from(0), Amount::from(paid_calls * PRICE)));
    world.print_event_log().await;
    assert_eq!(event_count(&world.db.pool, "payment_accepted", channel).await, paid_calls as i64);
    assert_eq!(accepted_increments(&world.db.pool).await, u128::from(paid_calls * PRICE));

    drop(ledger);
    verify(&world.db.owner_url).await.assert_success();
}

/// Two `serve` replicas on one database; the SDK alternates its calls between them on one channel.
/// What the log accepted is exactly the successful calls times the price, and `verify` agrees.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_database_share_the_channel_state() {
    const CALLS: usize = 6;
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let client = ganache.account(4);
    world.mpe.mint_and_deposit(client, 10_000).await;
    let expiration = ganache.block_number().await + 100_000;
    let channel = world
        .mpe
        .open_channel(client, client.address, world.provider().address, GROUP_ID, 1000, expiration)
        .await;
    let a = world.ledger("replica-a").await;
    let b = world.ledger("replica-b").await;

    let sdk = sdk_calls(&SdkCalls {
        ganache: &ganache,
        mpe: &world.mpe,
        client,
        payment_address: world.provider().address,
        group_id: GROUP_ID,
        price: PRICE,
        endpoints: vec![a.endpoint(), b.endpoint()],
        calls: CALLS,
        stream: false,
        keep_going: true,
    })
    .await;
    for i in 1..=CALLS {
        let endpoint = if i % 2 == 1 { a.endpoint() } else { b.endpoint() };
        assert!(
            sdk.run.stdout.contains(&format!("call {i} via {endpoint}: ")),
            "call {i} went to {endpoint}"
        );
    }

    world.print_event_log().await;
    let pool = &world.db.pool;
    let accepted = accepted_increments(pool).await;
    println!("successful calls {}, accepted increments {accepted} cogs", sdk.successful_calls);
    assert_eq!(accepted, u128::from(sdk.successful_calls * PRICE), "accepted = successful calls × price");
    assert_eq!(event_count(pool, "payment_accepted", channel).await, sdk.successful_calls as i64);
    assert_eq!(
        (sdk.successful_calls, sdk.failed_calls),
        (CALLS as u64, 0),
        "every alternating call succeeded"
    );
    let calls = world.service.wait_for_calls(CALLS).await;
    assert_eq!(world.service.user_addresses(), vec![Some(checksummed(client)); calls.len()]);
    assert_eq!(calls.len(), CALLS);

    drop(a);
    drop(b);
    verify(&world.db.owner_url).await.assert_success();
}

/// The whole wire over TLS: snet-cli reads the channel state, pays two calls and the treasurer claims
/// them on chain through an `https://` ledger; snet-sdk pays a unary and a server-streaming call
/// through it; the ledger itself reads the chain only through `https://`. The clients trust the
/// test CA through tests/e2e/test_ca_sitecustomize.py (they trust only their bundled roots).
#[tokio::test(flavor = "multi_thread")]
async fn the_real_clients_pay_over_tls_and_the_ledger_reads_the_chain_over_https() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let (cli_client, sdk_client) = (ganache.account(1), ganache.account(3));
    world.mpe.mint_and_deposit(cli_client, 10_000).await;
    world.mpe.mint_and_deposit(sdk_client, 10_000).await;
    let ca = TestCa::new();
    let node =
        TlsFront::start(socket_of(ganache.url()), &ca, vec![mpe_ledger::tls::ALPN_HTTP1.to_vec()]).await;
    let cert = ca.issue(&["127.0.0.1", "localhost"]);
    let settings = LedgerSettings {
        ethereum_rpc_url: node.url(),
        ethereum_rpc_ca_file: Some(ca.ca_file()),
        tls: Some(LedgerTls { cert_file: cert.cert_file, key_file: cert.key_file, ca_file: ca.ca_file() }),
        ..world.ledger_settings("replica-tls")
    };
    let ledger = Ledger::start(&world.db.owner_url, &settings).await;
    let endpoint = ledger.endpoint();
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    println!("ledger {endpoint}, reading the chain through {}", node.url());
    let (_sitecustomize, trust) = clients_trusting(&ca.ca_file());

    let (cli, channel) = world.snet_cli_with_channel(cli_client, &endpoint).await;
    let channel_text = channel.to_string();

    // The clients really check the certificate: with only their bundled roots they refuse it.
    let untrusted = cli.client(&["get-channel-state", &channel_text, &endpoint]).await;
    assert!(!untrusted.success(), "snet-cli accepted a certificate of an unknown CA");
    untrusted.assert_stdout_contains("CERTIFICATE_VERIFY_FAILED");
    let cli = cli.with_env(trust.clone());

    let state = cli.client(&["get-channel-state", &channel_text, &endpoint]).await;
    state.assert_success();
    for line in channel_state_lines(0, 0, CHANNEL_VALUE) {
        state.assert_stdout_contains(&line);
    }
    for _ in 0..2 {
        let call = cli.client(&["call", ORG, SERVICE, GROUP, "add", ADD, "-y", "--skip-update-check"]).await;
        call.assert_success().assert_stdout_contains("value: 5");
    }
    let state = cli.client(&["get-channel-state", &channel_text, &endpoint]).await;
    state.assert_success();
    for line in channel_state_lines(0, 2 * PRICE, CHANNEL_VALUE - 2 * PRICE) {
        state.assert_stdout_contains(&line);
    }
    let claim = cli.treasurer(&["claim-all", "--endpoint", &endpoint, "-y"]).await;
    claim.assert_success().assert_stdout_contains("ChannelClaim");
    let (nonce, value) = world.on_chain(channel).await;
    assert_eq!(
        (nonce, value),
        (Nonce::from(1), Amount::from(CHANNEL_VALUE - 2 * PRICE)),
        "the claim landed on chain"
    );
    assert_eq!(event_count(&world.db.pool, "claim_started", channel).await, 1);
    assert_eq!(event_count(&world.db.pool, "payment_accepted", channel).await, 2);

    let sdk = sdk_calls_with_env(
        &SdkCalls {
            ganache: &ganache,
            mpe: &world.mpe,
            client: sdk_client,
            payment_address: world.provider().address,
            group_id: GROUP_ID,
            price: PRICE,
            endpoints: vec![endpoint.clone()],
            calls: 1,
            stream: true,
            keep_going: false,
        },
        &trust,
    )
    .await;
    sdk.run.assert_success();
    assert_eq!((sdk.successful_calls, sdk.failed_calls), (2, 0));
    sdk.run.assert_stdout_contains(&format!("call 1 via {endpoint}: value=5"));
    sdk.run.assert_stdout_contains(&format!("stream via {endpoint}: values=2,3,5"));

    let calls = world.service.wait_for_calls(4).await;
    assert_eq!(calls.len(), 4, "two snet-cli calls, two snet-sdk calls: {calls:?}");
    world.print_event_log().await;
    assert_eq!(accepted_increments(&world.db.pool).await, u128::from(4 * PRICE));

    drop(ledger);
    verify(&world.db.owner_url).await.assert_success();
}

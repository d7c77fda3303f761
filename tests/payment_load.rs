//! The payment path under concurrency, on a real chain (ganache with the real MultiPartyEscrow) and a
//! real Postgres, through the production path (`PaymentService::start` with its lease, then
//! `commit`):
//! - payments on different channels never make each other retry (no false SSI conflicts);
//! - the lease table keeps one row per channel, however many payments (migration 0008);
//! - a served call whose COMMIT acknowledgement is lost is recorded exactly once, and the client is
//!   told it is recorded, even when the question that resolves it is lost too.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use common::escrow::escrow_config;
use common::ganache::{Ganache, Mpe};
use common::pg_proxy::PgProxy;
use mpe_ledger::chain::EthChain;
use mpe_ledger::domain::payment::Payment;
use mpe_ledger::domain::{Amount, ChannelId, Nonce};
use mpe_ledger::escrow::EscrowConfig;
use mpe_ledger::escrow::channels::ChannelSource;
use mpe_ledger::escrow::payments::PaymentService;
use mpe_ledger::store::leases::PgLeases;
use mpe_ledger::store::postgres::{self, PgLedger};
use mpe_ledger::store::retry::StoreMetrics;
use mpe_ledger::store::verify::verify;
use sqlx::PgPool;
use tokio::sync::Barrier;

const PRICE: u64 = 10;
const GROUP: [u8; 32] = [7; 32];
const METHOD: &str = "/example.Calculator/add";
/// Channels paid concurrently, one task each.
const CHANNELS: usize = 16;
/// Payments each task makes on its channel while the others make theirs.
const PAYMENTS_PER_CHANNEL: u64 = 12;

/// One chain with `channels` channels from account 1 to account 2, and a database.
struct World<'a> {
    mpe: Mpe<'a>,
    ganache: &'a Ganache,
    db: TestDb,
    channels: Vec<ChannelId>,
}

impl<'a> World<'a> {
    async fn new(ganache: &'a Ganache, channels: usize) -> Self {
        let mpe = Mpe::deploy(ganache).await;
        let client = ganache.account(1);
        mpe.mint_and_deposit(client, 1_000_000).await;
        let expiration = ganache.block_number().await + 100_000;
        let mut ids = Vec::with_capacity(channels);
        for _ in 0..channels {
            ids.push(
                mpe.open_channel(
                    client,
                    client.address,
                    ganache.account(2).address,
                    GROUP,
                    10_000,
                    expiration,
                )
                .await,
            );
        }
        let db = TestDb::with_pool_size(channels as u32 + 4).await;
        Self { mpe, ganache, db, channels: ids }
    }

    /// A replica's payment service writing money through `pool` and leases through the test pool.
    fn payments(&self, pool: &PgPool, metrics: &Arc<StoreMetrics>) -> PaymentService<EthChain> {
        let config = Arc::new(EscrowConfig {
            // Chain reads stay out of the concurrent phase.
            chain_cache_age: Duration::from_secs(60),
            ..escrow_config(self.mpe.eth_address(), self.ganache.account(2).eth_address(), GROUP, PRICE)
        });
        let chain = EthChain::connect(self.ganache.url(), self.mpe.eth_address()).unwrap();
        let source =
            Arc::new(ChannelSource::new(PgLedger::new(pool.clone(), metrics.clone()), chain, config.clone()));
        PaymentService::new(source, PgLeases::new(self.db.pool.clone(), self.db.metrics.clone()), config)
    }

    fn payment(&self, channel: ChannelId, k: u64) -> Payment {
        let amount = k * PRICE;
        Payment {
            mpe: self.mpe.eth_address(),
            channel_id: channel,
            nonce: Nonce::ZERO,
            amount: Amount::from(amount),
            signature: self.mpe.sign_payment(self.ganache.account(1), channel, 0, amount).0.to_vec(),
        }
    }

    async fn payment_events(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM ledger.events WHERE event_type = 'payment_accepted'")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

async fn pay(payments: &PaymentService<EthChain>, payment: Payment) {
    let transaction = payments.start(payment, METHOD).await.expect("the payment is valid");
    payments.commit(transaction).await.expect("the payment is recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_on_different_channels_never_make_each_other_retry() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache, CHANNELS).await;
    let metrics = world.db.metrics.clone();
    let payments = Arc::new(world.payments(&world.db.pool, &metrics));
    // Every channel exists in the ledger first (its merge and first payment), one at a time: the
    // concurrent phase below is the steady state, each commit an update of existing rows.
    for &channel in &world.channels {
        pay(&payments, world.payment(channel, 1)).await;
    }
    let retries_before = metrics.total_retries();
    let signed: Vec<Vec<Payment>> = world
        .channels
        .iter()
        .map(|&channel| (2..2 + PAYMENTS_PER_CHANNEL).map(|k| world.payment(channel, k)).collect())
        .collect();
    let start = Arc::new(Barrier::new(CHANNELS));
    let tasks: Vec<_> = signed
        .into_iter()
        .map(|channel_payments| {
            let payments = payments.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                for payment in channel_payments {
                    pay(&payments, payment).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("no task panicked");
    }
    assert_eq!(
        world.payment_events().await,
        (CHANNELS as i64) * (1 + PAYMENTS_PER_CHANNEL as i64),
        "every payment recorded once"
    );
    assert_eq!(
        metrics.total_retries() - retries_before,
        0,
        "{} payments on {CHANNELS} distinct channels at once caused serialization retries",
        CHANNELS as u64 * PAYMENTS_PER_CHANNEL
    );
    assert_eq!(metrics.retries_exhausted.with_label_values(&["ledger.commit"]).get(), 0);
    assert!(verify(&world.db.pool).await.unwrap().is_empty(), "the log verifies");
}

/// Payments each task makes in the lease-table test: enough that a row inserted and deleted per
/// payment (before migration 0008) would spread the table over some fifty pages.
const LEASE_TABLE_PAYMENTS_PER_CHANNEL: u64 = 60;
/// Most pages the lease table of [`CHANNELS`] channels may take: one row each, updated in place.
/// Even with no version ever pruned, 2 × 960 updates of ~130 bytes fill about 30 pages at fillfactor
/// 10; pruned in place (the normal case) they fit in a few.
const LEASE_TABLE_PAGES_MAX: i64 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lease_table_keeps_one_row_per_channel_under_concurrent_payments() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache, CHANNELS).await;
    let metrics = world.db.metrics.clone();
    let payments = Arc::new(world.payments(&world.db.pool, &metrics));
    let tasks: Vec<_> = world
        .channels
        .iter()
        .map(|&channel| {
            let signed: Vec<Payment> =
                (1..=LEASE_TABLE_PAYMENTS_PER_CHANNEL).map(|k| world.payment(channel, k)).collect();
            let payments = payments.clone();
            tokio::spawn(async move {
                for payment in signed {
                    pay(&payments, payment).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("no task panicked");
    }
    assert_eq!(world.payment_events().await, (CHANNELS as u64 * LEASE_TABLE_PAYMENTS_PER_CHANNEL) as i64);
    let (rows, held): (i64, i64) = sqlx::query_as("SELECT count(*), count(token) FROM ledger.leases")
        .fetch_one(&world.db.pool)
        .await
        .unwrap();
    assert_eq!((rows, held), (CHANNELS as i64, 0), "one kept row per channel, none held");
    let leases = PgLeases::new(world.db.pool.clone(), world.db.metrics.clone());
    assert!(leases.list().await.unwrap().is_empty(), "a released lease is not listed");
    let pages: i64 = sqlx::query_scalar(
        "SELECT pg_relation_size('ledger.leases') / current_setting('block_size')::bigint",
    )
    .fetch_one(&world.db.pool)
    .await
    .unwrap();
    assert!(
        pages <= LEASE_TABLE_PAGES_MAX,
        "the lease table of {CHANNELS} channels grew to {pages} pages after {} payments",
        CHANNELS as u64 * LEASE_TABLE_PAYMENTS_PER_CHANNEL
    );
    assert!(verify(&world.db.pool).await.unwrap().is_empty(), "the log verifies");
}

/// A payment service whose money goes through a [`PgProxy`] (leases straight to the server).
async fn through_proxy(world: &World<'_>) -> (PgProxy, PaymentService<EthChain>, Arc<StoreMetrics>) {
    let port: u16 =
        world.db.owner_url.rsplit_once(':').unwrap().1.split('/').next().unwrap().parse().unwrap();
    let proxy = PgProxy::start(port).await;
    let pool = postgres::connect(&proxy.url(&world.db.owner_url), 4).await.unwrap();
    let metrics = Arc::new(StoreMetrics::unregistered());
    let payments = world.payments(&pool, &metrics);
    (proxy, payments, metrics)
}

#[tokio::test]
async fn a_served_call_whose_commit_acknowledgement_is_lost_is_recorded_once() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache, 1).await;
    let channel = world.channels[0];
    let (proxy, payments, metrics) = through_proxy(&world).await;
    pay(&payments, world.payment(channel, 1)).await;
    let before = world.payment_events().await;

    let transaction = payments.start(world.payment(channel, 2), METHOD).await.unwrap();
    proxy.lose_next_commit_reply();
    let outcome = payments.commit(transaction).await;

    assert!(outcome.is_ok(), "a recorded payment is answered as recorded: {outcome:?}");
    assert_eq!(proxy.lost_commit_replies(), 1, "the fault happened");
    assert_eq!(metrics.connection_retries.with_label_values(&["ledger.commit_batch"]).get(), 1);
    assert_eq!(world.payment_events().await, before + 1, "recorded exactly once");
    let leases: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.leases WHERE token IS NOT NULL")
        .fetch_one(&world.db.pool)
        .await
        .unwrap();
    assert_eq!(leases, 0, "the commit released the lease");
    // The channel goes on: the next payment is taken.
    pay(&payments, world.payment(channel, 3)).await;
    assert_eq!(world.payment_events().await, before + 2);
    assert!(verify(&world.db.pool).await.unwrap().is_empty(), "the log verifies");
}

#[tokio::test]
async fn a_served_call_whose_commit_acknowledgement_and_the_question_after_it_are_lost_is_answered_recorded()
{
    let ganache = Ganache::start().await;
    let world = World::new(&ganache, 1).await;
    let channel = world.channels[0];
    let (proxy, payments, metrics) = through_proxy(&world).await;
    pay(&payments, world.payment(channel, 1)).await;
    let before = world.payment_events().await;

    let transaction = payments.start(world.payment(channel, 2), METHOD).await.unwrap();
    proxy.lose_next_commit_reply();
    // The retry's question about the first attempt (its statement's text, as it is parsed) is
    // lost too: the next attempt must ask again, not forget that the first may have committed.
    proxy.cut_next_message_containing(b"pg_xact_status");
    let outcome = payments.commit(transaction).await;

    assert_eq!((proxy.lost_commit_replies(), proxy.cut_messages()), (1, 1), "both faults happened");
    assert!(outcome.is_ok(), "a recorded payment is answered as recorded: {outcome:?}");
    assert_eq!(metrics.connection_retries.with_label_values(&["ledger.commit_batch"]).get(), 2);
    assert_eq!(world.payment_events().await, before + 1, "recorded exactly once");
    assert!(verify(&world.db.pool).await.unwrap().is_empty(), "the log verifies");
}

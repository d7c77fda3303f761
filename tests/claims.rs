//! Claim and reclaim records on a real chain (ganache running the real MultiPartyEscrow) and a real
//! Postgres: each outcome its own fact with exact amounts, a reclaim while a claim is pending, the
//! re-funded channel taking payments again, finishers racing, one channel's failure hiding no other,
//! and the incremental log search. Every test counts the events before and after.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::escrow_world::{METHOD, PRICE, World};
use common::ganache::Ganache;
use mpe_ledger::chain::{ChainError, ChainReader, ChannelLog, ChannelRead, EthChain};
use mpe_ledger::domain::fold::fold;
use mpe_ledger::domain::{Amount, BlockNumber, ChannelEvent, ChannelId, Nonce};
use mpe_ledger::escrow::EscrowConfig;
use mpe_ledger::escrow::channels::{ChannelSource, Freshness};
use mpe_ledger::escrow::claims::{ClaimError, ClaimService};
use mpe_ledger::escrow::payments::PaymentService;
use mpe_ledger::store::verify::verify;

/// The real chain, with `eth_getLogs` failing for one channel when asked, and every log search
/// recorded as (channel, from, to).
#[derive(Clone)]
struct WatchedChain {
    inner: EthChain,
    failing: Arc<Mutex<Option<ChannelId>>>,
    head_failing: Arc<std::sync::atomic::AtomicBool>,
    searches: Arc<Mutex<Vec<(ChannelId, u64, u64)>>>,
}

impl WatchedChain {
    fn new(inner: EthChain) -> Self {
        Self {
            inner,
            failing: Default::default(),
            head_failing: Default::default(),
            searches: Default::default(),
        }
    }

    fn fail_head(&self, failing: bool) {
        self.head_failing.store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// A node that refuses every call, as a node over its limits does: the errors of a real failure.
    fn refusing() -> EthChain {
        EthChain::connect("http://127.0.0.1:1", Default::default()).unwrap()
    }

    fn fail_logs_of(&self, channel: Option<ChannelId>) {
        *self.failing.lock().unwrap() = channel;
    }

    fn searches(&self) -> Vec<(ChannelId, u64, u64)> {
        std::mem::take(&mut self.searches.lock().unwrap())
    }
}

impl ChainReader for WatchedChain {
    async fn channel(&self, id: ChannelId) -> Result<Option<ChannelRead>, ChainError> {
        self.inner.channel(id).await
    }

    async fn current_block(&self) -> Result<u64, ChainError> {
        if self.head_failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Self::refusing().current_block().await;
        }
        self.inner.current_block().await
    }

    async fn chain_id(&self) -> Result<u64, ChainError> {
        self.inner.chain_id().await
    }

    async fn channel_logs(&self, id: ChannelId, from: u64, to: u64) -> Result<Vec<ChannelLog>, ChainError> {
        self.searches.lock().unwrap().push((id, from, to));
        if *self.failing.lock().unwrap() == Some(id) {
            return Self::refusing().channel_logs(id, from, to).await;
        }
        self.inner.channel_logs(id, from, to).await
    }
}

/// A replica's claim service on the watched chain, and its channel source (for its metrics).
fn claims_on(
    world: &World<'_>,
    chain: &WatchedChain,
    config: Arc<EscrowConfig>,
) -> (ClaimService<WatchedChain>, Arc<ChannelSource<WatchedChain>>) {
    let source = Arc::new(ChannelSource::new(world.ledger(), chain.clone(), config.clone()));
    (ClaimService::new(source.clone(), world.leases(), config), source)
}

fn landed_claims(events: &[ChannelEvent]) -> usize {
    events.iter().filter(|e| matches!(e, ChannelEvent::ClaimLanded { .. })).count()
}

async fn cursor(world: &World<'_>, channel: ChannelId) -> Option<i64> {
    sqlx::query_scalar("SELECT next_block FROM ledger.claim_log_cursors WHERE channel_id = $1::text::numeric")
        .bind(channel.to_string())
        .fetch_optional(&world.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn unclaimed_and_in_progress_lists_follow_the_claim_lifecycle() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay(&world.payments(), 0, PRICE).await;
    let claims = world.claims();
    let unclaimed = claims.unclaimed().await.unwrap();
    assert_eq!(unclaimed.len(), 1);
    assert_eq!(unclaimed[0].authorized_amount, Amount::from(PRICE));
    let claim = claims.start_claim(world.channel).await.unwrap();
    assert!(claims.unclaimed().await.unwrap().is_empty());
    let in_progress = claims.in_progress().await.unwrap();
    assert_eq!(in_progress.len(), 1);
    assert_eq!(in_progress[0].1.amount, Amount::from(PRICE));
    // The claim stays in progress until the chain shows it.
    world.mpe.channel_claim(world.provider(), world.channel, PRICE, PRICE, &claim.signature, false).await;
    assert!(claims.in_progress().await.unwrap().is_empty());
}

#[tokio::test]
async fn claims_wait_for_the_configured_confirmations_and_the_search_never_passes_them() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay(&world.payments(), 0, PRICE).await;
    let config = Arc::new(EscrowConfig {
        confirmations: 3,
        ..(*world.config("replica-a", Duration::from_secs(30))).clone()
    });
    let claims = ClaimService::new(world.source(&config), world.leases(), config);
    let claim = claims.start_claim(world.channel).await.unwrap();
    world.mpe.channel_claim(world.provider(), world.channel, PRICE, PRICE, &claim.signature, false).await;
    let events = world.db.event_count().await;
    let started_at = cursor(&world, world.channel).await;
    assert!(claims.record_finished_claims().await.unwrap().is_empty());
    // Nothing below head - 3 could be searched yet: the cursor stays at the claim's block.
    assert!(started_at.unwrap() > i64::try_from(ganache.block_number().await - 3).unwrap());
    assert_eq!(cursor(&world, world.channel).await, started_at);
    assert_eq!(world.db.event_count().await, events);
    ganache.mine(3).await;
    assert_eq!(claims.record_finished_claims().await.unwrap().len(), 1);
    assert_eq!(world.db.event_count().await, events + 1);
    let head = ganache.block_number().await;
    assert_eq!(cursor(&world, world.channel).await, Some(i64::try_from(head - 3 + 1).unwrap()));
}

#[tokio::test]
async fn the_search_starts_at_the_claims_block_and_goes_on_from_its_cursor() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay(&world.payments(), 0, PRICE).await;
    ganache.mine(30).await;
    let chain = WatchedChain::new(world.chain.clone());
    let (claims, _) = claims_on(&world, &chain, world.config("replica-a", Duration::from_secs(30)));
    let started_at = ganache.block_number().await;
    claims.start_claim(world.channel).await.unwrap();
    assert_eq!(cursor(&world, world.channel).await, Some(i64::try_from(started_at).unwrap()));
    let head = ganache.block_number().await;
    assert!(claims.record_finished_claims().await.unwrap().is_empty());
    assert_eq!(chain.searches(), [(world.channel, started_at, head)]);
    ganache.mine(4).await;
    assert!(claims.record_finished_claims().await.unwrap().is_empty());
    assert_eq!(chain.searches(), [(world.channel, head + 1, head + 4)]);
    // Nothing new on chain: nothing is searched twice.
    assert!(claims.record_finished_claims().await.unwrap().is_empty());
    assert_eq!(chain.searches(), []);
}

/// The scenario: a claim pending when the sender reclaims after expiry, payments at the
/// next nonce made meanwhile, the channel readable throughout, the re-funded channel paying on.
#[tokio::test]
async fn a_reclaim_while_a_claim_is_pending_voids_it_and_the_refunded_channel_pays_on_at_the_chains_nonce() {
    let ganache = Ganache::start().await;
    let world = World::with_channel(&ganache, 1000, 12).await;
    let payments = world.payments();
    world.pay(&payments, 0, PRICE).await;
    let claims = world.claims();
    let claim = claims.start_claim(world.channel).await.unwrap();
    assert_eq!((claim.nonce, claim.amount), (Nonce::ZERO, Amount::from(PRICE)));
    // While the claim is pending, clients pay at the ledger's nonce 1 (valid on chain once it lands).
    world.pay(&payments, 1, PRICE).await;
    world.pay(&payments, 1, 2 * PRICE).await;

    ganache.mine(12).await;
    let reclaim_tx = world.mpe.claim_timeout(world.client(), world.channel).await;
    let reclaim_block = world.mpe.block_of(reclaim_tx).await;
    let before = world.snapshot().await;

    // Readable before the reclaim is recorded: the chain's nonce (1) is the ledger's, value 0, and
    // the payments of nonce 1 are kept.
    let source = world.source(&world.config("replica-a", Duration::from_secs(30)));
    let merged = source.payment_channel(world.channel, Freshness::Fresh).await.unwrap().unwrap();
    assert_eq!(merged.channel.nonce, Nonce::from(1));
    assert_eq!(
        (merged.channel.full_amount, merged.channel.authorized_amount),
        (Amount::ZERO, Amount::from(2 * PRICE))
    );
    // A new payment is refused by the value check (and the channel expired): nothing written.
    assert!(payments.start(world.payment(1, 3 * PRICE), METHOD).await.is_err());
    assert_eq!(world.snapshot().await, before);

    let finished = claims.record_finished_claims().await.unwrap();
    let reclaimed = ChannelEvent::SenderReclaimed {
        nonce: Nonce::ZERO,
        transaction_hash: reclaim_tx,
        block_number: reclaim_block,
        // The claim never landed: the whole 1000 went back to the sender.
        value_taken_back: Amount::from(1000),
        // The voided claim's amount, authorised at nonce 0 and never claimed.
        provider_loss: Amount::from(PRICE),
    };
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].event, reclaimed);
    assert_eq!(world.db.event_count().await, before.0 + 1);
    assert_eq!(world.events().await.last(), Some(&reclaimed));
    assert!(claims.in_progress().await.unwrap().is_empty());
    // Recorded once: later passes find it finished.
    assert!(claims.record_finished_claims().await.unwrap().is_empty());
    assert_eq!(world.db.event_count().await, before.0 + 1);

    // Still readable; the kept authorisation cannot be claimed until the sender re-funds.
    let merged = source.payment_channel(world.channel, Freshness::Fresh).await.unwrap().unwrap();
    assert_eq!((merged.channel.nonce, merged.channel.full_amount), (Nonce::from(1), Amount::ZERO));
    let before = world.snapshot().await;
    assert!(matches!(claims.start_claim(world.channel).await, Err(ClaimError::ValueVoidedByReclaim(_))));
    assert_eq!(world.snapshot().await, before);

    // The sender re-funds and extends: payments go on at nonce 1 from the kept 20.
    world.mpe.add_funds(world.client(), world.channel, 100).await;
    let extended = ganache.block_number().await + 100;
    world.mpe.extend(world.client(), world.channel, extended).await;
    let fresh = PaymentService::new(
        world.source(&world.config("replica-a", Duration::from_secs(30))),
        world.leases(),
        world.config("replica-a", Duration::from_secs(30)),
    );
    world.pay(&fresh, 1, 3 * PRICE).await;
    let events = world.events().await;
    let tail = &events[events.len() - 2..];
    let ChannelEvent::ChannelMergedFromChain { chain, .. } = &tail[0] else { panic!("{events:#?}") };
    assert_eq!(
        (chain.nonce, chain.value, chain.expiration),
        (Nonce::from(1), Amount::from(100), BlockNumber::from(extended))
    );
    assert!(
        matches!(&tail[1], ChannelEvent::PaymentAccepted { nonce, amount, .. } if *nonce == Nonce::from(1) && *amount == Amount::from(3 * PRICE))
    );

    // The payment signed at nonce 1 lands on chain in full.
    let claim = claims.start_claim(world.channel).await.unwrap();
    assert_eq!((claim.nonce, claim.amount), (Nonce::from(1), Amount::from(3 * PRICE)));
    let claim_tx = world
        .mpe
        .channel_claim(world.provider(), world.channel, 3 * PRICE, 3 * PRICE, &claim.signature, false)
        .await;
    let finished = claims.record_finished_claims().await.unwrap();
    assert_eq!(
        finished[0].event,
        ChannelEvent::ClaimLanded {
            nonce: Nonce::from(1),
            transaction_hash: claim_tx,
            block_number: world.mpe.block_of(claim_tx).await,
            actual_amount: Amount::from(3 * PRICE),
            planned_amount: Amount::from(3 * PRICE),
        }
    );
    let events = world.events().await;
    let (stored, _) = world.ledger().channel(world.channel).await.unwrap().unwrap();
    assert_eq!(stored, fold(world.channel, &events).unwrap().unwrap());
    assert_eq!(verify(&world.db.pool).await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_reclaim_with_no_claim_started_records_the_authorisation_as_the_providers_loss() {
    let ganache = Ganache::start().await;
    let world = World::with_channel(&ganache, 1000, 8).await;
    world.pay(&world.payments(), 0, PRICE).await;
    world.mpe.add_funds(world.client(), world.channel, 50).await;
    ganache.mine(10).await;
    let tx = world.mpe.claim_timeout(world.client(), world.channel).await;
    let before = world.db.event_count().await;
    let claims = world.claims();
    let finished = claims.record_finished_claims().await.unwrap();
    assert_eq!(
        finished.iter().map(|f| f.event.clone()).collect::<Vec<_>>(),
        [ChannelEvent::SenderReclaimed {
            nonce: Nonce::ZERO,
            transaction_hash: tx,
            block_number: world.mpe.block_of(tx).await,
            // 1000 merged, 50 added after: both went back.
            value_taken_back: Amount::from(1050),
            provider_loss: Amount::from(PRICE),
        }]
    );
    assert_eq!(world.db.event_count().await, before + 1);
    let (stored, _) = world.ledger().channel(world.channel).await.unwrap().unwrap();
    assert_eq!((stored.channel.nonce, stored.channel.full_amount), (Nonce::from(1), Amount::ZERO));
    assert_eq!(stored.channel.authorized_amount, Amount::ZERO);
    assert!(claims.unclaimed().await.unwrap().is_empty());
    assert!(claims.record_finished_claims().await.unwrap().is_empty());
    assert_eq!(verify(&world.db.pool).await.unwrap(), vec![]);
}

#[tokio::test]
async fn watchers_listings_and_two_replicas_racing_record_each_landed_claim_exactly_once() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let payments = world.payments();
    let mut channels = vec![world.channel];
    for _ in 0..3 {
        channels.push(world.open_channel(1000, 1000).await);
    }
    let starter = world.claims();
    for (i, channel) in channels.iter().enumerate() {
        for call in 1..=i as u64 + 1 {
            world.pay_on(&payments, *channel, 0, PRICE * call).await;
        }
        let claim = starter.start_claim(*channel).await.unwrap();
        world
            .mpe
            .channel_claim(
                world.provider(),
                *channel,
                claim.amount.value().to(),
                claim.amount.value().to(),
                &claim.signature,
                false,
            )
            .await;
    }
    let before = world.db.event_count().await;
    let chain = WatchedChain::new(world.chain.clone());
    let (a, source_a) = claims_on(&world, &chain, world.config("replica-a", Duration::from_secs(30)));
    let (b, source_b) = claims_on(&world, &chain, world.config("replica-b", Duration::from_secs(30)));
    let (watch_a, watch_b, list_a, list_b, watch_a2) = tokio::join!(
        a.record_finished_claims(),
        b.record_finished_claims(),
        a.in_progress(),
        b.in_progress(),
        a.record_finished_claims(),
    );
    let recorded = watch_a.unwrap().len() + watch_b.unwrap().len() + watch_a2.unwrap().len();
    list_a.unwrap();
    list_b.unwrap();
    // A finisher that found a channel's lease busy left it for the next pass.
    let later =
        a.record_finished_claims().await.unwrap().len() + b.record_finished_claims().await.unwrap().len();
    assert!(recorded + later <= channels.len(), "{recorded} + {later}");
    for channel in &channels {
        assert_eq!(landed_claims(&world.events_of(*channel).await), 1, "channel {channel}");
    }
    assert_eq!(world.db.event_count().await, before + channels.len() as i64);
    assert!(a.in_progress().await.unwrap().is_empty());
    assert_eq!(
        source_a.metrics().claim_check_failures.get() + source_b.metrics().claim_check_failures.get(),
        0
    );
    assert_eq!(verify(&world.db.pool).await.unwrap(), vec![]);
}

#[tokio::test]
async fn an_eth_get_logs_failure_for_one_channel_hides_no_other_channels_claim() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let payments = world.payments();
    let other = world.open_channel(1000, 1000).await;
    let starter = world.claims();
    for channel in [world.channel, other] {
        world.pay_on(&payments, channel, 0, PRICE).await;
        let claim = starter.start_claim(channel).await.unwrap();
        world.mpe.channel_claim(world.provider(), channel, PRICE, PRICE, &claim.signature, false).await;
    }
    let chain = WatchedChain::new(world.chain.clone());
    chain.fail_logs_of(Some(world.channel));
    let (claims, source) = claims_on(&world, &chain, world.config("replica-a", Duration::from_secs(30)));
    let before = world.db.event_count().await;
    let cursor_before = cursor(&world, world.channel).await;

    let finished = claims.record_finished_claims().await.unwrap();
    assert_eq!(finished.iter().map(|f| f.channel_id).collect::<Vec<_>>(), [other]);
    assert_eq!(source.metrics().claim_check_failures.get(), 1);
    assert_eq!(world.db.event_count().await, before + 1);
    // The failing channel's cursor stays; the listing still answers, with its claim in progress.
    assert_eq!(cursor(&world, world.channel).await, cursor_before);
    let listed = claims.in_progress().await.unwrap();
    assert_eq!(listed.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [world.channel]);
    assert_eq!(source.metrics().claim_check_failures.get(), 2);

    // With the head unreadable nothing can be searched: the listing still answers.
    chain.fail_head(true);
    let listed = claims.in_progress().await.unwrap();
    assert_eq!(listed.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [world.channel]);
    assert_eq!(source.metrics().claim_check_failures.get(), 3);
    chain.fail_head(false);

    chain.fail_logs_of(None);
    let finished = claims.record_finished_claims().await.unwrap();
    assert_eq!(finished.iter().map(|f| f.channel_id).collect::<Vec<_>>(), [world.channel]);
    assert_eq!(world.db.event_count().await, before + 2);
    assert!(claims.in_progress().await.unwrap().is_empty());
}

//! The typed, event-sourced channel store on both backends: each change appends the events that
//! describe it, refused changes write nothing, CompareAndSwap is guarded by the stream version.

mod common;

use alloy_primitives::U256;
use common::TestDb;
use mpe_ledger::domain::{
    Amount, BlockNumber, ChannelEvent, ChannelId, EthAddress, FoldError, GroupId, Nonce, OnChainChannel,
    PaymentChannelData, PaymentChannelKey, Signature,
};
use mpe_ledger::store::postgres::PgChannelStore;
use mpe_ledger::store::{ChannelStore, MemoryChannelStore, StoreError};

fn address(byte: u8) -> EthAddress {
    EthAddress::from_slice(&[byte; 20]).unwrap()
}

fn on_chain(nonce: u64, value: U256) -> OnChainChannel {
    OnChainChannel {
        nonce: Nonce::from(nonce),
        sender: address(0x11),
        signer: address(0x33),
        recipient: address(0x22),
        group_id: GroupId([123; 32]),
        value: Amount(value),
        expiration: BlockNumber::from(100_000),
    }
}

fn fresh(id: u64, value: U256) -> PaymentChannelData {
    PaymentChannelData::from_chain(ChannelId::from(id), &on_chain(0, value))
}

fn paid(channel: &PaymentChannelData, amount: U256, signature: u8) -> PaymentChannelData {
    PaymentChannelData {
        authorized_amount: Amount(amount),
        signature: Some(Signature([signature; 65])),
        ..channel.clone()
    }
}

fn key(id: u64) -> PaymentChannelKey {
    PaymentChannelKey::new(ChannelId::from(id))
}

async fn an_absent_channel_is_none(s: impl ChannelStore) {
    assert_eq!(s.get(&key(1)).await.unwrap(), None);
    assert!(s.events(&key(1)).await.unwrap().is_empty());
}

async fn put_if_absent_creates_once(s: impl ChannelStore) {
    let channel = fresh(1, U256::from(100));
    assert!(s.put_if_absent(&channel).await.unwrap());
    assert!(!s.put_if_absent(&paid(&channel, U256::from(1), 1)).await.unwrap());
    assert_eq!(s.get(&key(1)).await.unwrap(), Some(channel.clone()));
    assert_eq!(
        s.events(&key(1)).await.unwrap(),
        vec![ChannelEvent::ChannelMergedFromChain { chain: on_chain(0, U256::from(100)), block: None }]
    );
}

async fn uint256_amounts_are_kept_exactly(s: impl ChannelStore) {
    let channel = fresh(7, U256::MAX);
    let payment = paid(&channel, U256::MAX - U256::from(1), 9);
    s.put(&payment).await.unwrap();
    let stored = s.get(&key(7)).await.unwrap().unwrap();
    assert_eq!(stored.full_amount, Amount(U256::MAX));
    assert_eq!(stored.authorized_amount, Amount(U256::MAX - U256::from(1)));
    assert_eq!(stored, payment);
}

async fn compare_and_swap_with_the_current_state_appends_a_payment(s: impl ChannelStore) {
    let channel = fresh(1, U256::from(100));
    s.put(&channel).await.unwrap();
    let first = paid(&channel, U256::from(10), 1);
    assert!(s.compare_and_swap(&channel, &first).await.unwrap());
    let second = paid(&channel, U256::from(20), 2);
    assert!(s.compare_and_swap(&first, &second).await.unwrap());
    let events = s.events(&key(1)).await.unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[2],
        ChannelEvent::PaymentAccepted {
            nonce: Nonce::ZERO,
            amount: Amount::from(20),
            signature: Signature([2; 65])
        }
    );
    assert_eq!(s.get(&key(1)).await.unwrap(), Some(second));
}

async fn compare_and_swap_with_a_stale_state_returns_false_and_writes_nothing(s: impl ChannelStore) {
    let channel = fresh(1, U256::from(100));
    s.put(&channel).await.unwrap();
    let current = paid(&channel, U256::from(10), 1);
    s.put(&current).await.unwrap();
    let before = s.events(&key(1)).await.unwrap();
    assert!(!s.compare_and_swap(&channel, &paid(&channel, U256::from(20), 2)).await.unwrap());
    assert_eq!(s.events(&key(1)).await.unwrap(), before);
    assert_eq!(s.get(&key(1)).await.unwrap(), Some(current));
}

async fn compare_and_swap_on_an_absent_channel_returns_false(s: impl ChannelStore) {
    let channel = fresh(1, U256::from(100));
    assert!(!s.compare_and_swap(&channel, &paid(&channel, U256::from(1), 1)).await.unwrap());
    assert_eq!(s.get(&key(1)).await.unwrap(), None);
}

async fn the_seed_claim_update_appends_claim_started(s: impl ChannelStore) {
    let channel = paid(&fresh(1, U256::from(100)), U256::from(30), 1);
    s.put(&channel).await.unwrap();
    let claimed = PaymentChannelData {
        nonce: Nonce::from(1),
        full_amount: Amount::from(70),
        authorized_amount: Amount::ZERO,
        signature: None,
        ..channel.clone()
    };
    assert!(s.compare_and_swap(&channel, &claimed).await.unwrap());
    let events = s.events(&key(1)).await.unwrap();
    assert_eq!(
        events.last(),
        Some(&ChannelEvent::ClaimStarted {
            nonce: Nonce::ZERO,
            amount: Amount::from(30),
            signature: Signature([1; 65])
        })
    );
}

async fn a_lowered_authorisation_is_refused_by_name_and_writes_nothing(s: impl ChannelStore) {
    let channel = fresh(1, U256::from(100));
    s.put(&paid(&channel, U256::from(50), 1)).await.unwrap();
    let before = s.events(&key(1)).await.unwrap();
    let error = s.put(&paid(&channel, U256::from(40), 2)).await.unwrap_err();
    assert!(matches!(error, StoreError::Transition(FoldError::AuthorizedAmountDecreased { .. })), "{error}");
    assert_eq!(s.events(&key(1)).await.unwrap(), before);
    assert_eq!(s.get(&key(1)).await.unwrap(), Some(paid(&channel, U256::from(50), 1)));
}

async fn an_authorisation_above_the_channel_value_is_refused(s: impl ChannelStore) {
    let error = s.put(&paid(&fresh(1, U256::from(100)), U256::from(101), 1)).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Transition(FoldError::AuthorizedAmountExceedsFullAmount { .. })),
        "{error}"
    );
    assert_eq!(s.get(&key(1)).await.unwrap(), None);
}

async fn putting_the_same_state_again_appends_nothing(s: impl ChannelStore) {
    let channel = paid(&fresh(1, U256::from(100)), U256::from(10), 1);
    s.put(&channel).await.unwrap();
    s.put(&channel).await.unwrap();
    assert_eq!(s.events(&key(1)).await.unwrap().len(), 2);
}

async fn get_all_lists_channels_in_id_order(s: impl ChannelStore) {
    for id in [10u64, 2, 1] {
        s.put(&fresh(id, U256::from(5))).await.unwrap();
    }
    let ids: Vec<ChannelId> = s.get_all().await.unwrap().into_iter().map(|c| c.channel_id).collect();
    assert_eq!(ids, vec![ChannelId::from(1), ChannelId::from(2), ChannelId::from(10)]);
}

macro_rules! channel_store_suite {
    ($make:expr) => {
        channel_store_suite!(@tests $make;
            an_absent_channel_is_none,
            put_if_absent_creates_once,
            uint256_amounts_are_kept_exactly,
            compare_and_swap_with_the_current_state_appends_a_payment,
            compare_and_swap_with_a_stale_state_returns_false_and_writes_nothing,
            compare_and_swap_on_an_absent_channel_returns_false,
            the_seed_claim_update_appends_claim_started,
            a_lowered_authorisation_is_refused_by_name_and_writes_nothing,
            an_authorisation_above_the_channel_value_is_refused,
            putting_the_same_state_again_appends_nothing,
            get_all_lists_channels_in_id_order,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                super::$name($make).await;
            }
        )*
    };
}

mod memory {
    use super::*;
    channel_store_suite!(MemoryChannelStore::new());
}

mod postgres {
    use super::*;
    channel_store_suite!(pg_store().await);
}

async fn pg_store() -> PgChannelStore {
    let db = TestDb::new().await;
    PgChannelStore::new(db.pool.clone(), db.metrics.clone())
}

#[tokio::test]
async fn payment_events_carry_the_signature_and_exact_amounts_in_sql_columns() {
    let db = TestDb::new().await;
    let s = PgChannelStore::new(db.pool.clone(), db.metrics.clone());
    let big = U256::MAX - U256::from(5);
    s.put(&paid(&fresh(3, U256::MAX), big, 0xab)).await.unwrap();
    let row: (String, String, String, Vec<u8>) = sqlx::query_as(
        "SELECT event_type, channel_id::text, amount::text, signature FROM ledger.events
         WHERE event_type = 'payment_accepted'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row, ("payment_accepted".into(), "3".into(), big.to_string(), vec![0xab; 65]));
}

#[tokio::test]
async fn a_refused_channel_write_leaves_log_and_projections_unchanged() {
    let db = TestDb::new().await;
    let s = PgChannelStore::new(db.pool.clone(), db.metrics.clone());
    let channel = fresh(1, U256::from(100));
    s.put(&paid(&channel, U256::from(50), 1)).await.unwrap();
    let (events, projections) = (db.event_count().await, db.projections_snapshot().await);
    assert!(s.put(&paid(&channel, U256::from(40), 2)).await.is_err());
    assert!(s.put(&paid(&channel, U256::from(101), 2)).await.is_err());
    assert!(!s.compare_and_swap(&channel, &paid(&channel, U256::from(60), 3)).await.unwrap());
    assert_eq!(db.event_count().await, events);
    assert_eq!(db.projections_snapshot().await, projections);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_compare_and_swaps_from_one_state_have_exactly_one_winner() {
    let db = TestDb::with_pool_size(16).await;
    let s = PgChannelStore::new(db.pool.clone(), db.metrics.clone());
    let channel = fresh(1, U256::from(1000));
    s.put(&channel).await.unwrap();
    let tasks: Vec<_> = (1..=16u8)
        .map(|i| {
            let (s, channel) = (s.clone(), channel.clone());
            tokio::spawn(async move {
                s.compare_and_swap(&channel, &paid(&channel, U256::from(i), i)).await.unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(s.events(&key(1)).await.unwrap().len(), 2);
}

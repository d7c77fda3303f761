//! The escrow core on a real chain (ganache running the real MultiPartyEscrow) and a real Postgres:
//! payment transactions, leases, merges, claims, idempotency, and the seed's tests as behaviour
//! (escrow_test, payment_handler_test, income_test, lock_test). Every refusal asserts the code, the
//! message, and that neither the event log nor any projection changed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::escrow_world::{GROUP, METHOD, PRICE, World, refusal};
use common::ganache::Ganache;
use mpe_ledger::domain::fold::fold;
use mpe_ledger::domain::payment::{Payment, PaymentErrorCode, Pricing};
use mpe_ledger::domain::{
    Amount, BlockNumber, ChainBlock, ChannelEvent, ChannelId, GroupId, Nonce, OnChainChannel,
};
use mpe_ledger::escrow::EscrowConfig;
use mpe_ledger::escrow::claims::ClaimError;
use mpe_ledger::escrow::payments::PaymentService;
use mpe_ledger::store::postgres::ledger::{ChannelCommit, CommitError, CommitOutcome, PaymentIdentity};
use mpe_ledger::store::verify::verify;

#[tokio::test]
async fn one_channel_records_merge_three_payments_claim_start_and_the_actual_claim() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let payments = world.payments();
    for amount in [PRICE, 2 * PRICE, 3 * PRICE] {
        let transaction = payments.start(world.payment(0, amount), METHOD).await.unwrap();
        assert!(matches!(payments.commit(transaction).await.unwrap(), CommitOutcome::Recorded { .. }));
    }
    let claims = world.claims();
    let claim = claims.start_claim(world.channel).await.unwrap();
    assert_eq!((claim.nonce, claim.amount), (Nonce::ZERO, Amount::from(3 * PRICE)));

    // The provider claims on chain, less than planned, with the client's signature.
    let actual = 3 * PRICE - 5;
    let tx_hash = world
        .mpe
        .channel_claim(world.provider(), world.channel, actual, 3 * PRICE, &claim.signature, false)
        .await;
    let finished = claims.record_finished_claims().await.unwrap();
    assert_eq!(finished.len(), 1);

    let events = world.events().await;
    assert_eq!(events.len(), 6, "{events:#?}");
    let ChannelEvent::ChannelMergedFromChain { chain, block: Some(block) } = &events[0] else {
        panic!("first event is a merge with its block: {:?}", events[0]);
    };
    assert_eq!(
        chain,
        &OnChainChannel {
            nonce: Nonce::ZERO,
            sender: world.client().eth_address(),
            signer: world.client().eth_address(),
            recipient: world.provider().eth_address(),
            group_id: GroupId(GROUP),
            value: Amount::from(1000),
            expiration: BlockNumber::from(world.expiration),
        }
    );
    let (number, hash) = ganache.block(block.number).await;
    assert_eq!(*block, ChainBlock { number, hash });
    for (i, amount) in [PRICE, 2 * PRICE, 3 * PRICE].into_iter().enumerate() {
        let expected_signature = world.mpe.sign_payment(world.client(), world.channel, 0, amount);
        assert_eq!(
            events[1 + i],
            ChannelEvent::PaymentAccepted {
                nonce: Nonce::ZERO,
                amount: Amount::from(amount),
                signature: expected_signature
            }
        );
    }
    assert_eq!(
        events[4],
        ChannelEvent::ClaimStarted {
            nonce: Nonce::ZERO,
            amount: Amount::from(3 * PRICE),
            signature: claim.signature.clone()
        }
    );
    assert_eq!(
        events[5],
        ChannelEvent::ClaimLanded {
            nonce: Nonce::ZERO,
            transaction_hash: tx_hash,
            block_number: world.mpe.block_of(tx_hash).await,
            actual_amount: Amount::from(actual),
            planned_amount: Amount::from(3 * PRICE),
        }
    );

    // The projection equals the fold of the log, and verify is clean.
    let folded = fold(world.channel, &events).unwrap().unwrap();
    let (stored, _) = world.ledger().channel(world.channel).await.unwrap().unwrap();
    assert_eq!(stored, folded);
    assert_eq!(stored.channel.nonce, Nonce::from(1));
    assert_eq!(stored.channel.full_amount, Amount::from(1000 - 3 * PRICE));
    assert_eq!(verify(&world.db.pool).await.unwrap(), vec![]);
    // Nothing is left in progress.
    assert!(claims.in_progress().await.unwrap().is_empty());
}

#[tokio::test]
async fn payments_after_the_claim_landed_merge_the_chain_and_use_the_new_nonce() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let payments = world.payments();
    world.pay(&payments, 0, PRICE).await;
    let claims = world.claims();
    let claim = claims.start_claim(world.channel).await.unwrap();
    // Before the claim lands, the old nonce is refused with the seed's raw status 1000.
    assert_eq!(
        refusal(payments.start(world.payment(0, 2 * PRICE), METHOD).await),
        (PaymentErrorCode::IncorrectNonce, "incorrect payment channel nonce, latest: 1, sent: 0".into())
    );
    world.mpe.channel_claim(world.provider(), world.channel, 4, PRICE, &claim.signature, false).await;
    claims.record_finished_claims().await.unwrap();
    world.pay(&payments, 1, PRICE).await;
    let events = world.events().await;
    // The chain value after claiming 4 of 10 is 996, more than the ledger's 990: merged before the payment.
    let ChannelEvent::ChannelMergedFromChain { chain, .. } = &events[events.len() - 2] else {
        panic!("a merge precedes the payment: {events:#?}");
    };
    assert_eq!((chain.nonce, chain.value), (Nonce::from(1), Amount::from(996)));
    assert_eq!(verify(&world.db.pool).await.unwrap(), vec![]);
}

#[tokio::test]
async fn funds_added_and_expiry_extended_on_chain_are_merged_before_the_next_payment() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    // Without a cache every payment reads the chain (with one, the merge waits for the next read).
    let config = Arc::new(EscrowConfig {
        chain_cache_age: Duration::ZERO,
        ..(*world.config("replica-a", Duration::from_secs(30))).clone()
    });
    let payments = PaymentService::new(world.source(&config), world.leases(), config);
    world.pay(&payments, 0, PRICE).await;
    world.mpe.add_funds(world.client(), world.channel, 500).await;
    world.mpe.extend(world.client(), world.channel, world.expiration + 100).await;
    let transaction = payments.start(world.payment(0, 2 * PRICE), METHOD).await.unwrap();
    payments.commit(transaction).await.unwrap();
    let events = world.events().await;
    let ChannelEvent::ChannelMergedFromChain { chain, block } = &events[2] else { panic!("{events:#?}") };
    assert_eq!(chain.value, Amount::from(1500));
    assert_eq!(chain.expiration, BlockNumber::from(world.expiration + 100));
    assert!(block.is_some());
    assert!(matches!(events[3], ChannelEvent::PaymentAccepted { .. }));
}

#[tokio::test]
async fn a_second_concurrent_start_on_a_held_channel_is_refused_and_the_first_commits() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let payments = world.payments();
    let first = payments.start(world.payment(0, PRICE), METHOD).await.unwrap();
    let other_replica = world.replica("replica-b", Duration::from_secs(30));
    assert_eq!(
        refusal(other_replica.start(world.payment(0, PRICE), METHOD).await),
        (
            PaymentErrorCode::FailedPrecondition,
            format!("another transaction on channel: {{ID: {}}} is in progress", world.channel)
        )
    );
    payments.commit(first).await.unwrap();
    let (stored, _) = world.ledger().channel(world.channel).await.unwrap().unwrap();
    assert_eq!(stored.channel.authorized_amount, Amount::from(PRICE));
}

#[tokio::test]
async fn a_rollback_releases_the_lease_and_records_nothing() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let payments = world.payments();
    let before = world.snapshot().await;
    let transaction = payments.start(world.payment(0, PRICE), METHOD).await.unwrap();
    payments.rollback(transaction).await;
    assert_eq!(world.snapshot().await, before);
    // The same payment can now go through: the lease is free and nothing was counted.
    world.pay(&payments, 0, PRICE).await;
}

#[tokio::test]
async fn a_killed_replica_leaves_the_channel_usable_after_its_lease_expires() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let short = Duration::from_millis(1500);
    {
        // Replica A takes the lease and dies: no commit, no rollback, its connections gone.
        let dying = world.replica("replica-a", short);
        let abandoned = dying.start(world.payment(0, PRICE), METHOD).await.unwrap();
        std::mem::forget(abandoned);
    }
    let survivor = world.replica("replica-b", short);
    assert_eq!(
        refusal(survivor.start(world.payment(0, PRICE), METHOD).await).0,
        PaymentErrorCode::FailedPrecondition
    );
    tokio::time::sleep(short + Duration::from_millis(300)).await;
    let transaction = survivor.start(world.payment(0, PRICE), METHOD).await.unwrap();
    assert!(matches!(survivor.commit(transaction).await.unwrap(), CommitOutcome::Recorded { .. }));
}

#[tokio::test]
async fn a_holder_whose_lease_expired_and_was_taken_over_cannot_commit() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let short = Duration::from_millis(1000);
    let slow = world.replica("replica-slow", short);
    let stale = slow.start(world.payment(0, PRICE), METHOD).await.unwrap();
    tokio::time::sleep(short + Duration::from_millis(300)).await;
    let fast = world.replica("replica-fast", short);
    let transaction = fast.start(world.payment(0, PRICE), METHOD).await.unwrap();
    fast.commit(transaction).await.unwrap();
    let before = world.snapshot().await;
    assert_eq!(
        refusal(slow.commit(stale).await),
        (
            PaymentErrorCode::FailedPrecondition,
            format!(
                "transaction on channel: {{ID: {}}} lost its lease before commit; nothing was recorded",
                world.channel
            )
        )
    );
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn a_replayed_payment_is_refused_by_the_income_check_and_not_counted() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let payments = world.payments();
    world.pay(&payments, 0, PRICE).await;
    let before = world.snapshot().await;
    assert_eq!(
        refusal(payments.start(world.payment(0, PRICE), METHOD).await),
        (PaymentErrorCode::Unauthenticated, format!("income 0 does not equal to price {PRICE}"))
    );
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn a_commit_retried_after_a_lost_acknowledgement_is_counted_once() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay(&world.payments(), 0, PRICE).await;
    let before = world.snapshot().await;
    let signature = world.mpe.sign_payment(world.client(), world.channel, 0, PRICE);
    let retry = ChannelCommit {
        channel_id: world.channel,
        expected_version: 2,
        lease: None,
        events: vec![ChannelEvent::PaymentAccepted {
            nonce: Nonce::ZERO,
            amount: Amount::from(PRICE),
            signature,
        }],
        payment: Some(PaymentIdentity {
            mpe: world.mpe.eth_address(),
            nonce: Nonce::ZERO,
            amount: Amount::from(PRICE),
            signer: world.client().eth_address(),
        }),
    };
    assert_eq!(world.ledger().commit(retry).await.unwrap(), CommitOutcome::AlreadyRecorded);
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn the_same_payment_key_signed_by_another_address_is_a_named_conflict() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay(&world.payments(), 0, PRICE).await;
    let before = world.snapshot().await;
    let intruder = ganache.account(5);
    let signature = world.mpe.sign_payment(intruder, world.channel, 0, PRICE);
    let conflicting = ChannelCommit {
        channel_id: world.channel,
        expected_version: 2,
        lease: None,
        events: vec![ChannelEvent::PaymentAccepted {
            nonce: Nonce::ZERO,
            amount: Amount::from(PRICE),
            signature,
        }],
        payment: Some(PaymentIdentity {
            mpe: world.mpe.eth_address(),
            nonce: Nonce::ZERO,
            amount: Amount::from(PRICE),
            signer: intruder.eth_address(),
        }),
    };
    let error = world.ledger().commit(conflicting).await.unwrap_err();
    assert!(matches!(error, CommitError::ConflictingPayment { .. }), "{error}");
    assert_eq!(world.snapshot().await, before);
}

/// Every refusal of `start`: its code and message, and nothing written.
#[tokio::test]
async fn every_refused_payment_has_the_seed_code_and_message_and_writes_nothing() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let payments = world.payments();
    world.pay(&payments, 0, PRICE).await;
    let before = world.snapshot().await;
    let mut short_signature = world.payment(0, 2 * PRICE);
    short_signature.signature.truncate(64);
    let mut bad_v = world.payment(0, 2 * PRICE);
    bad_v.signature[64] = 0x21;
    let unknown = Payment { channel_id: ChannelId::from(999), ..world.payment(0, PRICE) };
    let cases: Vec<(&str, Payment, PaymentErrorCode, String)> = vec![
        (
            "stale nonce",
            world.payment(1, 2 * PRICE),
            PaymentErrorCode::IncorrectNonce,
            "incorrect payment channel nonce, latest: 0, sent: 1".into(),
        ),
        (
            "short signature",
            short_signature,
            PaymentErrorCode::Unauthenticated,
            "payment signature is not valid".into(),
        ),
        (
            "bad recovery byte",
            bad_v,
            PaymentErrorCode::Unauthenticated,
            "payment signature is not valid".into(),
        ),
        (
            "wrong signer",
            world.payment_by(ganache.account(5), 0, 2 * PRICE),
            PaymentErrorCode::Unauthenticated,
            "payment is not signed by channel signer/sender".into(),
        ),
        (
            "amount above value",
            world.payment(0, 1001),
            PaymentErrorCode::Unauthenticated,
            "not enough tokens on payment channel, channel amount: 1000, payment amount: 1001".into(),
        ),
        (
            "not raised by the price",
            world.payment(0, PRICE + 1),
            PaymentErrorCode::Unauthenticated,
            format!("income 1 does not equal to price {PRICE}"),
        ),
        (
            "lowered",
            world.payment(0, PRICE - 1),
            PaymentErrorCode::Unauthenticated,
            format!("income -1 does not equal to price {PRICE}"),
        ),
        (
            "unknown channel",
            unknown,
            PaymentErrorCode::Unauthenticated,
            "payment channel \"{ID: 999}\" not found".into(),
        ),
    ];
    for (name, payment, code, message) in cases {
        assert_eq!(refusal(payments.start(payment, METHOD).await), (code, message), "{name}");
        assert_eq!(world.snapshot().await, before, "{name} wrote something");
    }
    // After every refusal the lease was released: a good payment goes through.
    world.pay(&payments, 0, 2 * PRICE).await;
}

#[tokio::test]
async fn an_expiring_channel_is_refused_with_the_seed_message() {
    let ganache = Ganache::start().await;
    let world = World::with_channel(&ganache, 1000, 3).await;
    let payments = world.payments();
    ganache.mine(3).await;
    let before = world.snapshot().await;
    let current = ganache.block_number().await;
    assert_eq!(
        refusal(payments.start(world.payment(0, PRICE), METHOD).await),
        (
            PaymentErrorCode::Unauthenticated,
            format!(
                "payment channel is near to be expired, expiration time: {}, current block: {current}, expiration threshold: 0",
                world.expiration
            )
        )
    );
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn channels_of_another_recipient_or_group_are_refused() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let client = world.client();
    let other_recipient = world
        .mpe
        .open_channel(client, client.address, ganache.account(3).address, GROUP, 100, world.expiration)
        .await;
    let other_group = world
        .mpe
        .open_channel(client, client.address, world.provider().address, [9; 32], 100, world.expiration)
        .await;
    let payments = world.payments();
    let before = world.snapshot().await;
    let mut payment = world.payment(0, PRICE);
    payment.channel_id = other_recipient;
    assert_eq!(
        refusal(payments.start(payment, METHOD).await),
        (
            PaymentErrorCode::Internal,
            "payment channel error: recipient Address from org metadata does not Match on what was retrieved from Channel".into()
        )
    );
    let mut payment = world.payment(0, PRICE);
    payment.channel_id = other_group;
    let (code, message) = refusal(payments.start(payment, METHOD).await);
    assert_eq!(code, PaymentErrorCode::Internal);
    let ours = vec!["7"; 32].join(" ");
    let theirs = vec!["9"; 32].join(" ");
    assert_eq!(
        message,
        format!(
            "payment channel error: channel received belongs to another group of replicas, current group: [{ours}], channel group: [{theirs}]"
        )
    );
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn a_method_without_a_price_is_an_internal_error() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let config = Arc::new(EscrowConfig {
        pricing: Pricing::PerMethod([(METHOD.to_owned(), Amount::from(PRICE))].into()),
        ..(*world.config("replica-a", Duration::from_secs(30))).clone()
    });
    let payments = PaymentService::new(world.source(&config), world.leases(), config);
    let before = world.snapshot().await;
    assert_eq!(
        refusal(payments.start(world.payment(0, PRICE), "/example.Calculator/mul").await),
        (
            PaymentErrorCode::Internal,
            "internal error: price is not defined for the Method /example.Calculator/mul".into()
        )
    );
    assert_eq!(world.snapshot().await, before);
    let transaction = payments.start(world.payment(0, PRICE), METHOD).await.unwrap();
    payments.commit(transaction).await.unwrap();
}

#[tokio::test]
async fn a_claim_with_nothing_authorised_is_refused_and_unknown_channels_are_named() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let claims = world.claims();
    let before = world.snapshot().await;
    let error = claims.start_claim(world.channel).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("authorized amount is zero , hence nothing to claim on the channel Id: {}", world.channel)
    );
    let error = claims.start_claim(ChannelId::from(12345)).await.unwrap_err();
    assert!(matches!(error, ClaimError::NotFound(_)));
    assert_eq!(error.to_string(), "channel Id 12345 was not found on blockchain or storage");
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn the_operator_lists_and_releases_a_stuck_lease_and_the_release_is_an_event() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let stuck = world.payments().start(world.payment(0, PRICE), METHOD).await.unwrap();
    std::mem::forget(stuck);
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mpe-ledger"))
            .args(args)
            .env("DATABASE_URL", &world.db.owner_url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = run(&["leases", "list"]);
    assert!(listed.contains(&format!("channel {}: held by replica-a", world.channel)), "{listed}");
    let released = run(&["leases", "release", &world.channel.to_string()]);
    assert_eq!(released.trim(), format!("channel {}: released the lease held by replica-a", world.channel));
    assert_eq!(run(&["leases", "list"]).trim(), "no leases");
    let recorded: (String, String) = sqlx::query_as(
        "SELECT stream, payload->>'holder' FROM ledger.events WHERE event_type = 'lease_released_by_operator'",
    )
    .fetch_one(&world.db.pool)
    .await
    .unwrap();
    assert_eq!(recorded, (format!("lease/{}", world.channel), "replica-a".to_owned()));
    world.pay(&world.payments(), 0, PRICE).await;
    assert_eq!(verify(&world.db.pool).await.unwrap(), vec![]);
}

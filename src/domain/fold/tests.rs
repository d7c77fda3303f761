//! Given past events, when one more event (or a requested state), then the state or a named error.

use alloy_primitives::B256;

use super::*;
use crate::domain::event::ChainBlock;
use crate::domain::types::{BlockNumber, EthAddress, GroupId};

pub(super) const ID: u64 = 42;

pub(super) fn id() -> ChannelId {
    ChannelId::from(ID)
}

pub(super) fn address(byte: u8) -> EthAddress {
    EthAddress::from_slice(&[byte; 20]).unwrap()
}

pub(super) fn sig(byte: u8) -> Signature {
    Signature([byte; 65])
}

pub(super) fn chain(nonce: u64, value: u64, expiration: u64) -> OnChainChannel {
    OnChainChannel {
        nonce: Nonce::from(nonce),
        sender: address(0x11),
        signer: address(0x33),
        recipient: address(0x22),
        group_id: GroupId([123; 32]),
        value: Amount::from(value),
        expiration: BlockNumber::from(expiration),
    }
}

pub(super) fn merged(nonce: u64, value: u64, expiration: u64) -> ChannelEvent {
    ChannelEvent::ChannelMergedFromChain {
        chain: chain(nonce, value, expiration),
        block: Some(ChainBlock { number: 5, hash: B256::repeat_byte(7) }),
    }
}

pub(super) fn paid(nonce: u64, amount: u64, signature: u8) -> ChannelEvent {
    ChannelEvent::PaymentAccepted {
        nonce: Nonce::from(nonce),
        amount: Amount::from(amount),
        signature: sig(signature),
    }
}

pub(super) fn claim_started(nonce: u64, amount: u64, signature: u8) -> ChannelEvent {
    ChannelEvent::ClaimStarted {
        nonce: Nonce::from(nonce),
        amount: Amount::from(amount),
        signature: sig(signature),
    }
}

pub(super) fn claim_finished(nonce: u64, outcome: ClaimOutcome, amount: u64) -> ChannelEvent {
    ChannelEvent::ClaimFinished {
        nonce: Nonce::from(nonce),
        outcome,
        transaction_hash: B256::repeat_byte(0xaa),
        block_number: 77,
        amount: Amount::from(amount),
    }
}

pub(super) fn given(events: &[ChannelEvent]) -> ChannelProjection {
    fold(id(), events).unwrap().unwrap()
}

pub(super) fn when(past: &[ChannelEvent], event: ChannelEvent) -> Result<ChannelProjection, FoldError> {
    apply(id(), fold(id(), past).unwrap(), &event)
}

#[test]
fn no_events_fold_to_no_channel() {
    assert_eq!(fold(id(), &[]).unwrap(), None);
}

#[test]
fn a_merge_opens_the_channel_with_nothing_authorised() {
    let state = given(&[merged(3, 100, 1000)]);
    assert_eq!(state.channel.nonce, Nonce::from(3));
    assert_eq!(state.channel.full_amount, Amount::from(100));
    assert_eq!(state.channel.expiration, BlockNumber::from(1000));
    assert_eq!(state.channel.authorized_amount, Amount::ZERO);
    assert_eq!(state.channel.signature, None);
    assert_eq!(state.channel.state, ChannelState::Open);
    assert!(state.claims.is_empty());
}

#[test]
fn a_payment_cannot_open_a_channel() {
    assert_eq!(when(&[], paid(0, 1, 1)), Err(FoldError::ChannelNotOpened { channel_id: id() }));
}

#[test]
fn payments_raise_the_authorised_amount_and_keep_the_last_signature() {
    let state = given(&[merged(0, 100, 1000), paid(0, 10, 1), paid(0, 20, 2)]);
    assert_eq!(state.channel.authorized_amount, Amount::from(20));
    assert_eq!(state.channel.signature, Some(sig(2)));
}

#[test]
fn a_payment_with_the_same_amount_is_accepted_for_price_zero() {
    let state = given(&[merged(0, 100, 1000), paid(0, 10, 1), paid(0, 10, 2)]);
    assert_eq!(state.channel.authorized_amount, Amount::from(10));
    assert_eq!(state.channel.signature, Some(sig(2)));
}

#[test]
fn the_authorised_amount_never_decreases_within_a_nonce() {
    assert_eq!(
        when(&[merged(0, 100, 1000), paid(0, 20, 1)], paid(0, 19, 2)),
        Err(FoldError::AuthorizedAmountDecreased {
            channel_id: id(),
            current: Amount::from(20),
            proposed: Amount::from(19)
        })
    );
}

#[test]
fn the_authorised_amount_never_exceeds_the_full_amount() {
    assert_eq!(
        when(&[merged(0, 100, 1000)], paid(0, 101, 1)),
        Err(FoldError::AuthorizedAmountExceedsFullAmount {
            channel_id: id(),
            authorized: Amount::from(101),
            full: Amount::from(100)
        })
    );
    assert!(when(&[merged(0, 100, 1000)], paid(0, 100, 1)).is_ok());
}

#[test]
fn a_payment_at_another_nonce_is_refused() {
    assert_eq!(
        when(&[merged(2, 100, 1000)], paid(1, 10, 1)),
        Err(FoldError::PaymentNonceMismatch {
            channel_id: id(),
            channel: Nonce::from(2),
            payment: Nonce::from(1)
        })
    );
}

#[test]
fn a_merge_at_the_same_nonce_takes_value_and_expiration_and_keeps_the_authorisation() {
    let state = given(&[merged(0, 100, 1000), paid(0, 10, 1), merged(0, 150, 2000)]);
    assert_eq!(state.channel.full_amount, Amount::from(150));
    assert_eq!(state.channel.expiration, BlockNumber::from(2000));
    assert_eq!(state.channel.authorized_amount, Amount::from(10));
    assert_eq!(state.channel.signature, Some(sig(1)));
}

#[test]
fn a_merge_with_a_newer_nonce_resets_the_authorisation() {
    let state = given(&[merged(0, 100, 1000), paid(0, 10, 1), merged(1, 90, 1000)]);
    assert_eq!(state.channel.nonce, Nonce::from(1));
    assert_eq!(state.channel.authorized_amount, Amount::ZERO);
    assert_eq!(state.channel.signature, None);
    assert_eq!(state.channel.full_amount, Amount::from(90));
}

#[test]
fn a_merge_never_moves_the_nonce_backwards() {
    assert_eq!(
        when(&[merged(3, 100, 1000)], merged(2, 100, 1000)),
        Err(FoldError::NonceWentBackwards {
            channel_id: id(),
            ledger: Nonce::from(3),
            chain: Nonce::from(2)
        })
    );
}

#[test]
fn a_merge_that_would_leave_more_authorised_than_the_value_is_refused() {
    assert_eq!(
        when(&[merged(0, 100, 1000), paid(0, 50, 1)], merged(0, 40, 1000)),
        Err(FoldError::AuthorizedAmountExceedsFullAmount {
            channel_id: id(),
            authorized: Amount::from(50),
            full: Amount::from(40)
        })
    );
}

#[test]
fn a_merge_that_changes_the_parties_is_refused() {
    let mut other = chain(0, 100, 1000);
    other.recipient = address(0x99);
    assert_eq!(
        when(&[merged(0, 100, 1000)], ChannelEvent::ChannelMergedFromChain { chain: other, block: None }),
        Err(FoldError::ChannelPartiesChanged { channel_id: id() })
    );
}

#[test]
fn a_claim_raises_the_nonce_exactly_once_and_moves_the_payment_into_claims() {
    let state = given(&[merged(3, 100, 1000), paid(3, 30, 1), claim_started(3, 30, 1)]);
    assert_eq!(state.channel.nonce, Nonce::from(4));
    assert_eq!(state.channel.full_amount, Amount::from(70));
    assert_eq!(state.channel.authorized_amount, Amount::ZERO);
    assert_eq!(state.channel.signature, None);
    let claim = &state.claims[&Nonce::from(3)];
    assert_eq!((claim.amount, &claim.signature, &claim.finished), (Amount::from(30), &sig(1), &None));
}

#[test]
fn the_same_nonce_cannot_be_claimed_twice() {
    let past = [merged(3, 100, 1000), paid(3, 30, 1), claim_started(3, 30, 1)];
    assert_eq!(
        when(&past, claim_started(3, 30, 1)),
        Err(FoldError::ClaimNonceMismatch {
            channel_id: id(),
            channel: Nonce::from(4),
            claim: Nonce::from(3)
        })
    );
}

#[test]
fn a_claim_with_nothing_authorised_is_refused() {
    assert_eq!(
        when(&[merged(3, 100, 1000)], claim_started(3, 0, 1)),
        Err(FoldError::NothingToClaim { channel_id: id(), nonce: Nonce::from(3) })
    );
}

#[test]
fn a_claim_must_take_exactly_the_authorised_amount() {
    assert_eq!(
        when(&[merged(3, 100, 1000), paid(3, 30, 1)], claim_started(3, 29, 1)),
        Err(FoldError::ClaimAmountMismatch {
            channel_id: id(),
            authorized: Amount::from(30),
            claim: Amount::from(29)
        })
    );
}

#[test]
fn a_claim_must_carry_the_last_payments_signature() {
    assert_eq!(
        when(&[merged(3, 100, 1000), paid(3, 30, 1)], claim_started(3, 30, 2)),
        Err(FoldError::ClaimSignatureMismatch { channel_id: id() })
    );
}

#[test]
fn payments_after_a_claim_start_at_the_new_nonce_are_accepted() {
    let state = given(&[merged(3, 100, 1000), paid(3, 30, 1), claim_started(3, 30, 1), paid(4, 5, 2)]);
    assert_eq!(state.channel.authorized_amount, Amount::from(5));
    assert_eq!(state.channel.nonce, Nonce::from(4));
}

#[test]
fn a_claim_finish_records_the_actual_amount_and_keeps_the_claim() {
    let past = [merged(3, 100, 1000), paid(3, 30, 1), claim_started(3, 30, 1)];
    let state = when(&past, claim_finished(3, ClaimOutcome::ClaimedByRecipient, 25)).unwrap();
    let finish = state.claims[&Nonce::from(3)].finished.clone().unwrap();
    assert_eq!(finish.amount, Amount::from(25));
    assert_eq!(finish.outcome, ClaimOutcome::ClaimedByRecipient);
    assert_eq!(finish.block_number, 77);
}

#[test]
fn a_sender_reclaim_is_recorded_as_such() {
    let past = [merged(3, 100, 1000), paid(3, 30, 1), claim_started(3, 30, 1)];
    let state = when(&past, claim_finished(3, ClaimOutcome::ReclaimedBySender, 70)).unwrap();
    assert_eq!(
        state.claims[&Nonce::from(3)].finished.as_ref().unwrap().outcome,
        ClaimOutcome::ReclaimedBySender
    );
}

#[test]
fn a_recipient_cannot_have_claimed_more_than_was_authorised() {
    let past = [merged(3, 100, 1000), paid(3, 30, 1), claim_started(3, 30, 1)];
    assert_eq!(
        when(&past, claim_finished(3, ClaimOutcome::ClaimedByRecipient, 31)),
        Err(FoldError::ClaimedMoreThanAuthorized {
            channel_id: id(),
            nonce: Nonce::from(3),
            authorized: Amount::from(30),
            claimed: Amount::from(31)
        })
    );
}

#[test]
fn a_claim_finishes_at_most_once() {
    let past = [
        merged(3, 100, 1000),
        paid(3, 30, 1),
        claim_started(3, 30, 1),
        claim_finished(3, ClaimOutcome::ClaimedByRecipient, 30),
    ];
    assert_eq!(
        when(&past, claim_finished(3, ClaimOutcome::ClaimedByRecipient, 30)),
        Err(FoldError::ClaimAlreadyFinished { channel_id: id(), nonce: Nonce::from(3) })
    );
}

#[test]
fn only_a_started_claim_can_finish() {
    assert_eq!(
        when(&[merged(3, 100, 1000)], claim_finished(3, ClaimOutcome::ClaimedByRecipient, 1)),
        Err(FoldError::UnknownClaim { channel_id: id(), nonce: Nonce::from(3) })
    );
}

#[test]
fn the_last_nonce_cannot_be_claimed() {
    let max = OnChainChannel { nonce: Nonce(alloy_primitives::U256::MAX), ..chain(0, 100, 1000) };
    let past = [
        ChannelEvent::ChannelMergedFromChain { chain: max, block: None },
        ChannelEvent::PaymentAccepted {
            nonce: Nonce(alloy_primitives::U256::MAX),
            amount: Amount::from(1),
            signature: sig(1),
        },
    ];
    assert!(matches!(
        when(
            &past,
            ChannelEvent::ClaimStarted {
                nonce: Nonce(alloy_primitives::U256::MAX),
                amount: Amount::from(1),
                signature: sig(1)
            }
        ),
        Err(FoldError::NonceExhausted { .. })
    ));
}

// ---- events_for_change: the state-based store's requests described as events ----

fn data(nonce: u64, full: u64, authorized: u64, signature: Option<u8>) -> PaymentChannelData {
    PaymentChannelData {
        authorized_amount: Amount::from(authorized),
        signature: signature.map(sig),
        ..PaymentChannelData::from_chain(id(), &chain(nonce, full, 1000))
    }
}

#[test]
fn a_new_channel_is_described_by_a_merge() {
    let events = events_for_change(None, &data(0, 100, 0, None)).unwrap();
    assert_eq!(
        events,
        vec![ChannelEvent::ChannelMergedFromChain { chain: chain(0, 100, 1000), block: None }]
    );
}

#[test]
fn a_new_channel_with_a_payment_is_a_merge_then_a_payment() {
    let events = events_for_change(None, &data(0, 100, 10, Some(1))).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1], paid(0, 10, 1));
}

#[test]
fn an_unchanged_state_needs_no_event() {
    let current = given(&[merged(0, 100, 1000), paid(0, 10, 1)]);
    assert_eq!(events_for_change(Some(&current), &current.channel.clone()).unwrap(), vec![]);
}

#[test]
fn a_raised_authorisation_is_a_payment() {
    let current = given(&[merged(0, 100, 1000), paid(0, 10, 1)]);
    assert_eq!(events_for_change(Some(&current), &data(0, 100, 20, Some(2))).unwrap(), vec![paid(0, 20, 2)]);
}

#[test]
fn the_seed_claim_update_is_a_claim_start() {
    let current = given(&[merged(0, 100, 1000), paid(0, 10, 1)]);
    assert_eq!(
        events_for_change(Some(&current), &data(1, 90, 0, None)).unwrap(),
        vec![claim_started(0, 10, 1)]
    );
}

#[test]
fn new_chain_values_with_a_payment_are_a_merge_then_a_payment() {
    let current = given(&[merged(0, 100, 1000), paid(0, 10, 1)]);
    let events = events_for_change(Some(&current), &data(0, 200, 20, Some(2))).unwrap();
    assert_eq!(
        events,
        vec![
            ChannelEvent::ChannelMergedFromChain { chain: chain(0, 200, 1000), block: None },
            paid(0, 20, 2)
        ]
    );
}

#[test]
fn a_lowered_authorisation_is_refused_by_name() {
    let current = given(&[merged(0, 100, 1000), paid(0, 10, 1)]);
    assert!(matches!(
        events_for_change(Some(&current), &data(0, 100, 5, Some(2))),
        Err(FoldError::AuthorizedAmountDecreased { .. })
    ));
}

#[test]
fn an_authorisation_without_signature_is_refused() {
    assert!(matches!(
        events_for_change(None, &data(0, 100, 5, None)),
        Err(FoldError::UndescribableChange { .. })
    ));
}

#[test]
fn a_closed_state_is_refused() {
    let closed = PaymentChannelData { state: ChannelState::Closed, ..data(0, 100, 0, None) };
    assert!(matches!(events_for_change(None, &closed), Err(FoldError::UndescribableChange { .. })));
}

#[test]
fn clearing_a_signature_at_the_same_nonce_is_refused() {
    let current = given(&[merged(0, 100, 1000), paid(0, 10, 1)]);
    assert!(matches!(
        events_for_change(Some(&current), &data(0, 100, 10, None)),
        Err(FoldError::UndescribableChange { .. })
    ));
}

#[test]
fn every_described_change_folds_to_the_requested_state() {
    let current = given(&[merged(0, 100, 1000), paid(0, 10, 1)]);
    for requested in
        [data(0, 100, 30, Some(3)), data(1, 90, 0, None), data(2, 50, 0, None), data(0, 300, 10, Some(1))]
    {
        let events = events_for_change(Some(&current), &requested).unwrap();
        let folded = replay(id(), Some(current.clone()), &events).unwrap().unwrap();
        assert_eq!(folded.channel, requested);
    }
}

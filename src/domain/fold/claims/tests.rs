//! Given past events, when a claim lands or the sender reclaims, then the state or a named error.

use alloy_primitives::B256;

use crate::domain::event::{ChannelEvent, ClaimOutcome};
use crate::domain::fold::tests::{claim_finished, claim_started, given, id, merged, paid, when};
use crate::domain::fold::{ClaimFinish, FoldError, fold};
use crate::domain::types::{Amount, BlockNumber, Nonce};

fn landed(nonce: u64, actual: u64, planned: u64) -> ChannelEvent {
    ChannelEvent::ClaimLanded {
        nonce: Nonce::from(nonce),
        transaction_hash: B256::repeat_byte(0xbb),
        block_number: 80,
        actual_amount: Amount::from(actual),
        planned_amount: Amount::from(planned),
    }
}

fn reclaimed(nonce: u64, taken_back: u64, loss: u64) -> ChannelEvent {
    ChannelEvent::SenderReclaimed {
        nonce: Nonce::from(nonce),
        transaction_hash: B256::repeat_byte(0xcc),
        block_number: 90,
        value_taken_back: Amount::from(taken_back),
        provider_loss: Amount::from(loss),
    }
}

/// A channel of 100 at nonce 3, 30 paid, that claim started (the ledger at nonce 4, 70 left).
fn claim_pending() -> Vec<ChannelEvent> {
    vec![merged(3, 100, 1000), paid(3, 30, 1), claim_started(3, 30, 1)]
}

#[test]
fn a_landed_claim_records_actual_and_planned_amounts() {
    let state = when(&claim_pending(), landed(3, 25, 30)).unwrap();
    assert_eq!(
        state.claims[&Nonce::from(3)].finished,
        Some(ClaimFinish {
            outcome: ClaimOutcome::ClaimedByRecipient,
            transaction_hash: B256::repeat_byte(0xbb),
            block_number: 80,
            amount: Amount::from(25),
            planned_amount: Some(Amount::from(30)),
        })
    );
}

#[test]
fn a_landed_claim_never_exceeds_its_plan_nor_the_plan_the_claim() {
    assert_eq!(
        when(&claim_pending(), landed(3, 31, 30)),
        Err(FoldError::ClaimedMoreThanPlanned {
            channel_id: id(),
            nonce: Nonce::from(3),
            planned: Amount::from(30),
            actual: Amount::from(31)
        })
    );
    assert!(matches!(
        when(&claim_pending(), landed(3, 30, 31)),
        Err(FoldError::ClaimedMoreThanAuthorized { .. })
    ));
}

#[test]
fn a_claim_ends_once_whichever_fact_ended_it() {
    for first in
        [landed(3, 30, 30), reclaimed(3, 100, 30), claim_finished(3, ClaimOutcome::ClaimedByRecipient, 30)]
    {
        let mut past = claim_pending();
        past.push(first);
        for second in [landed(3, 30, 30), reclaimed(3, 100, 30)] {
            assert_eq!(
                when(&past, second),
                Err(FoldError::ClaimAlreadyFinished { channel_id: id(), nonce: Nonce::from(3) })
            );
        }
    }
}

#[test]
fn a_reclaim_voids_the_pending_claim_whose_amount_is_the_providers_loss() {
    let state = when(&claim_pending(), reclaimed(3, 100, 30)).unwrap();
    let finish = state.claims[&Nonce::from(3)].finished.clone().unwrap();
    assert_eq!(
        (finish.outcome, finish.amount, finish.planned_amount),
        (ClaimOutcome::ReclaimedBySender, Amount::from(100), None)
    );
    // The channel, already at the next nonce, is left for the next merge to bring the chain's value.
    assert_eq!(state.channel, given(&claim_pending()).channel);
    assert_eq!(
        when(&claim_pending(), reclaimed(3, 100, 29)),
        Err(FoldError::ReclaimLossMismatch {
            channel_id: id(),
            nonce: Nonce::from(3),
            authorized: Amount::from(30),
            recorded: Amount::from(29)
        })
    );
}

#[test]
fn a_reclaim_with_no_claim_started_loses_the_authorisation_and_takes_the_chains_state() {
    let past = [merged(3, 100, 1000), paid(3, 30, 1)];
    let state = when(&past, reclaimed(3, 100, 30)).unwrap();
    assert_eq!(state.channel.nonce, Nonce::from(4));
    assert_eq!((state.channel.full_amount, state.channel.expiration), (Amount::ZERO, BlockNumber::ZERO));
    assert_eq!((state.channel.authorized_amount, state.channel.signature.clone()), (Amount::ZERO, None));
    assert!(state.claims.is_empty());
    assert!(matches!(when(&past, reclaimed(3, 100, 20)), Err(FoldError::ReclaimLossMismatch { .. })));
    assert_eq!(
        when(&past, reclaimed(2, 100, 30)),
        Err(FoldError::ReclaimNonceMismatch {
            channel_id: id(),
            channel: Nonce::from(3),
            reclaim: Nonce::from(2)
        })
    );
}

/// The named exception: payments at nonce 4 made while the claim of nonce 3 was pending stay
/// recorded when the reclaim empties the channel, before and after the reclaim is recorded.
#[test]
fn after_a_reclaim_the_authorisation_at_the_chains_nonce_stays_while_the_value_is_zero() {
    let mut past = claim_pending();
    past.push(paid(4, 5, 2));
    for recorded in [false, true] {
        let mut past = past.clone();
        if recorded {
            past.push(reclaimed(3, 100, 30));
        }
        let state = when(&past, merged(4, 0, 0)).unwrap();
        assert_eq!(
            (state.channel.full_amount, state.channel.authorized_amount),
            (Amount::ZERO, Amount::from(5))
        );
        past.push(merged(4, 0, 0));
        // New payments are refused by the value check, and so is a claim start.
        assert!(matches!(
            when(&past, paid(4, 6, 3)),
            Err(FoldError::AuthorizedAmountExceedsFullAmount { .. })
        ));
        assert_eq!(
            when(&past, claim_started(4, 5, 2)),
            Err(FoldError::ClaimExceedsFullAmount {
                channel_id: id(),
                nonce: Nonce::from(4),
                authorized: Amount::from(5),
                full: Amount::ZERO
            })
        );
        // The sender re-funds and extends: payments at the same nonce go on from the kept authorisation.
        past.push(merged(4, 50, 2000));
        past.push(paid(4, 15, 3));
        let state = fold(id(), &past).unwrap().unwrap();
        assert_eq!(
            (state.channel.nonce, state.channel.authorized_amount),
            (Nonce::from(4), Amount::from(15))
        );
    }
}

#[test]
fn without_a_reclaim_a_merge_below_the_authorisation_is_still_refused() {
    // The claim of nonce 3 landed: a value below the authorisation at nonce 4 cannot be a reclaim.
    let mut past = claim_pending();
    past.extend([landed(3, 30, 30), paid(4, 5, 2)]);
    assert!(matches!(when(&past, merged(4, 0, 0)), Err(FoldError::AuthorizedAmountExceedsFullAmount { .. })));
}

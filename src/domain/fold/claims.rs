//! How claim events change a channel's projection: a claim starts, lands (the recipient's
//! `channelClaim`), or is voided by the sender's reclaim; `claim finished` is the older form of the
//! last two (see `event`). The invariants are the fold's (`fold` module doc).

use alloy_primitives::B256;

use super::{Claim, ClaimFinish, FoldError};
use crate::domain::channel::PaymentChannelData;
use crate::domain::event::ClaimOutcome;
use crate::domain::fold::ChannelProjection;
use crate::domain::types::{Amount, BlockNumber, Nonce, Signature};

/// The provider starts claiming the last signed payment: the nonce moves on by one and the full
/// amount drops by the claimed amount.
pub(super) fn start(
    state: &mut ChannelProjection,
    nonce: Nonce,
    amount: Amount,
    signature: &Signature,
) -> Result<(), FoldError> {
    let channel = &mut state.channel;
    let channel_id = channel.channel_id;
    if nonce != channel.nonce {
        return Err(FoldError::ClaimNonceMismatch { channel_id, channel: channel.nonce, claim: nonce });
    }
    if channel.authorized_amount == Amount::ZERO || channel.signature.is_none() {
        return Err(FoldError::NothingToClaim { channel_id, nonce });
    }
    if amount != channel.authorized_amount {
        return Err(FoldError::ClaimAmountMismatch {
            channel_id,
            authorized: channel.authorized_amount,
            claim: amount,
        });
    }
    if channel.signature.as_ref() != Some(signature) {
        return Err(FoldError::ClaimSignatureMismatch { channel_id });
    }
    // Only after a sender's reclaim can the authorisation exceed the value; the chain would refuse
    // this claim (`plannedAmount <= value`) until the sender re-funds.
    let remaining = channel.full_amount.0.checked_sub(amount.0).ok_or(FoldError::ClaimExceedsFullAmount {
        channel_id,
        nonce,
        authorized: amount,
        full: channel.full_amount,
    })?;
    let next = nonce.next().ok_or(FoldError::NonceExhausted { channel_id, nonce })?;
    channel.nonce = next;
    channel.full_amount = Amount(remaining);
    channel.authorized_amount = Amount::ZERO;
    channel.signature = None;
    state.claims.insert(nonce, Claim { nonce, amount, signature: signature.clone(), finished: None });
    Ok(())
}

/// The claim started at `nonce`, still open.
fn open_claim(state: &mut ChannelProjection, nonce: Nonce) -> Result<&mut Claim, FoldError> {
    let channel_id = state.channel.channel_id;
    let claim = state.claims.get_mut(&nonce).ok_or(FoldError::UnknownClaim { channel_id, nonce })?;
    if claim.finished.is_some() {
        return Err(FoldError::ClaimAlreadyFinished { channel_id, nonce });
    }
    Ok(claim)
}

/// The recipient's claim landed: at most the planned amount, planned at most the claim's amount.
pub(super) fn landed(
    state: &mut ChannelProjection,
    nonce: Nonce,
    transaction_hash: B256,
    block_number: u64,
    actual: Amount,
    planned: Amount,
) -> Result<(), FoldError> {
    let channel_id = state.channel.channel_id;
    let claim = open_claim(state, nonce)?;
    if planned > claim.amount {
        return Err(FoldError::ClaimedMoreThanAuthorized {
            channel_id,
            nonce,
            authorized: claim.amount,
            claimed: planned,
        });
    }
    if actual > planned {
        return Err(FoldError::ClaimedMoreThanPlanned { channel_id, nonce, planned, actual });
    }
    claim.finished = Some(ClaimFinish {
        outcome: ClaimOutcome::ClaimedByRecipient,
        transaction_hash,
        block_number,
        amount: actual,
        planned_amount: Some(planned),
    });
    Ok(())
}

/// The sender reclaimed after expiry while the chain was at `nonce`. With a claim started at
/// `nonce`, that claim is void and its amount is the loss; the channel (already at the next nonce)
/// keeps its state, payments at its nonce included: the next merge brings the chain's value. With
/// no claim there, the channel must still be at `nonce`: its authorisation is the loss, and it
/// takes the chain's state after a reclaim.
pub(super) fn reclaimed(
    state: &mut ChannelProjection,
    nonce: Nonce,
    transaction_hash: B256,
    block_number: u64,
    value_taken_back: Amount,
    provider_loss: Amount,
) -> Result<(), FoldError> {
    let channel_id = state.channel.channel_id;
    let finish = ClaimFinish {
        outcome: ClaimOutcome::ReclaimedBySender,
        transaction_hash,
        block_number,
        amount: value_taken_back,
        planned_amount: None,
    };
    if state.claims.contains_key(&nonce) {
        let claim = open_claim(state, nonce)?;
        if provider_loss != claim.amount {
            return Err(FoldError::ReclaimLossMismatch {
                channel_id,
                nonce,
                authorized: claim.amount,
                recorded: provider_loss,
            });
        }
        claim.finished = Some(finish);
        return Ok(());
    }
    let channel = &mut state.channel;
    if channel.nonce != nonce {
        return Err(FoldError::ReclaimNonceMismatch { channel_id, channel: channel.nonce, reclaim: nonce });
    }
    if provider_loss != channel.authorized_amount {
        return Err(FoldError::ReclaimLossMismatch {
            channel_id,
            nonce,
            authorized: channel.authorized_amount,
            recorded: provider_loss,
        });
    }
    let next = nonce.next().ok_or(FoldError::NonceExhausted { channel_id, nonce })?;
    *channel = PaymentChannelData {
        nonce: next,
        full_amount: Amount::ZERO,
        expiration: BlockNumber::ZERO,
        authorized_amount: Amount::ZERO,
        signature: None,
        ..channel.clone()
    };
    Ok(())
}

/// A `claim finished` written before `claim landed` and `sender reclaimed`: folded as it always was.
pub(super) fn legacy_finished(
    state: &mut ChannelProjection,
    nonce: Nonce,
    outcome: ClaimOutcome,
    transaction_hash: B256,
    block_number: u64,
    amount: Amount,
) -> Result<(), FoldError> {
    let channel_id = state.channel.channel_id;
    let claim = open_claim(state, nonce)?;
    if outcome == ClaimOutcome::ClaimedByRecipient && amount > claim.amount {
        return Err(FoldError::ClaimedMoreThanAuthorized {
            channel_id,
            nonce,
            authorized: claim.amount,
            claimed: amount,
        });
    }
    claim.finished =
        Some(ClaimFinish { outcome, transaction_hash, block_number, amount, planned_amount: None });
    Ok(())
}

#[cfg(test)]
mod tests;

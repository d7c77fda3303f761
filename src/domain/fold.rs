//! The pure fold from a channel's events to its state, and the reverse: which events describe a
//! change of state requested through the state-based channel store.
//!
//! Invariants the fold enforces (each violation is a named [`FoldError`]):
//! - a channel's first event is `channel merged from chain`; nothing else can open a stream;
//! - sender, signer, recipient and group never change (they are immutable on chain);
//! - the nonce never goes backwards; a newer chain nonce resets the authorised amount;
//! - within one nonce the authorised amount never decreases and never exceeds the full amount;
//! - a payment is at the channel's current nonce;
//! - a claim takes exactly the authorised amount and signature of the current nonce, raises the
//!   nonce exactly once and lowers the full amount by the claimed amount;
//! - a claim finishes at most once, and only a claim that was started.

use std::collections::BTreeMap;

use super::channel::{ChannelState, OnChainChannel, PaymentChannelData};
use super::event::{ChannelEvent, ClaimOutcome};
use super::types::{Amount, ChannelId, Nonce, Signature};

/// A claim of one nonce's last signed payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub nonce: Nonce,
    pub amount: Amount,
    pub signature: Signature,
    pub finished: Option<ClaimFinish>,
}

/// How a claim left the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimFinish {
    pub outcome: ClaimOutcome,
    pub transaction_hash: alloy_primitives::B256,
    pub block_number: u64,
    pub amount: Amount,
}

/// A channel's folded state: its data and every claim ever started on it (history is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelProjection {
    pub channel: PaymentChannelData,
    pub claims: BTreeMap<Nonce, Claim>,
}

/// An event that would break an invariant of the channel (module doc).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    #[error("channel {channel_id} has no state yet: its first event must be a merge from chain")]
    ChannelNotOpened { channel_id: ChannelId },
    #[error("channel {channel_id}: sender, signer, recipient or group changed")]
    ChannelPartiesChanged { channel_id: ChannelId },
    #[error("channel {channel_id}: chain nonce {chain} is below the ledger's nonce {ledger}")]
    NonceWentBackwards { channel_id: ChannelId, ledger: Nonce, chain: Nonce },
    #[error("channel {channel_id}: payment at nonce {payment} but the channel is at nonce {channel}")]
    PaymentNonceMismatch { channel_id: ChannelId, channel: Nonce, payment: Nonce },
    #[error("channel {channel_id}: authorised amount would decrease from {current} to {proposed}")]
    AuthorizedAmountDecreased { channel_id: ChannelId, current: Amount, proposed: Amount },
    #[error("channel {channel_id}: authorised amount {authorized} exceeds the full amount {full}")]
    AuthorizedAmountExceedsFullAmount { channel_id: ChannelId, authorized: Amount, full: Amount },
    #[error("channel {channel_id}: claim at nonce {claim} but the channel is at nonce {channel}")]
    ClaimNonceMismatch { channel_id: ChannelId, channel: Nonce, claim: Nonce },
    #[error("channel {channel_id}: claim of {claim} but {authorized} is authorised")]
    ClaimAmountMismatch { channel_id: ChannelId, authorized: Amount, claim: Amount },
    #[error("channel {channel_id}: claim signature is not the last accepted payment's")]
    ClaimSignatureMismatch { channel_id: ChannelId },
    #[error("channel {channel_id}: nothing to claim at nonce {nonce}")]
    NothingToClaim { channel_id: ChannelId, nonce: Nonce },
    #[error("channel {channel_id}: nonce {nonce} cannot be raised any further")]
    NonceExhausted { channel_id: ChannelId, nonce: Nonce },
    #[error("channel {channel_id}: no claim was started at nonce {nonce}")]
    UnknownClaim { channel_id: ChannelId, nonce: Nonce },
    #[error("channel {channel_id}: the claim at nonce {nonce} has already finished")]
    ClaimAlreadyFinished { channel_id: ChannelId, nonce: Nonce },
    #[error(
        "channel {channel_id}: {claimed} claimed on chain but only {authorized} was authorised at nonce {nonce}"
    )]
    ClaimedMoreThanAuthorized { channel_id: ChannelId, nonce: Nonce, authorized: Amount, claimed: Amount },
    #[error("channel {channel_id}: the requested state cannot be described by events: {reason}")]
    UndescribableChange { channel_id: ChannelId, reason: &'static str },
}

/// Applies one event to a channel's state (`None` before its first event).
pub fn apply(
    channel_id: ChannelId,
    state: Option<ChannelProjection>,
    event: &ChannelEvent,
) -> Result<ChannelProjection, FoldError> {
    let Some(mut state) = state else {
        return match event {
            ChannelEvent::ChannelMergedFromChain { chain, .. } => Ok(ChannelProjection {
                channel: PaymentChannelData::from_chain(channel_id, chain),
                claims: BTreeMap::new(),
            }),
            _ => Err(FoldError::ChannelNotOpened { channel_id }),
        };
    };
    let channel = &mut state.channel;
    match event {
        ChannelEvent::ChannelMergedFromChain { chain, .. } => merge(channel, chain)?,
        ChannelEvent::PaymentAccepted { nonce, amount, signature } => {
            if *nonce != channel.nonce {
                return Err(FoldError::PaymentNonceMismatch {
                    channel_id,
                    channel: channel.nonce,
                    payment: *nonce,
                });
            }
            if *amount < channel.authorized_amount {
                return Err(FoldError::AuthorizedAmountDecreased {
                    channel_id,
                    current: channel.authorized_amount,
                    proposed: *amount,
                });
            }
            if *amount > channel.full_amount {
                return Err(FoldError::AuthorizedAmountExceedsFullAmount {
                    channel_id,
                    authorized: *amount,
                    full: channel.full_amount,
                });
            }
            channel.authorized_amount = *amount;
            channel.signature = Some(signature.clone());
        }
        ChannelEvent::ClaimStarted { nonce, amount, signature } => {
            if *nonce != channel.nonce {
                return Err(FoldError::ClaimNonceMismatch {
                    channel_id,
                    channel: channel.nonce,
                    claim: *nonce,
                });
            }
            if channel.authorized_amount == Amount::ZERO || channel.signature.is_none() {
                return Err(FoldError::NothingToClaim { channel_id, nonce: *nonce });
            }
            if *amount != channel.authorized_amount {
                return Err(FoldError::ClaimAmountMismatch {
                    channel_id,
                    authorized: channel.authorized_amount,
                    claim: *amount,
                });
            }
            if channel.signature.as_ref() != Some(signature) {
                return Err(FoldError::ClaimSignatureMismatch { channel_id });
            }
            let next = nonce.next().ok_or(FoldError::NonceExhausted { channel_id, nonce: *nonce })?;
            channel.nonce = next;
            channel.full_amount = channel
                .full_amount
                .checked_sub(*amount)
                .expect("authorised amount never exceeds the full amount");
            channel.authorized_amount = Amount::ZERO;
            channel.signature = None;
            state.claims.insert(
                *nonce,
                Claim { nonce: *nonce, amount: *amount, signature: signature.clone(), finished: None },
            );
        }
        ChannelEvent::ClaimFinished { nonce, outcome, transaction_hash, block_number, amount } => {
            let claim =
                state.claims.get_mut(nonce).ok_or(FoldError::UnknownClaim { channel_id, nonce: *nonce })?;
            if claim.finished.is_some() {
                return Err(FoldError::ClaimAlreadyFinished { channel_id, nonce: *nonce });
            }
            if *outcome == ClaimOutcome::ClaimedByRecipient && *amount > claim.amount {
                return Err(FoldError::ClaimedMoreThanAuthorized {
                    channel_id,
                    nonce: *nonce,
                    authorized: claim.amount,
                    claimed: *amount,
                });
            }
            claim.finished = Some(ClaimFinish {
                outcome: *outcome,
                transaction_hash: *transaction_hash,
                block_number: *block_number,
                amount: *amount,
            });
        }
    }
    Ok(state)
}

/// The seed's merge rule (escrow.md §3.5) as an event: a newer chain nonce replaces the state and
/// resets the authorisation; the same nonce takes the chain's value and expiration.
fn merge(channel: &mut PaymentChannelData, chain: &OnChainChannel) -> Result<(), FoldError> {
    let channel_id = channel.channel_id;
    if !channel.same_parties(chain) {
        return Err(FoldError::ChannelPartiesChanged { channel_id });
    }
    if chain.nonce < channel.nonce {
        return Err(FoldError::NonceWentBackwards { channel_id, ledger: channel.nonce, chain: chain.nonce });
    }
    if chain.nonce > channel.nonce {
        *channel =
            PaymentChannelData { state: channel.state, ..PaymentChannelData::from_chain(channel_id, chain) };
        return Ok(());
    }
    if channel.authorized_amount > chain.value {
        return Err(FoldError::AuthorizedAmountExceedsFullAmount {
            channel_id,
            authorized: channel.authorized_amount,
            full: chain.value,
        });
    }
    channel.full_amount = chain.value;
    channel.expiration = chain.expiration;
    Ok(())
}

/// Folds a channel's events from the start.
pub fn fold<'a>(
    channel_id: ChannelId,
    events: impl IntoIterator<Item = &'a ChannelEvent>,
) -> Result<Option<ChannelProjection>, FoldError> {
    events.into_iter().try_fold(None, |state, event| apply(channel_id, state, event).map(Some))
}

/// The events that take a channel from `current` to `requested`, for the state-based channel store
/// (the seed's Put/CompareAndSwap of a whole `PaymentChannelData`). A request that no sequence of
/// events describes is refused rather than written: the log must say what happened.
///
/// Recognised changes: none (no events); a claim start (nonce + 1, full amount lowered by the
/// authorised amount, authorisation cleared); a merge from chain (new nonce, value or expiration)
/// optionally followed by a payment (new authorised amount or signature) at the resulting nonce.
pub fn events_for_change(
    current: Option<&ChannelProjection>,
    requested: &PaymentChannelData,
) -> Result<Vec<ChannelEvent>, FoldError> {
    let channel_id = requested.channel_id;
    if requested.state != ChannelState::Open {
        return Err(FoldError::UndescribableChange {
            channel_id,
            reason: "a closed channel state is never written by the ledger",
        });
    }
    let mut events = Vec::new();
    match current {
        Some(current) if current.channel == *requested => return Ok(events),
        Some(current) if is_claim_start(&current.channel, requested) => {
            events.push(ChannelEvent::ClaimStarted {
                nonce: current.channel.nonce,
                amount: current.channel.authorized_amount,
                signature: current.channel.signature.clone().expect("checked by is_claim_start"),
            });
            return check_describes(current, requested, events);
        }
        _ => {}
    }
    let chain = requested.on_chain_part();
    if current.is_none_or(|current| current.channel.on_chain_part() != chain) {
        events.push(ChannelEvent::ChannelMergedFromChain { chain, block: None });
    }
    let merged = replay(channel_id, current.cloned(), &events)?.expect("a merge opens the channel");
    if merged.channel.authorized_amount != requested.authorized_amount
        || merged.channel.signature != requested.signature
    {
        let signature = requested.signature.clone().ok_or(FoldError::UndescribableChange {
            channel_id,
            reason: "an authorised amount without a signature",
        })?;
        events.push(ChannelEvent::PaymentAccepted {
            nonce: requested.nonce,
            amount: requested.authorized_amount,
            signature,
        });
    }
    match current {
        Some(current) => check_describes(current, requested, events),
        None => {
            let folded = replay(channel_id, None, &events)?.expect("a merge opens the channel");
            if folded.channel != *requested {
                return Err(FoldError::UndescribableChange {
                    channel_id,
                    reason: "the events do not reach the requested state",
                });
            }
            Ok(events)
        }
    }
}

/// Applies `events` on top of `state`.
pub fn replay(
    channel_id: ChannelId,
    state: Option<ChannelProjection>,
    events: &[ChannelEvent],
) -> Result<Option<ChannelProjection>, FoldError> {
    events.iter().try_fold(state, |state, event| apply(channel_id, state, event).map(Some))
}

fn is_claim_start(current: &PaymentChannelData, requested: &PaymentChannelData) -> bool {
    current.signature.is_some()
        && current.authorized_amount > Amount::ZERO
        && current.nonce.next() == Some(requested.nonce)
        && current.full_amount.checked_sub(current.authorized_amount) == Some(requested.full_amount)
        && requested.authorized_amount == Amount::ZERO
        && requested.signature.is_none()
        && requested.expiration == current.expiration
        && current.same_parties(&requested.on_chain_part())
}

/// Applies `events` to `current` and checks that they reach exactly `requested`.
fn check_describes(
    current: &ChannelProjection,
    requested: &PaymentChannelData,
    events: Vec<ChannelEvent>,
) -> Result<Vec<ChannelEvent>, FoldError> {
    let channel_id = requested.channel_id;
    let folded = replay(channel_id, Some(current.clone()), &events)?.expect("state was present");
    if folded.channel != *requested {
        return Err(FoldError::UndescribableChange {
            channel_id,
            reason: "the events do not reach the requested state",
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests;

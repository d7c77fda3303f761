//! The pure fold from a channel's events to its state, and the reverse: which events describe a
//! change of state requested through the state-based channel store.
//!
//! Invariants the fold enforces (each violation is a named [`FoldError`]):
//! - a channel's first event is `channel merged from chain`; nothing else can open a stream;
//! - sender, signer, recipient and group never change (they are immutable on chain);
//! - the nonce never goes backwards; a newer chain nonce resets the authorised amount;
//! - within one nonce the authorised amount never decreases and never exceeds the full amount,
//!   with one named exception, [`voided_by_reclaim`]: when the claim started at the previous nonce
//!   is pending or was ended by the sender's reclaim, a merge at the same nonce may bring a value
//!   below the authorised amount (the reclaim set it to 0; a re-fund may raise it again). The
//!   payments signed at this nonce before the reclaim stay recorded (they are still valid on chain,
//!   and claimable once the sender re-funds), while any new payment is still refused by the value
//!   check (a payment's amount never exceeds the full amount), and so is a claim start;
//! - a payment is at the channel's current nonce;
//! - a claim takes exactly the authorised amount and signature of the current nonce, raises the
//!   nonce exactly once and lowers the full amount by the claimed amount;
//! - a claim ends at most once, and only a claim that was started: `claim landed` with an actual
//!   amount at most the planned one, itself at most the claim's; `sender reclaimed` with the
//!   claim's amount as the provider's loss. A `sender reclaimed` at the channel's own nonce (no claim
//!   started there) loses exactly the authorisation at that nonce and moves the channel to the
//!   chain's state after a reclaim (next nonce, value and expiration 0, nothing authorised).
//! - `claim finished` (written before the two facts above, see `event`) folds as it always did.

use std::collections::BTreeMap;

use super::channel::{ChannelState, OnChainChannel, PaymentChannelData};
use super::event::{ChannelEvent, ClaimOutcome};
use super::types::{Amount, ChannelId, Nonce, Signature};

mod claims;

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
    /// Recipient: the actual amount claimed. Sender: the value taken back.
    pub amount: Amount,
    /// Recipient: the planned (signed) amount of the claim, from `claim landed`. `None` for a
    /// sender's reclaim, and for a claim ended by a `claim finished` written before `claim
    /// landed` existed (whose planned amount is the claim's amount).
    pub planned_amount: Option<Amount>,
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
    #[error(
        "channel {channel_id}: {actual} claimed on chain but the claim planned only {planned} at nonce {nonce}"
    )]
    ClaimedMoreThanPlanned { channel_id: ChannelId, nonce: Nonce, planned: Amount, actual: Amount },
    #[error(
        "channel {channel_id}: a claim of {authorized} at nonce {nonce} exceeds the channel's value {full} (emptied by the sender's reclaim)"
    )]
    ClaimExceedsFullAmount { channel_id: ChannelId, nonce: Nonce, authorized: Amount, full: Amount },
    #[error(
        "channel {channel_id}: a reclaim at nonce {nonce} records a loss of {recorded} but {authorized} was authorised there and never claimed"
    )]
    ReclaimLossMismatch { channel_id: ChannelId, nonce: Nonce, authorized: Amount, recorded: Amount },
    #[error(
        "channel {channel_id}: a reclaim at nonce {reclaim} but the channel is at nonce {channel} with no claim there"
    )]
    ReclaimNonceMismatch { channel_id: ChannelId, channel: Nonce, reclaim: Nonce },
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
    match event {
        ChannelEvent::ChannelMergedFromChain { chain, .. } => merge(&mut state, chain)?,
        ChannelEvent::PaymentAccepted { nonce, amount, signature } => {
            accept_payment(&mut state.channel, *nonce, *amount, signature)?
        }
        ChannelEvent::ClaimStarted { nonce, amount, signature } => {
            claims::start(&mut state, *nonce, *amount, signature)?
        }
        ChannelEvent::ClaimLanded {
            nonce,
            transaction_hash,
            block_number,
            actual_amount,
            planned_amount,
        } => claims::landed(
            &mut state,
            *nonce,
            *transaction_hash,
            *block_number,
            *actual_amount,
            *planned_amount,
        )?,
        ChannelEvent::SenderReclaimed {
            nonce,
            transaction_hash,
            block_number,
            value_taken_back,
            provider_loss,
        } => claims::reclaimed(
            &mut state,
            *nonce,
            *transaction_hash,
            *block_number,
            *value_taken_back,
            *provider_loss,
        )?,
        ChannelEvent::ClaimFinished { nonce, outcome, transaction_hash, block_number, amount } => {
            claims::legacy_finished(&mut state, *nonce, *outcome, *transaction_hash, *block_number, *amount)?
        }
    }
    Ok(state)
}

/// A payment at the channel's nonce raises its authorisation, within its value.
fn accept_payment(
    channel: &mut PaymentChannelData,
    nonce: Nonce,
    amount: Amount,
    signature: &Signature,
) -> Result<(), FoldError> {
    let channel_id = channel.channel_id;
    if nonce != channel.nonce {
        return Err(FoldError::PaymentNonceMismatch { channel_id, channel: channel.nonce, payment: nonce });
    }
    if amount < channel.authorized_amount {
        return Err(FoldError::AuthorizedAmountDecreased {
            channel_id,
            current: channel.authorized_amount,
            proposed: amount,
        });
    }
    if amount > channel.full_amount {
        return Err(FoldError::AuthorizedAmountExceedsFullAmount {
            channel_id,
            authorized: amount,
            full: channel.full_amount,
        });
    }
    channel.authorized_amount = amount;
    channel.signature = Some(signature.clone());
    Ok(())
}

/// The named exception to "the authorised amount never exceeds the full amount" (module doc): the
/// claim started at the nonce before the channel's is pending or was ended by the sender's reclaim,
/// so a chain value below the authorisation at the channel's nonce is the reclaim's doing (a
/// recipient's claim keeps at least the ledger's full amount in the channel).
pub fn voided_by_reclaim(state: &ChannelProjection) -> bool {
    let channel = &state.channel;
    let Some(previous) = channel.nonce.value().checked_sub(alloy_primitives::U256::from(1)) else {
        return false;
    };
    state.claims.get(&Nonce(previous)).is_some_and(|claim| match &claim.finished {
        None => true,
        Some(finish) => finish.outcome == ClaimOutcome::ReclaimedBySender,
    })
}

/// The seed's merge rule (escrow.md §3.5) as an event: a newer chain nonce replaces the state and
/// resets the authorisation; the same nonce takes the chain's value and expiration.
fn merge(state: &mut ChannelProjection, chain: &OnChainChannel) -> Result<(), FoldError> {
    let voided = voided_by_reclaim(state);
    let channel = &mut state.channel;
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
    if channel.authorized_amount > chain.value && !voided {
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

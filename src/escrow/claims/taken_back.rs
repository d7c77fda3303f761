//! The value a sender took back with `channelClaimTimeout`, derived without a state read at a past
//! block (which needs an archive node).
//!
//! The contract's `ChannelSenderClaim` logs the value after zeroing it, so the value just before is
//! rebuilt from an anchor the ledger recorded and the contract's logs after it:
//! - the anchor is the latest of (a) a `channel merged from chain` at the reclaim's nonce, whose value
//!   was read at the end of its block, and (b) the ledger's record of the recipient's claim that
//!   moved the chain into that nonce (`claim landed`, or a `claim finished` by the recipient written
//!   before it), whose `ChannelClaim` log carries the value left after it (`keepAmount`);
//! - after the anchor, in chain order (block, log index) and before the reclaim's log, each
//!   `ChannelAddFunds` adds its amount (a `ChannelClaim` sets the value to its keep amount).
//!
//! Between the anchor and the reclaim nothing else changes a channel's value: only claims (which
//! log their keep amount), reclaims and added funds do. No anchor (a channel written only through
//! the generic channel store, whose merges carry no block) is a named error, never a guess.

use alloy_primitives::B256;

use crate::chain::{ChannelLog, ChannelLogEvent};
use crate::domain::{Amount, ChannelEvent, ClaimOutcome, Nonce};

/// What fixes the channel's value at one point of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueAnchor {
    /// A merge read `value` at the end of block `block`.
    Merged { value: Amount, block: u64 },
    /// The recipient's claim in transaction `transaction_hash` of block `block` moved the chain into
    /// the reclaim's nonce; its log's keep amount is the value after it.
    Landed { block: u64, transaction_hash: B256 },
}

impl ValueAnchor {
    /// The first block whose logs the derivation needs.
    pub fn first_block(&self) -> u64 {
        match self {
            Self::Merged { block, .. } => block.saturating_add(1),
            Self::Landed { block, .. } => *block,
        }
    }

    fn block(&self) -> u64 {
        match self {
            Self::Merged { block, .. } | Self::Landed { block, .. } => *block,
        }
    }
}

/// Why the value before a reclaim cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TakenBackError {
    #[error("the ledger has no record of the channel's value at nonce {nonce} before block {block}")]
    NoAnchor { nonce: Nonce, block: u64 },
    #[error("the ChannelClaim log of transaction {transaction_hash} in block {block} was not found")]
    LandedLogMissing { transaction_hash: B256, block: u64 },
    #[error("the channel's value overflows 256 bits")]
    Overflow,
}

/// The latest anchor before `reclaim_block` for the channel's value at `nonce` (module doc).
pub fn anchor(
    events: &[ChannelEvent],
    nonce: Nonce,
    reclaim_block: u64,
) -> Result<ValueAnchor, TakenBackError> {
    let mut best: Option<ValueAnchor> = None;
    let mut consider = |candidate: ValueAnchor| {
        // A merge at the landing's block already includes it: prefer the merge on a tie.
        let better = match best {
            None => true,
            Some(current) => {
                candidate.block() > current.block()
                    || (candidate.block() == current.block()
                        && matches!(candidate, ValueAnchor::Merged { .. }))
            }
        };
        if better && candidate.block() < reclaim_block {
            best = Some(candidate);
        }
    };
    for event in events {
        match event {
            ChannelEvent::ChannelMergedFromChain { chain, block: Some(block) } if chain.nonce == nonce => {
                consider(ValueAnchor::Merged { value: chain.value, block: block.number })
            }
            ChannelEvent::ClaimLanded { nonce: claimed, transaction_hash, block_number, .. }
            | ChannelEvent::ClaimFinished {
                nonce: claimed,
                outcome: ClaimOutcome::ClaimedByRecipient,
                transaction_hash,
                block_number,
                ..
            } if claimed.next() == Some(nonce) => {
                consider(ValueAnchor::Landed { block: *block_number, transaction_hash: *transaction_hash })
            }
            _ => {}
        }
    }
    best.ok_or(TakenBackError::NoAnchor { nonce, block: reclaim_block })
}

/// The channel's value just before `reclaim`, from `anchor` and the channel's `logs` from
/// [`ValueAnchor::first_block`] to the reclaim's block, in chain order.
pub fn value_before(
    anchor: ValueAnchor,
    logs: &[ChannelLog],
    reclaim: &ChannelLog,
) -> Result<Amount, TakenBackError> {
    let position = |log: &ChannelLog| (log.block_number, log.log_index);
    let before_reclaim = |log: &&ChannelLog| position(log) < position(reclaim);
    let (mut value, after): (Amount, Vec<&ChannelLog>) = match anchor {
        ValueAnchor::Merged { value, block } => {
            (value, logs.iter().filter(|log| log.block_number > block).filter(before_reclaim).collect())
        }
        ValueAnchor::Landed { block, transaction_hash } => {
            let landed = logs
                .iter()
                .find(|log| {
                    log.transaction_hash == transaction_hash
                        && matches!(log.event, ChannelLogEvent::Claim { .. })
                })
                .ok_or(TakenBackError::LandedLogMissing { transaction_hash, block })?;
            let ChannelLogEvent::Claim { keep_amount, .. } = landed.event else {
                unreachable!("matched above")
            };
            let later = |log: &&ChannelLog| position(log) > position(landed);
            (keep_amount, logs.iter().filter(later).filter(before_reclaim).collect())
        }
    };
    for log in after {
        value = match log.event {
            ChannelLogEvent::AddFunds { amount } => {
                Amount(value.0.checked_add(amount.0).ok_or(TakenBackError::Overflow)?)
            }
            ChannelLogEvent::Claim { keep_amount, .. } => keep_amount,
            ChannelLogEvent::SenderClaim { .. } => Amount::ZERO,
        };
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BlockNumber, ChainBlock, ChannelId, EthAddress, GroupId, OnChainChannel};

    fn merge(nonce: u64, value: u64, block: u64) -> ChannelEvent {
        ChannelEvent::ChannelMergedFromChain {
            chain: OnChainChannel {
                nonce: Nonce::from(nonce),
                sender: EthAddress::default(),
                signer: EthAddress::default(),
                recipient: EthAddress::default(),
                group_id: GroupId([0; 32]),
                value: Amount::from(value),
                expiration: BlockNumber::from(100),
            },
            block: Some(ChainBlock { number: block, hash: B256::ZERO }),
        }
    }

    fn log(block: u64, index: u64, event: ChannelLogEvent) -> ChannelLog {
        ChannelLog {
            channel_id: ChannelId::from(1),
            event,
            transaction_hash: B256::repeat_byte(block as u8),
            block_number: block,
            log_index: index,
        }
    }

    fn add(amount: u64) -> ChannelLogEvent {
        ChannelLogEvent::AddFunds { amount: Amount::from(amount) }
    }

    fn reclaim(nonce_after: u64) -> ChannelLogEvent {
        ChannelLogEvent::SenderClaim { nonce: Nonce::from(nonce_after), logged_amount: Amount::ZERO }
    }

    #[test]
    fn funds_added_after_the_merge_and_before_the_reclaim_count() {
        let events = [merge(0, 1000, 5), merge(0, 1200, 8)];
        let anchor = anchor(&events, Nonce::ZERO, 20).unwrap();
        assert_eq!(anchor, ValueAnchor::Merged { value: Amount::from(1200), block: 8 });
        let reclaim = log(20, 1, reclaim(1));
        // The add of block 8 is in the merge's value already; the one after the reclaim never counts.
        let logs = [
            log(8, 0, add(200)),
            log(12, 0, add(50)),
            log(20, 0, add(5)),
            reclaim.clone(),
            log(20, 2, add(7)),
        ];
        assert_eq!(value_before(anchor, &logs, &reclaim), Ok(Amount::from(1255)));
    }

    #[test]
    fn a_landed_claim_anchors_at_its_keep_amount() {
        let landed_tx = B256::repeat_byte(10);
        let events = [
            merge(0, 1000, 5),
            ChannelEvent::ClaimLanded {
                nonce: Nonce::ZERO,
                transaction_hash: landed_tx,
                block_number: 10,
                actual_amount: Amount::from(25),
                planned_amount: Amount::from(30),
            },
        ];
        // The reclaim at nonce 1 (logged as 2): the merge at nonce 0 is no anchor for it.
        let anchor = anchor(&events, Nonce::from(1), 30).unwrap();
        assert_eq!(anchor, ValueAnchor::Landed { block: 10, transaction_hash: landed_tx });
        let claim = ChannelLogEvent::Claim {
            nonce: Nonce::from(1),
            actual_amount: Amount::from(25),
            planned_amount: Amount::from(30),
            send_back_amount: Amount::ZERO,
            keep_amount: Amount::from(975),
        };
        let reclaim = log(30, 0, reclaim(2));
        let logs = [log(10, 0, add(1)), log(10, 1, claim), log(10, 2, add(3)), reclaim.clone()];
        assert_eq!(value_before(anchor, &logs, &reclaim), Ok(Amount::from(978)));
        assert_eq!(
            value_before(anchor, &logs[2..], &reclaim),
            Err(TakenBackError::LandedLogMissing { transaction_hash: landed_tx, block: 10 })
        );
    }

    #[test]
    fn without_a_record_of_the_value_at_that_nonce_nothing_is_guessed() {
        assert_eq!(
            anchor(&[merge(0, 1000, 5)], Nonce::from(1), 30),
            Err(TakenBackError::NoAnchor { nonce: Nonce::from(1), block: 30 })
        );
        // A merge after the reclaim (which shows the value after it) is no anchor either.
        assert!(anchor(&[merge(0, 0, 40)], Nonce::ZERO, 30).is_err());
    }
}

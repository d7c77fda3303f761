//! The provider's claims (escrow.md §6.5–6.9): start a claim of a channel's last signed payment,
//! list what is unclaimed and in progress, and record claims that finished on chain.
//!
//! Decisions:
//! - Nothing is deleted: a started claim becomes `claim started`; its end on chain becomes
//!   `claim finished` with the transaction hash, the block and the amount that actually moved (the
//!   recipient may claim less than planned; a sender who reclaims after expiry is recorded as such,
//!   so the provider sees money lost, never a silent success).
//! - A claim is seen finished from the contract's logs (`ChannelClaim` carries the new nonce, so the
//!   claim of nonce n finishes with the log of nonce n + 1) once the log has the configured number
//!   of confirmations. Recording it needs no chain state, so it appends no merge event; the next
//!   write that reads the chain merges its new value.
//! - A sender's reclaim records what the sender took back: the contract's `ChannelSenderClaim`
//!   carries the value after the reclaim (0), so the value is read at the block before.
//! - Unlike the seed (quirk 6), a claim whose channel the chain does not show stops nothing: the
//!   other claims are still examined.

use std::sync::Arc;

use crate::chain::{ChainReader, ClaimLog};
use crate::domain::{
    Amount, ChannelEvent, ChannelId, Claim, ClaimOutcome, PaymentChannelData, PaymentChannelKey,
};
use crate::store::StoreError;
use crate::store::leases::{Acquisition, Lease, PgLeases};
use crate::store::postgres::ledger::{ChannelCommit, CommitError};

use super::EscrowConfig;
use super::channels::{ChannelSource, Freshness, LookupError};

/// A refused claim operation, with the seed's messages (the control service sends them as they are).
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("cannot get mutex for channel: {key} because of {error}")]
    Mutex { key: PaymentChannelKey, error: StoreError },
    #[error("another transaction on channel: {key} is in progress")]
    Busy { key: PaymentChannelKey },
    #[error("channel Id {0} was not found on blockchain or storage")]
    NotFound(ChannelId),
    #[error("authorized amount is zero , hence nothing to claim on the channel Id: {0}")]
    NothingToClaim(ChannelId),
    #[error("{0}")]
    Lookup(#[from] LookupError),
    #[error("{0}")]
    Chain(#[from] crate::chain::ChainError),
    #[error("{0}")]
    Commit(#[from] CommitError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl ClaimError {
    /// The text a client reads: a fixed one for a chain or storage failure (module doc of
    /// [`crate::escrow`]), the seed's for a refusal.
    pub fn client_message(&self) -> String {
        match self {
            Self::Mutex { key, .. } => format!("cannot get mutex for channel: {key}"),
            Self::Lookup(error) => error.client_message(),
            Self::Chain(_) => super::CHAIN_FAILURE.to_owned(),
            Self::Commit(CommitError::Store(_)) | Self::Store(_) => super::STORAGE_FAILURE.to_owned(),
            Self::Busy { .. } | Self::NotFound(_) | Self::NothingToClaim(_) | Self::Commit(_) => {
                self.to_string()
            }
        }
    }
}

/// A claim seen finished on chain and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedClaim {
    pub channel_id: ChannelId,
    pub log: ClaimLog,
}

pub struct ClaimService<C> {
    channels: Arc<ChannelSource<C>>,
    leases: PgLeases,
    config: Arc<EscrowConfig>,
}

impl<C: ChainReader> ClaimService<C> {
    pub fn new(channels: Arc<ChannelSource<C>>, leases: PgLeases, config: Arc<EscrowConfig>) -> Self {
        Self { channels, leases, config }
    }

    async fn lease(&self, channel_id: ChannelId) -> Result<Lease, ClaimError> {
        let key = PaymentChannelKey::new(channel_id);
        match self.leases.acquire(channel_id, &self.config.replica_id, self.config.lease_ttl).await {
            Ok(Acquisition::Acquired(lease)) => Ok(lease),
            Ok(Acquisition::HeldBy(_)) => Err(ClaimError::Busy { key }),
            Err(error) => Err(ClaimError::Mutex { key, error }),
        }
    }

    async fn release(&self, lease: &Lease) {
        if let Err(error) = self.leases.release(lease).await {
            tracing::warn!(%error, channel = %lease.channel_id, "lease release failed");
        }
    }

    /// Moves the channel's last signed payment into a claim: the nonce moves on by one and the full
    /// amount drops by the claimed amount (the seed's IncrementChannelNonce).
    pub async fn start_claim(&self, channel_id: ChannelId) -> Result<Claim, ClaimError> {
        let lease = self.lease(channel_id).await?;
        let result = self.start_claim_holding(channel_id, &lease).await;
        if result.is_err() {
            self.release(&lease).await;
        }
        result
    }

    async fn start_claim_holding(&self, channel_id: ChannelId, lease: &Lease) -> Result<Claim, ClaimError> {
        let merged = self
            .channels
            .payment_channel(channel_id, Freshness::Fresh)
            .await?
            .ok_or(ClaimError::NotFound(channel_id))?;
        let channel = &merged.channel;
        let signature = match (&channel.signature, channel.authorized_amount) {
            (Some(signature), amount) if amount != Amount::ZERO => signature.clone(),
            _ => return Err(ClaimError::NothingToClaim(channel_id)),
        };
        let claim =
            Claim { nonce: channel.nonce, amount: channel.authorized_amount, signature, finished: None };
        let mut events: Vec<ChannelEvent> = merged.merge.clone().into_iter().collect();
        events.push(ChannelEvent::ClaimStarted {
            nonce: claim.nonce,
            amount: claim.amount,
            signature: claim.signature.clone(),
        });
        self.channels
            .ledger()
            .commit(ChannelCommit {
                channel_id,
                expected_version: merged.version,
                lease: Some(lease),
                events,
                payment: None,
            })
            .await?;
        Ok(claim)
    }

    /// Channels with a signed, unclaimed amount.
    pub async fn unclaimed(&self) -> Result<Vec<PaymentChannelData>, ClaimError> {
        Ok(self.channels.ledger().unclaimed_channels().await?)
    }

    /// Claims started and not finished, after recording those that finished on chain.
    pub async fn in_progress(&self) -> Result<Vec<(ChannelId, Claim)>, ClaimError> {
        self.record_finished_claims().await?;
        Ok(self.channels.ledger().claims_in_progress().await?)
    }

    /// Looks for the end of every claim in progress in the contract's logs and records each one
    /// found with enough confirmations as `claim finished`.
    pub async fn record_finished_claims(&self) -> Result<Vec<FinishedClaim>, ClaimError> {
        let head = self.channels.chain().current_block().await?;
        let Some(confirmed) = head.checked_sub(self.config.confirmations) else {
            return Ok(Vec::new());
        };
        let from = confirmed.saturating_sub(self.config.claim_log_lookback);
        let mut finished = Vec::new();
        for (channel_id, claim) in self.channels.ledger().claims_in_progress().await? {
            let logs = self.channels.chain().claim_logs(channel_id, from, confirmed).await?;
            let Some(log) = logs.into_iter().find(|log| ends_claim(log, &claim)) else {
                continue;
            };
            let lease = match self.lease(channel_id).await {
                Ok(lease) => lease,
                // A payment is in flight: record it on the next pass.
                Err(ClaimError::Busy { .. }) => continue,
                Err(error) => return Err(error),
            };
            let recorded = self.record_finish(channel_id, &claim, &log, &lease).await;
            if recorded.is_err() {
                self.release(&lease).await;
            }
            recorded?;
            finished.push(FinishedClaim { channel_id, log });
        }
        Ok(finished)
    }

    async fn record_finish(
        &self,
        channel_id: ChannelId,
        claim: &Claim,
        log: &ClaimLog,
        lease: &Lease,
    ) -> Result<(), ClaimError> {
        let amount = match log.outcome {
            ClaimOutcome::ClaimedByRecipient => log.amount,
            // The contract logs the value after the reclaim (always 0): what the sender took back is
            // the channel's value in the block before.
            ClaimOutcome::ReclaimedBySender => self
                .channels
                .chain()
                .channel_at_block(channel_id, log.block_number.saturating_sub(1))
                .await?
                .map_or(log.amount, |before| before.channel.value),
        };
        let version = self.channels.ledger().channel(channel_id).await?.map_or(0, |(_, version)| version);
        let event = ChannelEvent::ClaimFinished {
            nonce: claim.nonce,
            outcome: log.outcome,
            transaction_hash: log.transaction_hash,
            block_number: log.block_number,
            amount,
        };
        self.channels
            .ledger()
            .commit(ChannelCommit {
                channel_id,
                expected_version: version,
                lease: Some(lease),
                events: vec![event],
                payment: None,
            })
            .await?;
        Ok(())
    }
}

/// Whether a log ends this claim. Both logs carry the nonce after their transaction, so the claim
/// of nonce n ends with the log of nonce n + 1: the recipient's `ChannelClaim`, or the sender's
/// `ChannelSenderClaim` when the sender took the funds back after expiry while it was pending.
fn ends_claim(log: &ClaimLog, claim: &Claim) -> bool {
    claim.nonce.next() == Some(log.nonce)
}

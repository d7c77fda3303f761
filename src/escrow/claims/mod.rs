//! The provider's claims (escrow.md §6.5–6.9): start a claim of a channel's last signed payment,
//! list what is unclaimed and in progress, and record claims that finished on chain.
//!
//! Decisions:
//! - Nothing is deleted: a started claim becomes `claim started`; how it left the chain is its own
//!   fact with exact amounts (see `finish`): `claim landed` (actual and planned amount) or `sender
//!   reclaimed` (the value the sender took back and, apart, the provider's loss at that nonce).
//! - A claim is never started on a channel whose value a sender's reclaim voided below its
//!   authorisation (the fold's named exception): the chain would refuse it until the sender
//!   re-funds ([`ClaimError::ValueVoidedByReclaim`]).
//! - Starting a claim puts the channel's log cursor at the block its chain read was made at, so the
//!   search for its end starts there (`store::claim_cursors`).
//! - Listing the claims in progress first records those that finished, but answers even when that
//!   fails, for one channel or for all (the failure is logged and counted).

use std::sync::Arc;

use crate::chain::ChainReader;
use crate::domain::{Amount, ChannelEvent, ChannelId, Claim, PaymentChannelData, PaymentChannelKey};
use crate::store::StoreError;
use crate::store::claim_cursors::PgClaimCursors;
use crate::store::leases::{Acquisition, Lease, PgLeases};
use crate::store::postgres::ledger::{ChannelCommit, CommitError};

use super::EscrowConfig;
use super::channels::{ChannelSource, Freshness, LookupError};

mod finish;
pub mod taken_back;

pub use finish::{FinishError, FinishedClaim};

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
    #[error(
        "the sender reclaimed the channel Id {0}: its value is below the authorized amount until the sender adds funds"
    )]
    ValueVoidedByReclaim(ChannelId),
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
            Self::Busy { .. }
            | Self::NotFound(_)
            | Self::NothingToClaim(_)
            | Self::ValueVoidedByReclaim(_)
            | Self::Commit(_) => self.to_string(),
        }
    }
}

pub struct ClaimService<C> {
    channels: Arc<ChannelSource<C>>,
    leases: PgLeases,
    cursors: PgClaimCursors,
    config: Arc<EscrowConfig>,
}

impl<C: ChainReader> ClaimService<C> {
    pub fn new(channels: Arc<ChannelSource<C>>, leases: PgLeases, config: Arc<EscrowConfig>) -> Self {
        let cursors = PgClaimCursors::new(channels.ledger().pool().clone());
        Self { channels, leases, cursors, config }
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
        if channel.authorized_amount > channel.full_amount {
            return Err(ClaimError::ValueVoidedByReclaim(channel_id));
        }
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
        if let Some(read) = &merged.chain {
            let earlier_pending =
                merged.stored.as_ref().is_some_and(|s| s.claims.values().any(|c| c.finished.is_none()));
            if let Err(error) =
                self.cursors.claim_started(channel_id, read.block.number, earlier_pending).await
            {
                // The watcher then starts from its fallback (`EscrowConfig::claim_log_lookback`).
                tracing::warn!(%error, channel = %channel_id, "could not place the claim log cursor");
            }
        }
        Ok(claim)
    }

    /// Channels with a signed, unclaimed amount.
    pub async fn unclaimed(&self) -> Result<Vec<PaymentChannelData>, ClaimError> {
        Ok(self.channels.ledger().unclaimed_channels().await?)
    }

    /// Claims started and not finished, after recording those that finished on chain. The list
    /// is answered even when recording fails (module doc).
    pub async fn in_progress(&self) -> Result<Vec<(ChannelId, Claim)>, ClaimError> {
        // Counted in the metric by the pass itself.
        if let Err(error) = self.record_finished_claims().await {
            tracing::warn!(%error, "could not check the claims in progress against the chain");
        }
        Ok(self.channels.ledger().claims_in_progress().await?)
    }
}

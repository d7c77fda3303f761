//! Recording how claims left the chain: the pass that the 15-second watcher, the listing calls
//! (`GetListInProgress`, `StartClaim…`) and every replica run, each whenever it likes.
//!
//! What a pass keeps true:
//! - **Idempotent and race-free.** A claim's end is recorded under the channel's lease, from the
//!   projection re-read after the lease was taken, and committed with that version: a claim some
//!   other finisher recorded meanwhile is found finished and counted as already recorded (not an
//!   error); a channel whose lease is busy is left, with its cursor, for the next pass. So however
//!   many finishers race over the same logs, each claim ends exactly once.
//! - **One channel never hides the others.** Each watched channel is searched and recorded on its
//!   own; its failure (`eth_getLogs`, lease, store, derivation) is logged with the channel, counted
//!   in `mpe_ledger_claim_check_failures_total`, and the pass goes on. Only a failed read of the
//!   head block ends the pass (nothing can be searched without it).
//! - **Incremental search.** Each channel's logs are searched from its persisted cursor
//!   (`store::claim_cursors`) to head − confirmations, never beyond; the cursor moves past a range
//!   only once every log in it was handled. A channel without a cursor starts at its earliest
//!   pending claim's block (set by the claim start), else at the configured lookback below the
//!   confirmed head (claims started before cursors existed), or for a channel with no claim at its
//!   expiration (a reclaim cannot come earlier).
//! - **Watched channels**: those with a claim in progress, and those with an unclaimed
//!   authorisation whose expiration is confirmed (the sender may reclaim it: the authorisation at
//!   that nonce is then the provider's loss). A reclaim first seen after the ledger merged the
//!   chain's next nonce is not recorded as a loss (the merge reset the authorisation); the payments
//!   of that nonce stay in the log.
//! - **Amounts are the chain's.** `claim landed` carries the `ChannelClaim` log's actual and planned
//!   amounts; `sender reclaimed` the value taken back, derived by `taken_back` from the ledger's
//!   records and the contract's logs (never a state read at a past block), and the provider's loss,
//!   the claim's amount (or the authorisation at that nonce).

use crate::chain::{ChainError, ChainReader, ChannelLog, ChannelLogEvent};
use crate::domain::{Amount, ChannelEvent, ChannelId, ChannelProjection, Nonce};
use crate::store::StoreError;
use crate::store::leases::Lease;
use crate::store::postgres::ledger::{ChannelCommit, CommitError};

use super::taken_back::{TakenBackError, anchor, value_before};
use super::{ClaimError, ClaimService};

/// A claim's end seen on chain and recorded by this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedClaim {
    pub channel_id: ChannelId,
    /// The `claim landed` or `sender reclaimed` event recorded.
    pub event: ChannelEvent,
}

/// Why one channel's claims could not be checked in a pass.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    #[error("{0}")]
    Chain(#[from] ChainError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Commit(#[from] CommitError),
    #[error("{0}")]
    Lease(ClaimError),
    #[error("the value the sender took back cannot be derived: {0}")]
    TakenBack(#[from] TakenBackError),
}

/// A channel the pass searches, and where its search starts without a cursor.
struct Watched {
    channel_id: ChannelId,
    start_without_cursor: u64,
}

/// What handling one ending log came to.
enum Handled {
    Recorded(Box<FinishedClaim>),
    /// Already recorded by another finisher, or nothing of the ledger's ends with it.
    Nothing,
    /// The channel's lease is held (a payment or another finisher): try again next pass.
    Busy,
}

impl<C: ChainReader> ClaimService<C> {
    /// One pass over every watched channel (module doc): the claims recorded now. An error means
    /// the head block could not be read; each channel's own failure is logged and counted instead.
    pub async fn record_finished_claims(&self) -> Result<Vec<FinishedClaim>, ClaimError> {
        let head = self
            .channels
            .chain()
            .current_block()
            .await
            .inspect_err(|_| self.channels.metrics().claim_check_failures.inc())?;
        let Some(confirmed) = head.checked_sub(self.config.confirmations) else {
            return Ok(Vec::new());
        };
        let cursors = self.cursors.all().await?;
        let mut finished = Vec::new();
        for watched in self.watched(confirmed).await? {
            let from = cursors.get(&watched.channel_id).copied().unwrap_or(watched.start_without_cursor);
            match self.check_channel(watched.channel_id, from, confirmed).await {
                Ok(recorded) => finished.extend(recorded),
                Err(error) => {
                    self.channels.metrics().claim_check_failures.inc();
                    tracing::warn!(channel = %watched.channel_id, %error, "could not check the channel's claims");
                }
            }
        }
        Ok(finished)
    }

    async fn watched(&self, confirmed: u64) -> Result<Vec<Watched>, ClaimError> {
        let ledger = self.channels.ledger();
        let fallback = confirmed.saturating_sub(self.config.claim_log_lookback);
        let mut watched: Vec<Watched> = Vec::new();
        for (channel_id, _) in ledger.claims_in_progress().await? {
            if watched.last().is_none_or(|w| w.channel_id != channel_id) {
                watched.push(Watched { channel_id, start_without_cursor: fallback });
            }
        }
        for channel in ledger.unclaimed_channels().await? {
            let expiration = u64::try_from(channel.expiration.value()).unwrap_or(u64::MAX);
            if expiration <= confirmed && !watched.iter().any(|w| w.channel_id == channel.channel_id) {
                // A reclaim cannot come before the expiration, nor (as for claims) before the lookback.
                let start_without_cursor = expiration.max(fallback);
                watched.push(Watched { channel_id: channel.channel_id, start_without_cursor });
            }
        }
        Ok(watched)
    }

    /// Searches one channel's logs in `[from, confirmed]` and records every claim's end in them.
    async fn check_channel(
        &self,
        channel_id: ChannelId,
        from: u64,
        confirmed: u64,
    ) -> Result<Vec<FinishedClaim>, FinishError> {
        if from > confirmed {
            return Ok(Vec::new());
        }
        let logs = self.channels.chain().channel_logs(channel_id, from, confirmed).await?;
        let mut finished = Vec::new();
        for log in logs.iter().filter(|log| !matches!(log.event, ChannelLogEvent::AddFunds { .. })) {
            match self.handle(channel_id, log).await? {
                Handled::Recorded(claim) => finished.push(*claim),
                Handled::Nothing => {}
                Handled::Busy => return Ok(finished),
            }
        }
        self.cursors.advance(channel_id, confirmed.saturating_add(1)).await?;
        Ok(finished)
    }

    /// Records what `log` (a `ChannelClaim` or `ChannelSenderClaim`) ends, under the lease.
    async fn handle(&self, channel_id: ChannelId, log: &ChannelLog) -> Result<Handled, FinishError> {
        // A log the ledger has nothing for (or has recorded already) costs nothing more: no
        // derivation that could fail for it and hold the channel's cursor back.
        let Some((state, _)) = self.channels.ledger().channel(channel_id).await? else {
            return Ok(Handled::Nothing);
        };
        if ending_event(&state, log, Some(Amount::ZERO)).is_none() {
            return Ok(Handled::Nothing);
        }
        // The value taken back needs the chain's logs: derived before the lease is taken, to hold it
        // briefly. It depends only on the log and on events already recorded; whether it is still
        // to be recorded is decided again under the lease.
        let taken_back = match log.event {
            ChannelLogEvent::SenderClaim { .. } => Some(self.taken_back(channel_id, log).await?),
            _ => None,
        };
        let lease = match self.lease(channel_id).await {
            Ok(lease) => lease,
            Err(ClaimError::Busy { .. }) => return Ok(Handled::Busy),
            Err(error) => return Err(FinishError::Lease(error)),
        };
        let result = self.record_holding(channel_id, log, taken_back, &lease).await;
        if !matches!(result, Ok(Handled::Recorded(_))) {
            self.release(&lease).await;
        }
        result
    }

    async fn record_holding(
        &self,
        channel_id: ChannelId,
        log: &ChannelLog,
        taken_back: Option<Amount>,
        lease: &Lease,
    ) -> Result<Handled, FinishError> {
        let ledger = self.channels.ledger();
        let Some((state, version)) = ledger.channel(channel_id).await? else {
            return Ok(Handled::Nothing);
        };
        let Some(event) = ending_event(&state, log, taken_back) else {
            return Ok(Handled::Nothing);
        };
        ledger
            .commit(ChannelCommit {
                channel_id,
                expected_version: version,
                lease: Some(lease),
                events: vec![event.clone()],
                payment: None,
            })
            .await?;
        Ok(Handled::Recorded(Box::new(FinishedClaim { channel_id, event })))
    }

    async fn taken_back(&self, channel_id: ChannelId, reclaim: &ChannelLog) -> Result<Amount, FinishError> {
        let ChannelLogEvent::SenderClaim { nonce: after, .. } = reclaim.event else {
            unreachable!("only reclaims take back")
        };
        let nonce = Nonce(after.value().saturating_sub(alloy_primitives::U256::from(1)));
        let events = self.channels.ledger().channel_events(channel_id).await?;
        let anchor = anchor(&events, nonce, reclaim.block_number)?;
        let logs = self
            .channels
            .chain()
            .channel_logs(channel_id, anchor.first_block(), reclaim.block_number)
            .await?;
        Ok(value_before(anchor, &logs, reclaim)?)
    }
}

/// The event that records what `log` ends in the channel's current state, if anything: a claim
/// already ended (by any finisher) or a log the ledger has nothing for gives `None`.
fn ending_event(
    state: &ChannelProjection,
    log: &ChannelLog,
    taken_back: Option<Amount>,
) -> Option<ChannelEvent> {
    let (ChannelLogEvent::Claim { nonce: after, .. } | ChannelLogEvent::SenderClaim { nonce: after, .. }) =
        log.event
    else {
        return None;
    };
    let nonce = Nonce(after.value().checked_sub(alloy_primitives::U256::from(1))?);
    let claim = state.claims.get(&nonce);
    if claim.is_some_and(|claim| claim.finished.is_some()) {
        return None;
    }
    match (&log.event, claim) {
        (ChannelLogEvent::Claim { actual_amount, planned_amount, .. }, Some(_)) => {
            Some(ChannelEvent::ClaimLanded {
                nonce,
                transaction_hash: log.transaction_hash,
                block_number: log.block_number,
                actual_amount: *actual_amount,
                planned_amount: *planned_amount,
            })
        }
        (ChannelLogEvent::SenderClaim { .. }, claim) => {
            let provider_loss = match claim {
                Some(claim) => claim.amount,
                // No claim started there: the authorisation at that nonce, while the ledger is still at it.
                None if state.channel.nonce == nonce => state.channel.authorized_amount,
                None => return None,
            };
            Some(ChannelEvent::SenderReclaimed {
                nonce,
                transaction_hash: log.transaction_hash,
                block_number: log.block_number,
                value_taken_back: taken_back?,
                provider_loss,
            })
        }
        _ => None,
    }
}

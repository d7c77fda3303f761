//! A channel as the escrow sees it: the ledger's projection merged with the chain (escrow.md §3.5,
//! §7), plus the `channel merged from chain` event that a write must append when the chain showed
//! something newer.
//!
//! Rules:
//! - A channel whose recipient is not our payment address, or whose group is not ours, is refused,
//!   whether it is stored or not (design.md §8: a mismatch is never a read failure).
//! - Not stored: the chain's state, with a merge event (the channel's first event).
//! - Stored and the chain unreachable or silent: the stored state (counted in a metric).
//! - Stored nonce above the chain's: the stored state (a claim started here has not landed yet).
//! - Chain nonce above the stored one: the chain's state, authorisation reset.
//! - Same nonce: the stored state with the chain's value and expiration.
//!
//! Chain reads for payments may come from a cache. A cached read is used only when it is younger
//! than the configured age, the payment's amount does not exceed the cached value, the cached
//! expiration is beyond the current block plus the expiration threshold, and the ledger's nonce is
//! not ahead of the cached one (a claim started here may have landed since); otherwise the chain is
//! read again. Between reads the chain can only have raised the value or the expiration (add funds,
//! extend): a recipient claim goes through this ledger first, and a sender can only reclaim after
//! expiration, which the expiration check already refuses. So a cached read never makes the ledger
//! accept a payment the chain would not honour. Claims and state queries always read the chain.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use alloy_primitives::U256;

use crate::chain::{ChainError, ChainReader, ChannelRead};
use crate::domain::{Amount, ChannelEvent, ChannelId, ChannelProjection, PaymentChannelData};
use crate::store::StoreError;
use crate::store::postgres::PgLedger;
use crate::store::postgres::log::StreamHead;
use crate::store::postgres::projection::StoredChannel;

use super::EscrowConfig;
use super::head_block::HeadBlockCache;
use super::metrics::EscrowMetrics;

/// The merged view and what a write must record about it.
#[derive(Debug, Clone)]
pub struct MergedChannel {
    pub channel: PaymentChannelData,
    /// The stored projection and its stream version (version 0 when not stored).
    pub stored: Option<ChannelProjection>,
    pub version: u64,
    /// The stored stream head (`None` when not stored): a batched payment commit builds on it.
    pub head: Option<StreamHead>,
    /// To append before the write's own event, when the chain showed something newer.
    pub merge: Option<ChannelEvent>,
    /// The chain read the merge used, if any.
    pub chain: Option<ChannelRead>,
}

/// Why a channel could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{0}")]
    Storage(#[from] StoreError),
    #[error("{0}")]
    Chain(#[from] ChainError),
    #[error(
        "channel received belongs to another group of replicas, current group: {ours}, channel group: {theirs}"
    )]
    OtherGroup { ours: GoBytes, theirs: GoBytes },
    #[error("recipient Address from org metadata does not Match on what was retrieved from Channel")]
    OtherRecipient,
}

impl LookupError {
    /// The text a client reads: a fixed one for a chain or storage failure (module doc of
    /// [`crate::escrow`]), the seed's for a refusal.
    pub fn client_message(&self) -> String {
        match self {
            Self::Storage(_) => super::STORAGE_FAILURE.to_owned(),
            Self::Chain(_) => super::CHAIN_FAILURE.to_owned(),
            Self::OtherGroup { .. } | Self::OtherRecipient => self.to_string(),
        }
    }
}

/// A byte array printed as Go's `%v` prints it: `[125 0 0 … 0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoBytes(pub Vec<u8>);

impl fmt::Display for GoBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(u8::to_string).collect();
        write!(f, "[{}]", items.join(" "))
    }
}

/// Whether a cached chain read may serve this lookup.
#[derive(Debug, Clone, Copy)]
pub enum Freshness {
    /// Always read the chain.
    Fresh,
    /// A payment of this amount at this block may use a cached read (module doc).
    ForPayment { amount: Amount, current_block: u64 },
}

/// Chain reads for payments, kept briefly (module doc).
#[derive(Debug, Default)]
struct ChainCache {
    entries: Mutex<HashMap<ChannelId, (ChannelRead, Instant)>>,
}

pub struct ChannelSource<C> {
    ledger: PgLedger,
    chain: C,
    config: Arc<EscrowConfig>,
    cache: ChainCache,
    head: HeadBlockCache,
    metrics: EscrowMetrics,
}

impl<C: ChainReader> ChannelSource<C> {
    pub fn new(ledger: PgLedger, chain: C, config: Arc<EscrowConfig>) -> Self {
        Self {
            ledger,
            chain,
            config,
            cache: ChainCache::default(),
            head: HeadBlockCache::default(),
            metrics: EscrowMetrics::unregistered(),
        }
    }

    /// Counts chain reads, cache hits and failures in `metrics`.
    pub fn with_metrics(mut self, metrics: EscrowMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &EscrowMetrics {
        &self.metrics
    }

    pub fn chain(&self) -> &C {
        &self.chain
    }

    pub fn ledger(&self) -> &PgLedger {
        &self.ledger
    }

    /// The head block number for the payment expiration rule: the background-refreshed number plus
    /// its margin while it is young enough, else a read of the chain (see `head_block`).
    pub async fn payment_head_block(&self) -> Result<u64, ChainError> {
        if let Some(number) = self.head.usable() {
            return Ok(number);
        }
        self.refresh_head_block().await
    }

    /// Reads the head block number from the chain and caches it (`serve` calls this every
    /// `head_block::HEAD_BLOCK_REFRESH`).
    pub async fn refresh_head_block(&self) -> Result<u64, ChainError> {
        let number = self.chain.current_block().await?;
        self.head.record(number);
        Ok(number)
    }

    async fn read_chain(
        &self,
        id: ChannelId,
        stored: Option<&ChannelProjection>,
        freshness: Freshness,
    ) -> Result<Option<ChannelRead>, ChainError> {
        if let Freshness::ForPayment { amount, current_block } = freshness {
            let cached = self.cache.entries.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned();
            if let Some((read, at)) = cached {
                let horizon = U256::from(current_block) + U256::from(self.config.expiration_threshold);
                if at.elapsed() < self.config.chain_cache_age
                    && amount <= read.channel.value
                    && horizon < read.channel.expiration.value()
                    && stored.is_none_or(|stored| stored.channel.nonce <= read.channel.nonce)
                {
                    self.metrics.chain_cache_hits.inc();
                    return Ok(Some(read));
                }
            }
        }
        self.metrics.chain_reads.inc();
        let read = self.chain.channel(id).await.inspect_err(|_| self.metrics.chain_read_failures.inc())?;
        let mut entries = self.cache.entries.lock().unwrap_or_else(|p| p.into_inner());
        match &read {
            Some(read) => entries.insert(id, (read.clone(), Instant::now())),
            None => entries.remove(&id),
        };
        Ok(read)
    }

    fn check_ours(&self, read: &ChannelRead) -> Result<(), LookupError> {
        if read.channel.recipient != self.config.payment_address {
            return Err(LookupError::OtherRecipient);
        }
        if read.channel.group_id != self.config.group_id {
            return Err(LookupError::OtherGroup {
                ours: GoBytes(self.config.group_id.0.to_vec()),
                theirs: GoBytes(read.channel.group_id.0.to_vec()),
            });
        }
        Ok(())
    }

    /// The merged channel, `None` when neither the ledger nor the chain knows it.
    pub async fn payment_channel(
        &self,
        id: ChannelId,
        freshness: Freshness,
    ) -> Result<Option<MergedChannel>, LookupError> {
        let stored = self.ledger.channel_with_head(id).await?;
        self.merge(id, stored, freshness).await
    }

    /// The merged channel from its stored state as just read (e.g. with its lease), `None` when
    /// neither the ledger nor the chain knows it.
    pub async fn merge(
        &self,
        id: ChannelId,
        stored: Option<StoredChannel>,
        freshness: Freshness,
    ) -> Result<Option<MergedChannel>, LookupError> {
        let (stored, head) = match stored {
            Some((state, head)) => (Some(state), Some(head)),
            None => (None, None),
        };
        let version = head.map_or(0, |head| head.version);
        let chain = self.read_chain(id, stored.as_ref(), freshness).await;
        let read = match (chain, &stored) {
            (Ok(Some(read)), _) => {
                self.check_ours(&read)?;
                read
            }
            (Ok(None), None) => return Ok(None),
            (Err(error), None) => return Err(error.into()),
            (Ok(None), Some(state)) | (Err(_), Some(state)) => {
                tracing::warn!(channel = %id, "chain read failed or found nothing; using the stored state");
                return Ok(Some(MergedChannel {
                    channel: state.channel.clone(),
                    stored,
                    version,
                    head,
                    merge: None,
                    chain: None,
                }));
            }
        };
        let merge_event =
            ChannelEvent::ChannelMergedFromChain { chain: read.channel.clone(), block: Some(read.block) };
        let merged = match &stored {
            None => MergedChannel {
                channel: PaymentChannelData::from_chain(id, &read.channel),
                stored: None,
                version,
                head,
                merge: Some(merge_event),
                chain: Some(read),
            },
            Some(state) => {
                let current = &state.channel;
                let newer = read.channel.nonce > current.nonce
                    || (read.channel.nonce == current.nonce
                        && (read.channel.value != current.full_amount
                            || read.channel.expiration != current.expiration));
                if newer {
                    let channel = crate::domain::fold::apply(id, Some(state.clone()), &merge_event)
                        .map_err(|e| LookupError::Storage(e.into()))?
                        .channel;
                    MergedChannel {
                        channel,
                        stored,
                        version,
                        head,
                        merge: Some(merge_event),
                        chain: Some(read),
                    }
                } else {
                    MergedChannel {
                        channel: current.clone(),
                        stored,
                        version,
                        head,
                        merge: None,
                        chain: Some(read),
                    }
                }
            }
        };
        Ok(Some(merged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_bytes_print_like_go() {
        let mut group = vec![0u8; 4];
        group[0] = 125;
        assert_eq!(GoBytes(group).to_string(), "[125 0 0 0]");
    }
}

//! Reading the MultiPartyEscrow contract from an Ethereum node (design.md §2, escrow.md §7).
//!
//! What this module keeps true:
//! - A [`ChannelRead`] is one consistent snapshot: the channel's values were read with `eth_call`
//!   at exactly the block whose number and hash it carries, never at a moving "latest".
//! - A channel whose `sender` is the zero address does not exist (the contract's getter returns
//!   zeroes for unknown ids): that is `Ok(None)`, not an error.
//! - Every failure names the JSON-RPC call that failed ([`ChainError`]); nothing is retried here.
//! - No error carries the node's URL (hosted nodes put their API key in it; see `eth.rs`).
//!   Whether a failed read falls back to stored state is the caller's decision (design.md §8).
//! - The ledger never signs or sends a transaction: this module only reads.

mod eth;
pub mod mpe;

use std::future::Future;

use alloy::primitives::B256;
use alloy::transports::TransportError;

pub use eth::{EthChain, MAX_LOG_RANGE_BLOCKS, REDACTED_URL, RPC_TIMEOUT};

use crate::domain::{Amount, ChainBlock, ChannelId, Nonce, OnChainChannel};

/// Why the chain could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node's URL cannot be used; the text never quotes it (it may carry an API key).
    #[error("the RPC URL is not usable: {reason}")]
    InvalidUrl { reason: String },
    /// The CA file for an `https://` node cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("the RPC client could not be built: {reason}")]
    HttpClient { reason: String },
    /// The node was unreachable, timed out, or answered with an error.
    #[error("{call} failed: {source}")]
    Rpc {
        call: &'static str,
        #[source]
        source: Box<TransportError>,
    },
    /// The node answered, but not with what the contract's interface says.
    #[error("{call} returned data that cannot be decoded: {reason}")]
    Decode { call: &'static str, reason: String },
    /// The node does not know the block: `latest`, or a decimal number beyond its head.
    #[error("the node has no block {block}")]
    NoBlock { block: String },
}

impl ChainError {
    fn rpc(call: &'static str) -> impl FnOnce(TransportError) -> Self {
        move |source| Self::Rpc { call, source: Box::new(source) }
    }
}

/// A channel's on-chain values and the block they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRead {
    pub channel: OnChainChannel,
    pub block: ChainBlock,
}

/// What one log of the MPE says about a channel's value and nonce (the logs the claim watcher reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelLogEvent {
    /// `ChannelClaim`: the recipient claimed. `nonce` is the channel's nonce **after** the claim (one
    /// above the nonce the payment was signed at; observed on ganache with the `snet-contracts`
    /// 1.0.1 bytecode). `actual_amount` moved to the recipient, of the signed `planned_amount`;
    /// `keep_amount` is the channel's value after the claim (what stays in it), `send_back_amount`
    /// what went back to the sender (non-zero only with `isSendback`).
    Claim {
        nonce: Nonce,
        actual_amount: Amount,
        planned_amount: Amount,
        send_back_amount: Amount,
        keep_amount: Amount,
    },
    /// `ChannelSenderClaim`: the sender took the channel's value back after expiry. `nonce` is the
    /// channel's nonce after the reclaim (one above the nonce it had). `logged_amount` is the log's
    /// `claimAmount`, **always 0**: the contract logs the value after it has set it to 0 (observed:
    /// 1000 went back, the log says 0). What went back is derived from the value before (see
    /// `escrow::claims`), never read at a past block (which needs an archive node).
    SenderClaim { nonce: Nonce, logged_amount: Amount },
    /// `ChannelAddFunds`: the sender added `amount` to the channel's value.
    AddFunds { amount: Amount },
}

/// One log of the MPE about one channel, with where it is in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelLog {
    pub channel_id: ChannelId,
    pub event: ChannelLogEvent,
    pub transaction_hash: B256,
    pub block_number: u64,
    /// The log's index in its block: logs of one block are applied in this order.
    pub log_index: u64,
}

impl ChannelLog {
    /// Whether this log moves the channel from nonce `nonce` to the next (a claim or a reclaim).
    pub fn ends_nonce(&self, nonce: Nonce) -> bool {
        match &self.event {
            ChannelLogEvent::Claim { nonce: after, .. }
            | ChannelLogEvent::SenderClaim { nonce: after, .. } => nonce.next() == Some(*after),
            ChannelLogEvent::AddFunds { .. } => false,
        }
    }
}

/// The chain as the escrow services see it. Implemented by [`EthChain`]; tests of the services
/// may give their own.
pub trait ChainReader: Send + Sync {
    /// `channels(id)` read at one block: the latest block's number and hash are fetched first, then
    /// `eth_call` runs at that block number, so the values and the block agree. `Ok(None)` when the
    /// sender is the zero address (no such channel).
    fn channel(&self, id: ChannelId) -> impl Future<Output = Result<Option<ChannelRead>, ChainError>> + Send;

    /// The latest block number (`eth_blockNumber`).
    fn current_block(&self) -> impl Future<Output = Result<u64, ChainError>> + Send;

    /// The chain id (`eth_chainId`).
    fn chain_id(&self) -> impl Future<Output = Result<u64, ChainError>> + Send;

    /// The MPE's `ChannelClaim`, `ChannelSenderClaim` and `ChannelAddFunds` logs for this channel in
    /// the inclusive block range `[from_block, to_block]`, in chain order (block, then log index).
    /// An empty range gives no logs.
    fn channel_logs(
        &self,
        id: ChannelId,
        from_block: u64,
        to_block: u64,
    ) -> impl Future<Output = Result<Vec<ChannelLog>, ChainError>> + Send;
}

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

use crate::domain::{Amount, ChainBlock, ChannelId, ClaimOutcome, Nonce, OnChainChannel};

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

/// One claim that left the chain: a `ChannelClaim` or `ChannelSenderClaim` log of the MPE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimLog {
    pub channel_id: ChannelId,
    pub outcome: ClaimOutcome,
    /// The `nonce` field exactly as the log carries it. In both events that is the channel's nonce
    /// **after** the transaction (observed on ganache with the `snet-contracts` 1.0.1 bytecode):
    /// - `ChannelClaim` (recipient): one above the nonce the claimed payment was signed at (a claim
    ///   of a payment signed at nonce 0 logs 1).
    /// - `ChannelSenderClaim` (sender's reclaim after expiry): one above the channel's nonce before
    ///   the reclaim (nonce 0 before, the log says 1, and `channels(id)` then reads nonce 1).
    pub nonce: Nonce,
    /// `claimAmount` exactly as the log carries it.
    /// - `ChannelClaim`: what the recipient actually received (`actualAmount`, at most planned).
    /// - `ChannelSenderClaim`: **always 0**. The contract logs the channel's value after it has
    ///   already set it to 0 (observed: a channel of 1000 reclaimed, the sender's MPE balance back up
    ///   by 1000, the log says 0). What the sender took back is the channel's value before the
    ///   reclaim: [`ChainReader::channel_at_block`] at `block_number - 1`, or the state known before.
    pub amount: Amount,
    /// `plannedAmount` of a `ChannelClaim`: the signed amount, of which `amount` was claimed.
    /// `None` for a `ChannelSenderClaim`, which has no signed payment.
    pub planned_amount: Option<Amount>,
    pub transaction_hash: B256,
    pub block_number: u64,
}

/// The chain as the escrow services see it. Implemented by [`EthChain`]; tests of the services
/// may give their own.
pub trait ChainReader: Send + Sync {
    /// `channels(id)` read at one block: the latest block's number and hash are fetched first, then
    /// `eth_call` runs at that block number, so the values and the block agree. `Ok(None)` when the
    /// sender is the zero address (no such channel).
    fn channel(&self, id: ChannelId) -> impl Future<Output = Result<Option<ChannelRead>, ChainError>> + Send;

    /// `channels(id)` as it was at block `number` (e.g. just before a sender's reclaim, whose log
    /// carries the value after it, always 0).
    fn channel_at_block(
        &self,
        id: ChannelId,
        number: u64,
    ) -> impl Future<Output = Result<Option<ChannelRead>, ChainError>> + Send;

    /// The latest block number (`eth_blockNumber`).
    fn current_block(&self) -> impl Future<Output = Result<u64, ChainError>> + Send;

    /// The chain id (`eth_chainId`).
    fn chain_id(&self) -> impl Future<Output = Result<u64, ChainError>> + Send;

    /// The MPE's `ChannelClaim` and `ChannelSenderClaim` logs for this channel in the inclusive
    /// block range `[from_block, to_block]`, in chain order. An empty range gives no logs.
    fn claim_logs(
        &self,
        id: ChannelId,
        from_block: u64,
        to_block: u64,
    ) -> impl Future<Output = Result<Vec<ClaimLog>, ChainError>> + Send;
}

//! The seed's escrow services, re-built on the event log: paid-call payment transactions
//! ([`payments`]), the channel state they validate against, merged from the ledger and the chain
//! ([`channels`]), the provider's claims ([`claims`]), and the watch of the money at risk of a
//! sender's reclaim ([`at_risk`]).
//!
//! Every write goes through `store::postgres::PgLedger::commit`: lease checked, stream version
//! checked, events folded, appended, projections updated, lease released, in one serializable
//! transaction. A failed request and every read-only path write nothing.
//!
//! No internal detail reaches a client: a chain or storage failure is answered with a fixed text
//! ([`CHAIN_FAILURE`], [`STORAGE_FAILURE`]) and its cause (an RPC URL, where hosted endpoints carry
//! their API key; SQL; host names) goes to the log only. The errors' `client_message` methods
//! choose the text; `Display` keeps the whole cause for the log.

pub mod at_risk;
pub mod channels;
pub mod claims;
pub mod head_block;
pub mod metrics;
pub mod payments;
pub mod renewals;

use std::time::Duration;

use crate::domain::payment::Pricing;
use crate::domain::{EthAddress, GroupId};

/// Longest a lease lives without renewal unless configured: long enough for a slow upstream call,
/// short enough that a crashed replica blocks a channel only briefly.
/// What a client reads when the chain could not be read.
pub const CHAIN_FAILURE: &str = "the blockchain cannot be read now, try again later";
/// What a client reads when the ledger's storage failed.
pub const STORAGE_FAILURE: &str = "the ledger's storage failed, try again later";

pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// Confirmations before a claim seen on chain is recorded as finished (a main-network default).
pub const DEFAULT_CONFIRMATIONS: u64 = 12;
/// How far below the confirmed head the first search of a claim starts when its channel has no log
/// cursor (a claim started before cursors existed, or whose cursor could not be written), in blocks
/// (about 140 days at 12 s a block). Searched once: the cursor then goes on from where it stopped.
pub const DEFAULT_CLAIM_LOG_LOOKBACK: u64 = 1_000_000;
/// Longest a cached chain read is trusted for a payment (see `channels`).
pub const DEFAULT_CHAIN_CACHE_AGE: Duration = Duration::from_secs(5);

/// What the escrow needs to know about its deployment.
#[derive(Debug, Clone)]
pub struct EscrowConfig {
    /// The MultiPartyEscrow contract every signature commits to.
    pub mpe: EthAddress,
    /// This group of replicas: only channels of this group are served.
    pub group_id: GroupId,
    /// The provider's payment address: only channels paying it are served, and only it may claim.
    pub payment_address: EthAddress,
    /// Blocks before expiration from which payments are refused.
    pub expiration_threshold: u64,
    pub pricing: Pricing,
    /// The lease holder name of this replica.
    pub replica_id: String,
    pub lease_ttl: Duration,
    pub confirmations: u64,
    /// See [`DEFAULT_CLAIM_LOG_LOOKBACK`].
    pub claim_log_lookback: u64,
    pub chain_cache_age: Duration,
}

//! The escrow's settings as the tests use them: one replica group, a fixed price, no expiration
//! threshold, no confirmations, a 30 s lease. Tests that need another value override it with struct
//! update syntax (`EscrowConfig { lease_ttl, ..escrow_config(..) }`).

use std::time::Duration;

use mpe_ledger::domain::payment::Pricing;
use mpe_ledger::domain::{Amount, EthAddress, GroupId};
use mpe_ledger::escrow::EscrowConfig;

/// Settings of replica `replica-a` serving `group` for the provider `payment_address` at `price`.
pub fn escrow_config(
    mpe: EthAddress,
    payment_address: EthAddress,
    group: [u8; 32],
    price: u64,
) -> EscrowConfig {
    EscrowConfig {
        mpe,
        group_id: GroupId(group),
        payment_address,
        expiration_threshold: 0,
        pricing: Pricing::Fixed(Amount::from(price)),
        replica_id: "replica-a".to_owned(),
        lease_ttl: Duration::from_secs(30),
        confirmations: 0,
        claim_log_lookback: 10_000,
        chain_cache_age: Duration::from_secs(5),
    }
}

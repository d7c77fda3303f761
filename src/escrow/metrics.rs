//! Counters of the escrow: what operators watch to see payments, refusals, lease contention and
//! how often the chain is read.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct EscrowMetrics {
    /// Payment transactions by outcome: `committed`, `duplicate`, `refused`, `rolled_back`.
    pub payments: IntCounterVec,
    /// Refused payments by gRPC status code (1000 for an incorrect nonce).
    pub payment_errors: IntCounterVec,
    /// Starts refused because another transaction holds the channel's lease.
    pub lease_conflicts: IntCounter,
    /// Reads of `channels(id)` sent to the chain.
    pub chain_reads: IntCounter,
    /// Payment lookups served from the chain cache.
    pub chain_cache_hits: IntCounter,
    /// Chain reads that failed (the stored state was used when known).
    pub chain_read_failures: IntCounter,
}

impl EscrowMetrics {
    /// Counters that no registry exports (tests).
    pub fn unregistered() -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        Self {
            payments: IntCounterVec::new(
                Opts::new("mpe_ledger_payments_total", "Payment transactions by outcome"),
                &["outcome"],
            )
            .expect("valid metric"),
            payment_errors: IntCounterVec::new(
                Opts::new("mpe_ledger_payment_errors_total", "Refused payments by gRPC status code"),
                &["code"],
            )
            .expect("valid metric"),
            lease_conflicts: counter(
                "mpe_ledger_lease_conflicts_total",
                "Payments refused: channel lease held",
            ),
            chain_reads: counter("mpe_ledger_chain_reads_total", "channels(id) reads sent to the chain"),
            chain_cache_hits: counter(
                "mpe_ledger_chain_cache_hits_total",
                "Payment lookups served from cache",
            ),
            chain_read_failures: counter("mpe_ledger_chain_read_failures_total", "Failed channels(id) reads"),
        }
    }

    pub fn new(registry: &Registry) -> Self {
        let metrics = Self::unregistered();
        for collector in [
            Box::new(metrics.payments.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.payment_errors.clone()),
            Box::new(metrics.lease_conflicts.clone()),
            Box::new(metrics.chain_reads.clone()),
            Box::new(metrics.chain_cache_hits.clone()),
            Box::new(metrics.chain_read_failures.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        metrics
    }
}

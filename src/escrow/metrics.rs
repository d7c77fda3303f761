//! Counters of the escrow: what operators watch to see payments, refusals, lease contention and
//! how often the chain is read; and where a paid call's time goes.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

/// The phases of a paid call timed in [`EscrowMetrics::paid_call_seconds`].
pub const PAID_CALL_PHASES: [&str; 3] = ["payment_start", "upstream", "payment_commit"];

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
    /// Seconds spent in each phase of a paid call ([`PAID_CALL_PHASES`]): validating the payment
    /// and taking its lease, the upstream service's call (to its last reply byte), recording it.
    pub paid_call_seconds: HistogramVec,
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
            paid_call_seconds: HistogramVec::new(
                HistogramOpts::new("mpe_ledger_paid_call_seconds", "Seconds per phase of a paid call")
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                        1.0, 2.5, 5.0, 10.0, 30.0,
                    ]),
                &["phase"],
            )
            .expect("valid metric"),
        }
    }

    pub fn new(registry: &Registry) -> Self {
        let metrics = Self::unregistered();
        for phase in PAID_CALL_PHASES {
            metrics.paid_call_seconds.with_label_values(&[phase]);
        }
        for collector in [
            Box::new(metrics.payments.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.payment_errors.clone()),
            Box::new(metrics.lease_conflicts.clone()),
            Box::new(metrics.chain_reads.clone()),
            Box::new(metrics.chain_cache_hits.clone()),
            Box::new(metrics.chain_read_failures.clone()),
            Box::new(metrics.paid_call_seconds.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        metrics
    }
}

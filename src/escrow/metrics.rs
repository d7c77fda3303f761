//! Counters of the escrow: what operators watch to see payments, refusals, lease contention and
//! how often the chain is read; and where a paid call's time goes.

use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The phases of a paid call timed in [`EscrowMetrics::paid_call_seconds`].
pub const PAID_CALL_PHASES: [&str; 3] = ["payment_start", "upstream", "payment_commit"];
/// How a paid call ended, in [`EscrowMetrics::paid_call_duration`]: `committed` (the service
/// answered status 0 and the payment is recorded), `failed` (forwarded, nothing recorded: the
/// service's error, a deadline, a broken stream, a failed commit), `refused` (never forwarded).
pub const PAID_CALL_OUTCOMES: [&str; 3] = ["committed", "failed", "refused"];
/// The limits of [`EscrowMetrics::paid_call_limits`]: `deadline` (a call cut at its deadline),
/// `concurrency` (a call refused because `max_concurrent_calls` were in flight).
pub const PAID_CALL_LIMITS: [&str; 2] = ["deadline", "concurrency"];

/// Buckets of the paid-call histograms, in seconds: 100 µs to 5 minutes.
const SECONDS_BUCKETS: [f64; 19] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 300.0,
];

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
    /// Checks of a channel's claims against the chain's logs that failed (one per channel and pass,
    /// or one per pass when the head block could not be read); the other channels were still checked.
    pub claim_check_failures: IntCounter,
    /// Seconds spent in each phase of a paid call ([`PAID_CALL_PHASES`]): validating the payment
    /// and taking its lease, the upstream service's call (the upstream latency: from the request
    /// sent to the service's final status), recording it.
    pub paid_call_seconds: HistogramVec,
    /// Seconds of a whole paid call, from its arrival to its final status, by outcome
    /// ([`PAID_CALL_OUTCOMES`]).
    pub paid_call_duration: HistogramVec,
    /// Paid calls between their arrival and their end (what `max_concurrent_calls` bounds).
    pub paid_calls_in_flight: IntGauge,
    /// Paid calls stopped by a limit ([`PAID_CALL_LIMITS`]).
    pub paid_call_limits: IntCounterVec,
    /// Cogs unclaimed or in claims not landed on channels at most `claims_due_within_blocks`
    /// before their expiration (see `escrow::at_risk`). A Prometheus sample is a float: exact up
    /// to 2^53 cogs, for alerting; the exact amounts are in `claims due` and `reporting.money_at_risk`.
    pub money_due_cogs: Gauge,
    /// The channels counted in [`Self::money_due_cogs`].
    pub channels_due: IntGauge,
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
            claim_check_failures: counter(
                "mpe_ledger_claim_check_failures_total",
                "Failed checks of a channel's claims against the chain's logs",
            ),
            paid_call_seconds: HistogramVec::new(
                HistogramOpts::new("mpe_ledger_paid_call_seconds", "Seconds per phase of a paid call")
                    .buckets(SECONDS_BUCKETS.to_vec()),
                &["phase"],
            )
            .expect("valid metric"),
            paid_call_duration: HistogramVec::new(
                HistogramOpts::new(
                    "mpe_ledger_paid_call_duration_seconds",
                    "Seconds of a whole paid call by outcome",
                )
                .buckets(SECONDS_BUCKETS.to_vec()),
                &["outcome"],
            )
            .expect("valid metric"),
            paid_calls_in_flight: IntGauge::new("mpe_ledger_paid_calls_in_flight", "Paid calls in flight")
                .expect("valid metric"),
            paid_call_limits: IntCounterVec::new(
                Opts::new("mpe_ledger_paid_call_limits_total", "Paid calls stopped by a limit"),
                &["limit"],
            )
            .expect("valid metric"),
            money_due_cogs: Gauge::new(
                "mpe_ledger_money_due_cogs",
                "Unclaimed and in-progress cogs within claims_due_within_blocks of expiration",
            )
            .expect("valid metric"),
            channels_due: IntGauge::new(
                "mpe_ledger_channels_due",
                "Channels with money at risk within claims_due_within_blocks of expiration",
            )
            .expect("valid metric"),
        }
    }

    pub fn new(registry: &Registry) -> Self {
        let metrics = Self::unregistered();
        for phase in PAID_CALL_PHASES {
            metrics.paid_call_seconds.with_label_values(&[phase]);
        }
        for outcome in PAID_CALL_OUTCOMES {
            metrics.paid_call_duration.with_label_values(&[outcome]);
        }
        for limit in PAID_CALL_LIMITS {
            metrics.paid_call_limits.with_label_values(&[limit]);
        }
        for collector in [
            Box::new(metrics.payments.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.payment_errors.clone()),
            Box::new(metrics.lease_conflicts.clone()),
            Box::new(metrics.chain_reads.clone()),
            Box::new(metrics.chain_cache_hits.clone()),
            Box::new(metrics.chain_read_failures.clone()),
            Box::new(metrics.claim_check_failures.clone()),
            Box::new(metrics.paid_call_seconds.clone()),
            Box::new(metrics.paid_call_duration.clone()),
            Box::new(metrics.paid_calls_in_flight.clone()),
            Box::new(metrics.paid_call_limits.clone()),
            Box::new(metrics.money_due_cogs.clone()),
            Box::new(metrics.channels_due.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        metrics
    }
}

//! Payment commits through the library, without the network: the escrow wired as `serve` wires it
//! (`startup::Escrow::new`), each writer looping `PaymentService::start` then `commit` on its own
//! channel of the real chain.

use std::sync::Arc;
use std::time::Instant;

use mpe_ledger::chain::EthChain;
use mpe_ledger::domain::payment::{Payment, Pricing};
use mpe_ledger::domain::{Amount, EthAddress, GroupId, Nonce};
use mpe_ledger::escrow::channels::ChannelSource;
use mpe_ledger::escrow::metrics::EscrowMetrics;
use mpe_ledger::escrow::payments::PaymentService;
use mpe_ledger::escrow::{self, EscrowConfig};
use mpe_ledger::store::leases::PgLeases;
use mpe_ledger::store::postgres::{self, PgLedger};
use mpe_ledger::telemetry::Metrics;
use sqlx::PgPool;

use crate::common::upstream::ECHO;
use crate::load::Timing;
use crate::stats::{Record, Summary};
use crate::wallet::{GROUP_ID, Presigned};

/// The escrow of one in-process replica and its metrics.
pub struct StoreReplica {
    pub payments: Arc<PaymentService<EthChain>>,
    pub metrics: Metrics,
    pub pool: PgPool,
    /// The leases' pool (commits without waiting for the WAL flush), as `serve` has it.
    pub operational: PgPool,
    mpe: EthAddress,
}

impl StoreReplica {
    /// Connects a pool of `pool_size` (and an operational pool of serve's default size) to the
    /// (migrated) database at `url` and wires the escrow.
    pub async fn connect(
        url: &str,
        pool_size: u32,
        rpc_url: &str,
        mpe: EthAddress,
        provider: EthAddress,
    ) -> Self {
        let pool = postgres::connect(url, pool_size).await.expect("the store's pool connects");
        let operational = postgres::connect_operational(url, postgres::DEFAULT_OPERATIONAL_POOL_SIZE)
            .expect("the store's operational pool");
        let metrics = Metrics::new();
        let config = Arc::new(EscrowConfig {
            mpe,
            group_id: GroupId(GROUP_ID),
            payment_address: provider,
            expiration_threshold: 0,
            pricing: Pricing::Fixed(Amount::from(crate::PRICE)),
            replica_id: "bench-store".to_owned(),
            lease_ttl: escrow::DEFAULT_LEASE_TTL,
            confirmations: 0,
            claim_log_lookback: escrow::DEFAULT_CLAIM_LOG_LOOKBACK,
            chain_cache_age: escrow::DEFAULT_CHAIN_CACHE_AGE,
        });
        let chain = EthChain::connect(rpc_url, mpe).expect("a valid ganache URL");
        let ledger = PgLedger::new(pool.clone(), metrics.store.clone());
        let channels = Arc::new(
            ChannelSource::new(ledger, chain, config.clone())
                .with_metrics(EscrowMetrics::new(&metrics.registry)),
        );
        let leases = PgLeases::new(operational.clone(), metrics.store.clone());
        let payments = Arc::new(PaymentService::new(channels, leases, config));
        Self { payments, metrics, pool, operational, mpe }
    }

    /// `writers` concurrent writers, writer `i` on `presigned[i]`; returns the summary, the
    /// serialization retries of the phase, and the used payments.
    pub async fn run(&self, presigned: Vec<Presigned>, timing: Timing) -> (Summary, u64, Vec<Presigned>) {
        let retries_before = crate::metrics::sum(&self.metrics.render(), crate::metrics::RETRIES);
        let window_start = Instant::now() + timing.warmup;
        let end = window_start + timing.window;
        let mut tasks = tokio::task::JoinSet::new();
        for payment in presigned {
            tasks.spawn(writer(
                self.payments.clone(),
                self.pool.clone(),
                self.mpe,
                payment,
                (window_start, end),
            ));
        }
        let mut record = Record::default();
        let mut used = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (writer_record, presigned) = joined.expect("a writer does not panic");
            record.merge(writer_record);
            used.push(presigned);
        }
        let retries = crate::metrics::sum(&self.metrics.render(), crate::metrics::RETRIES) - retries_before;
        (record.summary(timing.window), retries as u64, used)
    }
}

async fn writer(
    payments: Arc<PaymentService<EthChain>>,
    pool: PgPool,
    mpe: EthAddress,
    mut presigned: Presigned,
    (window_start, end): (Instant, Instant),
) -> (Record, Presigned) {
    let mut record = Record::default();
    while Instant::now() < end {
        let Some((amount, signature)) = presigned.current() else {
            record.exhausted += 1;
            break;
        };
        let payment = Payment {
            mpe,
            channel_id: presigned.channel,
            nonce: Nonce::ZERO,
            amount: Amount::from(amount),
            signature: signature.as_bytes().to_vec(),
        };
        let started = Instant::now();
        let outcome = match payments.start(payment, ECHO).await {
            Ok(transaction) => payments.commit(transaction).await.map(|_| ()),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => {
                record.ok(started, started.elapsed(), window_start);
                presigned.advance();
            }
            Err(error) => {
                record.error(started, error.code.grpc_status().to_string(), window_start);
                presigned.resync(&pool).await;
            }
        }
    }
    (record, presigned)
}

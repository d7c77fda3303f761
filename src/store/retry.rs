//! The one way the Postgres backend writes: a `SERIALIZABLE` transaction, retried on serialization
//! failure (40001) and deadlock (40P01) a bounded number of times with jittered backoff, each retry
//! counted in metrics and in the span.

use std::time::Duration;

use futures::future::BoxFuture;
use prometheus::{IntCounterVec, Opts, Registry};
use rand::Rng;
use sqlx::PgPool;

use super::StoreError;

/// Attempts before giving up; contention on one channel is bounded by its lease in practice, so
/// this is only reached under pathological load.
pub const MAX_ATTEMPTS: u32 = 40;
const FIRST_BACKOFF: Duration = Duration::from_millis(1);
const MAX_BACKOFF: Duration = Duration::from_millis(64);

/// The operations that write through [`serializable`], as labelled in metrics.
pub const OPERATIONS: [&str; 8] = [
    "kv.put",
    "kv.put_if_absent",
    "kv.compare_and_swap",
    "kv.delete",
    "channels.put",
    "channels.put_if_absent",
    "channels.compare_and_swap",
    "rebuild",
];

/// Counters of the storage layer.
#[derive(Clone)]
pub struct StoreMetrics {
    pub serialization_retries: IntCounterVec,
    pub retries_exhausted: IntCounterVec,
}

impl StoreMetrics {
    pub fn new(registry: &Registry) -> Self {
        let metrics = Self::unregistered();
        // Export every known operation from the start, at 0, so dashboards see the series.
        for operation in OPERATIONS {
            metrics.serialization_retries.with_label_values(&[operation]);
            metrics.retries_exhausted.with_label_values(&[operation]);
        }
        registry.register(Box::new(metrics.serialization_retries.clone())).expect("metric names are unique");
        registry.register(Box::new(metrics.retries_exhausted.clone())).expect("metric names are unique");
        metrics
    }

    /// Counters that no registry exports (tests, one-shot commands).
    pub fn unregistered() -> Self {
        let retries = Opts::new(
            "mpe_ledger_serialization_retries_total",
            "Transactions retried after a serialization failure or deadlock",
        );
        let exhausted = Opts::new(
            "mpe_ledger_serialization_retries_exhausted_total",
            "Transactions abandoned after the maximum number of attempts",
        );
        Self {
            serialization_retries: IntCounterVec::new(retries, &["operation"]).expect("valid metric"),
            retries_exhausted: IntCounterVec::new(exhausted, &["operation"]).expect("valid metric"),
        }
    }

    pub fn retries(&self, operation: &str) -> u64 {
        self.serialization_retries.with_label_values(&[operation]).get()
    }
}

/// True for the errors that a retry of the whole transaction can cure.
pub fn is_retryable(error: &StoreError) -> bool {
    match error {
        StoreError::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40001") | Some("40P01"))
        }
        _ => false,
    }
}

/// An open serializable transaction, handed to a body and handed back with its answer.
pub type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Runs `body` in a serializable transaction, retrying as the module doc says. The body may run
/// several times: it must not have effects outside the transaction. It owns the transaction while it
/// runs and returns it with its answer (ownership lets the body's future borrow the caller's data).
#[tracing::instrument(skip_all, fields(operation = operation, attempts = tracing::field::Empty))]
pub async fn serializable<'a, T, F>(
    pool: &PgPool,
    metrics: &StoreMetrics,
    operation: &'static str,
    mut body: F,
) -> Result<T, StoreError>
where
    F: FnMut(Tx) -> BoxFuture<'a, Result<(Tx, T), StoreError>>,
{
    let mut attempt = 1;
    loop {
        let result = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").execute(&mut *tx).await?;
            let (tx, value) = body(tx).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        match result {
            Err(error) if is_retryable(&error) => {
                if attempt >= MAX_ATTEMPTS {
                    metrics.retries_exhausted.with_label_values(&[operation]).inc();
                    tracing::Span::current().record("attempts", attempt);
                    return Err(StoreError::RetriesExhausted { operation, attempts: attempt });
                }
                metrics.serialization_retries.with_label_values(&[operation]).inc();
                let ceiling = FIRST_BACKOFF.saturating_mul(1 << attempt.min(6)).min(MAX_BACKOFF);
                let pause = rand::rng().random_range(Duration::ZERO..=ceiling);
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            other => {
                tracing::Span::current().record("attempts", attempt);
                return other;
            }
        }
    }
}

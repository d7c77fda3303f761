//! The one way the Postgres backend writes: a `SERIALIZABLE` transaction, retried on serialization
//! failure (40001) and deadlock (40P01) with jittered backoff, each retry counted in metrics and in
//! the span.
//!
//! Two retry policies ([`Retry`]):
//! - [`Retry::Attempts`]: at most N attempts (storage facade, claims, rebuild). A lost connection is
//!   an error: the caller decides.
//! - [`Retry::Until`]: until a deadline, whatever the contention (a paid call's payment commit, whose
//!   service already ran: the deadline is its lease's lifetime). Lost connections, pool time-outs and
//!   a COMMIT whose acknowledgement was lost are retried too, so the body **must** be idempotent:
//!   it must recognise its own earlier commit from what was recorded (the ledger commit does, by the
//!   stream version and the payment's identity) instead of writing twice.
//!
//! What this module keeps true about the connection:
//! - `BEGIN ISOLATION LEVEL SERIALIZABLE` is one round trip (no separate `SET TRANSACTION`).
//! - A COMMIT that the server refused ended the transaction on the server: no ROLLBACK is sent after
//!   it (a ROLLBACK there only earns the warning "there is no transaction in progress").
//! - A body that fails, or a future dropped mid-transaction, rolls back; a connection whose state is
//!   unknown (an I/O error) is closed instead of going back to the pool.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus::{IntCounterVec, Opts, Registry};
use rand::Rng;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::time::Instant;

use super::StoreError;

/// Attempts before giving up under [`Retry::Attempts`] (the default policy).
pub const MAX_ATTEMPTS: u32 = 40;
const FIRST_BACKOFF: Duration = Duration::from_millis(1);
const MAX_BACKOFF: Duration = Duration::from_millis(64);
/// Longest pause between two attempts of a connection-level failure under [`Retry::Until`] (the
/// database may be restarting: no need to hammer it).
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

/// The operations that write through [`serializable`], as labelled in metrics.
pub const OPERATIONS: [&str; 10] = [
    "kv.put",
    "kv.put_if_absent",
    "kv.compare_and_swap",
    "kv.delete",
    "channels.put",
    "channels.put_if_absent",
    "channels.compare_and_swap",
    "ledger.commit",
    "ledger.commit_batch",
    "rebuild",
];

/// How long a transaction is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// At most this many attempts; only serialization failures and deadlocks are retried.
    Attempts(u32),
    /// Until this instant; connection failures are retried too (module doc).
    Until(Instant),
}

/// How the transaction starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// `BEGIN ISOLATION LEVEL SERIALIZABLE`.
    Plain,
    /// The same, with sequential scans disabled for the transaction: every statement of the body is
    /// a lookup on a unique key, and the planner must not turn one into a sequential scan (it does
    /// on small tables), which under SSI would lock the whole table against every other writer.
    PointLookups,
}

impl Begin {
    fn statement(self) -> &'static str {
        match self {
            Self::Plain => "BEGIN ISOLATION LEVEL SERIALIZABLE",
            Self::PointLookups => "BEGIN ISOLATION LEVEL SERIALIZABLE; SET LOCAL enable_seqscan = off",
        }
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self::Attempts(MAX_ATTEMPTS)
    }
}

/// Counters of the storage layer.
#[derive(Clone)]
pub struct StoreMetrics {
    pub serialization_retries: IntCounterVec,
    pub retries_exhausted: IntCounterVec,
    /// Attempts repeated after a lost connection or an unacknowledged COMMIT ([`Retry::Until`]).
    pub connection_retries: IntCounterVec,
}

impl StoreMetrics {
    pub fn new(registry: &Registry) -> Self {
        let metrics = Self::unregistered();
        // Export every known operation from the start, at 0, so dashboards see the series.
        for operation in OPERATIONS {
            metrics.serialization_retries.with_label_values(&[operation]);
            metrics.retries_exhausted.with_label_values(&[operation]);
            metrics.connection_retries.with_label_values(&[operation]);
        }
        for counter in
            [&metrics.serialization_retries, &metrics.retries_exhausted, &metrics.connection_retries]
        {
            registry.register(Box::new(counter.clone())).expect("metric names are unique");
        }
        metrics
    }

    /// Counters that no registry exports (tests, one-shot commands).
    pub fn unregistered() -> Self {
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["operation"]).expect("valid metric")
        };
        Self {
            serialization_retries: counter(
                "mpe_ledger_serialization_retries_total",
                "Transactions retried after a serialization failure or deadlock",
            ),
            retries_exhausted: counter(
                "mpe_ledger_serialization_retries_exhausted_total",
                "Transactions abandoned after the maximum number of attempts or at their deadline",
            ),
            connection_retries: counter(
                "mpe_ledger_connection_retries_total",
                "Transactions retried after a lost connection or an unacknowledged COMMIT",
            ),
        }
    }

    pub fn retries(&self, operation: &str) -> u64 {
        self.serialization_retries.with_label_values(&[operation]).get()
    }

    /// Serialization retries of every operation.
    pub fn total_retries(&self) -> u64 {
        OPERATIONS.iter().map(|operation| self.retries(operation)).sum()
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

/// True for the errors after which nobody knows what the server did: the connection broke, or no
/// connection could be had. Retried only under [`Retry::Until`].
pub fn is_connection_failure(error: &StoreError) -> bool {
    match error {
        StoreError::Database(error) => {
            matches!(
                error,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::WorkerCrashed
            ) || matches!(error, sqlx::Error::Database(db)
                // admin_shutdown, crash_shutdown, cannot_connect_now: the server is going away or
                // coming back.
                if matches!(db.code().as_deref(), Some("57P01") | Some("57P02") | Some("57P03")))
        }
        _ => false,
    }
}

/// An open serializable transaction on a pooled connection, handed to a body and handed back with
/// its answer. Dereferences to the connection. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx {
    conn: Option<PoolConnection<Postgres>>,
}

impl Tx {
    async fn begin(pool: &PgPool, begin: Begin) -> Result<Self, StoreError> {
        let mut conn = pool.acquire().await?;
        // Both statements of `PointLookups` go in one simple-query round trip.
        if let Err(error) = sqlx::raw_sql(begin.statement()).execute(&mut *conn).await {
            conn.close_on_drop();
            return Err(error.into());
        }
        Ok(Self { conn: Some(conn) })
    }

    /// Commits. After an error the transaction is over either way: refused by the server (nothing
    /// written), or unknown (the connection broke; it is closed).
    async fn commit(mut self) -> Result<(), StoreError> {
        let mut conn = self.conn.take().expect("an open transaction has its connection");
        match sqlx::raw_sql("COMMIT").execute(&mut *conn).await {
            Ok(_) => Ok(()),
            Err(error) => {
                if !matches!(error, sqlx::Error::Database(_)) {
                    conn.close_on_drop();
                }
                Err(error.into())
            }
        }
    }
}

impl Deref for Tx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("an open transaction has its connection")
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("an open transaction has its connection")
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        match tokio::runtime::Handle::try_current() {
            // The connection goes back to the pool once the rollback is through.
            Ok(runtime) => {
                runtime.spawn(async move {
                    if sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.is_err() {
                        conn.close_on_drop();
                    }
                });
            }
            Err(_) => conn.close_on_drop(),
        }
    }
}

/// Runs `body` in a serializable transaction under the default policy ([`Retry::Attempts`]).
pub async fn serializable<'a, T, F>(
    pool: &PgPool,
    metrics: &StoreMetrics,
    operation: &'static str,
    body: F,
) -> Result<T, StoreError>
where
    F: FnMut(Tx) -> BoxFuture<'a, Result<(Tx, T), StoreError>>,
{
    serializable_with(pool, metrics, operation, Begin::Plain, Retry::default(), body).await
}

/// Runs `body` in a serializable transaction, retrying as `retry` says (module doc). The body may
/// run several times: it must not have effects outside the transaction. It owns the transaction
/// while it runs and returns it with its answer (ownership lets the body's future borrow the
/// caller's data).
#[tracing::instrument(skip_all, fields(operation = operation, attempts = tracing::field::Empty))]
pub async fn serializable_with<'a, T, F>(
    pool: &PgPool,
    metrics: &StoreMetrics,
    operation: &'static str,
    begin: Begin,
    retry: Retry,
    mut body: F,
) -> Result<T, StoreError>
where
    F: FnMut(Tx) -> BoxFuture<'a, Result<(Tx, T), StoreError>>,
{
    let mut attempt = 1;
    let mut connection_failures = 0u32;
    loop {
        let result = async {
            let tx = Tx::begin(pool, begin).await?;
            let (tx, value) = body(tx).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        let error = match result {
            Ok(value) => {
                tracing::Span::current().record("attempts", attempt);
                return Ok(value);
            }
            Err(error) => error,
        };
        let serialization = is_retryable(&error);
        let connection = matches!(retry, Retry::Until(_)) && is_connection_failure(&error);
        if !serialization && !connection {
            tracing::Span::current().record("attempts", attempt);
            return Err(error);
        }
        let give_up = match retry {
            Retry::Attempts(max) => attempt >= max,
            Retry::Until(deadline) => Instant::now() >= deadline,
        };
        if give_up {
            metrics.retries_exhausted.with_label_values(&[operation]).inc();
            tracing::Span::current().record("attempts", attempt);
            tracing::error!(%error, attempt, "{operation}: giving up");
            return Err(if serialization {
                StoreError::RetriesExhausted { operation, attempts: attempt }
            } else {
                error
            });
        }
        let pause = if serialization {
            metrics.serialization_retries.with_label_values(&[operation]).inc();
            let ceiling = FIRST_BACKOFF.saturating_mul(1 << attempt.min(6)).min(MAX_BACKOFF);
            rand::rng().random_range(Duration::ZERO..=ceiling)
        } else {
            metrics.connection_retries.with_label_values(&[operation]).inc();
            connection_failures += 1;
            tracing::warn!(%error, attempt, "{operation}: connection failure; retrying");
            FIRST_BACKOFF.saturating_mul(1 << connection_failures.min(9)).min(MAX_RECONNECT_BACKOFF)
        };
        let pause = match retry {
            Retry::Until(deadline) => pause.min(deadline.saturating_duration_since(Instant::now())),
            Retry::Attempts(_) => pause,
        };
        tokio::time::sleep(pause).await;
        attempt += 1;
    }
}

//! `AtomicStorage` on Postgres: the `kv` projection for reads, and for every write a serializable
//! transaction that appends `key put` / `key deleted` to the key's stream and updates `kv`.
//! Operations that change nothing (a refused PutIfAbsent or CAS, deleting an absent key) append
//! nothing.

use std::sync::Arc;

use sea_query::{Expr, ExprTrait, Order, PostgresQueryBuilder, Query};
use sea_query_sqlx::SqlxBinder;
use sqlx::{PgConnection, PgPool, Row};

use crate::domain::{Event, KvEvent, StreamId};
use crate::store::retry::{StoreMetrics, serializable};
use crate::store::{AtomicStorage, StoreError, check_limits, prefix_upper_bound};

use super::log::{append, stream_head};

#[derive(Clone)]
pub struct PgAtomicStorage {
    pool: PgPool,
    metrics: Arc<StoreMetrics>,
}

impl PgAtomicStorage {
    pub fn new(pool: PgPool, metrics: Arc<StoreMetrics>) -> Self {
        Self { pool, metrics }
    }

    /// Runs one write: `decide` sees the current value and returns the new one (`Some(None)` deletes,
    /// `None` leaves the key alone) and what to answer.
    async fn write<T, D>(&self, operation: &'static str, key: &[u8], decide: D) -> Result<T, StoreError>
    where
        T: Send,
        D: Fn(Option<&[u8]>) -> (Option<Option<Vec<u8>>>, T) + Send + Sync,
    {
        let decide = &decide;
        serializable(&self.pool, &self.metrics, operation, |mut tx| {
            Box::pin(async move {
                let current = current_value(&mut tx, key).await?;
                let (change, answer) = decide(current.as_deref());
                if let Some(new_value) = change {
                    write_key(&mut tx, key, new_value).await?;
                }
                Ok((tx, answer))
            })
        })
        .await
    }
}

async fn current_value(conn: &mut PgConnection, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(sqlx::query_scalar!("SELECT value FROM ledger.kv WHERE key = $1", key).fetch_optional(conn).await?)
}

/// Appends the key's event and applies it to the `kv` projection.
async fn write_key(conn: &mut PgConnection, key: &[u8], value: Option<Vec<u8>>) -> Result<(), StoreError> {
    let stream = StreamId::Kv(key.to_vec());
    let head = stream_head(conn, &stream).await?;
    match value {
        Some(value) => {
            let event = Event::Kv(KvEvent::KeyPut { key: key.to_vec(), value: value.clone() });
            append(conn, &stream, head, &[event]).await?;
            sqlx::query!(
                "INSERT INTO ledger.kv (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                key,
                value
            )
            .execute(conn)
            .await?;
        }
        None => {
            let event = Event::Kv(KvEvent::KeyDeleted { key: key.to_vec() });
            append(conn, &stream, head, &[event]).await?;
            sqlx::query!("DELETE FROM ledger.kv WHERE key = $1", key).execute(conn).await?;
        }
    }
    Ok(())
}

impl AtomicStorage for PgAtomicStorage {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        check_limits(key, None)?;
        let mut conn = self.pool.acquire().await?;
        current_value(&mut conn, key).await
    }

    async fn get_by_key_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        check_limits(prefix, None)?;
        // A range on the b-tree rather than LIKE: `%`, `_` and NUL in a prefix are just bytes.
        let mut query = Query::select();
        query
            .column("value")
            .from(("ledger", "kv"))
            .and_where(Expr::col("key").gte(prefix.to_vec()))
            .order_by("key", Order::Asc);
        if let Some(upper) = prefix_upper_bound(prefix) {
            query.and_where(Expr::col("key").lt(upper));
        }
        let (sql, values) = query.build_sqlx(PostgresQueryBuilder);
        let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), values).fetch_all(&self.pool).await?;
        rows.iter().map(|row| row.try_get::<Vec<u8>, _>("value").map_err(StoreError::from)).collect()
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_limits(key, Some(value))?;
        self.write("kv.put", key, |_| (Some(Some(value.to_vec())), ())).await
    }

    async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        check_limits(key, Some(value))?;
        self.write("kv.put_if_absent", key, |current| match current {
            Some(_) => (None, false),
            None => (Some(Some(value.to_vec())), true),
        })
        .await
    }

    async fn compare_and_swap(&self, key: &[u8], prev: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        check_limits(key, Some(new))?;
        self.write("kv.compare_and_swap", key, |current| match current {
            Some(current) if current == prev => (Some(Some(new.to_vec())), true),
            _ => (None, false),
        })
        .await
    }

    async fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        check_limits(key, None)?;
        self.write("kv.delete", key, |current| match current {
            Some(_) => (Some(None), ()),
            None => (None, ()),
        })
        .await
    }
}

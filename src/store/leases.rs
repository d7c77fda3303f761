//! Channel leases: the ledger's replacement for the seed's never-expiring lock (escrow.md §2.8, §9
//! item 1). A lease is held by one replica, carries a random token, and expires by the database's
//! clock; it is renewable, released on commit, rollback and graceful shutdown, and reclaimable by
//! anyone after expiry. A holder that lost its lease cannot write: commits check the token in the
//! same transaction (see `postgres::ledger`). An operator's forced release is recorded as a
//! `lease released by operator` event on the stream `lease/<channel>`.
//!
//! Leases are operational state, not money: acquiring, renewing and releasing are single
//! statements at READ COMMITTED (one round trip each, no serialization retries, no SSI predicate
//! locks that could make payments on other channels conflict), and the service runs them on a pool
//! whose commits do not wait for the WAL flush (`postgres::connect_operational`): a lease lost in a
//! crash only frees its channel early, and the versioned commit keeps a stale holder out. The lease
//! taken by a payment is released by the payment's own (durable) commit.
//!
//! A channel's row in `ledger.leases` is kept once created (migration 0008): a lease is held while
//! its token is set, releasing clears the token, and taking it again updates the row. Every one of
//! these writes changes no indexed column, so it is a heap-only update whose old version is pruned
//! in place; inserting and deleting a row per paid call instead bloated the table by a dead row per
//! call between autovacuum passes, and made every lease statement slower as load went on.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{ChannelId, Event, LeaseEvent, StreamId};

use super::StoreError;
use super::postgres::log::{append, stream_head};
use super::postgres::projection::{StoredChannel, take_lease_and_load};
use super::retry::{StoreMetrics, serializable};

/// A lease this process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub channel_id: ChannelId,
    pub holder: String,
    pub token: Uuid,
}

/// A lease as the table shows it (times in the database's text form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub channel_id: ChannelId,
    pub holder: String,
    pub acquired_at: String,
    pub expires_at: String,
    pub expired: bool,
}

/// The answer to an acquisition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquisition {
    Acquired(Lease),
    HeldBy(LeaseInfo),
}

#[derive(Clone)]
pub struct PgLeases {
    pool: PgPool,
    metrics: Arc<StoreMetrics>,
}

impl PgLeases {
    pub fn new(pool: PgPool, metrics: Arc<StoreMetrics>) -> Self {
        Self { pool, metrics }
    }

    /// Takes the channel's lease if it is free or expired. One statement, one round trip (the one
    /// of [`Self::acquire_and_load`]; the channel's state it also reads is not needed here).
    pub async fn acquire(
        &self,
        channel_id: ChannelId,
        holder: &str,
        ttl: Duration,
    ) -> Result<Acquisition, StoreError> {
        Ok(self.acquire_and_load(channel_id, holder, ttl).await?.0)
    }

    /// [`Self::acquire`] and the channel's stored state in one statement (a paid call's start).
    pub async fn acquire_and_load(
        &self,
        channel_id: ChannelId,
        holder: &str,
        ttl: Duration,
    ) -> Result<(Acquisition, Option<StoredChannel>), StoreError> {
        let mut conn = self.pool.acquire().await?;
        take_lease_and_load(&mut conn, channel_id, holder, ttl).await
    }

    /// Extends a lease still held by this token; `false` when it was lost.
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let renewed = sqlx::query!(
            "UPDATE ledger.leases SET expires_at = now() + make_interval(secs => $3::float8)
             WHERE channel_id = $1::text::numeric AND token = $2",
            lease.channel_id.to_string(),
            lease.token,
            ttl.as_secs_f64(),
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// Gives a lease back; `false` when it was no longer ours (expired and taken, or released).
    pub async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        let released = sqlx::query!(
            "UPDATE ledger.leases SET token = NULL WHERE channel_id = $1::text::numeric AND token = $2",
            lease.channel_id.to_string(),
            lease.token
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(released == 1)
    }

    /// Releases every lease of one replica (graceful shutdown). Returns how many.
    pub async fn release_all_of(&self, holder: &str) -> Result<u64, StoreError> {
        let released = sqlx::query!(
            "UPDATE ledger.leases SET token = NULL WHERE holder = $1 AND token IS NOT NULL",
            holder
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(released)
    }

    pub async fn list(&self) -> Result<Vec<LeaseInfo>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        lease_rows(&mut conn, None).await
    }

    /// The operator's release (`mpe-ledger leases release CHANNEL`): removes the lease whoever holds
    /// it and records who held it. `None` when the channel had no lease.
    pub async fn force_release(&self, channel_id: ChannelId) -> Result<Option<LeaseInfo>, StoreError> {
        let id = channel_id.to_string();
        serializable(&self.pool, &self.metrics, "leases.force_release", |mut tx| {
            let id = id.clone();
            Box::pin(async move {
                let Some(held) = lease_rows(&mut tx, Some(channel_id)).await?.into_iter().next() else {
                    return Ok((tx, None));
                };
                sqlx::query!(
                    "UPDATE ledger.leases SET token = NULL WHERE channel_id = $1::text::numeric",
                    id
                )
                .execute(&mut *tx)
                .await?;
                let stream = StreamId::Lease(channel_id);
                let head = stream_head(&mut tx, &stream).await?;
                let event = Event::Lease(LeaseEvent::LeaseReleasedByOperator {
                    holder: held.holder.clone(),
                    expired: held.expired,
                });
                append(&mut tx, &stream, head, &[event]).await?;
                Ok((tx, Some(held)))
            })
        })
        .await
    }
}

async fn lease_rows(
    conn: &mut sqlx::PgConnection,
    only: Option<ChannelId>,
) -> Result<Vec<LeaseInfo>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT channel_id::text AS "channel_id!", holder, acquired_at::text AS "acquired_at!",
                  expires_at::text AS "expires_at!", expires_at <= now() AS "expired!"
           FROM ledger.leases
           WHERE token IS NOT NULL AND ($1::text IS NULL OR channel_id = $1::text::numeric)
           ORDER BY channel_id"#,
        only.map(|id| id.to_string()),
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(LeaseInfo {
                channel_id: row.channel_id.parse().map_err(|e| StoreError::CorruptLog {
                    stream: format!("lease/{}", row.channel_id),
                    reason: format!("{e}"),
                })?,
                holder: row.holder,
                acquired_at: row.acquired_at,
                expires_at: row.expires_at,
                expired: row.expired,
            })
        })
        .collect()
}

//! Where the claim watcher's search of each channel's MPE logs goes on from (`ledger.claim_log_cursors`).
//!
//! Operational state, like leases, not money: moving a cursor is not an event (one every watcher
//! pass would flood the log), statements run one at a time at the pool's default isolation, and a
//! lost or stale cursor only makes a search start earlier (every recording is idempotent, so a log
//! seen twice is recorded once). What it keeps true:
//! - `next_block` is the first block not yet searched; the watcher moves it only after every log
//!   below it was handled, and only up to head − confirmations + 1 (a log not yet confirmed is
//!   searched again);
//! - a claim start puts the cursor of its channel at the block its chain read was made at, unless
//!   an earlier claim of the channel is still pending (then the earlier block stays).

use std::collections::HashMap;

use sqlx::PgPool;

use crate::domain::ChannelId;

use super::StoreError;

#[derive(Clone)]
pub struct PgClaimCursors {
    pool: PgPool,
}

fn block_to_db(block: u64) -> i64 {
    i64::try_from(block).unwrap_or(i64::MAX)
}

impl PgClaimCursors {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Every channel's next block to search.
    pub async fn all(&self) -> Result<HashMap<ChannelId, u64>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT channel_id::text AS "channel_id!", next_block FROM ledger.claim_log_cursors"#
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let id = row.channel_id.parse().map_err(|e| StoreError::CorruptLog {
                    stream: format!("claim_log_cursors/{}", row.channel_id),
                    reason: format!("{e}"),
                })?;
                Ok((id, u64::try_from(row.next_block).unwrap_or(0)))
            })
            .collect()
    }

    /// A claim of `channel_id` started after a chain read at `block`: its search starts there, or
    /// earlier when `keep_earlier` (another claim of the channel is still pending).
    pub async fn claim_started(
        &self,
        channel_id: ChannelId,
        block: u64,
        keep_earlier: bool,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO ledger.claim_log_cursors (channel_id, next_block)
             VALUES ($1::text::numeric, $2)
             ON CONFLICT (channel_id) DO UPDATE SET
                next_block = CASE WHEN $3 THEN LEAST(ledger.claim_log_cursors.next_block, EXCLUDED.next_block)
                                  ELSE EXCLUDED.next_block END,
                updated_at = now()",
            channel_id.to_string(),
            block_to_db(block),
            keep_earlier,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every log of `channel_id` below `next_block` was handled. A cursor never moves backwards
    /// here: two watchers finishing passes out of order keep the later one.
    pub async fn advance(&self, channel_id: ChannelId, next_block: u64) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO ledger.claim_log_cursors (channel_id, next_block)
             VALUES ($1::text::numeric, $2)
             ON CONFLICT (channel_id) DO UPDATE SET
                next_block = GREATEST(ledger.claim_log_cursors.next_block, EXCLUDED.next_block),
                updated_at = now()",
            channel_id.to_string(),
            block_to_db(next_block),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

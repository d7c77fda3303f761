//! What the service itself reads from the `reporting` views (migration 0007, docs/reporting.md):
//! the channels whose money at risk is due for a claim, for `claims due` and the money-at-risk
//! watch of `serve`.
//!
//! What this keeps true:
//! - It reads the same view finance reads (`reporting.money_at_risk`), so the listing, the metric
//!   and a finance query never disagree about what is at risk.
//! - "Due" is judged against the head block `serve` last recorded in the deployment record, never
//!   a guess: without a recorded head nothing is due, and the caller says why ([`DueReport::head`]).
//! - Amounts stay exact ([`Amount`]); only the caller turns a total into a metric's float.

use sqlx::PgPool;

use crate::domain::{Amount, ChannelId, Nonce};
use crate::store::StoreError;

/// The head block the views judge expiration against, as `serve` recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedHead {
    pub block: u64,
    /// The block's own timestamp, RFC 3339 in UTC.
    pub block_time: String,
    /// How long ago `serve` recorded it, in whole seconds.
    pub age_seconds: i64,
}

/// One channel whose money at risk is within the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueChannel {
    pub channel_id: ChannelId,
    /// The channel's current nonce (the one its unclaimed payments are signed at).
    pub nonce: Nonce,
    pub unclaimed: Amount,
    pub in_progress: Amount,
    pub at_risk: Amount,
    /// The same, in tokens, when the token's decimals are recorded.
    pub at_risk_tokens: Option<String>,
    pub expiration_block: u64,
    /// Blocks from the recorded head to the expiration; 0 or less: the sender may reclaim now.
    pub blocks_left: i64,
    /// RFC 3339 in UTC, at the configured average block time.
    pub estimated_expiration_at: Option<String>,
}

/// The due channels and what they were judged against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueReport {
    /// `None`: no head block recorded yet (no `serve` with a chain has run on this database).
    pub head: Option<RecordedHead>,
    /// The line the report was made with, in blocks.
    pub within_blocks: u64,
    pub channels: Vec<DueChannel>,
}

impl DueReport {
    /// The sum of the channels' money at risk.
    pub fn total_at_risk(&self) -> Amount {
        self.channels
            .iter()
            .fold(Amount::ZERO, |sum, channel| Amount(sum.0.saturating_add(channel.at_risk.0)))
    }
}

/// The claims-due line recorded by `serve` (`claims_due_within_blocks`), if any.
pub async fn recorded_due_line(pool: &PgPool) -> Result<Option<u64>, StoreError> {
    let line: Option<Option<i64>> =
        sqlx::query_scalar("SELECT claims_due_within_blocks FROM reporting.deployment")
            .fetch_optional(pool)
            .await?;
    Ok(line.flatten().and_then(|line| u64::try_from(line).ok()))
}

/// The channels with money at risk at most `within_blocks` blocks before their expiration (or
/// past it), soonest first.
pub async fn claims_due(pool: &PgPool, within_blocks: u64) -> Result<DueReport, StoreError> {
    let corrupt =
        |reason: String| StoreError::CorruptLog { stream: "reporting.money_at_risk".into(), reason };
    let head: Option<(i64, String, i64)> = sqlx::query_as(
        r#"SELECT head_block, to_char(head_block_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                  floor(extract(epoch FROM clock_timestamp() - head_recorded_at))::bigint
           FROM reporting.deployment WHERE head_block IS NOT NULL"#,
    )
    .fetch_optional(pool)
    .await?;
    let head = head
        .map(|(block, block_time, age_seconds)| {
            let block = u64::try_from(block).map_err(|_| corrupt(format!("head block {block}")))?;
            Ok::<_, StoreError>(RecordedHead { block, block_time, age_seconds })
        })
        .transpose()?;
    let mut channels = Vec::new();
    if head.is_some() {
        // Beyond i64::MAX blocks nothing is ever due sooner than that.
        let within = i64::try_from(within_blocks).unwrap_or(i64::MAX);
        type Row = (String, String, String, String, String, Option<String>, String, i64, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            r#"SELECT channel_id::text, nonce::text, unclaimed_cogs::text, in_progress_cogs::text,
                      at_risk_cogs::text, at_risk_tokens::text, expiration_block::text, blocks_left::bigint,
                      to_char(estimated_expiration_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
               FROM reporting.money_at_risk
               WHERE at_risk_cogs > 0 AND blocks_left <= $1
               ORDER BY blocks_left, channel_id"#,
        )
        .bind(within)
        .fetch_all(pool)
        .await?;
        for (id, nonce, unclaimed, in_progress, at_risk, at_risk_tokens, expiration, blocks_left, estimate) in
            rows
        {
            let parse = |what: &str, text: &str| corrupt(format!("{what} {text:?} of channel {id}"));
            channels.push(DueChannel {
                channel_id: id.parse().map_err(|_| parse("id", &id))?,
                nonce: nonce.parse().map_err(|_| parse("nonce", &nonce))?,
                unclaimed: unclaimed.parse().map_err(|_| parse("unclaimed amount", &unclaimed))?,
                in_progress: in_progress.parse().map_err(|_| parse("amount in progress", &in_progress))?,
                at_risk: at_risk.parse().map_err(|_| parse("amount at risk", &at_risk))?,
                at_risk_tokens,
                // At most the head block plus the line, both below 2^63.
                expiration_block: expiration.parse().map_err(|_| parse("expiration", &expiration))?,
                blocks_left,
                estimated_expiration_at: estimate,
            });
        }
    }
    Ok(DueReport { head, within_blocks, channels })
}

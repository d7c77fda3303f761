//! Money at risk, operationally: what a sender's reclaim after expiration would take from the
//! provider, watched by `serve` so that someone claims in time.
//!
//! What this keeps true:
//! - A channel is **due** when it has money at risk (authorised and unclaimed, or in a claim not
//!   landed) and its expiration is at most `claims_due_within_blocks` blocks after the head block
//!   `serve` last recorded (or already past). The judgement is `reporting.money_at_risk`'s, the view
//!   finance reads and `mpe-ledger claims due` lists, so the three never disagree.
//! - The metrics `mpe_ledger_money_due_cogs` and `mpe_ledger_channels_due` are set from each check.
//! - One warning line per channel when it becomes due, not one per check; one info line when it
//!   stops being due (claimed, extended, or reclaimed). A restarted `serve` warns again about every
//!   channel still due, once.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sqlx::PgPool;

use crate::domain::ChannelId;
use crate::store::StoreError;
use crate::store::postgres::reporting::{DueChannel, DueReport, claims_due};

use super::metrics::EscrowMetrics;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtRiskCheck {
    pub report: DueReport,
    /// Due now and not at the last check: each got its warning line.
    pub newly_due: Vec<ChannelId>,
    /// Due at the last check and not now.
    pub no_longer_due: Vec<ChannelId>,
}

pub struct AtRiskWatch {
    pool: PgPool,
    within_blocks: u64,
    metrics: EscrowMetrics,
    /// The channels due at the last check.
    due: Mutex<BTreeMap<ChannelId, DueChannel>>,
}

impl AtRiskWatch {
    pub fn new(pool: PgPool, within_blocks: u64, metrics: EscrowMetrics) -> Self {
        Self { pool, within_blocks, metrics, due: Mutex::new(BTreeMap::new()) }
    }

    /// Reads what is due now, sets the metrics and logs the channels that crossed the line either
    /// way since the last check.
    pub async fn check(&self) -> Result<AtRiskCheck, StoreError> {
        let report = claims_due(&self.pool, self.within_blocks).await?;
        let total = report.total_at_risk();
        // The one place an amount becomes a float: a Prometheus sample is one (metrics doc).
        self.metrics.money_due_cogs.set(total.to_string().parse().unwrap_or(f64::MAX));
        self.metrics.channels_due.set(i64::try_from(report.channels.len()).unwrap_or(i64::MAX));
        let now: BTreeMap<ChannelId, DueChannel> =
            report.channels.iter().map(|channel| (channel.channel_id, channel.clone())).collect();
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let newly_due: Vec<ChannelId> = now.keys().filter(|id| !due.contains_key(id)).copied().collect();
        let no_longer_due: Vec<ChannelId> = due.keys().filter(|id| !now.contains_key(id)).copied().collect();
        for id in &newly_due {
            if let Some(channel) = now.get(id) {
                tracing::warn!(
                    channel = %id,
                    nonce = %channel.nonce,
                    at_risk_cogs = %channel.at_risk,
                    unclaimed_cogs = %channel.unclaimed,
                    in_progress_cogs = %channel.in_progress,
                    expiration_block = channel.expiration_block,
                    blocks_left = channel.blocks_left,
                    estimated_expiration_at = channel.estimated_expiration_at.as_deref().unwrap_or("unknown"),
                    within_blocks = self.within_blocks,
                    "money at risk: claim this channel before it expires (the sender may then take it back)"
                );
            }
        }
        for id in &no_longer_due {
            tracing::info!(channel = %id, "money at risk: the channel is no longer due");
        }
        *due = now;
        Ok(AtRiskCheck { report, newly_due, no_longer_due })
    }
}

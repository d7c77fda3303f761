//! `mpe-ledger claims due [--within BLOCKS]`: the channels with money at risk (unclaimed, or in a
//! claim not landed) whose expiration is at most BLOCKS after the head block `serve` last recorded,
//! soonest first (`escrow::at_risk` says what "due" means; this is the same judgement).
//!
//! For a cron job: stdout is empty when nothing is due, else a `#` header line and one
//! tab-separated line per channel (`channel`, `nonce`, `at_risk_cogs`, `unclaimed_cogs`,
//! `in_progress_cogs`, `at_risk_tokens`, `expiration_block`, `blocks_left`,
//! `estimated_expiration_at`), so `[ -n "$(mpe-ledger claims due)" ] && snet treasurer claim-all …`
//! acts on it. A summary goes to stderr. Without a recorded head block nothing can be judged: the
//! command fails (exit 2) rather than print an empty, reassuring listing. BLOCKS defaults to the
//! `claims_due_within_blocks` serve recorded, else [`DEFAULT_WITHIN_BLOCKS`].

use std::process::ExitCode;

use crate::config::DEFAULT_EXPIRATION_THRESHOLD;
use crate::startup::{Database, DatabaseSettings, Purpose};
use crate::store::postgres::reporting::{DueReport, claims_due, recorded_due_line};

/// The line without a recorded one: the default `payment_expiration_threshold`.
pub const DEFAULT_WITHIN_BLOCKS: u64 = DEFAULT_EXPIRATION_THRESHOLD;
/// A head recorded longer ago than this is reported as stale (serve records it every 15 s).
pub const STALE_HEAD_SECONDS: i64 = 300;

pub async fn run(settings: &DatabaseSettings, within: Option<u64>) -> anyhow::Result<ExitCode> {
    let database = Database::open(settings, Purpose::ReadOnly("claims due")).await?;
    let report = async {
        let within = match within {
            Some(within) => within,
            None => recorded_due_line(&database.pool).await?.unwrap_or(DEFAULT_WITHIN_BLOCKS),
        };
        claims_due(&database.pool, within).await
    }
    .await;
    database.close().await?;
    let report = report?;
    let Some(head) = &report.head else {
        anyhow::bail!(
            "claims due: no head block is recorded yet, so nothing can be judged; run `mpe-ledger serve` with the chain configured (it records the head every 15 s)"
        );
    };
    print!("{}", listing(&report));
    eprintln!(
        "claims due: {} channel(s), {} cogs at risk within {} blocks of expiration (head block {} of {}, recorded {} s ago)",
        report.channels.len(),
        report.total_at_risk(),
        report.within_blocks,
        head.block,
        head.block_time,
        head.age_seconds
    );
    if head.age_seconds > STALE_HEAD_SECONDS {
        eprintln!(
            "claims due: warning: the head block was recorded {} s ago; is serve running? Expirations are judged against it",
            head.age_seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The stdout listing (module doc): empty when nothing is due.
pub fn listing(report: &DueReport) -> String {
    if report.channels.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "# channel\tnonce\tat_risk_cogs\tunclaimed_cogs\tin_progress_cogs\tat_risk_tokens\texpiration_block\tblocks_left\testimated_expiration_at\n",
    );
    for c in &report.channels {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            c.channel_id,
            c.nonce,
            c.at_risk,
            c.unclaimed,
            c.in_progress,
            c.at_risk_tokens.as_deref().unwrap_or("-"),
            c.expiration_block,
            c.blocks_left,
            c.estimated_expiration_at.as_deref().unwrap_or("-"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Amount, ChannelId, Nonce};
    use crate::store::postgres::reporting::{DueChannel, RecordedHead};

    fn report(channels: Vec<DueChannel>) -> DueReport {
        DueReport {
            head: Some(RecordedHead {
                block: 100,
                block_time: "2026-12-07T12:00:00Z".into(),
                age_seconds: 3,
            }),
            within_blocks: 10,
            channels,
        }
    }

    #[test]
    fn nothing_due_prints_nothing_so_a_cron_job_can_test_for_output() {
        assert_eq!(listing(&report(vec![])), "");
    }

    #[test]
    fn each_due_channel_is_one_tab_separated_line_under_a_header() {
        let due = DueChannel {
            channel_id: ChannelId::from(7),
            nonce: Nonce::from(2),
            unclaimed: Amount::from(30),
            in_progress: Amount::from(10),
            at_risk: Amount::from(40),
            at_risk_tokens: Some("0.00000040".into()),
            expiration_block: 105,
            blocks_left: 5,
            estimated_expiration_at: Some("2026-12-07T12:01:00Z".into()),
        };
        let unknown = DueChannel {
            channel_id: ChannelId::from(8),
            at_risk_tokens: None,
            estimated_expiration_at: None,
            blocks_left: -3,
            expiration_block: 97,
            ..due.clone()
        };
        assert_eq!(
            listing(&report(vec![unknown, due])),
            "# channel\tnonce\tat_risk_cogs\tunclaimed_cogs\tin_progress_cogs\tat_risk_tokens\texpiration_block\tblocks_left\testimated_expiration_at\n\
             8\t2\t40\t30\t10\t-\t97\t-3\t-\n\
             7\t2\t40\t30\t10\t0.00000040\t105\t5\t2026-12-07T12:01:00Z\n"
        );
    }
}

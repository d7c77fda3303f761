//! What `serve` records for the reporting views, and its money-at-risk watch: the views read
//! neither the chain nor ledger.toml, so `serve` writes what they need into the deployment record
//! (`store::postgres::deployment`).
//!
//! - At start-up, after the MPE address: the average block time and the claims-due line (settings).
//! - Once the node answers: the MPE's token and its decimals ([`record_token`], retried like the
//!   chain id).
//! - Every [`HEAD_RECORD_INTERVAL`]: the head block and its time, then the money-at-risk check
//!   (`escrow::at_risk`), which judges against that head ([`watch_head_and_risk`]). A failure is
//!   logged once per outage; the views meanwhile show the last head recorded, with its time.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::chain::EthChain;
use crate::escrow::at_risk::AtRiskWatch;
use crate::store::postgres::deployment::{self, DeploymentError};

/// How often the head block is recorded and the money at risk checked: a claim's landing is seen
/// as often (`CLAIM_WATCH_INTERVAL`), and a block is 12 s on Ethereum.
pub const HEAD_RECORD_INTERVAL: Duration = Duration::from_secs(15);
/// How long to wait before asking the node for the token again.
const TOKEN_RETRY: Duration = Duration::from_secs(5);

/// Records the MPE's token and its decimals once the node answers. A token other than the
/// recorded one is logged as an error on every try (the MPE's token never changes: the node
/// serves another network).
pub async fn record_token(pool: PgPool, chain: EthChain) {
    let mut logged = false;
    loop {
        let failure = match chain.token_decimals().await {
            Err(error) => error.to_string(),
            Ok((token, decimals)) => match deployment::record_token(&pool, token, decimals).await {
                Ok(()) => {
                    tracing::info!(%token, decimals, "token recorded in the deployment record");
                    return;
                }
                Err(error @ DeploymentError::OtherToken { .. }) => {
                    tracing::error!(%error, "the deployment record disagrees with the node");
                    String::new()
                }
                Err(error) => error.to_string(),
            },
        };
        if !failure.is_empty() && !logged {
            logged = true;
            tracing::warn!(error = %failure, "cannot record the token's decimals yet; retrying");
        }
        tokio::time::sleep(TOKEN_RETRY).await;
    }
}

/// Records the head block and checks the money at risk, every [`HEAD_RECORD_INTERVAL`].
pub async fn watch_head_and_risk(pool: PgPool, chain: EthChain, watch: Arc<AtRiskWatch>) {
    let mut ticks = tokio::time::interval(HEAD_RECORD_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let outcome = record_head_and_check(&pool, &chain, &watch).await;
        match outcome {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the head block is recorded and the money at risk checked again");
            }
            Ok(()) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "cannot record the head block or check the money at risk");
            }
            Err(_) => {}
        }
    }
}

async fn record_head_and_check(pool: &PgPool, chain: &EthChain, watch: &AtRiskWatch) -> anyhow::Result<()> {
    let (number, timestamp) = chain.head_block_with_time().await?;
    deployment::record_head(pool, number, timestamp).await?;
    watch.check().await?;
    Ok(())
}

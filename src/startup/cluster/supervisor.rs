//! Keeping the owned cluster up: if its postmaster dies (the OOM killer, a kill -9), the owner
//! starts it again, on the same port, so every pool's URL stays right and payments resume by
//! themselves (pools test a connection before handing it out and drop dead ones). A port taken by
//! another program meanwhile makes every attempt fail, each logged with Postgres's own reason.
//!
//! What this keeps true:
//! - The postmaster is checked every [`SUPERVISE_INTERVAL`] by its pid file and `/proc` (a zombie
//!   counts as dead), without running a command or touching the database.
//! - Restarts are bounded in rate: after a failed attempt the next waits twice as long, from
//!   [`RESTART_BACKOFF_FIRST`] up to [`RESTART_BACKOFF_MAX`]; attempts go on as long as `serve`
//!   runs, since it can do nothing useful without its database. A start refused because the old
//!   server's backends still hold its shared memory is such a failed attempt.
//! - Every death, attempt and restart is logged, and counted in [`ClusterMetrics`].
//! - [`ClusterHealth`] says at every moment whether the cluster is down and why, so `/healthz`
//!   can answer at once instead of waiting on a pool.
//! - A restart happens under the data root's start-up lock, like every start.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge, Registry};

use super::EmbeddedCluster;
use super::data_root::lock_data_root;
use super::error::ClusterError;
use super::server::start;

/// How often the owner looks at its postmaster.
pub const SUPERVISE_INTERVAL: Duration = Duration::from_millis(500);
/// The wait after the first failed restart; doubled after each further failure.
pub const RESTART_BACKOFF_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between two restart attempts.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(8);

/// What is wrong with the embedded cluster right now, if anything.
#[derive(Debug, Clone, Default)]
pub struct ClusterHealth(Arc<Mutex<Option<String>>>);

impl ClusterHealth {
    /// `None` while the postmaster runs; otherwise a short text for `/healthz`.
    pub fn problem(&self) -> Option<String> {
        self.0.lock().expect("the health lock is never poisoned").clone()
    }

    fn set(&self, problem: Option<String>) {
        *self.0.lock().expect("the health lock is never poisoned") = problem;
    }
}

/// Metrics of the supervision.
#[derive(Clone)]
pub struct ClusterMetrics {
    /// Restarts of the embedded PostgreSQL that succeeded.
    pub restarts: IntCounter,
    /// Restart attempts that failed (each is retried after a backoff).
    pub restart_failures: IntCounter,
    /// 1 while the embedded PostgreSQL's postmaster runs, 0 while it is down.
    pub up: IntGauge,
}

impl ClusterMetrics {
    pub fn new(registry: &Registry) -> Self {
        let metrics = Self {
            restarts: IntCounter::new(
                "mpe_ledger_embedded_postgres_restarts_total",
                "Restarts of the embedded PostgreSQL after it died",
            )
            .expect("valid metric"),
            restart_failures: IntCounter::new(
                "mpe_ledger_embedded_postgres_restart_failures_total",
                "Failed attempts to restart the embedded PostgreSQL",
            )
            .expect("valid metric"),
            up: IntGauge::new("mpe_ledger_embedded_postgres_up", "Whether the embedded PostgreSQL runs")
                .expect("valid metric"),
        };
        for collector in [
            Box::new(metrics.restarts.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.restart_failures.clone()),
            Box::new(metrics.up.clone()),
        ] {
            registry.register(collector).expect("each metric is registered once");
        }
        metrics.up.set(1);
        metrics
    }
}

/// Watches the postmaster and restarts it when it dies, until the task is aborted.
pub async fn supervise(cluster: Arc<EmbeddedCluster>, health: ClusterHealth, metrics: ClusterMetrics) {
    let mut ticks = tokio::time::interval(SUPERVISE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if cluster.server.postmaster_alive() {
            continue;
        }
        metrics.up.set(0);
        tracing::error!(data_root = %cluster.data_root().display(), "the embedded PostgreSQL is not running: restarting it");
        health.set(Some("embedded PostgreSQL is down; restarting it".to_string()));
        let mut backoff = RESTART_BACKOFF_FIRST;
        let mut attempt: u32 = 1;
        loop {
            match restart(&cluster).await {
                Ok(()) => {
                    metrics.restarts.inc();
                    metrics.up.set(1);
                    health.set(None);
                    tracing::info!(attempt, port = cluster.port(), "the embedded PostgreSQL was restarted");
                    break;
                }
                Err(error) => {
                    metrics.restart_failures.inc();
                    tracing::warn!(attempt, %error, retry_in = ?backoff, "restarting the embedded PostgreSQL failed");
                    health.set(Some(format!(
                        "embedded PostgreSQL is down; restart attempt {attempt} failed, retrying"
                    )));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                    attempt += 1;
                }
            }
        }
    }
}

/// Starts the server again on its port, unless someone did already, and waits until it answers.
async fn restart(cluster: &EmbeddedCluster) -> Result<(), ClusterError> {
    {
        let _lock = lock_data_root(&cluster.server).await?;
        if !cluster.server.postmaster_alive() {
            start(&cluster.server, cluster.port()).await?;
        }
    }
    cluster.wait_until_reachable().await
}

//! Wiring of the binary: where the database comes from, and `serve`.
//!
//! With no `DATABASE_URL` the ledger runs its own Postgres cluster in the data directory
//! ([`cluster`]); with one, it uses that database and never starts anything.

pub mod cluster;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use sqlx::PgPool;

use crate::http::{HttpState, router};
use crate::store::postgres;
use crate::telemetry::Metrics;

use cluster::{DATABASE_NAME, EmbeddedCluster};

/// Where to find the database.
#[derive(Debug, Clone, Default)]
pub struct DatabaseSettings {
    /// The service's connection; `None` runs the embedded cluster.
    pub database_url: Option<String>,
    /// The owning role's connection for migrations (default: `database_url`).
    pub migration_url: Option<String>,
    /// The embedded cluster's data directory (default: [`cluster::default_data_root`]).
    pub data_dir: Option<PathBuf>,
}

/// A migrated database and, when we started it, the cluster to stop afterwards.
pub struct Database {
    pub pool: PgPool,
    pub cluster: Option<EmbeddedCluster>,
}

impl Database {
    /// Connects (starting the embedded cluster if needed) and applies the migrations.
    pub async fn open(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let (url, migration_url, cluster) = match &settings.database_url {
            Some(url) => (url.clone(), settings.migration_url.clone().unwrap_or_else(|| url.clone()), None),
            None => {
                let root = settings.data_dir.clone().unwrap_or_else(cluster::default_data_root);
                let cluster = EmbeddedCluster::ensure_running(&root).await?;
                cluster.create_database_if_missing(DATABASE_NAME).await?;
                let url = cluster.url(DATABASE_NAME);
                tracing::info!(data_dir = %root.display(), port = cluster.port(), "embedded PostgreSQL cluster ready");
                (url.clone(), url, Some(cluster))
            }
        };
        postgres::migrate(&migration_url).await.context("applying migrations")?;
        let pool = postgres::connect(&url, postgres::DEFAULT_POOL_SIZE)
            .await
            .context("connecting to the database")?;
        Ok(Self { pool, cluster })
    }

    /// Closes the pool and stops the cluster if this process started it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(cluster) = self.cluster.filter(EmbeddedCluster::started_here) {
            cluster.stop().await?;
            tracing::info!("embedded PostgreSQL cluster stopped");
        }
        Ok(())
    }
}

/// Serves HTTP until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn serve(settings: &DatabaseSettings, listen: SocketAddr) -> anyhow::Result<()> {
    let database = Database::open(settings).await?;
    let metrics = Metrics::new();
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving HTTP (/healthz, /metrics)");
    let app = router(HttpState { pool: database.pool.clone(), metrics });
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await;
    tracing::info!("shutting down");
    database.close().await?;
    served.context("HTTP server")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

//! Where the database comes from, and which login does what.
//!
//! The service's login should be able to read the log and append to it, never change it: neither a
//! superuser nor a member of `mpe_ledger_owner` (either could `RESET ROLE`, disable the trigger or
//! set `session_replication_role`). Only migrations use the owner. How each set-up gets there:
//! - **Embedded cluster** (no `DATABASE_URL`): migrations log in as the cluster's superuser; the
//!   service logs in as `mpe_ledger_writer` with the password the cluster generated for it
//!   (`cluster::writer_login`).
//! - **`DATABASE_URL` and `MIGRATION_DATABASE_URL`**: migrations with the second, the service with
//!   the first. This is the production set-up (README, "Your own Postgres").
//! - **`DATABASE_URL` alone, a writer-only login** (a replica that is never given the owner's
//!   password): nothing is migrated; start-up checks that every migration of this binary is applied
//!   and otherwise refuses, naming the missing ones and the command that applies them.
//! - **`DATABASE_URL` alone, a login that can lift the guard** (a superuser, as in set-ups from
//!   before this rule): it migrates and serves as before, its sessions switching to the writer
//!   role, and start-up logs a warning that the guard then holds against bugs only.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;

use super::cluster::{self, DATABASE_NAME, EmbeddedCluster};
use crate::store::postgres::{self, logins};

/// Where to find the database.
#[derive(Debug, Clone, Default)]
pub struct DatabaseSettings {
    /// The service's connection; `None` runs the embedded cluster.
    pub database_url: Option<String>,
    /// The owning role's connection for migrations (see the module doc when absent).
    pub migration_url: Option<String>,
    /// The embedded cluster's data directory (default: [`cluster::default_data_root`]).
    pub data_dir: Option<PathBuf>,
}

/// What the database is opened for; it decides who owns an embedded cluster
/// (`cluster::ownership`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `serve`: owns the embedded cluster, or refuses when a live process owns it.
    Serve,
    /// A one-shot command (its name): owns the cluster when nobody does, else attaches as a guest.
    Command(&'static str),
}

/// A migrated database and, when this process owns it, the cluster to stop afterwards.
pub struct Database {
    /// Money: every event is written through this pool (durable commits).
    pub pool: PgPool,
    /// Operational state (leases): commits that do not wait for the WAL flush; connects lazily.
    pub operational: PgPool,
    /// Shared with its supervisor while `serve` runs.
    pub cluster: Option<Arc<EmbeddedCluster>>,
    /// The service's login is a superuser or a member of the owner (only with an external
    /// `DATABASE_URL`): `serve` warns about it.
    pub login_can_lift_guard: bool,
}

impl Database {
    /// Connects (starting the embedded cluster if needed) and applies the migrations, or checks
    /// that they are applied (module doc).
    pub async fn open(settings: &DatabaseSettings, purpose: Purpose) -> anyhow::Result<Self> {
        let (url, cluster, login_can_lift_guard) = match &settings.database_url {
            Some(url) => {
                let can_lift_guard = migrate_external(url, settings.migration_url.as_deref()).await?;
                (url.clone(), None, can_lift_guard)
            }
            None => {
                let root = settings.data_dir.clone().unwrap_or_else(cluster::default_data_root);
                let cluster = match purpose {
                    Purpose::Serve => EmbeddedCluster::own(&root, "serve").await?,
                    Purpose::Command(command) => EmbeddedCluster::own_or_attach(&root, command).await?,
                };
                cluster.create_database_if_missing(DATABASE_NAME).await?;
                tracing::info!(data_dir = %root.display(), port = cluster.port(), "embedded PostgreSQL cluster ready");
                migrate(&cluster.url(DATABASE_NAME)).await?;
                (cluster.writer_url(DATABASE_NAME), Some(Arc::new(cluster)), false)
            }
        };
        let pool = postgres::connect(&url, postgres::DEFAULT_POOL_SIZE)
            .await
            .context("connecting to the database")?;
        let operational = postgres::connect_operational(&url, postgres::DEFAULT_OPERATIONAL_POOL_SIZE)
            .context("connecting to the database")?;
        Ok(Self { pool, operational, cluster, login_can_lift_guard })
    }

    /// Closes the pool and stops the cluster if this process owns it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.operational.close().await;
        self.pool.close().await;
        if let Some(cluster) = self.cluster.filter(|cluster| cluster.is_owner()) {
            cluster.stop().await?;
            tracing::info!("embedded PostgreSQL cluster stopped");
        }
        Ok(())
    }
}

async fn migrate(url: &str) -> anyhow::Result<()> {
    postgres::migrate(url).await.context("applying migrations")
}

/// An external database: migrations with the owner's URL when given; otherwise the service's
/// login migrates if it can lift the guard, and only checks if it cannot. Returns whether it can.
async fn migrate_external(url: &str, migration_url: Option<&str>) -> anyhow::Result<bool> {
    let privilege = logins::login_privilege(url).await.context("connecting to the database")?;
    let can_lift_guard = privilege.can_lift_guard();
    match migration_url {
        Some(migration_url) => migrate(migration_url).await?,
        None if can_lift_guard => migrate(url).await?,
        None => {
            let missing = logins::missing_migrations(url).await.context("checking the migrations")?;
            if missing.is_empty() {
                return Ok(can_lift_guard);
            }
            let missing: Vec<String> = missing.iter().map(i64::to_string).collect();
            anyhow::bail!(
                "the database lacks migrations {} and DATABASE_URL's login may not apply them: run `mpe-ledger migrate` with MIGRATION_DATABASE_URL set to the owner's login",
                missing.join(", ")
            )
        }
    }
    Ok(can_lift_guard)
}

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
//!
//! **Read-only commands** ([`Purpose::ReadOnly`]: `verify`, `leases list`, `export`, `bundle`,
//! `claims due`) never migrate,
//! whatever the login and `MIGRATION_DATABASE_URL`: they refuse a database whose applied
//! migrations are not exactly this binary's, naming both versions
//! (`store::postgres::schema`), and every session of their pool has
//! `default_transaction_read_only = on`, so a write in any of their transactions fails. On the
//! embedded cluster they own it when nobody does (started for the command, stopped after it, also
//! when the schema is refused) and attach beside a running `serve` otherwise; they never create a
//! cluster or the database (a data directory without them is refused).
//!
//! **Multi-host URLs.** `DATABASE_URL` and `MIGRATION_DATABASE_URL` may name several hosts with
//! libpq's `target_session_attrs` (`postgres://…@h1:5432,h2:5432/mpe_ledger?target_session_attrs=read-write`,
//! for a primary and its standbys under Patroni or the like): every connection made here goes
//! through `store::postgres::hosts`, which finds the usable host and keeps each pool on it after a
//! failover. Both URLs are read before anything else, so a URL that cannot be used stops start-up
//! with one line naming the setting.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sqlx::{Connection, PgPool};

use super::cluster::{self, DATABASE_NAME, EmbeddedCluster};
use crate::store::postgres::hosts::Target;
use crate::store::postgres::schema::{self, AppliedMigrations, check_schema};
use crate::store::postgres::{self, logins};

/// Connections of a read-only command's pool: it reads one page or one snapshot at a time.
const READ_ONLY_POOL_SIZE: u32 = 4;

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
    /// A one-shot command that only reads (its name): the cluster as for [`Purpose::Command`], no
    /// migration, READ ONLY sessions, this binary's schema or a refusal (module doc).
    ReadOnly(&'static str),
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
    /// `DATABASE_URL`; not asked for [`Purpose::ReadOnly`]): `serve` warns about it.
    pub login_can_lift_guard: bool,
}

impl Database {
    /// Connects (starting the embedded cluster if needed) and applies the migrations, or checks
    /// that they are applied (module doc).
    pub async fn open(settings: &DatabaseSettings, purpose: Purpose) -> anyhow::Result<Self> {
        check_urls(settings)?;
        if let Purpose::ReadOnly(command) = purpose {
            return Self::open_read_only(settings, command).await;
        }
        let (url, cluster, login_can_lift_guard) = match &settings.database_url {
            Some(url) => {
                let can_lift_guard = migrate_external(url, settings.migration_url.as_deref()).await?;
                (url.clone(), None, can_lift_guard)
            }
            None => {
                let root = settings.data_dir.clone().unwrap_or_else(cluster::default_data_root);
                let cluster = match purpose {
                    Purpose::Serve => EmbeddedCluster::own(&root, "serve").await?,
                    Purpose::Command(command) | Purpose::ReadOnly(command) => {
                        EmbeddedCluster::own_or_attach(&root, command).await?
                    }
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

    /// [`Self::open`] for [`Purpose::ReadOnly`] (module doc).
    async fn open_read_only(settings: &DatabaseSettings, command: &'static str) -> anyhow::Result<Self> {
        let read_only = |pool: PgPool, cluster| Self {
            operational: pool.clone(),
            pool,
            cluster,
            login_can_lift_guard: false,
        };
        if let Some(url) = &settings.database_url {
            check_schema_at(url).await?;
            return Ok(read_only(connect_read_only(url).await?, None));
        }
        let root = settings.data_dir.clone().unwrap_or_else(cluster::default_data_root);
        if !cluster::exists_in(&root) {
            anyhow::bail!(
                "there is no ledger in {}: the data directory holds no cluster, and `{command}` only \
                 reads (`mpe-ledger migrate` or `serve` creates it)",
                root.display()
            );
        }
        let cluster = EmbeddedCluster::own_or_attach(&root, command).await?;
        let opened = async {
            if !cluster.has_database(DATABASE_NAME).await? {
                check_schema(&AppliedMigrations::Known(Vec::new()))?;
            }
            check_schema_at(&cluster.url(DATABASE_NAME)).await?;
            connect_read_only(&cluster.writer_url(DATABASE_NAME)).await
        }
        .await;
        match opened {
            Ok(pool) => Ok(read_only(pool, Some(Arc::new(cluster)))),
            Err(error) => {
                if let Err(stop) = cluster.stop_if_owner().await {
                    tracing::warn!(error = %stop, "could not stop the embedded cluster after the refusal");
                }
                Err(error)
            }
        }
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

/// Reads both URLs (module doc): `target_session_attrs` and each host are checked here.
fn check_urls(settings: &DatabaseSettings) -> anyhow::Result<()> {
    let urls =
        [("DATABASE_URL", &settings.database_url), ("MIGRATION_DATABASE_URL", &settings.migration_url)];
    for (name, url) in urls {
        if let Some(url) = url {
            url.parse::<Target>().with_context(|| format!("{name} cannot be used"))?;
        }
    }
    Ok(())
}

/// Refuses the database at `url` unless its schema is this binary's; reads only.
async fn check_schema_at(url: &str) -> anyhow::Result<()> {
    let mut conn = postgres::hosts::connect(url).await.context("connecting to the database")?;
    sqlx::raw_sql("SET default_transaction_read_only = on")
        .execute(&mut conn)
        .await
        .context("connecting to the database")?;
    let applied = schema::applied_migrations(&mut conn).await.context("reading the applied migrations");
    let _ = conn.close().await;
    check_schema(&applied?)?;
    Ok(())
}

async fn connect_read_only(url: &str) -> anyhow::Result<PgPool> {
    postgres::connect_read_only(url, READ_ONLY_POOL_SIZE).await.context("connecting to the database")
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

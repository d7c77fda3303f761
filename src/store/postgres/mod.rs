//! The Postgres backend: connections, migrations, and the event log every write goes through.
//!
//! Connections: the service connects with `DATABASE_URL` and every session switches to the
//! restricted [`WRITER_ROLE`] (it may read the log and insert into it, never change it); migrations
//! run with their own URL as the owning role (design.md §8). The switch defends against our own bugs,
//! not against an operator who can `RESET ROLE`. Every connection, pooled or one-off, is made
//! through [`hosts`], which reads multi-host URLs and `target_session_attrs` (sqlx does not) and
//! keeps each pool on a usable host.

pub mod audit;
pub mod batch;
mod channel_write;
pub mod channels;
pub mod deployment;
pub mod hosts;
pub mod kv;
pub mod ledger;
pub mod log;
pub mod logins;
pub mod projection;
pub mod readers;
pub mod reporting;
pub mod schema;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgPool};

use hosts::{SessionAttrs, Target};

use super::StoreError;

pub use channels::PgChannelStore;
pub use kv::PgAtomicStorage;
pub use ledger::PgLedger;

/// The role the service's sessions run as.
pub const WRITER_ROLE: &str = "mpe_ledger_writer";
/// The role that owns the schema.
pub const OWNER_ROLE: &str = "mpe_ledger_owner";
/// Connections per pool unless configured otherwise.
pub const DEFAULT_POOL_SIZE: u32 = 16;
/// Connections of the operational pool (leases): single short statements, no fsync wait.
pub const DEFAULT_OPERATIONAL_POOL_SIZE: u32 = 8;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The service's pool: every session runs as [`WRITER_ROLE`].
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    pool(url, max_connections, "SET ROLE mpe_ledger_writer").await
}

/// The pool for operational state (leases, see `store::leases`): sessions run as [`WRITER_ROLE`]
/// with `synchronous_commit = off`, so a lease write does not wait for the WAL flush. Never used for
/// money: payments, claims and merges commit on the [`connect`] pool.
/// Connects lazily: a command that never touches a lease opens no connection. With several hosts
/// it starts on the first, and its follower moves it to the usable one at once (`hosts::follow`).
pub fn connect_operational(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let session = "SET ROLE mpe_ledger_writer; SET synchronous_commit = off";
    let target: Target = url.parse()?;
    let options = target.hosts[0].options.clone();
    let pool = pool_options(max_connections, target.attrs, session).connect_lazy_with(options);
    hosts::follow(Arc::new(target), 0, pool.clone());
    Ok(pool)
}

/// The pool of a read-only command (`verify`, `leases list`, `export`): every session runs as
/// [`WRITER_ROLE`] with `default_transaction_read_only = on`, so any write in any of its
/// transactions fails with SQLSTATE 25006 (read_only_sql_transaction).
pub async fn connect_read_only(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    pool(url, max_connections, "SET ROLE mpe_ledger_writer; SET default_transaction_read_only = on").await
}

async fn pool(url: &str, max_connections: u32, session: &'static str) -> Result<PgPool, StoreError> {
    pool_on(url.parse()?, max_connections, session).await
}

/// A pool on the first usable host of `target`, following the primary when there are several
/// (`hosts::follow`).
async fn pool_on(target: Target, max_connections: u32, session: &'static str) -> Result<PgPool, StoreError> {
    let (index, probe) = target.first_usable().await?;
    let _ = probe.close().await;
    let options = target.hosts[index].options.clone();
    let pool = pool_options(max_connections, target.attrs, session).connect_with(options).await?;
    hosts::follow(Arc::new(target), index, pool.clone());
    Ok(pool)
}

/// A pool of at most `max_connections` whose every new session is first checked against `attrs`
/// (`hosts::check_session`: a standby's session is never kept) and then runs `session` (one simple
/// query, constant SQL).
fn pool_options(max_connections: u32, attrs: SessionAttrs, session: &'static str) -> PgPoolOptions {
    PgPoolOptions::new().max_connections(max_connections).acquire_timeout(ACQUIRE_TIMEOUT).after_connect(
        move |conn, _| {
            Box::pin(async move {
                hosts::check_session(conn, attrs).await.map_err(|error| match error {
                    StoreError::Database(error) => error,
                    refused => sqlx::Error::Configuration(Box::new(refused)),
                })?;
                conn.execute(session).await?;
                Ok(())
            })
        },
    )
}

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Applies the migrations in `migrations/` (embedded in the binary).
pub async fn migrate(url: &str) -> Result<(), StoreError> {
    let mut conn = hosts::connect(url).await?;
    MIGRATOR.run(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

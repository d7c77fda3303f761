//! The service's own login on the embedded cluster: [`WRITER_ROLE`], neither superuser nor owner.
//!
//! What this keeps true:
//! - After [`ensure_writer_login`] the writer role can log in with the password in
//!   `writer-password` (mode 0600, owned by the server user), and has no attribute beyond LOGIN
//!   (no SUPERUSER, CREATEDB, CREATEROLE, REPLICATION, BYPASSRLS). What it may do in the ledger's
//!   schema is what the migrations grant it; it is never made a member of the owner.
//! - A data root made before the service had its own login (the role exists, NOLOGIN, and there is
//!   no password file) gets one on its next start: this is the upgrade path, and the same path
//!   repairs a password file that no longer matches.
//! - The password is never part of a statement's text: it travels as a bound parameter into a
//!   session setting that a `DO` block reads, so neither errors nor the server's statement log
//!   carry it.
//! - Runs under the data root's start-up lock, so two processes never alter the role at once.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::store::postgres::WRITER_ROLE;

use super::EmbeddedCluster;
use super::data_root::{generate_password, read_password, write_private};
use super::error::ClusterError;

/// The writer's password, beside `superuser-password`.
pub(super) const WRITER_PASSWORD_FILE: &str = "writer-password";

/// The session setting the password passes through (a custom, dotted name, so Postgres accepts it).
const PASSWORD_SETTING: &str = "mpe_ledger.writer_password";

/// Creates the role if missing and makes it a plain login with this password. The role name is
/// constant SQL ([`WRITER_ROLE`]); the password is read from [`PASSWORD_SETTING`].
const GRANT_LOGIN: &str = r#"
DO $$
BEGIN
    BEGIN
        CREATE ROLE mpe_ledger_writer NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    EXECUTE format(
        'ALTER ROLE mpe_ledger_writer LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
        current_setting('mpe_ledger.writer_password'));
END
$$"#;

/// Makes sure the writer can log in, and returns its password.
pub(super) async fn ensure_writer_login(cluster: &EmbeddedCluster) -> Result<String, ClusterError> {
    let server = &cluster.server;
    let path = server.data_root.join(WRITER_PASSWORD_FILE);
    let recorded = read_password(&path)?;
    if let Some(password) = &recorded
        && can_log_in(cluster, password).await
    {
        return Ok(password.clone());
    }
    let password = match recorded {
        Some(password) => password,
        None => {
            let password = generate_password();
            write_private(server, &path, &password)?;
            password
        }
    };
    tracing::info!(role = WRITER_ROLE, "giving the service's writer role its login");
    let mut conn = cluster.connect("postgres").await?;
    let url = cluster.redacted_url("postgres");
    let sql_error = |statement: &str| {
        let statement = statement.to_string();
        let url = url.clone();
        move |source| ClusterError::Sql { url, statement, source }
    };
    let set = "SELECT set_config($1, $2, false)";
    sqlx::query(set)
        .bind(PASSWORD_SETTING)
        .bind(&password)
        .execute(&mut conn)
        .await
        .map_err(sql_error(set))?;
    sqlx::raw_sql(GRANT_LOGIN)
        .execute(&mut conn)
        .await
        .map_err(sql_error("ALTER ROLE mpe_ledger_writer LOGIN"))?;
    let _ = conn.close().await;
    Ok(password)
}

async fn can_log_in(cluster: &EmbeddedCluster, password: &str) -> bool {
    let options = cluster.connect_options("postgres").username(WRITER_ROLE).password(password);
    match PgConnection::connect_with(&options).await {
        Ok(conn) => {
            let _ = conn.close().await;
            true
        }
        Err(_) => false,
    }
}

//! Logins for finance: members of [`READER_ROLE`], which sees only the `reporting` schema.
//!
//! What this keeps true:
//! - The role itself is made by migration 0007 (idempotently, like the other roles): it has USAGE
//!   on `reporting` and SELECT on its views, and nothing on `ledger` or on any other table. The
//!   views read the ledger's tables with their owner's rights, so a reader sees what the views
//!   show and nothing else.
//! - A reader login ([`add_reader`]) is a plain LOGIN (no SUPERUSER, CREATEDB, CREATEROLE,
//!   REPLICATION, BYPASSRLS), a member of [`READER_ROLE`] only, with `default_transaction_read_only`
//!   on and `search_path` set to `reporting`.
//! - Its name is checked here ([`ReaderName`]) and its password never appears in a statement's text:
//!   both travel as bound parameters into session settings that a `DO` block reads (as for the
//!   writer's login, `startup::cluster::writer_login`).
//! - An existing role is never altered: [`ReaderError::Exists`].

use std::fmt;

use sqlx::Connection;

use crate::store::StoreError;

/// The role every reader login is a member of.
pub const READER_ROLE: &str = "mpe_ledger_reader";
/// Longest role name Postgres keeps (NAMEDATALEN - 1).
pub const READER_NAME_MAX: usize = 63;

/// A login name that can be used as it is in a URL and in SQL: lower-case ASCII letters, digits
/// and `_`, starting with a letter or `_`, at most [`READER_NAME_MAX`] characters, and not one of
/// Postgres's (`pg_…`) or the ledger's own (`mpe_ledger_…`) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderName(String);

impl ReaderName {
    pub fn parse(name: &str) -> Result<Self, ReaderError> {
        let invalid =
            |reason: &str| ReaderError::InvalidName { name: name.to_owned(), reason: reason.to_owned() };
        let mut chars = name.chars();
        match chars.next() {
            None => return Err(invalid("empty")),
            Some(first) if !(first.is_ascii_lowercase() || first == '_') => {
                return Err(invalid("must start with a lower-case letter a-z or _"));
            }
            Some(_) => {}
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(invalid("only lower-case letters a-z, digits and _ are allowed"));
        }
        if name.len() > READER_NAME_MAX {
            return Err(invalid(&format!("longer than {READER_NAME_MAX} characters")));
        }
        if name.starts_with("pg_") || name.starts_with("mpe_ledger_") {
            return Err(invalid("names starting with pg_ or mpe_ledger_ are reserved"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error("invalid reader name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("a role named {name} already exists; choose another name (or DROP ROLE {name} first)")]
    Exists { name: String },
    #[error("the login used to create readers may not create roles: {reason}")]
    NotPermitted { reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// SQLSTATE 42710 duplicate_object, 42501 insufficient_privilege.
const DUPLICATE_OBJECT: &str = "42710";
const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// Creates the login (module doc) through `admin_url`, a login that may create roles (the
/// migrations' owner or a superuser).
const CREATE_READER: &str = r#"
DO $$
DECLARE
    name text := current_setting('mpe_ledger.reader_name');
BEGIN
    EXECUTE format(
        'CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L IN ROLE mpe_ledger_reader',
        name, current_setting('mpe_ledger.reader_password'));
    EXECUTE format('ALTER ROLE %I SET default_transaction_read_only = on', name);
    EXECUTE format('ALTER ROLE %I SET search_path = reporting', name);
END
$$"#;

pub async fn add_reader(admin_url: &str, name: &ReaderName, password: &str) -> Result<(), ReaderError> {
    let mut conn = super::hosts::connect(admin_url).await?;
    let result = async {
        let set = "SELECT set_config($1, $2, true)";
        let mut tx = conn.begin().await?;
        // Checked first so that the usual refusal is not an error of the statement carrying the
        // password (the server would log it with its context).
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
            .bind(name.as_str())
            .fetch_one(&mut *tx)
            .await?;
        if exists {
            return Ok(false);
        }
        sqlx::query(set).bind("mpe_ledger.reader_name").bind(name.as_str()).execute(&mut *tx).await?;
        sqlx::query(set).bind("mpe_ledger.reader_password").bind(password).execute(&mut *tx).await?;
        sqlx::raw_sql(CREATE_READER).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }
    .await;
    let _ = conn.close().await;
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(ReaderError::Exists { name: name.to_string() }),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(DUPLICATE_OBJECT) => {
            Err(ReaderError::Exists { name: name.to_string() })
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(INSUFFICIENT_PRIVILEGE) => {
            Err(ReaderError::NotPermitted { reason: e.message().to_owned() })
        }
        Err(error) => Err(ReaderError::Store(StoreError::Database(error))),
    }
}

/// `url` with its login replaced by `user:password` (host, port, database and parameters kept).
/// `user` and `password` must need no percent-encoding ([`ReaderName`], alphanumeric passwords).
pub fn with_login(url: &str, user: &str, password: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, hosts)| hosts);
    Some(format!("{scheme}://{user}:{password}@{hosts}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_names_are_plain_identifiers_and_refusals_say_why() {
        assert_eq!(ReaderName::parse("finance_2").unwrap().as_str(), "finance_2");
        assert_eq!(ReaderName::parse("_audit").unwrap().as_str(), "_audit");
        for (name, reason) in [
            ("", "empty"),
            ("Finance", "must start with a lower-case letter a-z or _"),
            ("9lives", "must start with a lower-case letter a-z or _"),
            ("fin-ance", "only lower-case letters a-z, digits and _ are allowed"),
            ("fin\"ance", "only lower-case letters a-z, digits and _ are allowed"),
            ("pg_monitor", "names starting with pg_ or mpe_ledger_ are reserved"),
            ("mpe_ledger_writer", "names starting with pg_ or mpe_ledger_ are reserved"),
        ] {
            match ReaderName::parse(name) {
                Err(ReaderError::InvalidName { reason: got, .. }) => assert_eq!(got, reason, "{name:?}"),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert!(ReaderName::parse(&"a".repeat(63)).is_ok());
        assert!(ReaderName::parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn a_url_gets_the_readers_login_and_keeps_everything_else() {
        assert_eq!(
            with_login("postgres://writer:secret@db.example:5433/ledger?sslmode=require", "fin", "pw")
                .unwrap(),
            "postgres://fin:pw@db.example:5433/ledger?sslmode=require"
        );
        assert_eq!(with_login("postgres://db/ledger", "fin", "pw").unwrap(), "postgres://fin:pw@db/ledger");
        assert_eq!(
            with_login(
                "postgresql://u:p%40ss@h1:5432,h2:5432/l?target_session_attrs=read-write",
                "fin",
                "pw"
            )
            .unwrap(),
            "postgresql://fin:pw@h1:5432,h2:5432/l?target_session_attrs=read-write"
        );
        assert_eq!(
            with_login("postgres://u@h?dbname=x", "fin", "pw").unwrap(),
            "postgres://fin:pw@h?dbname=x"
        );
        assert_eq!(with_login("not a url", "fin", "pw"), None);
    }
}

//! Which schema a database is at, compared with the one this binary was built for.
//!
//! The schema's version is the set of migrations recorded as applied in `_sqlx_migrations` (the
//! writer may read it from migration 4 on); this binary's is [`MIGRATOR`]. What this keeps true:
//! - A read-only command (`verify`, `leases list`, `export`) runs only on a database whose applied
//!   migrations are exactly this binary's, with the same checksums ([`check_schema`]); anything else
//!   is a [`SchemaMismatch`] naming both versions, and nothing is migrated.
//! - A migration recorded as unsuccessful does not count as applied.
//! - Reading is one statement; it changes nothing.

use std::fmt;

use sqlx::PgConnection;

use super::MIGRATOR;
use crate::store::StoreError;

/// SQLSTATE 42P01 undefined_table, 42501 insufficient_privilege.
const UNDEFINED_TABLE: &str = "42P01";
const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// The migration that lets the writer read `_sqlx_migrations`.
pub const FIRST_MIGRATION_READABLE_BY_WRITER: i64 = 4;

/// One migration as a database recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub checksum: Vec<u8>,
}

/// What a database says about its migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppliedMigrations {
    /// The applied migrations, in version order (empty: never migrated).
    Known(Vec<AppliedMigration>),
    /// The login may not read `_sqlx_migrations`: the schema is older than
    /// [`FIRST_MIGRATION_READABLE_BY_WRITER`].
    Unreadable,
}

/// Reads the migrations `conn`'s database has applied. A database without `_sqlx_migrations` has
/// applied none.
pub async fn applied_migrations(conn: &mut PgConnection) -> Result<AppliedMigrations, StoreError> {
    let rows: Result<Vec<(i64, Vec<u8>)>, sqlx::Error> =
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(conn)
            .await;
    match rows {
        Ok(rows) => Ok(AppliedMigrations::Known(
            rows.into_iter().map(|(version, checksum)| AppliedMigration { version, checksum }).collect(),
        )),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNDEFINED_TABLE) => {
            Ok(AppliedMigrations::Known(Vec::new()))
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(INSUFFICIENT_PRIVILEGE) => {
            Ok(AppliedMigrations::Unreadable)
        }
        Err(e) => Err(e.into()),
    }
}

/// The database's schema is not this binary's: read-only commands refuse it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SchemaMismatch {
    /// The database's version: its highest applied migration.
    pub database: DatabaseVersion,
    /// This binary's version: its highest migration.
    pub binary: i64,
    /// This binary's migrations the database has not applied.
    pub missing: Vec<i64>,
    /// Migrations the database has applied that this binary does not have.
    pub unknown: Vec<i64>,
    /// Migrations of both whose checksums differ (the same number, another migration).
    pub differing: Vec<i64>,
}

/// A database's schema version, as a [`SchemaMismatch`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseVersion {
    /// No migration applied (no `_sqlx_migrations`, or no database at all).
    Unmigrated,
    /// The highest applied migration.
    At(i64),
    /// Older than [`FIRST_MIGRATION_READABLE_BY_WRITER`] (the login cannot read the table).
    BeforeWriterCanRead,
}

impl fmt::Display for DatabaseVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unmigrated => write!(f, "never migrated"),
            Self::At(version) => write!(f, "at migration {version}"),
            Self::BeforeWriterCanRead => {
                write!(f, "older than migration {FIRST_MIGRATION_READABLE_BY_WRITER}")
            }
        }
    }
}

fn list(versions: &[i64]) -> String {
    versions.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (database, binary) = (self.database, self.binary);
        if !self.unknown.is_empty() {
            write!(
                f,
                "the database's schema is newer than this binary's: the database is {database}, this \
                 binary at migration {binary} (unknown to it: {}); use the mpe-ledger that migrated it",
                list(&self.unknown)
            )?;
        } else if !self.missing.is_empty() {
            write!(
                f,
                "the database's schema is older than this binary's: the database is {database}, this \
                 binary at migration {binary} (missing {}); run `mpe-ledger migrate` first",
                list(&self.missing)
            )?;
        } else {
            write!(f, "the database is {database} and so is this binary, but")?;
        }
        if !self.differing.is_empty() {
            write!(
                f,
                "{}the database's migrations differ from this binary's under the same numbers: {} \
                 (checksums differ)",
                if self.unknown.is_empty() && self.missing.is_empty() { " " } else { "; " },
                list(&self.differing)
            )?;
        }
        Ok(())
    }
}

/// The binary's highest migration.
pub fn binary_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// `Ok` when `applied` is exactly this binary's migrations (module doc).
pub fn check_schema(applied: &AppliedMigrations) -> Result<(), SchemaMismatch> {
    let binary: Vec<(i64, &[u8])> = MIGRATOR.iter().map(|m| (m.version, &*m.checksum)).collect();
    compare(&binary, applied)
}

fn compare(binary: &[(i64, &[u8])], applied: &AppliedMigrations) -> Result<(), SchemaMismatch> {
    let binary_version = binary.iter().map(|(version, _)| *version).max().unwrap_or(0);
    let applied = match applied {
        AppliedMigrations::Known(applied) => applied,
        AppliedMigrations::Unreadable => {
            return Err(SchemaMismatch {
                database: DatabaseVersion::BeforeWriterCanRead,
                binary: binary_version,
                missing: binary
                    .iter()
                    .map(|(version, _)| *version)
                    .filter(|v| *v >= FIRST_MIGRATION_READABLE_BY_WRITER)
                    .collect(),
                unknown: Vec::new(),
                differing: Vec::new(),
            });
        }
    };
    let missing: Vec<i64> = binary
        .iter()
        .filter(|(version, _)| !applied.iter().any(|a| a.version == *version))
        .map(|(version, _)| *version)
        .collect();
    let unknown: Vec<i64> = applied
        .iter()
        .filter(|a| !binary.iter().any(|(version, _)| *version == a.version))
        .map(|a| a.version)
        .collect();
    let differing: Vec<i64> = applied
        .iter()
        .filter(|a| binary.iter().any(|(version, checksum)| *version == a.version && *checksum != a.checksum))
        .map(|a| a.version)
        .collect();
    if missing.is_empty() && unknown.is_empty() && differing.is_empty() {
        return Ok(());
    }
    let database =
        applied.iter().map(|a| a.version).max().map_or(DatabaseVersion::Unmigrated, DatabaseVersion::At);
    Err(SchemaMismatch { database, binary: binary_version, missing, unknown, differing })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(versions: &[(i64, &[u8])]) -> AppliedMigrations {
        AppliedMigrations::Known(
            versions
                .iter()
                .map(|(version, sum)| AppliedMigration { version: *version, checksum: sum.to_vec() })
                .collect(),
        )
    }

    const BINARY: [(i64, &[u8]); 3] = [(1, b"a"), (2, b"b"), (3, b"c")];

    #[test]
    fn the_same_migrations_with_the_same_checksums_match() {
        assert_eq!(compare(&BINARY, &applied(&BINARY)), Ok(()));
    }

    #[test]
    fn an_older_schema_names_both_versions_and_the_missing_migrations() {
        let error = compare(&BINARY, &applied(&BINARY[..1])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the database's schema is older than this binary's: the database is at migration 1, this \
             binary at migration 3 (missing 2, 3); run `mpe-ledger migrate` first"
        );
        let never = compare(&BINARY, &applied(&[])).unwrap_err();
        assert_eq!(never.database, DatabaseVersion::Unmigrated);
        assert!(
            never.to_string().contains("the database is never migrated, this binary at migration 3"),
            "{never}"
        );
    }

    #[test]
    fn a_newer_schema_names_both_versions_and_the_unknown_migrations() {
        let error = compare(&BINARY, &applied(&[(1, b"a"), (2, b"b"), (3, b"c"), (5, b"e")])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the database's schema is newer than this binary's: the database is at migration 5, this \
             binary at migration 3 (unknown to it: 5); use the mpe-ledger that migrated it"
        );
    }

    #[test]
    fn another_migration_under_the_same_number_is_named() {
        let error = compare(&BINARY, &applied(&[(1, b"a"), (2, b"X"), (3, b"c")])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the database is at migration 3 and so is this binary, but the database's migrations differ \
             from this binary's under the same numbers: 2 (checksums differ)"
        );
    }

    #[test]
    fn an_unreadable_migrations_table_is_a_schema_before_the_writer_could_read_it() {
        let binary: [(i64, &[u8]); 5] = [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d"), (5, b"e")];
        let error = compare(&binary, &AppliedMigrations::Unreadable).unwrap_err();
        assert_eq!(error.missing, vec![4, 5]);
        assert!(
            error.to_string().contains("the database is older than migration 4, this binary at migration 5")
        );
    }
}

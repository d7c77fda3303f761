//! Read-only commands stay read-only: `verify`, `leases list`, `export` and `bundle` never migrate
//! (whatever the login and `MIGRATION_DATABASE_URL`), refuse a schema older or newer than theirs
//! naming both versions, and run every transaction READ ONLY. (On the embedded cluster, with and without a
//! running `serve`: tests/serve.rs.)

mod common;

use common::ledger::run_command;
use common::{TestDb, unmigrated_database};
use mpe_ledger::startup::{Database, DatabaseSettings, Purpose};
use mpe_ledger::store::AtomicStorage;
use mpe_ledger::store::postgres::PgAtomicStorage;
use mpe_ledger::store::postgres::schema::binary_version;
use sqlx::{Connection, Executor, PgConnection};

const READ_ONLY_COMMANDS: [&[&str]; 4] =
    [&["verify"], &["leases", "list"], &["export", "events"], &["export", "payments", "--format", "jsonl"]];
/// Read-only commands that refuse another schema but need more than a migrated database to succeed
/// (a bundle needs a deployment record and a channel's events: tests/bundle.rs).
const MORE_READ_ONLY_COMMANDS: [&[&str]; 1] = [&["bundle", "--channel", "1"]];

async fn applied_versions(owner_url: &str) -> Option<Vec<i64>> {
    let mut conn = PgConnection::connect(owner_url).await.unwrap();
    let versions = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .ok();
    conn.close().await.unwrap();
    versions
}

async fn owner_execute(owner_url: &str, statement: &'static str) {
    let mut conn = PgConnection::connect(owner_url).await.unwrap();
    conn.execute(statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    conn.close().await.unwrap();
}

/// Runs every read-only command against `url` (with the owner's URL for migrations too) and
/// checks that each is refused in one line containing `needle`.
async fn every_command_refuses(url: &str, needle: &str) {
    for command in READ_ONLY_COMMANDS.iter().chain(&MORE_READ_ONLY_COMMANDS) {
        let run = run_command(command, &[("DATABASE_URL", url), ("MIGRATION_DATABASE_URL", url)]).await;
        assert!(!run.success(), "{command:?} ran on another schema");
        assert_eq!(run.stderr.trim().lines().count(), 1, "{command:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{command:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{command:?}");
    }
}

#[tokio::test]
async fn a_fresh_database_is_not_migrated_by_a_read_only_command_which_refuses_naming_both_versions() {
    let (_, url) = unmigrated_database().await;
    let binary = binary_version();
    every_command_refuses(
        &url,
        &format!(
            "the database's schema is older than this binary's: the database is never migrated, this \
             binary at migration {binary}"
        ),
    )
    .await;
    assert_eq!(applied_versions(&url).await, None, "no migration table was created");
    // `migrate` is what migrates it; then they run.
    run_command(&["migrate"], &[("DATABASE_URL", &url)]).await.assert_success();
    for command in READ_ONLY_COMMANDS {
        run_command(command, &[("DATABASE_URL", &url)]).await.assert_success();
    }
}

#[tokio::test]
async fn an_older_schema_is_refused_naming_both_versions_and_left_as_it_is() {
    let db = TestDb::new().await;
    let binary = binary_version();
    owner_execute(
        &db.owner_url,
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .await;
    let before = applied_versions(&db.owner_url).await.unwrap();
    every_command_refuses(
        &db.owner_url,
        &format!(
            "the database is at migration {}, this binary at migration {binary} (missing {binary}); run \
             `mpe-ledger migrate` first",
            before.last().unwrap()
        ),
    )
    .await;
    assert_eq!(applied_versions(&db.owner_url).await.unwrap(), before, "nothing was migrated");
}

#[tokio::test]
async fn a_newer_schema_is_refused_naming_both_versions() {
    let db = TestDb::new().await;
    let binary = binary_version();
    owner_execute(
        &db.owner_url,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a later mpe-ledger', true, '\\x00', 0)",
    )
    .await;
    every_command_refuses(
        &db.owner_url,
        &format!(
            "the database's schema is newer than this binary's: the database is at migration 9999, this \
             binary at migration {binary} (unknown to it: 9999)"
        ),
    )
    .await;
}

#[tokio::test]
async fn a_migration_changed_under_the_same_number_is_refused() {
    let db = TestDb::new().await;
    owner_execute(&db.owner_url, "UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 2").await;
    every_command_refuses(
        &db.owner_url,
        "the database's migrations differ from this binary's under the same numbers: 2",
    )
    .await;
}

#[tokio::test]
async fn every_write_in_a_read_only_commands_transactions_fails() {
    let db = TestDb::new().await;
    PgAtomicStorage::new(db.pool.clone(), db.metrics.clone()).put(b"k", b"v").await.unwrap();
    let settings = DatabaseSettings {
        database_url: Some(db.owner_url.clone()),
        migration_url: Some(db.owner_url.clone()),
        data_dir: None,
    };
    let database = Database::open(&settings, Purpose::ReadOnly("test")).await.expect("opens read only");
    let read: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger.events").fetch_one(&database.pool).await.unwrap();
    assert_eq!(read, 1);
    for statement in [
        "INSERT INTO ledger.kv (key, value) VALUES ('\\x01', '\\x02')",
        "DELETE FROM ledger.leases",
        "UPDATE ledger.channels SET nonce = 1",
        "CREATE TABLE ledger.intruder (x int)",
    ] {
        for pool in [&database.pool, &database.operational] {
            let mut tx = pool.begin().await.unwrap();
            let error = tx.execute(statement).await.expect_err(statement);
            let code = error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
            assert_eq!(code.as_deref(), Some("25006"), "{statement}: {error}");
        }
    }
    // Through the store's own write path as well.
    let storage = PgAtomicStorage::new(database.pool.clone(), db.metrics.clone());
    let error = storage.put(b"k2", b"v").await.expect_err("a put through a read-only pool");
    assert!(error.to_string().contains("read-only transaction"), "{error}");
    database.close().await.unwrap();
    assert_eq!(db.event_count().await, 1);
}

#[tokio::test]
async fn migrate_with_only_the_owners_url_migrates_that_database_and_no_embedded_cluster() {
    let (_, url) = unmigrated_database().await;
    let data_dir =
        std::env::temp_dir().join(format!("mpe-ledger-no-cluster-{}", uuid::Uuid::new_v4().simple()));
    let data = data_dir.display().to_string();
    run_command(&["migrate"], &[("MIGRATION_DATABASE_URL", &url), ("MPE_LEDGER_DATA_DIR", &data)])
        .await
        .assert_success();
    let applied = applied_versions(&url).await.expect("the owner's database was migrated");
    assert_eq!(applied.last().copied(), Some(binary_version()));
    assert!(!data_dir.exists(), "an embedded cluster was made in {data}");
}

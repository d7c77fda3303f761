//! The service's login is a writer that is neither superuser nor owner: logged in exactly as
//! `serve` logs in on its embedded cluster, nothing it runs can change or delete an event, lift the
//! guard, or become the owner. A data root from before the writer had a login gets one on its next
//! start, and an external writer-only `DATABASE_URL` serves without migrating.

mod common;

use common::cluster::StopClusterOnDrop;
use mpe_ledger::startup::cluster::DATABASE_NAME;
use mpe_ledger::startup::{Database, DatabaseSettings, Purpose};
use mpe_ledger::store::AtomicStorage;
use mpe_ledger::store::postgres::{PgAtomicStorage, WRITER_ROLE};
use mpe_ledger::store::retry::StoreMetrics;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, Postgres};

fn embedded(root: &std::path::Path) -> DatabaseSettings {
    DatabaseSettings { database_url: None, migration_url: None, data_dir: Some(root.to_path_buf()) }
}

fn storage(database: &Database) -> PgAtomicStorage {
    PgAtomicStorage::new(database.pool.clone(), std::sync::Arc::new(StoreMetrics::unregistered()))
}

/// Runs `statement` and returns its SQLSTATE; panics if it succeeds.
async fn refused(conn: &mut PoolConnection<Postgres>, statement: &str) -> String {
    match sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string())).execute(&mut **conn).await {
        Ok(_) => panic!("the service's login could run `{statement}`"),
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()).unwrap_or_default(),
        Err(e) => panic!("`{statement}` failed without a database error: {e}"),
    }
}

#[tokio::test]
async fn the_services_login_cannot_change_events_lift_the_guard_or_become_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let guard = StopClusterOnDrop(dir.path().join("data"));
    let database =
        Database::open(&embedded(guard.root()), Purpose::Serve).await.expect("serve's database opens");
    storage(&database).put(b"evidence", b"kept").await.expect("the writer appends events");

    let mut conn = database.pool.acquire().await.unwrap();
    let (session_user, superuser): (String, bool) =
        sqlx::query_as("SELECT session_user::text, rolsuper FROM pg_roles WHERE rolname = session_user")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(session_user, WRITER_ROLE);
    assert!(!superuser);

    for statement in [
        "UPDATE ledger.events SET event_type = 'forged'",
        "DELETE FROM ledger.events",
        "TRUNCATE ledger.events",
        "ALTER TABLE ledger.events DISABLE TRIGGER events_append_only",
        "ALTER TABLE ledger.events DISABLE TRIGGER ALL",
        "SET session_replication_role = replica",
        "SET ROLE mpe_ledger_owner",
        "SET ROLE postgres",
    ] {
        assert_eq!(refused(&mut conn, statement).await, "42501", "{statement}");
    }
    // RESET ROLE goes back to the login, which is the writer: still no way to change an event.
    sqlx::raw_sql("RESET ROLE").execute(&mut *conn).await.unwrap();
    let current: String =
        sqlx::query_scalar("SELECT current_user::text").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(current, WRITER_ROLE);
    for statement in [
        "UPDATE ledger.events SET event_type = 'forged'",
        "DELETE FROM ledger.events",
        "TRUNCATE ledger.events",
    ] {
        assert_eq!(refused(&mut conn, statement).await, "42501", "{statement} after RESET ROLE");
    }
    drop(conn);

    assert_eq!(storage(&database).get(b"evidence").await.unwrap(), Some(b"kept".to_vec()));
    database.close().await.unwrap();
    drop(guard);
}

#[tokio::test]
async fn a_data_root_from_before_the_writer_login_gets_it_on_its_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let guard = StopClusterOnDrop(dir.path().join("data"));
    let database = Database::open(&embedded(guard.root()), Purpose::Serve).await.unwrap();
    storage(&database).put(b"older", b"data").await.unwrap();
    // What a data root made before this change looks like: the role from the migrations, NOLOGIN,
    // and no password file.
    let cluster = database.cluster.as_ref().unwrap();
    let mut superuser = PgConnection::connect(&cluster.url(DATABASE_NAME)).await.unwrap();
    sqlx::raw_sql("ALTER ROLE mpe_ledger_writer NOLOGIN PASSWORD NULL")
        .execute(&mut superuser)
        .await
        .unwrap();
    superuser.close().await.unwrap();
    std::fs::remove_file(guard.root().join("writer-password")).unwrap();
    database.close().await.unwrap();

    let database = Database::open(&embedded(guard.root()), Purpose::Serve)
        .await
        .expect("the next start gives the writer a login");
    assert!(guard.root().join("writer-password").exists());
    assert_eq!(storage(&database).get(b"older").await.unwrap(), Some(b"data".to_vec()));
    storage(&database).put(b"newer", b"data").await.unwrap();
    database.close().await.unwrap();
    drop(guard);
}

#[tokio::test]
async fn an_external_writer_only_url_serves_without_migrating_and_refuses_an_unmigrated_database() {
    let dir = tempfile::tempdir().unwrap();
    let guard = StopClusterOnDrop(dir.path().join("data"));
    let database = Database::open(&embedded(guard.root()), Purpose::Serve).await.unwrap();
    let cluster = database.cluster.as_ref().unwrap();
    let writer_url = cluster.writer_url(DATABASE_NAME);

    let external = DatabaseSettings { database_url: Some(writer_url.clone()), ..DatabaseSettings::default() };
    let replica = Database::open(&external, Purpose::Serve)
        .await
        .expect("a migrated database serves with a writer-only URL");
    storage(&replica).put(b"from", b"replica").await.unwrap();
    replica.close().await.unwrap();

    cluster.create_database_if_missing("unmigrated").await.unwrap();
    let unmigrated = DatabaseSettings {
        database_url: Some(cluster.writer_url("unmigrated")),
        ..DatabaseSettings::default()
    };
    let error =
        Database::open(&unmigrated, Purpose::Serve).await.err().expect("an unmigrated database is refused");
    let message = format!("{error:#}");
    assert!(message.contains("lacks migrations 1, 2, 3, 4"), "{message}");
    assert!(message.contains("MIGRATION_DATABASE_URL"), "{message}");

    // The owner's URL for migrations, the writer's for the service.
    let both = DatabaseSettings {
        database_url: Some(cluster.writer_url("unmigrated")),
        migration_url: Some(cluster.url("unmigrated")),
        data_dir: None,
    };
    let migrated = Database::open(&both, Purpose::Serve)
        .await
        .expect("migrations with the owner, service with the writer");
    storage(&migrated).put(b"two", b"urls").await.unwrap();
    migrated.close().await.unwrap();

    database.close().await.unwrap();
    drop(guard);
}

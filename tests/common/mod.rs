//! Test harness: a real Postgres for every test, each test in its own freshly migrated database.
//!
//! The cluster is `MPE_LEDGER_TEST_DATABASE_URL` (a superuser URL of any Postgres) when set,
//! otherwise an embedded cluster in `MPE_LEDGER_TEST_CLUSTER_DIR` (default
//! `$TMPDIR/mpe-ledger-test-cluster`), started on first use and left running for the next test
//! process; scripts/test.sh gives each run a fresh one and stops it at the end.
#![allow(dead_code)]

pub mod cluster;
pub mod contract;
pub mod e2e;
pub mod escrow;
pub mod escrow_world;
pub mod ganache;
pub mod gateway;
pub mod generated_log;
pub mod ledger;
pub mod pg_proxy;
pub mod tls;
pub mod upstream;

use std::path::PathBuf;
use std::sync::Arc;

use mpe_ledger::startup::cluster::EmbeddedCluster;
use mpe_ledger::store::postgres;
use mpe_ledger::store::retry::StoreMetrics;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::sync::OnceCell;

static ADMIN_URL: OnceCell<String> = OnceCell::const_new();

pub fn test_cluster_root() -> PathBuf {
    std::env::var_os("MPE_LEDGER_TEST_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("mpe-ledger-test-cluster"))
}

/// Superuser URL of the test cluster's `postgres` database.
pub async fn admin_url() -> String {
    ADMIN_URL
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("MPE_LEDGER_TEST_DATABASE_URL") {
                return url;
            }
            let cluster = EmbeddedCluster::ensure_running(&test_cluster_root())
                .await
                .expect("the test cluster starts (is the postgresql package installed?)");
            cluster.url("postgres")
        })
        .await
        .clone()
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// A fresh database that nothing has migrated: its name and superuser URL.
pub async fn unmigrated_database() -> (String, String) {
    let admin = admin_url().await;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin).await.expect("connect to the test cluster");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("create test database");
    conn.close().await.ok();
    let owner_url = with_database(&admin, &name);
    (name, owner_url)
}

/// A fresh migrated database.
pub struct TestDb {
    pub name: String,
    /// Superuser URL of this database (the owning side: migrations, tampering).
    pub owner_url: String,
    /// The service's pool: sessions run as the restricted writer role.
    pub pool: PgPool,
    pub metrics: Arc<StoreMetrics>,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::with_pool_size(8).await
    }

    pub async fn with_pool_size(pool_size: u32) -> Self {
        let (name, owner_url) = unmigrated_database().await;
        postgres::migrate(&owner_url).await.expect("migrations apply");
        let pool = postgres::connect(&owner_url, pool_size).await.expect("service pool");
        Self { name, owner_url, pool, metrics: Arc::new(StoreMetrics::unregistered()) }
    }

    pub async fn owner(&self) -> PgConnection {
        PgConnection::connect(&self.owner_url).await.expect("owner connection")
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM ledger.events").fetch_one(&self.pool).await.unwrap()
    }

    /// Every row of every projection, as text, to prove that a refused request changed nothing.
    pub async fn projections_snapshot(&self) -> Vec<String> {
        let mut all = Vec::new();
        for table in ["streams", "kv", "channels", "claims"] {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT t::text FROM ledger.{table} t ORDER BY 1"
            )))
            .fetch_all(&self.pool)
            .await
            .unwrap();
            all.extend(rows.into_iter().map(|row| format!("{table}: {row}")));
        }
        all
    }
}

#[test]
fn urls_get_their_database_replaced() {
    assert_eq!(with_database("postgres://u:p@h:1/postgres", "x"), "postgres://u:p@h:1/x");
    assert_eq!(
        with_database("postgres://u:p@h:1/postgres?sslmode=disable", "x"),
        "postgres://u:p@h:1/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}

/// A Postgres AtomicStorage on a fresh database.
pub async fn pg_storage() -> mpe_ledger::store::postgres::PgAtomicStorage {
    let db = TestDb::new().await;
    mpe_ledger::store::postgres::PgAtomicStorage::new(db.pool.clone(), db.metrics.clone())
}

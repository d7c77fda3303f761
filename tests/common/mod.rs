//! Test harness: a real Postgres for every test, each test in its own freshly migrated database.
//!
//! The cluster is `MPE_LEDGER_TEST_DATABASE_URL` (a superuser URL of any Postgres) when set,
//! otherwise an embedded cluster in `MPE_LEDGER_TEST_CLUSTER_DIR` (default
//! `$TMPDIR/mpe-ledger-test-cluster`), started on first use and left running for the next test
//! process; scripts/test.sh gives each run a fresh one and stops it at the end.
#![allow(dead_code)]

pub mod audit;
pub mod cluster;
pub mod contract;
pub mod crash;
pub mod e2e;
pub mod escrow;
pub mod escrow_world;
pub mod ganache;
pub mod gateway;
pub mod generated_log;
pub mod ledger;
pub mod paying;
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

    /// A pool logged in as a new reader login (`mpe-ledger reader add`'s login, made the same way).
    /// Roles are cluster-wide: the name gets this database's name appended.
    pub async fn reader(&self, prefix: &str) -> PgPool {
        use mpe_ledger::store::postgres::readers::{ReaderName, add_reader, with_login};
        let name = ReaderName::parse(&format!("{prefix}_{}", self.name)).expect("a valid reader name");
        let password = mpe_ledger::startup::cluster::generate_password();
        add_reader(&self.owner_url, &name, &password).await.expect("the reader login is created");
        let url = with_login(&self.owner_url, name.as_str(), &password).expect("a postgres URL");
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("the reader logs in")
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

/// Loads a log and its projections as an earlier version of the ledger wrote them
/// (`tests/fixtures/<name>/{events,streams,channels,claims}.json`, rows as `to_jsonb` gives them).
pub async fn load_fixture(db: &TestDb, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let mut owner = db.owner().await;
    for table in ["events", "streams", "channels", "claims"] {
        let rows: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{table}.json"))).unwrap())
                .unwrap();
        let overriding = if table == "events" { "OVERRIDING SYSTEM VALUE" } else { "" };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO ledger.{table} {overriding}
             SELECT * FROM jsonb_populate_recordset(NULL::ledger.{table}, $1)"
        )))
        .bind(rows)
        .execute(&mut owner)
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"));
    }
    owner.close().await.unwrap();
}

/// A Postgres AtomicStorage on a fresh database.
pub async fn pg_storage() -> mpe_ledger::store::postgres::PgAtomicStorage {
    let db = TestDb::new().await;
    mpe_ledger::store::postgres::PgAtomicStorage::new(db.pool.clone(), db.metrics.clone())
}

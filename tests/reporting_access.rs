//! Finance's side of the `reporting` views without a chain: every SQL example of
//! docs/reporting.md runs as a reader login, a reader sees nothing but `reporting` and writes
//! nothing, claim outcomes written before migration 0005 read as documented, and `mpe-ledger
//! reader add` makes such a login on the embedded cluster and prints a URL that works.

mod common;

use std::process::Command;

use common::TestDb;
use common::cluster::StopClusterOnDrop;
use mpe_ledger::domain::EthAddress;
use mpe_ledger::store::postgres::deployment;
use sqlx::{Connection, PgConnection, PgPool};

/// The fixture log of three channels (tests/fixtures/log_before_claim_facts) and a deployment
/// record as serve writes it, with a token of 8 decimals and a head block at 450.
async fn fixture_db() -> TestDb {
    let db = TestDb::new().await;
    common::load_fixture(&db, "log_before_claim_facts").await;
    let pool = &db.pool;
    deployment::record_mpe(pool, EthAddress([9; 20].into())).await.unwrap();
    deployment::record_settings(pool, 12_000, 100).await.unwrap();
    deployment::record_token(pool, EthAddress([8; 20].into()), 8).await.unwrap();
    deployment::record_head(pool, 450, 1_800_000_000).await.unwrap();
    db
}

/// The fenced `sql` blocks of docs/reporting.md.
fn documented_examples() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reporting.md");
    let text = std::fs::read_to_string(path).expect("docs/reporting.md");
    text.split("```sql\n").skip(1).map(|rest| rest.split("```").next().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn every_sql_example_of_docs_reporting_runs_as_a_reader_login() {
    let db = fixture_db().await;
    let reader = db.reader("docs").await;
    let examples = documented_examples();
    assert!(examples.len() >= 11, "only {} examples found: is the fence still ```sql?", examples.len());
    for example in &examples {
        if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(example.clone())).execute(&reader).await {
            panic!("docs/reporting.md example failed as a reader: {error}\n{example}");
        }
    }
}

/// The SQLSTATE `statement` fails with as `pool`'s login; panics if it succeeds.
async fn refused(pool: &PgPool, statement: &str) -> String {
    match sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned())).execute(pool).await {
        Ok(_) => panic!("a reader could run `{statement}`"),
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()).unwrap_or_default(),
        Err(e) => panic!("`{statement}` failed without a database error: {e}"),
    }
}

#[tokio::test]
async fn a_reader_sees_only_the_reporting_views_and_writes_nothing() {
    let db = fixture_db().await;
    let reader = db.reader("only").await;
    for view in [
        "payments",
        "claims",
        "revenue_daily_by_channel",
        "revenue_daily_by_group",
        "money_at_risk",
        "reconciliation",
        "deployment",
    ] {
        let count: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM reporting.{view}")))
                .fetch_one(&reader)
                .await
                .unwrap_or_else(|e| panic!("reporting.{view}: {e}"));
        assert!(count > 0, "reporting.{view} is empty on the fixture");
    }
    // Unqualified names find the views (search_path = reporting).
    sqlx::raw_sql("SELECT count(*) FROM payments").execute(&reader).await.unwrap();
    for statement in [
        "SELECT * FROM ledger.events",
        "SELECT * FROM ledger.channels",
        "SELECT * FROM ledger.claims",
        "SELECT * FROM ledger.deployment",
        "SELECT * FROM public._sqlx_migrations",
        "SELECT * FROM ledger.events_after('0', 0, 1)",
    ] {
        assert_eq!(refused(&reader, statement).await, "42501", "{statement}");
    }
    for statement in [
        "CREATE TABLE reporting.mine (x int)",
        "CREATE TABLE public.mine (x int)",
        "SET ROLE mpe_ledger_writer",
        "SET ROLE mpe_ledger_owner",
    ] {
        let code = refused(&reader, statement).await;
        // 25006: read-only transaction; 42501: permission denied.
        assert!(["25006", "42501"].contains(&code.as_str()), "{statement}: {code}");
    }
    let (superuser, create_role, create_db): (bool, bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = session_user",
    )
    .fetch_one(&reader)
    .await
    .unwrap();
    assert_eq!((superuser, create_role, create_db), (false, false, false));
}

/// The log written before claim outcomes became their own events: `claim_finished` read as the
/// event module and docs/reporting.md say, a claim still in progress, token amounts from the record.
#[tokio::test]
async fn claim_outcomes_written_before_migration_0005_read_as_documented() {
    let db = fixture_db().await;
    let reader = db.reader("legacy").await;
    let claims: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', channel_id, nonce, outcome, planned_cogs, coalesce(actual_cogs::text, '-'),
                          coalesce(value_taken_back_cogs::text, '-'), coalesce(provider_loss_cogs::text, '-'),
                          coalesce(provider_loss_tokens::text, '-'), coalesce(block_number::text, '-'),
                          coalesce(recorded_as, '-'))
         FROM reporting.claims ORDER BY channel_id, nonce",
    )
    .fetch_all(&reader)
    .await
    .unwrap();
    assert_eq!(
        claims,
        [
            // claimed_by_recipient with 15: the actual amount; planned is the claim's 20.
            "11 0 landed 20 15 - - - 9 claim_finished",
            // reclaimed_by_sender with 1000: the value taken back; the loss is the claim's 30.
            "12 0 sender_reclaimed 30 0 1000 30 0.00000030 20 claim_finished",
            "13 0 in_progress 10 - - - - - -",
        ]
    );
    let reconciliation: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', channel_id, nonce, authorized_cogs, claimed_cogs, lost_cogs, difference_cogs, reason)
         FROM reporting.reconciliation ORDER BY channel_id, nonce",
    )
    .fetch_all(&reader)
    .await
    .unwrap();
    assert_eq!(
        reconciliation,
        [
            "11 0 20 15 0 5 claimed_less_than_authorized",
            "11 1 10 0 0 10 not_claimed_yet",
            "12 0 30 0 30 30 lost_to_sender_reclaim",
            "13 0 10 0 0 10 claim_in_progress",
        ]
    );
    // Payments from before migration 0007 have no recorded signer or replica.
    let unknown: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM reporting.payments WHERE signer IS NULL AND replica IS NULL",
    )
    .fetch_one(&reader)
    .await
    .unwrap();
    assert_eq!(unknown, 5);
}

fn ledger(data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mpe-ledger"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("MIGRATION_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run mpe-ledger")
}

#[tokio::test]
async fn reader_add_on_the_embedded_cluster_prints_a_url_that_reads_only_the_views() {
    let dir = tempfile::tempdir().unwrap();
    let guard = StopClusterOnDrop(dir.path().join("data"));
    let refused = ledger(guard.root(), &["reader", "add", "Finance"]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "mpe-ledger: invalid reader name \"Finance\": must start with a lower-case letter a-z or _"
    );
    assert!(refused.stdout.is_empty());
    assert!(!guard.root().join("pgdata").exists(), "a refused name starts no cluster");

    let added = ledger(guard.root(), &["reader", "add", "finance"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let url = String::from_utf8(added.stdout).unwrap();
    let url = url.trim();
    assert!(url.starts_with("postgres://finance:") && url.ends_with("/mpe_ledger"), "{url}");
    assert!(!mpe_ledger::startup::cluster::is_running(guard.root()).await.unwrap(), "stopped after");

    // The URL logs in once the cluster runs (here: started again by another command).
    let started = mpe_ledger::startup::cluster::EmbeddedCluster::ensure_running(guard.root()).await.unwrap();
    let mut conn = PgConnection::connect(url).await.expect("the printed URL logs in");
    let deployments: i64 =
        sqlx::query_scalar("SELECT count(*) FROM reporting.deployment").fetch_one(&mut conn).await.unwrap();
    assert_eq!(deployments, 0);
    let denied = sqlx::raw_sql("SELECT * FROM ledger.events").execute(&mut conn).await.unwrap_err();
    assert!(matches!(&denied, sqlx::Error::Database(e) if e.code().as_deref() == Some("42501")), "{denied}");
    conn.close().await.unwrap();
    started.stop().await.unwrap();

    let again = ledger(guard.root(), &["reader", "add", "finance"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(
            "a role named finance already exists; choose another name (or DROP ROLE finance first)"
        ),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[tokio::test]
async fn reader_add_on_your_own_postgres_prints_database_urls_host_with_the_readers_login() {
    let db = fixture_db().await;
    let name = format!("fin_{}", db.name);
    let output = Command::new(env!("CARGO_BIN_EXE_mpe-ledger"))
        .args(["reader", "add", &name])
        .env("DATABASE_URL", &db.owner_url)
        .env_remove("MIGRATION_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run mpe-ledger");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let url = String::from_utf8(output.stdout).unwrap();
    let url = url.trim();
    let (_, host_and_database) = db.owner_url.split_once('@').expect("the test URL has a login");
    assert!(url.starts_with(&format!("postgres://{name}:")), "{url}");
    assert!(url.ends_with(&format!("@{host_and_database}")), "{url}");
    let mut conn = PgConnection::connect(url).await.expect("the printed URL logs in");
    let channels: i64 = sqlx::query_scalar("SELECT count(*) FROM reporting.money_at_risk")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(channels, 3);
    conn.close().await.unwrap();
}

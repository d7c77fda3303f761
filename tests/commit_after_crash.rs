//! A payment commit whose COMMIT is cut off by a Postgres crash before the server has read it, on a
//! real chain (ganache with the real MPE) and a real Postgres killed with SIGKILL, through the
//! production path (`PaymentService::start`, then `commit`).
//!
//! Why this case: the ledger resolves a COMMIT it heard nothing back from by asking what became of
//! that transaction's id. After a crash, Postgres hands out again every transaction id whose WAL had
//! not reached the disk, so the id of a transaction lost in the crash soon names another one, which
//! may have committed. The payment must then be written again, never answered "recorded" on
//! another transaction's word.
//!
//! The only stand-in is [`PgProxy::hold_next_commit`], which keeps the COMMIT in flight while the
//! test kills the postmaster: the backend, idle in its transaction, notices the postmaster's death
//! and exits, and its unflushed WAL is lost with the crash.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{StopClusterOnDrop, kill_postmaster, start_again};
use common::escrow::escrow_config;
use common::ganache::{Ganache, Mpe};
use common::pg_proxy::PgProxy;
use mpe_ledger::chain::EthChain;
use mpe_ledger::domain::payment::Payment;
use mpe_ledger::domain::{Amount, ChannelId, Nonce};
use mpe_ledger::escrow::channels::ChannelSource;
use mpe_ledger::escrow::payments::PaymentService;
use mpe_ledger::startup::cluster::{DATABASE_NAME, EmbeddedCluster};
use mpe_ledger::store::leases::PgLeases;
use mpe_ledger::store::postgres::{self, PgLedger};
use mpe_ledger::store::retry::StoreMetrics;
use mpe_ledger::store::verify::verify;
use sqlx::{Connection, Executor, PgConnection, PgPool};

const PRICE: u64 = 10;
const GROUP: [u8; 32] = [3; 32];
const METHOD: &str = "/example.Calculator/add";
/// Committed writes after the restart: far more than the transaction ids lost in the crash, so
/// the lost payment's id is handed out again, and committed, before the ledger asks about it.
const REUSING_WRITES: usize = 50;
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

fn payment(mpe: &Mpe<'_>, ganache: &Ganache, channel: ChannelId, amount: u64) -> Payment {
    Payment {
        mpe: mpe.eth_address(),
        channel_id: channel,
        nonce: Nonce::ZERO,
        amount: Amount::from(amount),
        signature: mpe.sign_payment(ganache.account(1), channel, 0, amount).0.to_vec(),
    }
}

async fn payment_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledger.events WHERE event_type = 'payment_accepted'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// One committed write of the cluster (a transaction id used, the WAL flushed up to it).
async fn committed_write(admin: &mut PgConnection) {
    admin.execute("INSERT INTO crash_test_writes DEFAULT VALUES").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_commit_cut_off_by_a_crash_is_written_again_though_its_transaction_id_was_reused() {
    let ganache = Ganache::start().await;
    let mpe = Mpe::deploy(&ganache).await;
    let client = ganache.account(1);
    mpe.mint_and_deposit(client, 10_000).await;
    let expiration = ganache.block_number().await + 100_000;
    let channel =
        mpe.open_channel(client, client.address, ganache.account(2).address, GROUP, 1000, expiration).await;

    // A Postgres of the test's own: it gets killed.
    let dir = tempfile::tempdir().unwrap();
    let guard = StopClusterOnDrop(dir.path().join("pg"));
    let cluster = EmbeddedCluster::ensure_running(guard.root()).await.unwrap();
    cluster.create_database_if_missing(DATABASE_NAME).await.unwrap();
    let url = cluster.url(DATABASE_NAME);
    postgres::migrate(&url).await.unwrap();
    let mut admin = PgConnection::connect(&cluster.url("postgres")).await.unwrap();
    // The WAL writer flushes asynchronous commits every 200 ms; at its longest, 10 s, the crash
    // loses exactly what no durable commit has flushed, whatever the timing of this test.
    admin.execute("ALTER SYSTEM SET wal_writer_delay = '10s'").await.unwrap();
    admin.execute("SELECT pg_reload_conf()").await.unwrap();
    admin.execute("CREATE TABLE crash_test_writes (id serial)").await.unwrap();

    // Money through the proxy, leases straight to the server, as two pools of one replica.
    let proxy = PgProxy::start(cluster.port()).await;
    let metrics = Arc::new(StoreMetrics::unregistered());
    let money = postgres::connect(&proxy.url(&url), 4).await.unwrap();
    let direct = postgres::connect(&url, 4).await.unwrap();
    let config = Arc::new(escrow_config(mpe.eth_address(), ganache.account(2).eth_address(), GROUP, PRICE));
    let chain = EthChain::connect(ganache.url(), mpe.eth_address()).unwrap();
    let source = Arc::new(ChannelSource::new(PgLedger::new(money, metrics.clone()), chain, config.clone()));
    let payments =
        Arc::new(PaymentService::new(source, PgLeases::new(direct.clone(), metrics.clone()), config));

    let first = payments.start(payment(&mpe, &ganache, channel, PRICE), METHOD).await.unwrap();
    payments.commit(first).await.expect("the first payment is recorded");
    let before = payment_events(&direct).await;

    let transaction = payments.start(payment(&mpe, &ganache, channel, 2 * PRICE), METHOD).await.unwrap();
    // The lease's (asynchronous) commit reaches the disk with this one: only the payment's own
    // write is lost in the crash.
    committed_write(&mut admin).await;
    proxy.hold_next_commit();
    let committing = {
        let payments = payments.clone();
        tokio::spawn(async move { payments.commit(transaction).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.held_commits() == 0 {
        assert!(Instant::now() < deadline, "the payment's COMMIT was sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kill_postmaster(guard.root());
    drop(admin);
    let cluster = start_again(guard.root(), cluster.port(), RESTART_TIMEOUT).await;
    let mut admin = PgConnection::connect(&cluster.url("postgres")).await.unwrap();
    for _ in 0..REUSING_WRITES {
        committed_write(&mut admin).await;
    }
    // The client hears nothing back from its COMMIT: the connection closes.
    proxy.release_held();
    let outcome = tokio::time::timeout(Duration::from_secs(60), committing).await.expect("the commit ends");

    let recorded = payment_events(&direct).await - before;
    assert!(outcome.as_ref().is_ok_and(|o| o.is_ok()), "the served call is recorded: {outcome:?}");
    assert_eq!(recorded, 1, "the payment answered as recorded is in the log, once");
    assert!(
        metrics.connection_retries.with_label_values(&["ledger.commit_batch"]).get() >= 1,
        "the COMMIT was retried"
    );
    assert!(verify(&direct).await.unwrap().is_empty(), "the log verifies");
    let _ = admin.close().await;
    direct.close().await;
}

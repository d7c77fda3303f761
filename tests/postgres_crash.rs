//! Postgres killed with SIGKILL under paid calls through a real `serve`, (a) its embedded cluster,
//! which `serve`'s supervisor restarts, and (b) an external Postgres given by `DATABASE_URL`, which
//! the test restarts itself. Afterwards every payment acknowledged to a client (status 0) is in the
//! log, none is there twice, the clients pay again by themselves within `crash::RESUME_BOUND` of
//! Postgres answering again, and `mpe-ledger verify` is clean (`common::crash`).

mod common;

use std::time::{Duration, Instant};

use common::cluster::{StopClusterOnDrop, kill_postmaster, postmaster_pid, start_again, wait_accepting};
use common::crash::{Outage, World, pay_through_a_crash};
use common::ganache::Ganache;
use common::ledger::Ledger;
use mpe_ledger::startup::cluster::{DATABASE_NAME, EmbeddedCluster};
use mpe_ledger::store::postgres;

/// How long the external Postgres stays down before the test starts it again.
const EXTERNAL_OUTAGE: Duration = Duration::from_secs(2);
/// How long Postgres may take to answer again after the kill (the embedded one: `serve`'s
/// restart, with its backoff while the old backends let go of the shared memory).
const POSTGRES_BACK_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_the_embedded_postgres_under_paid_calls_loses_no_acknowledged_payment() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache, "replica-crash-embedded").await;
    let dir = tempfile::tempdir().unwrap();
    let guard = StopClusterOnDrop(dir.path().join("ledger"));
    let mut ledger = Ledger::start_embedded(guard.root(), &world.settings).await;
    // A guest's handle, for the superuser URL: it never starts or stops the cluster under `serve`.
    let url = EmbeddedCluster::ensure_running(guard.root()).await.unwrap().url(DATABASE_NAME);

    pay_through_a_crash(&world, &ledger, &url, "embedded", async || {
        let killed_pid = kill_postmaster(guard.root());
        let killed = Instant::now();
        let back = wait_accepting(&url, POSTGRES_BACK_TIMEOUT).await.expect("serve restarts its Postgres");
        assert_ne!(postmaster_pid(guard.root()), Some(killed_pid), "a new postmaster answers");
        Outage { killed, back }
    })
    .await;

    for line in ledger.log().lines().filter(|line| line.contains("PostgreSQL")) {
        println!("{line}");
    }
    assert!(ledger.log().contains("the embedded PostgreSQL was restarted"), "{}", ledger.log());
    assert!(ledger.stop(), "serve stops gracefully:\n{}", ledger.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_an_external_postgres_under_paid_calls_loses_no_acknowledged_payment() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache, "replica-crash-external").await;
    // The test's own Postgres, which `serve` knows only by its DATABASE_URL (the writer's login).
    let dir = tempfile::tempdir().unwrap();
    let guard = StopClusterOnDrop(dir.path().join("external"));
    let cluster = EmbeddedCluster::ensure_running(guard.root()).await.unwrap();
    cluster.create_database_if_missing(DATABASE_NAME).await.unwrap();
    let url = cluster.url(DATABASE_NAME);
    postgres::migrate(&url).await.unwrap();
    let mut ledger = Ledger::start(&cluster.writer_url(DATABASE_NAME), &world.settings).await;

    pay_through_a_crash(&world, &ledger, &url, "external", async || {
        kill_postmaster(guard.root());
        let killed = Instant::now();
        tokio::time::sleep(EXTERNAL_OUTAGE).await;
        start_again(guard.root(), cluster.port(), POSTGRES_BACK_TIMEOUT).await;
        let back = wait_accepting(&url, POSTGRES_BACK_TIMEOUT).await.expect("Postgres answers");
        Outage { killed, back }
    })
    .await;

    assert!(ledger.stop(), "serve stops gracefully:\n{}", ledger.log());
    drop(guard);
}

//! Postgres killed with SIGKILL under paid calls through a real `serve`, (a) its embedded cluster,
//! which `serve`'s supervisor restarts, and (b) an external Postgres given by `DATABASE_URL`, which
//! the test restarts itself. Afterwards every payment acknowledged to a client (status 0) is in the
//! log, none is there twice, the clients pay again by themselves within [`RESUME_BOUND`] of
//! Postgres answering again, and `mpe-ledger verify` is clean.
//!
//! The clients are [`common::paying::PayingClients`]: one per channel, one call after the other; a
//! client whose call failed re-sends the same signed payment and learns from the answer whether it
//! had been recorded. The chain is ganache with the real MPE.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{StopClusterOnDrop, kill_postmaster, postmaster_pid, start_again, wait_accepting};
use common::ganache::{Ganache, Mpe};
use common::ledger::{Ledger, LedgerSettings, verify};
use common::paying::{
    ChannelHistory, PayingClients, Tally, all_paid_after, answers_between, first_paid_after,
    recorded_payments,
};
use common::upstream::Upstream;
use mpe_ledger::domain::ChannelId;
use mpe_ledger::startup::cluster::{DATABASE_NAME, EmbeddedCluster};
use mpe_ledger::store::postgres;

const GROUP_ID: [u8; 32] = [5; 32];
const CLIENT: usize = 1;
const PROVIDER: usize = 2;
const PRICE: u64 = 10;
/// Clients paying at once, one channel each.
const CLIENTS: usize = 6;
/// Each channel's value: far more calls than the test makes.
const CHANNEL_VALUE: u64 = 1_000_000;
/// Paid calls before the kill, and again once every client has paid after it.
const LOAD: Duration = Duration::from_secs(3);
/// How long the external Postgres stays down before the test starts it again.
const EXTERNAL_OUTAGE: Duration = Duration::from_secs(2);
/// How long Postgres may take to answer again after the kill (the embedded one: `serve`'s
/// restart, with its backoff while the old backends let go of the shared memory).
const POSTGRES_BACK_TIMEOUT: Duration = Duration::from_secs(60);
/// What the README promises: once Postgres answers again, every client pays again within this.
const RESUME_BOUND: Duration = Duration::from_secs(15);

struct World<'a> {
    ganache: &'a Ganache,
    mpe: Mpe<'a>,
    _upstream: Upstream,
    settings: LedgerSettings,
    channels: Vec<ChannelId>,
}

impl<'a> World<'a> {
    async fn new(ganache: &'a Ganache, replica_id: &str) -> Self {
        let mpe = Mpe::deploy(ganache).await;
        let upstream = Upstream::start().await;
        let client = ganache.account(CLIENT);
        mpe.mint_and_deposit(client, CHANNEL_VALUE * CLIENTS as u64).await;
        let expiration = ganache.block_number().await + 100_000;
        let provider = ganache.account(PROVIDER).address;
        let mut channels = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            channels.push(
                mpe.open_channel(client, client.address, provider, GROUP_ID, CHANNEL_VALUE, expiration).await,
            );
        }
        let settings = LedgerSettings {
            ethereum_rpc_url: ganache.url().to_owned(),
            mpe: mpe.address,
            group_id: GROUP_ID,
            payment_address: provider,
            price: PRICE,
            upstream: upstream.url.clone(),
            replica_id: replica_id.to_owned(),
            tls: None,
            ethereum_rpc_ca_file: None,
            upstream_ca_file: None,
        };
        Self { ganache, mpe, _upstream: upstream, settings, channels }
    }

    fn pay(&self, ledger: &Ledger) -> PayingClients {
        let address = SocketAddr::from(([127, 0, 0, 1], ledger.port));
        PayingClients::start(
            address,
            self.mpe.eth_address(),
            self.ganache.account(CLIENT),
            &self.channels,
            PRICE,
        )
    }
}

/// When Postgres was killed and when it answered again.
struct Outage {
    killed: Instant,
    back: Instant,
}

/// Pays for [`LOAD`], lets `crash` kill and bring back Postgres, waits until every client has paid
/// again, pays for [`LOAD`] more, then checks the log at `url` (a superuser's) against the clients'
/// records and runs `verify`.
async fn pay_through_a_crash(
    world: &World<'_>,
    ledger: &Ledger,
    url: &str,
    setup: &str,
    crash: impl AsyncFnOnce() -> Outage,
) {
    let clients = world.pay(ledger);
    tokio::time::sleep(LOAD).await;
    let outage = crash().await;
    let resumed = clients.wait_all_paid_after(outage.back, RESUME_BOUND).await;
    tokio::time::sleep(LOAD).await;
    let histories = clients.stop().await;
    assert!(resumed, "{setup}: not every client paid again within {RESUME_BOUND:?}:\n{}", ledger.log());

    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let recorded = recorded_payments(&pool).await;
    pool.close().await;
    let tally = Tally::of(&histories, &recorded);
    report(setup, &histories, &tally, &outage);
    let log = ledger.log();
    println!(
        "{setup}: serve retried {} statement(s) after a lost connection; {} commit(s) had lost their acknowledgement \
         and were resolved by asking Postgres what it recorded",
        log.matches("connection failure; retrying").count(),
        log.matches("the last commit attempt was not acknowledged").count()
    );

    assert!(
        histories.iter().all(|h| h.acknowledged.first().is_some_and(|&t| t == PRICE)),
        "every client paid"
    );
    assert!(tally.lost.is_empty(), "{setup}: acknowledged payments missing from the log: {:?}", tally.lost);
    assert!(tally.duplicates.is_empty(), "{setup}: payments recorded twice: {:?}", tally.duplicates);
    assert!(
        tally.contradicted.is_empty(),
        "{setup}: 'nothing was recorded', yet recorded: {:?}",
        tally.contradicted
    );
    assert!(
        tally.refused_unexpectedly.is_empty(),
        "{setup}: refused as paid: {:?}",
        tally.refused_unexpectedly
    );
    assert!(tally.recorded_unknown_to_client.len() <= CLIENTS, "{setup}: {tally:?}");
    let before = answers_between(&histories, outage.killed - LOAD, outage.killed).0;
    assert!(before > 0, "{setup}: paid calls went through before the kill");
    let verified = verify(url).await;
    assert_eq!(verified.code, Some(0), "{setup}: verify:\n{}{}", verified.stdout, verified.stderr);
}

fn report(setup: &str, histories: &[ChannelHistory], tally: &Tally, outage: &Outage) {
    let since = |from: Instant, to: Option<Instant>| to.map_or(f64::NAN, |to| (to - from).as_secs_f64());
    let first = first_paid_after(histories, outage.back);
    let all = all_paid_after(histories, outage.back);
    let (ok, failures) = answers_between(histories, outage.killed, all.unwrap_or(outage.back));
    println!(
        "\n{setup}: {} payments acknowledged, {} found in the log ({} recorded without an acknowledgement and \
         learnt by re-sending, {} recorded and unknown to the client at the stop), {} duplicates, {} acknowledged missing",
        tally.acknowledged,
        tally.found,
        tally.recorded_unacknowledged,
        tally.recorded_unknown_to_client.len(),
        tally.duplicates.len(),
        tally.lost.len()
    );
    println!(
        "{setup}: Postgres answered {:.2} s after the kill; the first paid call succeeded {:.2} s after that, \
         every client had paid again {:.2} s after that",
        (outage.back - outage.killed).as_secs_f64(),
        since(outage.back, first),
        since(outage.back, all),
    );
    println!(
        "{setup}: from the kill until every client paid again: {ok} calls answered 0, and the failures:"
    );
    for ((status, message), count) in failures {
        println!("  {count:>4} × status {status}: {message}");
    }
}

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

//! `serve` keeps its embedded Postgres up: after a kill -9 of the postmaster it restarts it (the
//! restart logged and counted in `/metrics`), `/healthz` answers within a second all along and
//! says what is wrong, and paid calls resume by themselves. `/readyz` says whether paid calls can
//! be taken. The chain is ganache with the real MPE; `serve` is the real binary.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{StopClusterOnDrop, kill_postmaster, postmaster_pid};
use common::e2e::event_count;
use common::ganache::{Ganache, Mpe};
use common::gateway::{OK, RawClient, payment_metadata};
use common::ledger::{Ledger, LedgerSettings, http_get, verify};
use common::upstream::{ECHO, Upstream};
use mpe_ledger::domain::ChannelId;
use mpe_ledger::startup::cluster::{DATABASE_NAME, EmbeddedCluster, is_running};

const GROUP_ID: [u8; 32] = [9; 32];
const CLIENT: usize = 1;
const PROVIDER: usize = 2;
const CHANNEL_VALUE: u64 = 1000;
const PRICE: u64 = 10;
/// What `/healthz` promises: an answer within a second whatever the database does.
const HEALTHZ_ANSWER_BOUND: Duration = Duration::from_secs(1);
/// How long `serve` may take to have its database back after the postmaster was killed.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(90);

async fn paid_call(
    ledger: &Ledger,
    mpe: &Mpe<'_>,
    ganache: &Ganache,
    channel: ChannelId,
    amount: u64,
) -> u32 {
    let metadata = payment_metadata(mpe, ganache.account(CLIENT), channel, 0, amount);
    let address = SocketAddr::from(([127, 0, 0, 1], ledger.port));
    let reply = RawClient::connect(address).await.call(ECHO, &metadata, &[b"paid"]).await;
    reply.status
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_restarts_its_embedded_postgres_after_a_kill_9_and_paid_calls_resume() {
    let ganache = Ganache::start().await;
    let mpe = Mpe::deploy(&ganache).await;
    let upstream = Upstream::start().await;
    let client = ganache.account(CLIENT);
    mpe.mint_and_deposit(client, 10_000).await;
    let expiration = ganache.block_number().await + 100_000;
    let provider = ganache.account(PROVIDER).address;
    let channel =
        mpe.open_channel(client, client.address, provider, GROUP_ID, CHANNEL_VALUE, expiration).await;

    let dir = tempfile::tempdir().unwrap();
    let guard = StopClusterOnDrop(dir.path().join("ledger"));
    let settings = LedgerSettings {
        ethereum_rpc_url: ganache.url().to_owned(),
        mpe: mpe.address,
        group_id: GROUP_ID,
        payment_address: provider,
        price: PRICE,
        upstream: upstream.url.clone(),
        replica_id: "replica-supervised".to_owned(),
        tls: None,
        ethereum_rpc_ca_file: None,
        upstream_ca_file: None,
    };
    let mut ledger = Ledger::start_embedded(guard.root(), &settings).await;
    assert_eq!(http_get(ledger.port, "/readyz").await.unwrap(), (200, "ready\n".to_owned()));
    assert_eq!(paid_call(&ledger, &mpe, &ganache, channel, PRICE).await, OK);

    let killed = kill_postmaster(guard.root());

    // Every answer comes within the bound, and one that is not `ok` says what is wrong.
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    let mut problems = Vec::new();
    loop {
        let asked = Instant::now();
        let (status, body) = http_get(ledger.port, "/healthz").await.unwrap();
        assert!(asked.elapsed() < HEALTHZ_ANSWER_BOUND, "/healthz took {:?}", asked.elapsed());
        let restarted = postmaster_pid(guard.root()).is_some_and(|pid| pid != killed);
        if status == 200 && restarted {
            break;
        }
        if status != 200 {
            assert_eq!(status, 503);
            assert!(body.starts_with("database "), "{body}");
            if problems.last() != Some(&body) {
                problems.push(body);
            }
        }
        assert!(Instant::now() < deadline, "serve's database did not come back:\n{}", ledger.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("/healthz while the database was down: {problems:?}");
    for line in ledger.log().lines().filter(|line| line.contains("PostgreSQL")) {
        println!("{line}");
    }
    assert!(ledger.log().contains("the embedded PostgreSQL was restarted"), "{}", ledger.log());
    let (_, metrics) = http_get(ledger.port, "/metrics").await.unwrap();
    assert!(metrics.contains("mpe_ledger_embedded_postgres_restarts_total 1"), "{metrics}");
    assert!(metrics.contains("mpe_ledger_embedded_postgres_up 1"), "{metrics}");

    // Paid calls resume by themselves: the pools drop their dead connections.
    assert_eq!(http_get(ledger.port, "/readyz").await.unwrap(), (200, "ready\n".to_owned()));
    assert_eq!(paid_call(&ledger, &mpe, &ganache, channel, 2 * PRICE).await, OK);

    let cluster = EmbeddedCluster::ensure_running(guard.root()).await.unwrap();
    let pool = sqlx::PgPool::connect(&cluster.url(DATABASE_NAME)).await.unwrap();
    assert_eq!(event_count(&pool, "payment_accepted", channel).await, 2, "both payments are in the log");
    pool.close().await;
    assert_eq!(verify(&cluster.url(DATABASE_NAME)).await.code, Some(0));

    assert!(ledger.stop(), "serve stops gracefully:\n{}", ledger.log());
    assert!(!is_running(guard.root()).await.unwrap(), "and stops the cluster it restarted");
    drop(guard);
}

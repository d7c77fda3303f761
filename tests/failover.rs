//! Primary failover under paid calls, on an existing HA engine: Patroni with etcd runs a primary
//! and a synchronous standby on loopback (`failover/patroni.rs`), and a real `serve` knows them
//! only by a multi-host `DATABASE_URL` with `target_session_attrs=read-write` (the writer's login).
//! Under load the primary's Patroni and postmaster are killed with SIGKILL; Patroni promotes the
//! standby; `serve` moves to it by itself (`store::postgres::hosts`). Afterwards every payment
//! acknowledged to a client is in the log on the new primary, none twice, the clients pay again
//! within `RESUME_BOUND` of the new primary taking writes, and `verify` (given the same
//! multi-host URL) is clean (`common::crash`).
//!
//! Then the restore drill of `docs/operations.md` (`failover/restore.rs`): the base backup taken
//! before the first payment, recovered with the WAL both primaries archived (across the timeline
//! switch), holds every acknowledged payment, the latest of each client included, none twice.

mod common;
#[path = "failover/patroni.rs"]
mod patroni;
#[path = "failover/restore.rs"]
mod restore;

use std::time::{Duration, Instant};

use common::crash::{Outage, World, pay_through_a_crash};
use common::ganache::Ganache;
use common::ledger::Ledger;
use common::paying::{Tally, recorded_payments};
use mpe_ledger::startup::cluster::DATABASE_NAME;
use mpe_ledger::store::postgres::{self, WRITER_ROLE, hosts};
use patroni::{Patroni, SUPERUSER, SUPERUSER_PASSWORD};
use restore::RestoredServer;
use sqlx::{Connection, Executor};

/// Patroni's start: etcd, the primary's initdb, the standby's base backup and streaming.
const PATRONI_START_TIMEOUT: Duration = Duration::from_secs(90);
/// From the kill until Patroni has promoted the standby (its leader key lives 10 s).
const PROMOTION_TIMEOUT: Duration = Duration::from_secs(45);
const WRITER_PASSWORD: &str = "failover-writer-password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_the_primary_under_paid_calls_fails_over_to_the_standby_and_loses_no_acknowledged_payment()
 {
    let started = Instant::now();
    let (ganache, mut patroni) = tokio::join!(Ganache::start(), Patroni::start(PATRONI_START_TIMEOUT));
    println!(
        "etcd, Patroni with a synchronous standby, and ganache up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let admin = patroni.url(SUPERUSER, SUPERUSER_PASSWORD, "postgres");
    let mut conn = hosts::connect(&admin).await.expect("the primary, found by the multi-host URL");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DATABASE_NAME}"))).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {WRITER_ROLE} LOGIN PASSWORD '{WRITER_PASSWORD}'"
    )))
    .await
    .unwrap();
    conn.close().await.unwrap();
    let owner_url = patroni.url(SUPERUSER, SUPERUSER_PASSWORD, DATABASE_NAME);
    postgres::migrate(&owner_url).await.expect("migrations through the multi-host URL");
    let primary = patroni.leader().await.expect("a leader");
    let backup = restore::base_backup(&patroni, patroni.pg_port(primary));

    let world = World::new(&ganache, "replica-failover").await;
    let mut ledger =
        Ledger::start(&patroni.url(WRITER_ROLE, WRITER_PASSWORD, DATABASE_NAME), &world.settings).await;

    let mut old_primary = None;
    let histories = pay_through_a_crash(&world, &ledger, &owner_url, "failover", async || {
        let primary = patroni.leader().await.expect("a leader");
        old_primary = Some(primary);
        patroni.kill(primary);
        let killed = Instant::now();
        let deadline = killed + PROMOTION_TIMEOUT;
        let old = patroni.name(primary).to_owned();
        let members = patroni
            .wait_until(deadline, "promotion of the standby", |m| {
                m.iter().any(|m| m.role == "leader" && m.name != old && m.state == "running")
            })
            .await;
        println!("after the kill of {old}: {members:?}");
        let back = loop {
            if hosts::connect(&owner_url).await.is_ok() {
                break Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "the new primary takes read-write sessions:\n{}",
                patroni.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Outage { killed, back }
    })
    .await;

    let old_primary = old_primary.unwrap();
    let new_primary = patroni.leader().await.expect("a leader after the failover");
    assert_ne!(new_primary, old_primary, "the standby was promoted");
    let moved = ledger
        .log()
        .lines()
        .filter(|line| line.contains("the database moved"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    for line in &moved {
        println!("{line}");
    }
    let new_host = format!("127.0.0.1:{}", patroni.pg_port(new_primary));
    assert!(
        moved.iter().any(|line| line.contains(&new_host)),
        "serve's pools followed the primary to {new_host}:\n{}",
        ledger.log()
    );
    assert!(ledger.stop(), "serve stops gracefully:\n{}", ledger.log());

    let drill = Instant::now();
    restore::archive_current_wal(&owner_url).await;
    let restored = RestoredServer::start(&patroni, &backup, &patroni.archive_dir()).await;
    let pool = restored.pool().await;
    let recorded = recorded_payments(&pool).await;
    pool.close().await;
    let tally = Tally::of(&histories, &recorded);
    let latest: Vec<u64> = histories.iter().map(|h| h.acknowledged.last().copied().unwrap_or(0)).collect();
    println!(
        "restore drill: {} payments acknowledged, {} found in the restored log, {} duplicates, {} acknowledged missing; \
         the latest acknowledged amount of each channel {latest:?}; archive switched, restored and recovered in {:.1} s",
        tally.acknowledged,
        tally.found,
        tally.duplicates.len(),
        tally.lost.len(),
        drill.elapsed().as_secs_f64()
    );
    assert!(tally.lost.is_empty(), "restore drill: acknowledged payments missing: {:?}", tally.lost);
    assert!(tally.duplicates.is_empty(), "restore drill: payments twice: {:?}", tally.duplicates);
    drop(restored);
    println!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn a_target_session_attrs_the_ledger_does_not_support_stops_start_up_with_one_line() {
    let url =
        "postgres://mpe_ledger_writer:secret@127.0.0.1:1,127.0.0.1:2/mpe_ledger?target_session_attrs=standby";
    let run = common::ledger::run_command(&["verify"], &[("DATABASE_URL", url)]).await;
    assert_ne!(run.code, Some(0));
    let stderr = run.stderr.trim();
    assert!(
        stderr.contains("DATABASE_URL cannot be used")
            && stderr.contains(
                "target_session_attrs=standby is not supported: use any (the default), read-write or primary"
            ),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "the password stays out of the error: {stderr}");
    assert_eq!(stderr.lines().filter(|line| line.contains("target_session_attrs")).count(), 1, "{stderr}");
}

//! Paid calls through a real `serve` while its Postgres goes away: the world they run in, the
//! run itself and its report, shared by `tests/postgres_crash.rs` (the postmaster killed) and
//! `tests/failover.rs` (the primary killed, a standby promoted).
//!
//! The clients are [`crate::common::paying::PayingClients`]: one per channel, one call after the
//! other; a client whose call failed re-sends the same signed payment and learns from the answer
//! whether it had been recorded. The chain is ganache with the real MPE.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mpe_ledger::domain::ChannelId;
use mpe_ledger::store::postgres::hosts::Target;
use sqlx::{Connection, PgPool};

use super::ganache::{Ganache, Mpe};
use super::ledger::{Ledger, LedgerSettings, verify};
use super::paying::{
    ChannelHistory, PayingClients, Tally, all_paid_after, answers_between, first_paid_after,
    recorded_payments,
};
use super::upstream::Upstream;

pub const GROUP_ID: [u8; 32] = [5; 32];
pub const CLIENT: usize = 1;
pub const PROVIDER: usize = 2;
pub const PRICE: u64 = 10;
/// Clients paying at once, one channel each.
pub const CLIENTS: usize = 6;
/// Each channel's value: far more calls than the test makes.
pub const CHANNEL_VALUE: u64 = 1_000_000;
/// Paid calls before the kill, and again once every client has paid after it.
pub const LOAD: Duration = Duration::from_secs(3);
/// What the README promises: once Postgres answers again, every client pays again within this.
pub const RESUME_BOUND: Duration = Duration::from_secs(15);

/// ganache with the MPE, an upstream, [`CLIENTS`] funded channels and the settings of a `serve`.
pub struct World<'a> {
    ganache: &'a Ganache,
    mpe: Mpe<'a>,
    _upstream: Upstream,
    pub settings: LedgerSettings,
    channels: Vec<ChannelId>,
}

impl<'a> World<'a> {
    pub async fn new(ganache: &'a Ganache, replica_id: &str) -> Self {
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

    pub fn pay(&self, ledger: &Ledger) -> PayingClients {
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
pub struct Outage {
    pub killed: Instant,
    pub back: Instant,
}

/// Pays for [`LOAD`], lets `crash` kill and bring back Postgres, waits until every client has paid
/// again, pays for [`LOAD`] more, then checks the log at `url` (a superuser's; with several hosts,
/// the first usable one, as `serve` reads it) against the clients' records and runs `verify` on it.
/// Returns the clients' records.
pub async fn pay_through_a_crash(
    world: &World<'_>,
    ledger: &Ledger,
    url: &str,
    setup: &str,
    crash: impl AsyncFnOnce() -> Outage,
) -> Vec<ChannelHistory> {
    let clients = world.pay(ledger);
    tokio::time::sleep(LOAD).await;
    let outage = crash().await;
    let resumed = clients.wait_all_paid_after(outage.back, RESUME_BOUND).await;
    tokio::time::sleep(LOAD).await;
    let histories = clients.stop().await;
    assert!(resumed, "{setup}: not every client paid again within {RESUME_BOUND:?}:\n{}", ledger.log());

    let pool = pool_on_usable_host(url).await;
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
    histories
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

/// A pool on the first host of `url` that accepts its `target_session_attrs`.
async fn pool_on_usable_host(url: &str) -> PgPool {
    let target: Target = url.parse().expect("a database URL");
    let (index, conn) = target.first_usable().await.expect("a usable host");
    let _ = conn.close().await;
    PgPool::connect_with(target.hosts[index].options.clone()).await.expect("connect to the usable host")
}

//! The `reporting` views (migration 0007, docs/reporting.md) on a real chain (ganache running the
//! real MultiPartyEscrow) and a real Postgres, read as finance reads them: through a reader login.
//!
//! The scripted history: four channels; payments by two replicas; a claim landing with less than
//! planned (A), a claim landing in full (B), a sender's reclaim after expiry with a claim pending
//! (C), the re-funded channel taking payments again (C), a claim left pending and payments after
//! it (D). Every view's rows are asserted exactly, and the events that produced them.

mod common;

use std::time::Duration;

use base64::Engine;
use common::escrow_world::{GROUP, PRICE, World};
use common::ganache::{CHAIN_ID, Ganache};
use common::ledger::{Ledger, LedgerSettings, http_get};
use mpe_ledger::domain::{ChannelEvent, ChannelId};
use mpe_ledger::escrow::at_risk::AtRiskWatch;
use mpe_ledger::escrow::metrics::EscrowMetrics;
use mpe_ledger::escrow::payments::PaymentService;
use mpe_ledger::startup::reporting::HEAD_RECORD_INTERVAL;
use mpe_ledger::store::postgres::deployment;
use mpe_ledger::store::verify::verify;
use sqlx::PgPool;

/// Every row of `query` (which must select one text column per row).
async fn rows(pool: &PgPool, query: &str) -> Vec<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned()))
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

fn event_types(events: &[ChannelEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|event| match event {
            ChannelEvent::ChannelMergedFromChain { .. } => "merged",
            ChannelEvent::PaymentAccepted { .. } => "payment",
            ChannelEvent::ClaimStarted { .. } => "claim_started",
            ChannelEvent::ClaimLanded { .. } => "claim_landed",
            ChannelEvent::SenderReclaimed { .. } => "sender_reclaimed",
            ChannelEvent::ClaimFinished { .. } => "claim_finished",
        })
        .collect()
}

#[tokio::test]
async fn a_scripted_history_reads_back_exactly_from_every_view() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let (a, b) = (world.channel, world.open_channel(1000, 1000).await);
    let c = world.open_channel(1000, 25).await;
    let d = world.open_channel(500, 60).await;
    let replica_a = world.payments();
    let replica_b = world.replica("replica-b", Duration::from_secs(30));
    let claims = world.claims();
    let provider = world.provider();

    // A: three payments, a claim of 30 that lands with 25; then a payment at nonce 1.
    for amount in [10, 20, 30] {
        world.pay_on(&replica_a, a, 0, amount).await;
    }
    let claim_a = claims.start_claim(a).await.unwrap();
    let tx_a = world.mpe.channel_claim(provider, a, 25, 30, &claim_a.signature, false).await;
    // B (served by replica-b): two payments, a claim of 20 that lands in full.
    for amount in [10, 20] {
        world.pay_on(&replica_b, b, 0, amount).await;
    }
    let claim_b = claims.start_claim(b).await.unwrap();
    let tx_b = world.mpe.channel_claim(provider, b, 20, 20, &claim_b.signature, false).await;
    // C: a payment, a claim started and never sent, payments at nonce 1 meanwhile.
    world.pay_on(&replica_a, c, 0, 10).await;
    claims.start_claim(c).await.unwrap();
    world.pay_on(&replica_a, c, 1, 10).await;
    world.pay_on(&replica_a, c, 1, 20).await;
    // D (replica-b): a payment, a claim left pending, a payment at nonce 1.
    world.pay_on(&replica_b, d, 0, 10).await;
    claims.start_claim(d).await.unwrap();
    world.pay_on(&replica_b, d, 1, 10).await;
    // C expires; the sender takes its value back while its claim is pending.
    ganache.mine(25).await;
    let tx_c = world.mpe.claim_timeout(world.client(), c).await;
    let mut finished: Vec<ChannelId> =
        claims.record_finished_claims().await.unwrap().iter().map(|f| f.channel_id).collect();
    finished.sort();
    assert_eq!(finished, [a, b, c]);
    // The paid-up A pays on at nonce 1; the sender re-funds and extends C, which pays on at nonce 1.
    world.pay_on(&replica_a, a, 1, 10).await;
    world.mpe.add_funds(world.client(), c, 100).await;
    let c_expiration = ganache.block_number().await + 100;
    world.mpe.extend(world.client(), c, c_expiration).await;
    let fresh = PaymentService::new(
        world.source(&world.config("replica-a", Duration::from_secs(30))),
        world.leases(),
        world.config("replica-a", Duration::from_secs(30)),
    );
    world.pay_on(&fresh, c, 1, 30).await;

    // What serve records: the MPE at start-up, the settings, the chain id and token once the node
    // answers, the head block every 15 s.
    let pool = &world.db.pool;
    deployment::record_mpe(pool, world.mpe.eth_address()).await.unwrap();
    deployment::record_settings(pool, 12_000, 50).await.unwrap();
    deployment::record_chain_id(pool, CHAIN_ID).await.unwrap();
    let (token, decimals) = world.chain.token_decimals().await.unwrap();
    assert_eq!((token.0, decimals), (world.mpe.token, 8));
    deployment::record_token(pool, token, decimals).await.unwrap();
    let (head, head_time) = world.chain.head_block_with_time().await.unwrap();
    assert!(deployment::record_head(pool, head, head_time).await.unwrap());
    assert!(!deployment::record_head(pool, head - 1, head_time).await.unwrap(), "never moved back");

    // The exact events.
    let expected: [(ChannelId, &[&str]); 4] = [
        (
            a,
            &[
                "merged",
                "payment",
                "payment",
                "payment",
                "claim_started",
                "claim_landed",
                "merged",
                "payment",
            ],
        ),
        (b, &["merged", "payment", "payment", "claim_started", "claim_landed"]),
        (
            c,
            &[
                "merged",
                "payment",
                "claim_started",
                "payment",
                "payment",
                "sender_reclaimed",
                "merged",
                "payment",
            ],
        ),
        (d, &["merged", "payment", "claim_started", "payment"]),
    ];
    for (channel, types) in expected {
        assert_eq!(event_types(&world.events_of(channel).await), types, "channel {channel}");
    }
    assert_eq!(verify(pool).await.unwrap(), vec![]);

    let reader = world.db.reader("finance").await;
    let client = hex(world.client().eth_address().as_bytes());
    let group = base64::engine::general_purpose::STANDARD.encode(GROUP);
    let block = |tx| world.mpe.block_of(tx);
    let (block_a, block_b, block_c) = (block(tx_a).await, block(tx_b).await, block(tx_c).await);

    assert_eq!(
        rows(&reader, "SELECT concat_ws(' ', mpe_address, chain_id, token_address, token_decimals, average_block_time_ms, claims_due_within_blocks, head_block, extract(epoch FROM head_block_time)::bigint) FROM reporting.deployment").await,
        [format!(
            "{} {CHAIN_ID} {} 8 12000 50 {head} {head_time}",
            hex(world.mpe.eth_address().as_bytes()),
            hex(token.as_bytes())
        )]
    );

    let payments = rows(
        &reader,
        "SELECT concat_ws(' ', channel_id, nonce, increment_cogs, increment_tokens, authorized_cogs, authorized_tokens, sender, signer, group_id, replica)
         FROM reporting.payments ORDER BY channel_id, event_position",
    )
    .await;
    let payment = |channel: ChannelId, nonce: u64, increment: u64, authorized: u64, replica: &str| {
        format!(
            "{channel} {nonce} {increment} {} {authorized} {} {client} {client} {group} {replica}",
            tokens(increment),
            tokens(authorized)
        )
    };
    assert_eq!(
        payments,
        [
            payment(a, 0, 10, 10, "replica-a"),
            payment(a, 0, 10, 20, "replica-a"),
            payment(a, 0, 10, 30, "replica-a"),
            payment(a, 1, 10, 10, "replica-a"),
            payment(b, 0, 10, 10, "replica-b"),
            payment(b, 0, 10, 20, "replica-b"),
            payment(c, 0, 10, 10, "replica-a"),
            payment(c, 1, 10, 10, "replica-a"),
            payment(c, 1, 10, 20, "replica-a"),
            payment(c, 1, 10, 30, "replica-a"),
            payment(d, 0, 10, 10, "replica-b"),
            payment(d, 1, 10, 10, "replica-b"),
        ]
    );

    assert_eq!(
        rows(
            &reader,
            "SELECT concat_ws(' ', channel_id, nonce, outcome, planned_cogs, planned_tokens, coalesce(actual_cogs::text, '-'),
                              coalesce(value_taken_back_cogs::text, '-'), coalesce(provider_loss_cogs::text, '-'),
                              coalesce(transaction_hash, '-'), coalesce(block_number::text, '-'), coalesce(recorded_as, '-'),
                              (started_at IS NOT NULL)::text, (ended_at IS NOT NULL AND ended_at >= started_at)::text,
                              (time_to_land IS NOT NULL AND time_to_land = ended_at - started_at)::text)
             FROM reporting.claims ORDER BY channel_id, nonce",
        )
        .await,
        [
            format!("{a} 0 landed 30 {} 25 - - {} {block_a} claim_landed true true true", tokens(30), hex(tx_a.as_slice())),
            format!("{b} 0 landed 20 {} 20 - - {} {block_b} claim_landed true true true", tokens(20), hex(tx_b.as_slice())),
            format!(
                "{c} 0 sender_reclaimed 10 {} 0 1000 10 {} {block_c} sender_reclaimed true true false",
                tokens(10),
                hex(tx_c.as_slice())
            ),
            format!("{d} 0 in_progress 10 {} - - - - - - true false false", tokens(10)),
        ]
    );

    // Everything was recorded within one UTC day unless the test ran across midnight.
    let days =
        rows(pool, "SELECT DISTINCT (recorded_at AT TIME ZONE 'UTC')::date::text FROM ledger.events").await;
    assert_eq!(days.len(), 1, "the test ran across midnight UTC: run it again");
    let day = &days[0];
    assert_eq!(
        rows(
            &reader,
            "SELECT concat_ws(' ', day, channel_id, group_id, earned_cogs, earned_tokens, collected_cogs, collected_tokens)
             FROM reporting.revenue_daily_by_channel ORDER BY day, channel_id",
        )
        .await,
        [(a, 40, 25), (b, 20, 20), (c, 40, 0), (d, 20, 0)]
            .map(|(channel, earned, collected)| format!(
                "{day} {channel} {group} {earned} {} {collected} {}",
                tokens(earned),
                tokens(collected)
            ))
    );
    assert_eq!(
        rows(
            &reader,
            "SELECT concat_ws(' ', day, group_id, earned_cogs, earned_tokens, collected_cogs, collected_tokens)
             FROM reporting.revenue_daily_by_group",
        )
        .await,
        [format!("{day} {group} 120 {} 45 {}", tokens(120), tokens(45))]
    );

    let (a_expiration, d_expiration) = (world.expiration, channel_expiration(&world, d).await);
    let at_risk = |channel: ChannelId, unclaimed: u64, in_progress: u64, expiration: u64| {
        let left = i128::from(expiration) - i128::from(head);
        let estimate = i128::from(head_time) + left * 12;
        format!(
            "{channel} 1 open {unclaimed} {} {in_progress} {} {} {} {expiration} {head} {left} {} {estimate}",
            tokens(unclaimed),
            tokens(in_progress),
            unclaimed + in_progress,
            tokens(unclaimed + in_progress),
            left <= 0
        )
    };
    assert_eq!(
        rows(
            &reader,
            "SELECT concat_ws(' ', channel_id, nonce, state, unclaimed_cogs, unclaimed_tokens, in_progress_cogs, in_progress_tokens,
                              at_risk_cogs, at_risk_tokens, expiration_block, head_block, blocks_left, expired::text,
                              extract(epoch FROM estimated_expiration_at)::bigint)
             FROM reporting.money_at_risk ORDER BY channel_id",
        )
        .await,
        [
            at_risk(a, 10, 0, a_expiration),
            at_risk(b, 0, 0, channel_expiration(&world, b).await),
            at_risk(c, 30, 0, c_expiration),
            at_risk(d, 10, 10, d_expiration),
        ]
    );

    assert_eq!(
        rows(
            &reader,
            "SELECT concat_ws(' ', channel_id, nonce, authorized_cogs, coalesce(planned_cogs::text, '-'), claimed_cogs, lost_cogs,
                              difference_cogs, difference_tokens, reason)
             FROM reporting.reconciliation ORDER BY channel_id, nonce",
        )
        .await,
        [
            format!("{a} 0 30 30 25 0 5 {} claimed_less_than_authorized", tokens(5)),
            format!("{a} 1 10 - 0 0 10 {} not_claimed_yet", tokens(10)),
            format!("{b} 0 20 20 20 0 0 {} claimed_in_full", tokens(0)),
            format!("{c} 0 10 10 0 10 10 {} lost_to_sender_reclaim", tokens(10)),
            format!("{c} 1 30 - 0 0 30 {} not_claimed_yet", tokens(30)),
            format!("{d} 0 10 10 0 0 10 {} claim_in_progress", tokens(10)),
            format!("{d} 1 10 - 0 0 10 {} not_claimed_yet", tokens(10)),
        ]
    );

    // Money at risk, operationally: D is within 50 blocks of its expiration, C within 200.
    let d_left = i64::try_from(d_expiration).unwrap() - i64::try_from(head).unwrap();
    let c_left = i64::try_from(c_expiration).unwrap() - i64::try_from(head).unwrap();
    assert!(d_left <= 50 && c_left > 50 && c_left <= 200, "{d_left} {c_left}");
    let metrics = EscrowMetrics::unregistered();
    let watch = AtRiskWatch::new(pool.clone(), 50, metrics.clone());
    let first = watch.check().await.unwrap();
    assert_eq!((first.newly_due, first.no_longer_due), (vec![d], vec![]));
    assert_eq!((metrics.money_due_cogs.get(), metrics.channels_due.get()), (20.0, 1));
    // One warning per crossing: the next check finds D still due and warns no more.
    let second = watch.check().await.unwrap();
    assert_eq!((second.newly_due, second.no_longer_due), (vec![], vec![]));

    let listed = claims_due_command(&world, &["--within", "200"]);
    assert_eq!(
        listed,
        format!(
            "# channel\tnonce\tat_risk_cogs\tunclaimed_cogs\tin_progress_cogs\tat_risk_tokens\texpiration_block\tblocks_left\testimated_expiration_at\n\
             {d}\t1\t20\t10\t10\t{}\t{d_expiration}\t{d_left}\t{}\n\
             {c}\t1\t30\t30\t0\t{}\t{c_expiration}\t{c_left}\t{}\n",
            tokens(20),
            rfc3339(pool, head_time as i64 + d_left * 12).await,
            tokens(30),
            rfc3339(pool, head_time as i64 + c_left * 12).await,
        )
    );
    // The recorded line (50) by default; nothing due within 1 block prints nothing.
    assert_eq!(claims_due_command(&world, &[]).lines().count(), 2);
    assert_eq!(claims_due_command(&world, &["--within", "1"]), "");
}

/// What serve records for the views, and its money-at-risk watch: a channel past its expiration
/// with a payment unclaimed is due at the harness's line (payment_expiration_threshold 0, the
/// default line): one warning, the metrics, and the deployment record with the token and the head.
#[tokio::test]
async fn serve_records_the_deployment_and_warns_once_per_channel_with_money_at_risk() {
    let ganache = Ganache::start().await;
    let world = World::with_channel(&ganache, 1000, 5).await;
    world.pay(&world.payments(), 0, PRICE).await;
    ganache.mine(6).await;
    let settings = LedgerSettings {
        ethereum_rpc_url: ganache.url().to_owned(),
        mpe: world.mpe.eth_address().0,
        group_id: GROUP,
        payment_address: world.provider().eth_address().0,
        price: PRICE,
        upstream: "http://127.0.0.1:9".to_owned(),
        replica_id: "replica-r".to_owned(),
        tls: None,
        ethereum_rpc_ca_file: None,
        upstream_ca_file: None,
    };
    let ledger = Ledger::start(&world.db.owner_url, &settings).await;
    let warning = "money at risk: claim this channel before it expires";
    assert!(ledger.wait_for_log(warning, 1, Duration::from_secs(20)).await, "{}", ledger.log());
    let head_at_least = ganache.block_number().await;
    let recorded: (Option<i32>, Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT token_decimals, average_block_time_ms, claims_due_within_blocks, head_block FROM ledger.deployment",
    )
    .fetch_one(&world.db.pool)
    .await
    .unwrap();
    let (decimals, block_time, line, head) = recorded;
    assert_eq!((decimals, block_time, line), (Some(8), Some(12_000), Some(0)));
    assert!(head.unwrap() >= i64::try_from(head_at_least).unwrap());
    let (_, metrics) = http_get(ledger.port, "/metrics").await.unwrap();
    assert!(metrics.contains("mpe_ledger_money_due_cogs 10\n"), "{metrics}");
    assert!(metrics.contains("mpe_ledger_channels_due 1\n"), "{metrics}");
    // The next check (15 s later) finds it still due and does not warn again.
    assert!(!ledger.wait_for_log(warning, 2, HEAD_RECORD_INTERVAL + Duration::from_secs(3)).await);
    assert_eq!(ledger.log().matches(warning).count(), 1, "{}", ledger.log());
}

/// Cogs in tokens of 8 decimals, as the views print them.
fn tokens(cogs: u64) -> String {
    format!("{}.{:08}", cogs / 100_000_000, cogs % 100_000_000)
}

/// An epoch time as `claims due` prints it.
async fn rfc3339(pool: &PgPool, epoch_seconds: i64) -> String {
    sqlx::query_scalar(
        r#"SELECT to_char(to_timestamp($1::bigint) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"#,
    )
    .bind(epoch_seconds)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn channel_expiration(world: &World<'_>, channel: ChannelId) -> u64 {
    let (stored, _) = world.ledger().channel(channel).await.unwrap().unwrap();
    stored.channel.expiration.0.to::<u64>()
}

/// `mpe-ledger claims due ARGS` on the world's database: its stdout (it must succeed).
fn claims_due_command(world: &World<'_>, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mpe-ledger"))
        .args(["claims", "due"])
        .args(args)
        .env("DATABASE_URL", &world.db.owner_url)
        .env_remove("MIGRATION_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run mpe-ledger claims due");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

//! Rebuild and verify: the projections are refolded from the log, and any disagreement or broken
//! hash link is named (stream, field, stored vs folded) by the library and by `mpe-ledger verify`.

mod common;

use std::process::Command;

use alloy_primitives::U256;
use common::TestDb;
use mpe_ledger::domain::{Amount, BlockNumber, EthAddress, Nonce};
use mpe_ledger::domain::{ChannelId, GroupId, OnChainChannel, PaymentChannelData, Signature};
use mpe_ledger::store::postgres::{PgAtomicStorage, PgChannelStore};
use mpe_ledger::store::verify::{rebuild, verify};
use mpe_ledger::store::{AtomicStorage, ChannelStore};
use sqlx::{Connection, Executor};

fn channel(id: u64) -> PaymentChannelData {
    let chain = OnChainChannel {
        nonce: Nonce::ZERO,
        sender: EthAddress::from_slice(&[1; 20]).unwrap(),
        signer: EthAddress::from_slice(&[2; 20]).unwrap(),
        recipient: EthAddress::from_slice(&[3; 20]).unwrap(),
        group_id: GroupId([4; 32]),
        value: Amount::from(1000),
        expiration: BlockNumber::from(500),
    };
    PaymentChannelData::from_chain(ChannelId::from(id), &chain)
}

/// A database with kv keys, payments and a started claim.
async fn populated() -> TestDb {
    let db = TestDb::new().await;
    let kv = PgAtomicStorage::new(db.pool.clone(), db.metrics.clone());
    kv.put(b"a", b"1").await.unwrap();
    kv.put(b"b\0", b"2").await.unwrap();
    kv.put(b"gone", b"3").await.unwrap();
    kv.delete(b"gone").await.unwrap();
    let channels = PgChannelStore::new(db.pool.clone(), db.metrics.clone());
    let open = channel(1);
    let paid = PaymentChannelData {
        authorized_amount: Amount::from(30),
        signature: Some(Signature([7; 65])),
        ..open.clone()
    };
    channels.put(&paid).await.unwrap();
    let claimed = PaymentChannelData {
        nonce: Nonce::from(1),
        full_amount: Amount::from(970),
        authorized_amount: Amount::ZERO,
        signature: None,
        ..paid.clone()
    };
    assert!(channels.compare_and_swap(&paid, &claimed).await.unwrap());
    channels
        .put(&PaymentChannelData {
            authorized_amount: Amount(U256::from(5)),
            signature: Some(Signature([8; 65])),
            ..claimed
        })
        .await
        .unwrap();
    channels.put(&channel(2)).await.unwrap();
    db
}

async fn owner_execute(db: &TestDb, statements: &[&'static str]) {
    let mut owner = db.owner().await;
    for statement in statements {
        owner.execute(*statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    owner.close().await.unwrap();
}

#[tokio::test]
async fn a_consistent_ledger_verifies_clean() {
    let db = populated().await;
    assert_eq!(verify(&db.pool).await.unwrap(), vec![]);
}

#[tokio::test]
async fn rebuild_recreates_identical_projections() {
    let db = populated().await;
    let before = db.projections_snapshot().await;
    let report = rebuild(&db.pool, &db.metrics).await.unwrap();
    assert_eq!((report.channels, report.keys), (2, 2));
    assert_eq!(db.projections_snapshot().await, before);
    assert_eq!(verify(&db.pool).await.unwrap(), vec![]);
}

#[tokio::test]
async fn an_altered_projection_row_is_named_with_stored_and_folded_values() {
    let db = populated().await;
    owner_execute(&db, &["UPDATE ledger.channels SET full_amount = 999999 WHERE channel_id = 1"]).await;
    let differences = verify(&db.pool).await.unwrap();
    assert_eq!(differences.len(), 1, "{differences:?}");
    let d = &differences[0];
    assert_eq!((d.stream.as_str(), d.field.as_str()), ("channel/1", "channels.full_amount"));
    assert_eq!((d.stored.as_str(), d.folded.as_str()), ("999999", "970"));
}

#[tokio::test]
async fn missing_and_extra_projection_rows_are_named() {
    let db = populated().await;
    owner_execute(
        &db,
        &[
            "DELETE FROM ledger.kv WHERE key = 'a'::bytea",
            "INSERT INTO ledger.kv (key, value) VALUES ('\\x7a'::bytea, '\\x00'::bytea)",
            "DELETE FROM ledger.claims",
        ],
    )
    .await;
    let text: Vec<String> = verify(&db.pool).await.unwrap().iter().map(ToString::to_string).collect();
    assert!(text.contains(&"stream kv/61: kv row: stored missing, folded 0x31".to_owned()), "{text:#?}");
    assert!(text.contains(&"stream kv/7a: kv row: stored 0x00, folded absent".to_owned()), "{text:#?}");
    assert!(
        text.iter().any(|t| t.starts_with("stream channel/1: claims[nonce 0]: stored missing")),
        "{text:#?}"
    );
}

#[tokio::test]
async fn rebuild_repairs_an_altered_projection() {
    let db = populated().await;
    owner_execute(
        &db,
        &["UPDATE ledger.channels SET authorized_amount = 0, signature = NULL WHERE channel_id = 1"],
    )
    .await;
    assert!(!verify(&db.pool).await.unwrap().is_empty());
    rebuild(&db.pool, &db.metrics).await.unwrap();
    assert_eq!(verify(&db.pool).await.unwrap(), vec![]);
}

#[tokio::test]
async fn an_altered_event_payload_is_named_as_a_broken_link() {
    let db = populated().await;
    owner_execute(
        &db,
        &[
            "ALTER TABLE ledger.events DISABLE TRIGGER events_append_only",
            "UPDATE ledger.events SET payload = jsonb_set(payload, '{amount}', '\"31\"')
             WHERE stream = 'channel/1' AND event_type = 'payment_accepted' AND stream_version = 2",
            "ALTER TABLE ledger.events ENABLE TRIGGER events_append_only",
        ],
    )
    .await;
    let text: Vec<String> = verify(&db.pool).await.unwrap().iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|t| t.starts_with("stream channel/1: version 2: hash (broken link)")),
        "{text:#?}"
    );
    // The money column beside the payload still says 30: that disagreement is named too.
    assert!(
        text.contains(&"stream channel/1: version 2: column amount: stored 30, folded 31".to_owned()),
        "{text:#?}"
    );
    // A rebuild refuses to fold a tampered log rather than bless it.
    assert!(rebuild(&db.pool, &db.metrics).await.is_err());
}

#[tokio::test]
async fn a_deleted_event_is_named_as_a_gap() {
    let db = populated().await;
    owner_execute(
        &db,
        &[
            "ALTER TABLE ledger.events DISABLE TRIGGER events_append_only",
            "DELETE FROM ledger.events WHERE stream = 'channel/1' AND stream_version = 2",
            "ALTER TABLE ledger.events ENABLE TRIGGER events_append_only",
        ],
    )
    .await;
    let text: Vec<String> = verify(&db.pool).await.unwrap().iter().map(ToString::to_string).collect();
    assert!(text.contains(&"stream channel/1: stream_version: stored 3, folded 2".to_owned()), "{text:#?}");
    assert!(
        text.iter().any(|t| t.starts_with("stream channel/1: version 3: prev_hash (broken link)")),
        "{text:#?}"
    );
}

fn ledger(db: &TestDb, command: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mpe-ledger"))
        .arg(command)
        .env("DATABASE_URL", &db.owner_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run mpe-ledger")
}

#[tokio::test]
async fn the_verify_command_exits_non_zero_naming_each_difference() {
    let db = populated().await;
    let clean = ledger(&db, "verify");
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
    owner_execute(&db, &["UPDATE ledger.channels SET nonce = 7 WHERE channel_id = 2"]).await;
    let dirty = ledger(&db, "verify");
    let stdout = String::from_utf8_lossy(&dirty.stdout);
    assert_eq!(dirty.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("stream channel/2: channels.nonce: stored 7, folded 0"), "{stdout}");
    let rebuilt = ledger(&db, "rebuild");
    assert!(rebuilt.status.success(), "{}", String::from_utf8_lossy(&rebuilt.stderr));
    assert!(ledger(&db, "verify").status.success());
}

/// A log written before claim outcomes became their own events (`claim_finished` with an outcome
/// tag) still verifies, and folds to the projections written then; rebuilding changes nothing.
#[tokio::test]
async fn a_log_with_claim_finished_events_from_before_claim_facts_verifies_and_folds_the_same() {
    let db = TestDb::new().await;
    common::load_fixture(&db, "log_before_claim_facts").await;
    let before = db.projections_snapshot().await;
    assert_eq!(before.iter().filter(|row| row.starts_with("claims: ")).count(), 3, "{before:#?}");
    assert_eq!(verify(&db.pool).await.unwrap(), vec![]);
    let report = rebuild(&db.pool, &db.metrics).await.unwrap();
    assert_eq!(report.channels, 3);
    assert_eq!(db.projections_snapshot().await, before);
}

/// The owning role can rewrite an event and recompute every hash link and projection after it, so
/// that the log's own checks pass; it cannot sign for the client. Two real payments go through the
/// gateway on ganache; the first one's signature is then replaced by one of another key over the
/// same payment, the stream's hashes recomputed: only the signature re-check can name it.
#[tokio::test]
async fn verify_names_a_forged_signature_planted_with_the_hash_chain_recomputed() {
    use common::ganache::Ganache;
    use common::gateway::{PRICE, World};
    use mpe_ledger::domain::{Event, StreamId};
    use mpe_ledger::store::postgres::deployment;
    use mpe_ledger::store::postgres::log::chain_links;

    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay_successfully(0, PRICE).await;
    world.pay_successfully(0, 2 * PRICE).await;
    // As serve does at start-up.
    deployment::record_mpe(&world.db.pool, world.mpe.eth_address()).await.unwrap();
    let clean = mpe_ledger::store::verify::verify_report(&world.db.pool).await.unwrap();
    assert_eq!((clean.differences, clean.signatures_checked), (vec![], Some(2)));

    let stream = StreamId::Channel(world.channel);
    let mut owner = world.db.owner().await;
    let rows: Vec<(i64, String, serde_json::Value)> = sqlx::query_as(
        "SELECT stream_version, event_type, payload FROM ledger.events WHERE stream = $1 ORDER BY stream_version",
    )
    .bind(stream.to_string())
    .fetch_all(&mut owner)
    .await
    .unwrap();
    let mut events: Vec<Event> =
        rows.iter().map(|(_, event_type, payload)| Event::from_json(event_type, payload).unwrap()).collect();
    let forged_version = rows.iter().position(|(_, t, _)| t == "payment_accepted").unwrap();
    let stranger = ganache.account(5);
    let forged = world.mpe.sign_payment(stranger, world.channel, 0, PRICE);
    match &mut events[forged_version] {
        Event::Channel(mpe_ledger::domain::ChannelEvent::PaymentAccepted { signature, .. }) => {
            *signature = forged.clone()
        }
        other => panic!("not a payment: {other:?}"),
    }
    let links = chain_links(&stream, None, &events);
    owner.execute("ALTER TABLE ledger.events DISABLE TRIGGER events_append_only").await.unwrap();
    for ((version, _, _), (event, link)) in rows.iter().zip(events.iter().zip(&links)) {
        sqlx::query(
            "UPDATE ledger.events SET payload = $3, signature = $4, prev_hash = $5, hash = $6
             WHERE stream = $1 AND stream_version = $2",
        )
        .bind(stream.to_string())
        .bind(version)
        .bind(event.to_json())
        .bind(event.amount_columns().2.map(|s| s.as_bytes().to_vec()))
        .bind(&link.prev_hash[..])
        .bind(&link.hash[..])
        .execute(&mut owner)
        .await
        .unwrap();
    }
    owner.execute("ALTER TABLE ledger.events ENABLE TRIGGER events_append_only").await.unwrap();
    sqlx::query("UPDATE ledger.streams SET last_hash = $2 WHERE stream = $1")
        .bind(stream.to_string())
        .bind(&links.last().unwrap().hash[..])
        .execute(&mut owner)
        .await
        .unwrap();
    owner.close().await.unwrap();

    let report = mpe_ledger::store::verify::verify_report(&world.db.pool).await.unwrap();
    let named: Vec<String> = report.differences.iter().map(ToString::to_string).collect();
    let channel_signer = mpe_ledger::domain::EthAddress(world.sender().address);
    assert_eq!(
        named,
        vec![format!(
            "stream {stream}: version {}: signature (forged): stored signed by {}, folded signed by the \
             channel's signer {channel_signer} or sender {channel_signer}",
            forged_version + 1,
            mpe_ledger::domain::EthAddress(stranger.address),
        )],
        "only the signature check names the planted event"
    );
    // And the command says so and fails.
    let output = ledger(&world.db, "verify");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("signature (forged)"), "{stdout}");
    assert!(stdout.contains("verify: 2 client signature(s) re-checked"), "{stdout}");
}

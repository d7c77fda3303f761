//! The offline audit bundle through the real binary: a history written on ganache with the real
//! MultiPartyEscrow (payments, a claim started and landed, merges from the chain with their
//! blocks), bundled by `mpe-ledger bundle` into the same bytes every time, checked by
//! `mpe-ledger verify-bundle` with no database setting and no cluster, and each tampering named
//! where it is. The anchor is the head `mpe-ledger verify --channel N` prints.

mod common;

use std::path::{Path, PathBuf};

use common::escrow_world::World;
use common::ganache::Ganache;
use common::ledger::run_command;
use common::{TestDb, unmigrated_database};
use mpe_ledger::domain::ChannelEvent;
use mpe_ledger::domain::bundle::format::{decode, end_line};
use mpe_ledger::domain::bundle::{EventLine, Header};
use mpe_ledger::store::postgres::schema::binary_version;

/// A directory of its own for one test's files, removed at the end.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

async fn bundle(db: &TestDb, channel: &str, output: &Path) -> common::e2e::ScriptRun {
    let output = output.display().to_string();
    run_command(&["bundle", "--channel", channel, "--output", &output], &[("DATABASE_URL", &db.owner_url)])
        .await
}

/// `verify-bundle` with no database setting at all, and a data directory that does not exist (and
/// must not be created: no cluster is started).
async fn verify_bundle(file: &Path, head: Option<&str>) -> common::e2e::ScriptRun {
    let nowhere =
        std::env::temp_dir().join(format!("mpe-ledger-no-cluster-{}", uuid::Uuid::new_v4().simple()));
    let file = file.display().to_string();
    let mut args = vec!["verify-bundle", file.as_str()];
    if let Some(head) = head {
        args.extend(["--head", head]);
    }
    let run = run_command(&args, &[("MPE_LEDGER_DATA_DIR", &nowhere.display().to_string())]).await;
    assert!(!nowhere.exists(), "verify-bundle made a data directory");
    run
}

fn lines(bytes: &[u8]) -> Vec<String> {
    std::str::from_utf8(bytes).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", lines.join("\n"))).unwrap();
    path
}

/// The event line of `version` (line `version + 1`).
fn event(lines: &[String], version: usize) -> EventLine {
    decode::<EventLine>(lines[version].as_bytes()).expect("a canonical event line")
}

/// The version of the first event matching `pick`.
fn version_of(lines: &[String], pick: impl Fn(&ChannelEvent) -> bool) -> usize {
    (1..lines.len() - 1).find(|&v| pick(&event(lines, v).payload)).expect("such an event")
}

#[tokio::test]
async fn a_real_history_bundles_to_the_same_bytes_and_verifies_anchored_without_any_database() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let history = world.audit_history().await;
    let dir = scratch();
    let channel = world.channel.to_string();
    let (first, second) = (dir.path().join("first.bundle"), dir.path().join("second.bundle"));
    bundle(&world.db, &channel, &first).await.assert_success();
    bundle(&world.db, &channel, &second).await.assert_success();
    let bytes = std::fs::read(&first).unwrap();
    assert_eq!(bytes, std::fs::read(&second).unwrap(), "the same channel and log give the same bytes");
    let stdout =
        run_command(&["bundle", "--channel", &channel], &[("DATABASE_URL", &world.db.owner_url)]).await;
    assert_eq!(stdout.assert_success().stdout.as_bytes(), &bytes[..], "stdout holds the same bundle");

    let lines = lines(&bytes);
    let header = decode::<Header>(lines[0].as_bytes()).unwrap();
    assert_eq!(header, Header::new(world.mpe.eth_address(), Some(history.chain_id), world.channel));
    assert_eq!(lines.len(), history.events.len() + 2, "header, every event, end line");
    for (version, expected) in history.events.iter().enumerate() {
        assert_eq!(&event(&lines, version + 1).payload, expected);
    }
    // A merge's block is the chain's: any node confirms its hash.
    let merge =
        version_of(&lines, |e| matches!(e, ChannelEvent::ChannelMergedFromChain { block: Some(_), .. }));
    let ChannelEvent::ChannelMergedFromChain { block: Some(block), .. } = event(&lines, merge).payload else {
        unreachable!()
    };
    assert_eq!(ganache.block(block.number).await, (block.number, block.hash));

    // `verify` prints the head in the form `--head` takes.
    let verify =
        run_command(&["verify", "--channel", &channel], &[("DATABASE_URL", &world.db.owner_url)]).await;
    let head_line =
        verify.assert_success().stdout.lines().find(|l| l.contains(" head: version ")).unwrap().to_owned();
    let head = head_line.rsplit(' ').next().unwrap().to_owned();
    let last = event(&lines, history.events.len());
    assert_eq!(
        head_line,
        format!("verify: channel/{channel} head: version {}, hash {}", last.version, last.hash)
    );

    let run = verify_bundle(&first, Some(&head)).await;
    run.assert_success();
    run.assert_stdout_contains(&format!(
        "{} events (payments: 3, claims started: 1, claims ended: 1, merges",
        history.events.len()
    ));
    run.assert_stdout_contains(&format!("head version {}, hash {head}", last.version));
    run.assert_stdout_contains("anchored: the last event is the given head");
    verify_bundle(&first, None).await.assert_success().assert_stdout_contains("not anchored");
}

/// Runs `verify-bundle` on `lines` and checks it fails (exit 1) naming each of `places`.
async fn fails_naming(dir: &Path, name: &str, lines: &[String], head: Option<&str>, places: &[&str]) {
    let run = verify_bundle(&write_lines(dir, name, lines), head).await;
    assert_eq!(run.code, Some(1), "{name}: {}{}", run.stdout, run.stderr);
    for place in places {
        assert!(run.stdout.lines().any(|l| l.starts_with(place)), "{name}: {place:?} not in\n{}", run.stdout);
    }
}

#[tokio::test]
async fn each_tampering_fails_naming_its_line_and_version() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.audit_history().await;
    let dir = scratch();
    let path = dir.path().join("honest.bundle");
    bundle(&world.db, &world.channel.to_string(), &path).await.assert_success();
    let honest = lines(&std::fs::read(&path).unwrap());
    let last_version = honest.len() - 2;
    let head = event(&honest, last_version).hash.to_string();
    let place = |version: usize, what: &str| {
        format!("verify-bundle: line {}: version {version}: {what}", version + 1)
    };

    // A payment's amount: its hash, and its signature, no longer hold.
    let paid = version_of(
        &honest,
        |e| matches!(e, ChannelEvent::PaymentAccepted { amount, .. } if amount.to_string() == "20"),
    );
    let mut tampered = honest.clone();
    tampered[paid] = tampered[paid].replace(r#""amount":"20""#, r#""amount":"19""#);
    fails_naming(
        dir.path(),
        "amount",
        &tampered,
        None,
        &[&place(paid, "hash 0x"), &place(paid, "signature (forged): ")],
    )
    .await;

    // One byte of a client's signature.
    let first_paid = version_of(&honest, |e| matches!(e, ChannelEvent::PaymentAccepted { .. }));
    let mut tampered = honest.clone();
    let at = tampered[first_paid].find(r#""signature":"0x"#).unwrap() + r#""signature":"0x"#.len() + 10;
    let digit = if &tampered[first_paid][at..at + 1] == "0" { "1" } else { "0" };
    tampered[first_paid].replace_range(at..at + 1, digit);
    fails_naming(
        dir.path(),
        "signature",
        &tampered,
        None,
        &[&place(first_paid, "hash 0x"), &place(first_paid, "signature (forged): ")],
    )
    .await;

    // A merge's block hash.
    let merge =
        version_of(&honest, |e| matches!(e, ChannelEvent::ChannelMergedFromChain { block: Some(_), .. }));
    let ChannelEvent::ChannelMergedFromChain { block: Some(block), .. } = event(&honest, merge).payload
    else {
        unreachable!()
    };
    let mut tampered = honest.clone();
    let mut other = block.hash;
    other.0[31] ^= 1;
    tampered[merge] = tampered[merge].replace(&block.hash.to_string(), &other.to_string());
    fails_naming(dir.path(), "block", &tampered, None, &[&place(merge, "hash 0x")]).await;

    // A dropped event: named where the versions and links break.
    let mut tampered = honest.clone();
    tampered.remove(2);
    fails_naming(
        dir.path(),
        "dropped",
        &tampered,
        None,
        &[
            "verify-bundle: line 3: version 3: version 3 where version 2 was expected",
            "verify-bundle: line 3: version 3: prev_hash 0x",
        ],
    )
    .await;

    // A reordered pair.
    let mut tampered = honest.clone();
    tampered.swap(2, 3);
    fails_naming(
        dir.path(),
        "reordered",
        &tampered,
        None,
        &["verify-bundle: line 3: version 3: version 3 where version 2 was expected"],
    )
    .await;

    // A non-canonical re-encoding of an honest line.
    let mut tampered = honest.clone();
    tampered[1] = tampered[1].replacen(r#""version":1,"#, r#""version":1, "#, 1);
    fails_naming(
        dir.path(),
        "spaced",
        &tampered,
        None,
        &["verify-bundle: line 2: version 1: not in canonical form"],
    )
    .await;

    // The end cut off and the end line rewritten: consistent alone, caught only by the anchor.
    let mut cut = honest[..honest.len() - 2].to_vec();
    let body = format!("{}\n", cut.join("\n"));
    cut.push(end_line(last_version as u64 - 1, body.as_bytes()));
    let cut_path = write_lines(dir.path(), "cut", &cut);
    verify_bundle(&cut_path, None).await.assert_success();
    fails_naming(
        dir.path(),
        "cut",
        &cut,
        Some(&head),
        &[&place(last_version - 1, "head: the last event's hash")],
    )
    .await;
    // And the honest bundle passes against the same anchor.
    verify_bundle(&path, Some(&head)).await.assert_success();

    // Not a bundle, or another format version: exit 2 with one line saying so.
    let csv = write_lines(dir.path(), "export.csv", &["position,recorded_at,stream".to_owned()]);
    let run = verify_bundle(&csv, None).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("not an mpe-ledger bundle: its first line is not JSON"), "{}", run.stderr);
    let mut newer = honest.clone();
    newer[0] = newer[0].replace(r#""format_version":1"#, r#""format_version":2"#);
    let run = verify_bundle(&write_lines(dir.path(), "newer", &newer), None).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("a bundle of format version 2, but this binary reads format version 1 only"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn bundle_only_reads_and_refuses_what_it_cannot_bundle_leaving_no_file() {
    // An unmigrated database is refused naming both versions, and is not migrated.
    let (_, url) = unmigrated_database().await;
    let dir = scratch();
    let output = dir.path().join("out.bundle");
    let run = run_command(
        &["bundle", "--channel", "1", "--output", &output.display().to_string()],
        &[("DATABASE_URL", &url), ("MIGRATION_DATABASE_URL", &url)],
    )
    .await;
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains(&format!(
            "the database is never migrated, this binary at migration {}",
            binary_version()
        )),
        "{}",
        run.stderr
    );
    assert!(!output.exists());

    // No deployment record: the signatures could not be checked, so no bundle.
    let db = TestDb::new().await;
    let run = bundle(&db, "1", &output).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("this database has no deployment record"), "{}", run.stderr);
    // A channel with no events.
    mpe_ledger::store::postgres::deployment::record_mpe(
        &db.pool,
        "0x5b1869D9A4C187F2EAa108f3062412ecf0526b24".parse().unwrap(),
    )
    .await
    .unwrap();
    let run = bundle(&db, "7", &output).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("bundle: channel 7 has no events in this log"), "{}", run.stderr);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file, partial or whole, is left");
}

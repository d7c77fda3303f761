//! `mpe-ledger export` over a scripted history: the exact CSV and JSON Lines it writes, its
//! filters by channel and time, pages of any size giving the same output, one consistent cut
//! across its short transactions, no progress bar when piped, and precise refusals of bad
//! arguments.

mod common;

use alloy_primitives::U256;
use common::TestDb;
use common::ledger::run_command;
use mpe_ledger::domain::{
    Amount, BlockNumber, ChannelEvent, ChannelId, EthAddress, Event, GroupId, KvEvent, Nonce, OnChainChannel,
    Signature, StreamId,
};
use mpe_ledger::store::export::{ExportFilter, ExportKind, ExportScan};
use mpe_ledger::store::postgres::log::{append, stream_head};
use sqlx::{Connection, Executor};

/// A cumulative amount far beyond what a u64 or an f64 holds exactly.
const BIG: &str = "123456789012345678901234567897";

fn merge(value: Amount) -> Event {
    Event::Channel(ChannelEvent::ChannelMergedFromChain {
        chain: OnChainChannel {
            nonce: Nonce::ZERO,
            sender: EthAddress::from_slice(&[1; 20]).unwrap(),
            signer: EthAddress::from_slice(&[2; 20]).unwrap(),
            recipient: EthAddress::from_slice(&[3; 20]).unwrap(),
            group_id: GroupId([4; 32]),
            value,
            expiration: BlockNumber::from(500),
        },
        block: None,
    })
}

fn payment(nonce: u64, amount: Amount, byte: u8) -> Event {
    Event::Channel(ChannelEvent::PaymentAccepted {
        nonce: Nonce::from(nonce),
        amount,
        signature: Signature([byte; 65]),
    })
}

fn claim(nonce: u64, amount: u64) -> Event {
    Event::Channel(ChannelEvent::ClaimStarted {
        nonce: Nonce::from(nonce),
        amount: Amount::from(amount),
        signature: Signature([9; 65]),
    })
}

fn big() -> Amount {
    Amount(U256::from_str_radix(BIG, 10).unwrap())
}

/// Appends each event in its own transaction, in this order (positions 1, 2, …).
async fn append_all(db: &TestDb, events: &[(StreamId, Event)]) {
    for (stream, event) in events {
        let mut tx = db.pool.begin().await.unwrap();
        let head = stream_head(&mut tx, stream).await.unwrap();
        append(&mut tx, stream, head, std::slice::from_ref(event)).await.unwrap();
        tx.commit().await.unwrap();
    }
}

/// Positions 1..=9; event `p` recorded at 2026-01-01 00:00 UTC plus `p` hours:
/// 1 ch1 merge, 2 ch2 merge, 3 ch1 pays 10, 4 ch2 pays BIG, 5 ch1 pays 30 (adds 20), 6 a kv put,
/// 7 ch1 claims 30 (nonce 0 → 1), 8 ch1 pays 5 at nonce 1, 9 ch2 pays BIG + 3.
async fn scripted_history() -> TestDb {
    let db = TestDb::new().await;
    let ch1 = StreamId::Channel(ChannelId::from(1));
    let ch2 = StreamId::Channel(ChannelId::from(2));
    append_all(
        &db,
        &[
            (ch1.clone(), merge(Amount::from(1000))),
            (ch2.clone(), merge(Amount(U256::MAX))),
            (ch1.clone(), payment(0, Amount::from(10), 7)),
            (ch2.clone(), payment(0, big(), 8)),
            (ch1.clone(), payment(0, Amount::from(30), 7)),
            (
                StreamId::Kv(b"a".to_vec()),
                Event::Kv(KvEvent::KeyPut { key: b"a".to_vec(), value: b"1".to_vec() }),
            ),
            (ch1.clone(), claim(0, 30)),
            (ch1, payment(1, Amount::from(5), 6)),
            (ch2, payment(0, Amount(big().0 + U256::from(3)), 8)),
        ],
    )
    .await;
    // recorded_at is the insert time; the script pins it (no hash covers it) so output is exact.
    let mut owner = db.owner().await;
    owner
        .execute(
            "ALTER TABLE ledger.events DISABLE TRIGGER events_append_only; \
             UPDATE ledger.events SET recorded_at = '2026-01-01T00:00:00Z'::timestamptz + position * interval '1 hour'; \
             ALTER TABLE ledger.events ENABLE TRIGGER events_append_only",
        )
        .await
        .unwrap();
    owner.close().await.unwrap();
    db
}

async fn export(db: &TestDb, args: &[&str]) -> String {
    let run = run_command(&[&["export"], args].concat(), &[("DATABASE_URL", &db.owner_url)]).await;
    run.assert_success();
    assert_eq!(run.stderr, "", "nothing but the rows, and no progress bar, when piped");
    run.stdout
}

fn sig(byte: u8) -> String {
    format!("0x{}", hex::encode([byte; 65]))
}

#[tokio::test]
async fn payments_are_exported_as_exact_csv_with_what_each_added_at_its_nonce() {
    let db = scripted_history().await;
    let expected = format!(
        "position,recorded_at,channel_id,stream_version,nonce,amount,increment,signature\n\
         3,2026-01-01T03:00:00.000000Z,1,2,0,10,10,{s7}\n\
         4,2026-01-01T04:00:00.000000Z,2,2,0,{BIG},{BIG},{s8}\n\
         5,2026-01-01T05:00:00.000000Z,1,3,0,30,20,{s7}\n\
         8,2026-01-01T08:00:00.000000Z,1,5,1,5,5,{s6}\n\
         9,2026-01-01T09:00:00.000000Z,2,3,0,123456789012345678901234567900,3,{s8}\n",
        s6 = sig(6),
        s7 = sig(7),
        s8 = sig(8),
    );
    assert_eq!(export(&db, &["payments"]).await, expected);
    assert_eq!(export(&db, &["payments", "--format", "csv"]).await, expected);
}

#[tokio::test]
async fn payments_are_exported_as_exact_json_lines_with_amounts_as_strings() {
    let db = scripted_history().await;
    let lines = export(&db, &["payments", "--format", "jsonl", "--channel", "2"]).await;
    assert_eq!(
        lines,
        format!(
            "{{\"position\":4,\"recorded_at\":\"2026-01-01T04:00:00.000000Z\",\"channel_id\":\"2\",\
             \"stream_version\":2,\"nonce\":\"0\",\"amount\":\"{BIG}\",\"increment\":\"{BIG}\",\
             \"signature\":\"{s8}\"}}\n\
             {{\"position\":9,\"recorded_at\":\"2026-01-01T09:00:00.000000Z\",\"channel_id\":\"2\",\
             \"stream_version\":3,\"nonce\":\"0\",\"amount\":\"123456789012345678901234567900\",\
             \"increment\":\"3\",\"signature\":\"{s8}\"}}\n",
            s8 = sig(8)
        )
    );
}

/// position, stream, stream_version, event_type, payload, prev_hash, hash.
type StoredEvent = (i64, String, i64, String, String, Vec<u8>, Vec<u8>);

/// The JSON Lines of every event, built from the script and the library's hash chain.
async fn expected_event_lines(db: &TestDb) -> Vec<String> {
    let rows: Vec<StoredEvent> = sqlx::query_as(
        "SELECT position, stream, stream_version, event_type, payload::text, prev_hash, hash \
         FROM ledger.events ORDER BY position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(position, stream, version, event_type, payload, prev_hash, hash)| {
            let event = Event::from_json(&event_type, &serde_json::from_str(&payload).unwrap()).unwrap();
            let stream_id = StreamId::parse(&stream).unwrap();
            let prev: [u8; 32] = prev_hash.try_into().unwrap();
            let link = mpe_ledger::domain::event::chain_hash(&prev, &stream_id, version as u64, &event);
            assert_eq!(link.to_vec(), hash, "the scripted history is hash-linked");
            let (nonce, amount, signature) = event.amount_columns();
            let text = |value: Option<String>| value.map_or("null".to_owned(), |v| format!("\"{v}\""));
            let channel = match stream_id {
                StreamId::Channel(id) => Some(id.to_string()),
                _ => None,
            };
            format!(
                "{{\"position\":{position},\"recorded_at\":\"2026-01-01T{position:02}:00:00.000000Z\",\
                 \"stream\":\"{stream}\",\"stream_version\":{version},\"event_type\":\"{event_type}\",\
                 \"channel_id\":{},\"nonce\":{},\"amount\":{},\"signature\":{},\"payload\":{payload},\
                 \"prev_hash\":\"0x{}\",\"hash\":\"0x{}\"}}",
                text(channel),
                text(nonce.map(|n| n.to_string())),
                text(amount.map(|a| a.to_string())),
                text(signature.map(|s| format!("0x{}", hex::encode(s.as_bytes())))),
                hex::encode(prev),
                hex::encode(link),
            )
        })
        .collect()
}

#[tokio::test]
async fn events_are_exported_as_exact_json_lines_and_csv() {
    let db = scripted_history().await;
    let expected = expected_event_lines(&db).await;
    assert_eq!(expected.len(), 9);
    let lines = export(&db, &["events", "--format", "jsonl"]).await;
    assert_eq!(lines, expected.iter().map(|line| format!("{line}\n")).collect::<String>());
    for line in lines.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every line is one JSON object");
    }

    let csv = export(&db, &["events"]).await;
    let mut csv_lines = csv.lines();
    assert_eq!(
        csv_lines.next(),
        Some(
            "position,recorded_at,stream,stream_version,event_type,channel_id,nonce,amount,signature,payload,prev_hash,hash"
        )
    );
    let kv = csv_lines.nth(5).unwrap();
    assert!(
        kv.starts_with(
            "6,2026-01-01T06:00:00.000000Z,kv/61,1,key_put,,,,,\"{\"\"key\"\": \"\"0x61\"\", \"\"type\"\": \
             \"\"key_put\"\", \"\"value\"\": \"\"0x31\"\"}\",0x0000000000000000000000000000000000000000000000000000000000000000,0x"
        ),
        "{kv}"
    );
    assert_eq!(csv.lines().count(), 10);
}

fn positions(jsonl: &str) -> Vec<i64> {
    jsonl
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["position"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn the_channel_and_the_half_open_time_range_select_the_events() {
    let db = scripted_history().await;
    let jsonl = ["--format", "jsonl"];
    assert_eq!(
        positions(&export(&db, &[&["events", "--channel", "1"], &jsonl[..]].concat()).await),
        [1, 3, 5, 7, 8]
    );
    assert_eq!(
        positions(&export(&db, &[&["events", "--channel", "2"], &jsonl[..]].concat()).await),
        [2, 4, 9]
    );
    assert_eq!(
        positions(&export(&db, &[&["events", "--channel", "3"], &jsonl[..]].concat()).await),
        Vec::<i64>::new()
    );
    let range = ["--since", "2026-01-01T03:00:00Z", "--until", "2026-01-01T08:00:00Z"];
    assert_eq!(
        positions(&export(&db, &[&["events"], &range[..], &jsonl[..]].concat()).await),
        [3, 4, 5, 6, 7]
    );
    assert_eq!(
        positions(&export(&db, &[&["payments", "--channel", "1"], &range[..], &jsonl[..]].concat()).await),
        [3, 5]
    );
    // An offset is honoured: 09:00+01:00 is 08:00 UTC.
    let offset = ["--since", "2026-01-01T09:00:00+01:00"];
    assert_eq!(positions(&export(&db, &[&["events"], &offset[..], &jsonl[..]].concat()).await), [8, 9]);
    assert_eq!(
        positions(&export(&db, &[&["events", "--until", "2026-01-01"], &jsonl[..]].concat()).await),
        Vec::<i64>::new()
    );
    // The CSV of nothing is its header.
    assert_eq!(
        export(&db, &["payments", "--channel", "3"]).await,
        "position,recorded_at,channel_id,stream_version,nonce,amount,increment,signature\n"
    );
}

#[tokio::test]
async fn pages_of_any_size_give_the_same_output_across_their_boundaries() {
    let db = scripted_history().await;
    for what in ["events", "payments"] {
        for channel in [None, Some("1")] {
            let mut args = vec![what, "--format", "jsonl"];
            args.extend(channel.map(|c| ["--channel", c]).into_iter().flatten());
            let whole = export(&db, &args).await;
            for page in ["1", "2", "3", "4", "8", "9"] {
                let paged = export(&db, &[&args[..], &["--page-size", page]].concat()).await;
                assert_eq!(paged, whole, "{what} channel {channel:?} in pages of {page}");
            }
        }
    }
    // A time range that starts inside the second page and ends inside the third.
    let range =
        ["events", "--format", "jsonl", "--since", "2026-01-01T04:00:00Z", "--until", "2026-01-01T08:00:00Z"];
    assert_eq!(positions(&export(&db, &[&range[..], &["--page-size", "3"]].concat()).await), [4, 5, 6, 7]);
}

#[tokio::test]
async fn an_export_is_one_cut_although_it_reads_in_many_transactions() {
    let db = scripted_history().await;
    let ch1 = StreamId::Channel(ChannelId::from(1));
    // A payment in flight when the export starts: its position is below the cut's highest.
    let mut in_flight = db.pool.begin().await.unwrap();
    let head = stream_head(&mut in_flight, &ch1).await.unwrap();
    append(&mut in_flight, &ch1, head, &[payment(1, Amount::from(9), 5)]).await.unwrap();
    append_all(&db, &[(StreamId::Kv(b"b".to_vec()), Event::Kv(KvEvent::KeyDeleted { key: b"b".to_vec() }))])
        .await;

    let mut scan = ExportScan::start(&db.pool, ExportKind::Events, ExportFilter::default(), 2).await.unwrap();
    let first = scan.next_page(&db.pool).await.unwrap().unwrap();
    in_flight.commit().await.unwrap();
    append_all(&db, &[(StreamId::Kv(b"c".to_vec()), Event::Kv(KvEvent::KeyDeleted { key: b"c".to_vec() }))])
        .await;
    let mut seen: Vec<i64> = first.iter().map(|row| row.position).collect();
    while let Some(page) = scan.next_page(&db.pool).await.unwrap() {
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|row| row.position));
    }
    // 10 is the payment committed after the start, 12 the event appended after it.
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9, 11]);
    let all: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger.events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(all, 12);
}

#[tokio::test]
async fn bad_arguments_are_refused_naming_them_without_a_panic() {
    let db = scripted_history().await;
    for (args, needle) in [
        (&["export", "events", "--since", "yesterday"][..], "`yesterday` is not a time: give RFC 3339"),
        (
            &["export", "events", "--since", "2026-01-02", "--until", "2026-01-01"][..],
            "--since 2026-01-02T00:00:00+00:00 is not before --until",
        ),
        (
            &["export", "events", "--since", "2026-01-01", "--until", "2026-01-01"][..],
            "the range [since, until) is empty",
        ),
        (&["export", "events", "--page-size", "0"][..], "--page-size"),
        (&["export", "events", "--page-size", "100001"][..], "--page-size"),
        (&["export", "events", "--channel", "042"][..], "--channel"),
        (&["export", "events", "--channel=-1"][..], "--channel"),
        (&["export", "events", "--channel", "1x"][..], "--channel"),
        (&["export", "events", "--format", "xml"][..], "--format"),
        (&["export", "claims"][..], "claims"),
        (&["export"][..], "<WHAT>"),
        (
            &["export", "events", "--output", "/nonexistent-dir/out.csv"][..],
            "cannot create --output /nonexistent-dir/out.csv",
        ),
    ] {
        let run = run_command(args, &[("DATABASE_URL", &db.owner_url)]).await;
        assert!(!run.success(), "{args:?} was accepted");
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}");
    }
}

#[tokio::test]
async fn an_export_into_a_file_writes_the_same_rows() {
    let db = scripted_history().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payments.csv");
    let path_text = path.display().to_string();
    let run =
        run_command(&["export", "payments", "-o", &path_text], &[("DATABASE_URL", &db.owner_url)]).await;
    run.assert_success();
    assert_eq!(run.stdout, "");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), export(&db, &["payments"]).await);
}

/// Runs `mpe-ledger ARGS` with stderr (and stdout too when `stdout_on_terminal`) on a new
/// pseudo-terminal; returns what the terminal received and what went to a piped stdout.
fn on_a_terminal(db: &TestDb, args: &[&str], stdout_on_terminal: bool) -> (String, String) {
    use std::io::Read;
    use std::process::Stdio;
    let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
    let stdout =
        if stdout_on_terminal { Stdio::from(pty.slave.try_clone().unwrap()) } else { Stdio::piped() };
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mpe-ledger"));
    command
        .args(args)
        .env("DATABASE_URL", &db.owner_url)
        .env_remove("MIGRATION_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::from(pty.slave));
    let child = command.spawn().expect("start mpe-ledger");
    drop(command);
    let reader = std::thread::spawn(move || {
        let mut terminal = std::fs::File::from(pty.master);
        let mut bytes = Vec::new();
        let mut buffer = [0u8; 4096];
        // EIO once the last holder of the terminal's other end has exited.
        while let Ok(n) = terminal.read(&mut buffer) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buffer[..n]);
        }
        bytes
    });
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{args:?}");
    let terminal = reader.join().unwrap();
    (String::from_utf8_lossy(&terminal).into_owned(), String::from_utf8(output.stdout).unwrap())
}

#[tokio::test]
async fn a_progress_bar_is_drawn_on_a_terminal_only_when_the_rows_go_elsewhere() {
    let db = scripted_history().await;
    let piped = export(&db, &["events", "--page-size", "2"]).await;

    let (terminal, rows) = on_a_terminal(&db, &["export", "events", "--page-size", "2"], false);
    assert_eq!(rows, piped, "the rows carry no byte of the bar");
    assert!(terminal.contains("export [") && terminal.contains("9 rows"), "{terminal:?}");

    // Rows on the terminal itself: no bar drawn over them (the terminal turns \n into \r\n).
    let (terminal, rows) = on_a_terminal(&db, &["export", "events", "--page-size", "2"], true);
    assert_eq!(rows, "");
    assert_eq!(terminal.replace("\r\n", "\n"), piped);
}

#[tokio::test]
async fn a_reader_that_closes_the_pipe_early_ends_the_export_quietly() {
    let db = TestDb::new().await;
    // Some 1.5 MB of CSV: far more than a pipe holds, so the export is still writing when the
    // reader goes.
    common::generated_log::fill_generated_log(&db, 10, 500).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mpe-ledger"))
        .args(["export", "events", "--page-size", "100"])
        .env("DATABASE_URL", &db.owner_url)
        .env_remove("MIGRATION_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first)
        .unwrap();
    assert!(first.starts_with("position,recorded_at,"), "{first}");
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    assert!(output.status.success(), "{:?}", output.status);
}

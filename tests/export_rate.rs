//! The export's rate and peak memory on a large log (ignored: minutes, not a check):
//!
//! ```sh
//! MPE_LEDGER_EXPORT_EVENTS=1000000 cargo test --test export_rate -- --ignored --nocapture
//! ```
//!
//! fills a fresh database with that many events (default one million) by one SQL statement (1,000
//! channels, each a merge then payments, payloads as the ledger writes them; the hash links are not
//! valid, which export does not read), then runs `mpe-ledger export` into a pipe that this process
//! drains, for events as CSV and payments as JSON Lines, and prints rows/s and the child's peak RSS
//! (`getrusage(RUSAGE_CHILDREN)`, `ru_maxrss`). Run it with `--release` for production figures.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::TestDb;
use common::generated_log::fill_generated_log;
use nix::sys::resource::{UsageWho, getrusage};
use sqlx::{Connection, Executor};

const CHANNELS: i64 = 1000;

async fn fill(db: &TestDb, events: i64) {
    let started = Instant::now();
    let filled = fill_generated_log(db, CHANNELS, events / CHANNELS).await;
    println!("filled {filled} events in {:.1} s", started.elapsed().as_secs_f64());
}

/// Runs the export into a pipe drained here; returns (lines, bytes, seconds).
fn export(db: &TestDb, args: &[&str]) -> (u64, u64, f64) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mpe-ledger"))
        .arg("export")
        .args(args)
        .env("DATABASE_URL", &db.owner_url)
        .env_remove("MIGRATION_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start mpe-ledger export");
    let mut stdout = child.stdout.take().unwrap();
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = stdout.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        bytes += n as u64;
        lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    assert!(child.wait().unwrap().success());
    (lines, bytes, started.elapsed().as_secs_f64())
}

#[tokio::test]
#[ignore = "minutes: a measurement, run by hand (module doc)"]
async fn export_rate_and_peak_rss_on_a_large_log() {
    let events: i64 =
        std::env::var("MPE_LEDGER_EXPORT_EVENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let db = TestDb::new().await;
    fill(&db, events).await;
    for (args, header) in
        [(&["events", "--format", "csv"][..], 1), (&["payments", "--format", "jsonl"][..], 0)]
    {
        let (lines, bytes, seconds) = export(&db, args);
        let rows = lines - header;
        let peak_kib = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss();
        println!(
            "export {}: {rows} rows, {:.1} MiB in {seconds:.1} s: {:.0} rows/s; peak RSS of the largest child so far {:.1} MiB",
            args.join(" "),
            bytes as f64 / (1 << 20) as f64,
            rows as f64 / seconds,
            peak_kib as f64 / 1024.0
        );
    }
    // A million events take some 600 MB: do not leave them in the reusable test cluster.
    db.pool.close().await;
    let mut admin = sqlx::PgConnection::connect(&common::admin_url().await).await.unwrap();
    admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE {} WITH (FORCE)", db.name))).await.unwrap();
    admin.close().await.unwrap();
}

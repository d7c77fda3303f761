//! `cargo bench --bench ledger`: how fast the ledger is on this machine, against pgbench on the same
//! Postgres. Everything runs for real: an embedded Postgres cluster of the bench's own (in a
//! temporary directory), ganache with the real MultiPartyEscrow, `mpe-ledger serve` as a child
//! process, and a raw h2c upstream.
//!
//! Steps: (1) pgbench baseline ([`pgbench`]); (2) paid calls end to end through `serve` at growing
//! client counts, and the same calls straight to the upstream ([`load`]); (3) payment commits
//! through the library, no network ([`store`]); (4) paid latency on a small log (topped up with
//! filler before step 2) and on a big valid log loaded with COPY, and `rebuild` ([`filler`]);
//! (5) bytes per event and serve's peak RSS. The table and the chart come from [`report`].
//!
//! With `--bench` (what `cargo bench` passes) the run is FULL; without it (as `cargo test
//! --all-targets` runs bench targets) or with `MPE_LEDGER_BENCH_QUICK=1` it is QUICK: the same
//! steps, tiny sizes, a smoke test that fails when a step breaks, never on speed.

#[path = "../../tests/common/mod.rs"]
mod common;
mod cpu;
mod filler;
mod load;
mod metrics;
mod pgbench;
mod report;
mod stats;
mod steps;
mod store;
mod wallet;

use std::time::Duration;

use common::ganache::{Ganache, Mpe};
use common::ledger::{Ledger, LedgerSettings};
use common::upstream::Upstream;
use mpe_ledger::startup::cluster::EmbeddedCluster;
use mpe_ledger::store::postgres;
use sqlx::PgPool;

use load::Timing;
use report::Report;
use steps::Bench;
use wallet::Wallet;

/// Cogs per call (`serve`'s price).
pub const PRICE: u64 = 1;
/// The ledger's database in the bench cluster.
const LEDGER_DB: &str = "ledger";
/// Longest a quick run may take (it takes well under a minute) before it fails as hung.
const QUICK_RUN_LIMIT: Duration = Duration::from_secs(300);
/// Longest a full run may take.
const FULL_RUN_LIMIT: Duration = Duration::from_secs(3600);

/// How big each step is.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub full: bool,
    pub pgbench_scale: u32,
    pub pgbench_seconds: u64,
    pub channels: usize,
    pub paid_clients: Vec<usize>,
    pub paid: Timing,
    pub direct_clients: Vec<usize>,
    pub direct: Timing,
    pub store_writers: Vec<usize>,
    pub store: Timing,
    pub latency_clients: usize,
    pub latency: Timing,
    pub small_log: u64,
    pub big_log: u64,
    /// The least calls/s assumed when sizing the payments signed ahead (more clients may go faster
    /// than any phase seen so far; a client that runs out stops and is reported).
    pub rate_floor: f64,
}

impl Sizes {
    fn full() -> Self {
        let ten = Timing { warmup: Duration::from_secs(2), window: Duration::from_secs(10) };
        Self {
            full: true,
            pgbench_scale: 10,
            pgbench_seconds: 10,
            channels: 256,
            paid_clients: vec![1, 16, 64, 256],
            paid: ten,
            direct_clients: vec![1, 16],
            direct: ten,
            store_writers: vec![16, 64],
            store: ten,
            latency_clients: 16,
            latency: ten,
            small_log: 10_000,
            big_log: 2_000_000,
            rate_floor: 1500.0,
        }
    }

    fn quick() -> Self {
        // Sized to stay well under a minute on a debug build on 2 cores (CI runs it on every push).
        let short = Timing { warmup: Duration::from_millis(300), window: Duration::from_millis(1500) };
        let shorter = Timing { warmup: Duration::from_millis(200), window: Duration::from_secs(1) };
        Self {
            full: false,
            pgbench_scale: 1,
            pgbench_seconds: 1,
            channels: 32,
            paid_clients: vec![1, 16],
            paid: short,
            direct_clients: vec![1, 16],
            direct: shorter,
            store_writers: vec![16, 32],
            store: shorter,
            latency_clients: 16,
            latency: shorter,
            small_log: 10_000,
            big_log: 30_000,
            rate_floor: 500.0,
        }
    }
}

/// Stops the bench's cluster however the run ends, before its directory goes.
struct ClusterGuard {
    cluster: EmbeddedCluster,
    _dir: tempfile::TempDir,
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if let Err(error) = self.cluster.stop_blocking() {
            eprintln!("could not stop the bench cluster: {error}");
        }
    }
}

#[tokio::main]
async fn main() {
    let forced_quick = std::env::var("MPE_LEDGER_BENCH_QUICK").is_ok_and(|v| v == "1");
    let sizes = if std::env::args().any(|a| a == "--bench") && !forced_quick {
        Sizes::full()
    } else {
        Sizes::quick()
    };
    let mode = if sizes.full { "full" } else { "quick" };
    eprintln!("mpe-ledger bench, {mode} mode");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let cluster = EmbeddedCluster::ensure_running(&dir.path().join("cluster"))
        .await
        .expect("the bench cluster starts (is the postgresql package installed?)");
    let guard = ClusterGuard { cluster, _dir: dir };
    // A hung step (a receipt that never comes, a stuck client) must fail the run, not CI's clock,
    // and an interrupted run (Ctrl-C, `timeout`) must not leave its cluster behind: dropping the
    // run stops serve and ganache, and the guard stops the cluster (pg_ctl daemonises it, so the
    // signal never reaches it).
    let limit = if sizes.full { FULL_RUN_LIMIT } else { QUICK_RUN_LIMIT };
    tokio::select! {
        finished = tokio::time::timeout(limit, run(&guard.cluster, &sizes)) => match finished {
            Ok(()) => guard.cluster.stop().await.expect("the bench cluster stops"),
            Err(_) => panic!("the {mode} bench did not finish within {limit:?}"),
        },
        signal = interrupted() => panic!("the {mode} bench was interrupted by {signal}"),
    }
}

/// The first SIGINT or SIGTERM.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

/// `MPE_LEDGER_BENCH_STEPS=paid` runs the baseline and the paid-call step only (for profiling the
/// payment path: a full run spends most of its time on the big log).
const PAID_ONLY: &str = "MPE_LEDGER_BENCH_STEPS";

fn paid_only() -> bool {
    std::env::var(PAID_ONLY).is_ok_and(|v| v == "paid")
}

/// Every step, on the bench's cluster.
async fn run(cluster: &EmbeddedCluster, sizes: &Sizes) {
    let started = std::time::Instant::now();
    // 1. pgbench on the same cluster: the reference.
    let baseline = pgbench::baseline(cluster, sizes.pgbench_scale, sizes.pgbench_seconds).await;
    let mut report = Report::new(baseline.reference_tps);
    header(&mut report, cluster, sizes).await;
    steps::pgbench_rows(&mut report, &baseline, sizes);

    // 2. The chain, the upstream, serve.
    eprintln!("ganache: start, deploy the MPE, open {} channels", sizes.channels);
    let ganache = Ganache::start().await;
    let mpe = Mpe::deploy(&ganache).await;
    let provider = ganache.account(9).clone();
    let (wallet, opening) = Wallet::open(&ganache, &mpe, provider.eth_address(), PRICE, sizes.channels).await;
    report.figure(
        "setup",
        "channels opened on ganache",
        format!("{} in {:.1} s ({} sender accounts)", wallet.len(), opening.as_secs_f64(), wallet::SENDERS),
    );
    eprintln!("serve: migrate and start");
    cluster.create_database_if_missing(LEDGER_DB).await.expect("the ledger database");
    let owner_url = cluster.url(LEDGER_DB);
    postgres::migrate(&owner_url).await.expect("migrations apply");
    let upstream = Upstream::start().await;
    let settings = LedgerSettings {
        ethereum_rpc_url: ganache.url().to_owned(),
        mpe: mpe.address,
        group_id: wallet::GROUP_ID,
        payment_address: provider.address,
        price: PRICE,
        upstream: upstream.url.clone(),
        replica_id: "bench".to_owned(),
        tls: None,
        ethereum_rpc_ca_file: None,
        upstream_ca_file: None,
    };
    let mut ledger = Ledger::start(&owner_url, &settings).await;
    let admin = PgPool::connect(&owner_url).await.expect("an owner pool on the ledger database");

    let mut bench = Bench {
        sizes: sizes.clone(),
        report,
        wallet,
        admin,
        owner_url,
        serve_port: ledger.port,
        serve_pid: ledger.pid(),
        paid_points: Vec::new(),
        direct_points: Vec::new(),
        best_rate: 0.0,
        filler: filler::Filler::new(),
    };
    bench.small_log().await;
    bench.end_to_end(upstream_port(&upstream)).await;

    if paid_only() {
        eprintln!("{PAID_ONLY}=paid: steps 3 to 5 skipped");
    } else {
        // 3. Store level, no network.
        bench.store_level(ganache.url(), mpe.eth_address(), provider.eth_address()).await;

        // 4. and 5. The big log, rebuild, latency on the big log, bytes per event, serve's memory.
        bench.big_log().await;
    }
    match ledger.peak_rss_mib() {
        Some(mib) => bench.report.figure("serve", "peak RSS of serve (VmHWM)", format!("{mib:.1} MiB")),
        None => bench.report.figure("serve", "peak RSS of serve (VmHWM)", "unavailable"),
    }
    let (table_path, chart_path) = report::output_paths();
    bench.draw_chart(&chart_path);
    let Bench { mut report, .. } = bench;
    report.figure("run", "wall time of the bench", format!("{:.1} s", started.elapsed().as_secs_f64()));
    report.note(format!(
        "Phases: paid {}, direct {}, store {}, log latency {}; one h2c connection per client, one MPE \
         channel per client, payments signed before each phase, price {PRICE} cog.",
        steps::describe(sizes.paid),
        steps::describe(sizes.direct),
        steps::describe(sizes.store),
        steps::describe(sizes.latency),
    ));
    let markdown = report.markdown();
    println!("\n{markdown}");
    report::write(&table_path, &markdown)
        .unwrap_or_else(|e| panic!("cannot write the table to {}: {e}", table_path.display()));
    eprintln!("table: {}\nchart: {}", table_path.display(), chart_path.display());
    assert!(ledger.stop(), "serve did not stop cleanly:\n{}", ledger.log());
}

async fn header(report: &mut Report, cluster: &EmbeddedCluster, sizes: &Sizes) {
    let pool = PgPool::connect(&cluster.url("postgres")).await.expect("connect to the bench cluster");
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&pool).await.expect("version");
    let date: String = sqlx::query_scalar("SELECT to_char(now(), 'YYYY-MM-DD HH24:MI:SS TZ')")
        .fetch_one(&pool)
        .await
        .expect("date");
    pool.close().await;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let build = if cfg!(debug_assertions) { "debug build" } else { "release build" };
    report.header("mode", format!("{} ({build})", if sizes.full { "full" } else { "quick" }));
    report.header("machine", format!("{cores} cores (nproc), {}", std::env::consts::ARCH));
    report.header("date", date);
    report.header("PostgreSQL", format!("{version}, embedded cluster of the bench (fsync on)"));
}

fn upstream_port(upstream: &Upstream) -> u16 {
    upstream
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the upstream's URL ends with its port")
}

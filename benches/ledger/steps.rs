//! The measured steps after the baseline, each adding its rows to the report: paid calls end to end
//! and direct, store-level commits, and the big log (load, rebuild, latency, bytes per event).

use std::path::Path;
use std::time::Instant;

use mpe_ledger::domain::EthAddress;
use mpe_ledger::store::postgres;
use mpe_ledger::store::verify::rebuild;
use mpe_ledger::telemetry::Metrics;
use sqlx::PgPool;

use crate::Sizes;
use crate::cpu::{PerCall, Snapshot};
use crate::filler::Filler;
use crate::load::{self, Timing};
use crate::metrics::{self, RETRIES, RETRIES_EXHAUSTED};
use crate::pgbench::Baseline;
use crate::report::{self, Point, Report};
use crate::stats::Summary;
use crate::store::StoreReplica;
use crate::wallet::Wallet;

/// Free disk below which the big log is skipped.
const MIN_FREE_DISK_GIB: f64 = 8.0;

/// Everything the steps share.
pub struct Bench {
    pub sizes: Sizes,
    pub report: Report,
    pub wallet: Wallet,
    /// Superuser pool on the ledger's database (resyncs, counts).
    pub admin: PgPool,
    pub owner_url: String,
    pub serve_port: u16,
    /// `serve`'s process, for its CPU time ([`cpu`]).
    pub serve_pid: Option<u32>,
    pub paid_points: Vec<Point>,
    pub direct_points: Vec<Point>,
    pub best_rate: f64,
    pub filler: Filler,
}

/// One paid phase through serve.
struct PaidPhase {
    summary: Summary,
    retries_per_payment: f64,
    exhausted: f64,
    cpu: PerCall,
}

pub fn pgbench_rows(report: &mut Report, baseline: &Baseline, sizes: &Sizes) {
    for run in &baseline.runs {
        let mut detail = format!("scale {}", sizes.pgbench_scale);
        if let Some(latency) = run.latency_ms {
            detail.push_str(&format!(", latency avg {latency:.2} ms"));
        }
        if let Some(retries) = run.retries {
            detail.push_str(&format!(", {retries} serialization retries"));
        }
        if let Some(failed) = run.failed.filter(|&n| n > 0) {
            detail.push_str(&format!(", {failed} failed"));
        }
        let figure = format!("{}, {} clients", run.name, run.clients);
        report.throughput("1 pgbench", &figure, run.tps, "tps", &detail);
    }
    report.note(format!(
        "pgbench runs {} s each with -j 2; the ledger-shaped script is benches/pgbench/ledger_ser.sql \
         (-D nch=1000 --max-tries=100) on benches/pgbench/ledger_schema.sql.",
        sizes.pgbench_seconds
    ));
}

impl Bench {
    /// Payments to sign for each of `clients` in a phase of `timing`: twice the best rate seen (at
    /// least `Sizes::rate_floor`) over the whole phase, shared by the clients.
    fn budget(&self, clients: usize, timing: Timing) -> usize {
        let seconds = (timing.warmup + timing.window).as_secs_f64();
        (2.0 * self.best_rate.max(self.sizes.rate_floor) * seconds / clients as f64) as usize + 50
    }

    async fn paid(&mut self, clients: usize, timing: Timing) -> PaidPhase {
        let signing = Instant::now();
        let presigned = self.wallet.presign(clients, self.budget(clients, timing));
        eprintln!("paid calls, {clients} clients (signed ahead in {:.1} s)", signing.elapsed().as_secs_f64());
        let before = metrics::scrape(self.serve_port).await;
        let cpu_before = Snapshot::take(self.serve_pid, &self.admin).await;
        let (summary, used) =
            load::run(self.serve_port, clients, timing, Some((presigned, self.admin.clone()))).await;
        let cpu = PerCall::between(
            &cpu_before,
            &Snapshot::take(self.serve_pid, &self.admin).await,
            summary.ok_total,
        );
        self.wallet.settle(used);
        let after = metrics::scrape(self.serve_port).await;
        let delta = |name| metrics::sum(&after, name) - metrics::sum(&before, name);
        self.best_rate = self.best_rate.max(summary.per_second);
        let retries_per_payment = delta(RETRIES) / summary.ok_total.max(1) as f64;
        PaidPhase { exhausted: delta(RETRIES_EXHAUSTED), retries_per_payment, summary, cpu }
    }

    /// Step 2: paid calls through serve at each client count, then the same calls direct.
    pub async fn end_to_end(&mut self, upstream_port: u16) {
        let mut paid_p50_at_one = None;
        for clients in self.sizes.paid_clients.clone() {
            let phase = self.paid(clients, self.sizes.paid).await;
            let s = &phase.summary;
            if clients == 1 {
                paid_p50_at_one = Some(s.p50_ms);
                if !self.sizes.full {
                    assert!(
                        s.errors_total == 0 && s.ok_total > 0,
                        "quick mode: the 1-client paid phase must succeed on every call: {} ok, errors {:?}",
                        s.ok_total,
                        s.errors
                    );
                }
            }
            self.report.throughput(
                "2 end to end",
                &format!("paid calls, {clients} clients"),
                s.per_second,
                "calls/s",
                &latencies(s),
            );
            self.report.figure(
                "2 end to end",
                &format!("errors and retries, {clients} clients"),
                format!(
                    "errors: {}; {:.3} serialization retries/payment; {} retries exhausted{}",
                    s.errors_text(),
                    phase.retries_per_payment,
                    phase.exhausted,
                    exhausted_note(s)
                ),
            );
            self.report.figure(
                "2 end to end",
                &format!("CPU per paid call, {clients} clients"),
                phase.cpu.text(),
            );
            self.paid_points.push(Point { clients, per_second: s.per_second, p99_ms: s.p99_ms });
        }
        let mut direct_p50_at_one = None;
        for clients in self.sizes.direct_clients.clone() {
            eprintln!("direct calls, {clients} clients");
            let cpu_before = Snapshot::take(self.serve_pid, &self.admin).await;
            let (s, _) = load::run(upstream_port, clients, self.sizes.direct, None).await;
            let cpu =
                PerCall::between(&cpu_before, &Snapshot::take(self.serve_pid, &self.admin).await, s.ok_total);
            if clients == 1 {
                direct_p50_at_one = Some(s.p50_ms);
            }
            let detail = format!(
                "p50 {:.2} ms, p99 {:.2} ms, errors: {}; CPU per call: {}",
                s.p50_ms,
                s.p99_ms,
                s.errors_text(),
                cpu.text()
            );
            self.report.throughput(
                "2 direct",
                &format!("same calls straight to upstream, {clients} clients"),
                s.per_second,
                "calls/s",
                &detail,
            );
            self.direct_points.push(Point { clients, per_second: s.per_second, p99_ms: s.p99_ms });
        }
        if let (Some(paid), Some(direct)) = (paid_p50_at_one, direct_p50_at_one) {
            self.report.figure(
                "2 end to end",
                "gateway overhead at 1 client (p50 paid − p50 direct)",
                format!("{:.2} ms", paid - direct),
            );
        }
    }

    /// Step 3: commits through `PaymentService` in this process.
    pub async fn store_level(&mut self, rpc_url: &str, mpe: EthAddress, provider: EthAddress) {
        let most = self.sizes.store_writers.iter().copied().max().unwrap_or(1);
        let replica = StoreReplica::connect(&self.owner_url, most as u32, rpc_url, mpe, provider).await;
        for writers in self.sizes.store_writers.clone() {
            let presigned = self.wallet.presign(writers, self.budget(writers, self.sizes.store));
            eprintln!("store-level commits, {writers} writers");
            let (s, retries, used) = replica.run(presigned, self.sizes.store).await;
            self.wallet.settle(used);
            self.best_rate = self.best_rate.max(s.per_second);
            let detail = format!(
                "{}; errors: {}; {:.3} retries/commit{}",
                latencies(&s),
                s.errors_text(),
                retries as f64 / s.ok_total.max(1) as f64,
                exhausted_note(&s)
            );
            self.report.throughput(
                "3 store",
                &format!("payment commits, {writers} writers, distinct channels"),
                s.per_second,
                "commits/s",
                &detail,
            );
        }
        replica.pool.close().await;
        replica.operational.close().await;
        self.report.note(format!(
            "Store level: PaymentService wired as serve wires it; pools of {most} (payments) and {} (leases) connections.",
            postgres::DEFAULT_OPERATIONAL_POOL_SIZE
        ));
    }

    /// Step 4, first half: the log topped up with filler to `small_log` events, and paid latency
    /// on it. Runs before step 2, so the small log is the size asked for.
    pub async fn small_log(&mut self) {
        self.filler.load_to(&self.owner_url, self.sizes.small_log).await;
        self.log_latency("small").await;
    }

    /// Steps 4 and 5: the big load, rebuild, paid latency on the big log, bytes per event.
    pub async fn big_log(&mut self) {
        let free = free_disk_gib(Path::new(env!("CARGO_MANIFEST_DIR")));
        if free.is_some_and(|gib| gib < MIN_FREE_DISK_GIB) {
            let message = format!(
                "skipped: {:.1} GiB free, the big log needs {MIN_FREE_DISK_GIB} GiB",
                free.unwrap_or(0.0)
            );
            eprintln!("big log {message}");
            self.report.figure("4 big log", "rebuild and latency on a big log", message);
            return;
        }
        eprintln!("loading the log to {} events", self.sizes.big_log);
        let loaded = self.filler.load_to(&self.owner_url, self.sizes.big_log).await;
        let per_second = loaded.events as f64 / loaded.took.as_secs_f64();
        self.report.throughput(
            "4 big log",
            &format!("COPY of {} filler events", loaded.events),
            per_second,
            "events/s",
            "valid hash-linked channel streams",
        );

        let pool = postgres::connect(&self.owner_url, 2).await.expect("a pool for rebuild");
        let metrics = Metrics::new();
        let rebuilding = Instant::now();
        let rebuilt = rebuild(&pool, &metrics.store).await.expect("the loaded log rebuilds");
        let took = rebuilding.elapsed();
        pool.close().await;
        let detail =
            format!("{} events, {} streams in {:.1} s", rebuilt.events, rebuilt.streams, took.as_secs_f64());
        self.report.throughput(
            "4 big log",
            "rebuild (fold every stream, rewrite projections)",
            rebuilt.events as f64 / took.as_secs_f64(),
            "events/s",
            &detail,
        );
        self.log_latency("big").await;

        let (bytes, count): (f64, i64) = sqlx::query_as(
            "SELECT pg_total_relation_size('ledger.events')::float8 / greatest(count(*), 1), count(*) FROM ledger.events",
        )
        .fetch_one(&self.admin)
        .await
        .expect("size of the log");
        self.report.figure(
            "5 disk",
            "bytes per event on disk",
            format!("{bytes:.0} B ({count} events; pg_total_relation_size: table, TOAST and every index)"),
        );
    }

    async fn log_latency(&mut self, which: &str) {
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.events")
            .fetch_one(&self.admin)
            .await
            .expect("count");
        let clients = self.sizes.latency_clients;
        let phase = self.paid(clients, self.sizes.latency).await;
        let s = &phase.summary;
        let figure = format!("paid calls on a {which} log ({events} events), {clients} clients");
        let detail = format!("{}; errors: {}", latencies(s), s.errors_text());
        self.report.throughput("4 big log", &figure, s.per_second, "calls/s", &detail);
    }

    /// The chart of step 2.
    pub fn draw_chart(&self, path: &Path) {
        report::chart(path, &self.paid_points, &self.direct_points)
            .unwrap_or_else(|e| panic!("cannot draw the chart {}: {e}", path.display()));
    }
}

fn latencies(s: &Summary) -> String {
    format!("p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms", s.p50_ms, s.p99_ms, s.p999_ms)
}

fn exhausted_note(s: &Summary) -> String {
    if s.exhausted == 0 {
        String::new()
    } else {
        format!("; {} clients ran out of presigned payments", s.exhausted)
    }
}

/// Free space of the file system holding `path`, from `df -Pk`.
fn free_disk_gib(path: &Path) -> Option<f64> {
    let output = std::process::Command::new("df").arg("-Pk").arg(path).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let kib: f64 = text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib / (1024.0 * 1024.0))
}

/// Timing of a phase, for the notes.
pub fn describe(timing: Timing) -> String {
    format!("{:.1} s warm-up + {:.0} s measured", timing.warmup.as_secs_f64(), timing.window.as_secs_f64())
}

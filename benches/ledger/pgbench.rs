//! The baseline: `pgbench` on the bench's own cluster, so that every figure of the ledger can be
//! read against what this machine's Postgres does with the same cores and disk.
//!
//! Runs TPC-B (pgbench's default script) and `-N` (simple update, no branch/teller contention) in a
//! database `pgbench`, and the ledger-shaped SERIALIZABLE script of `benches/pgbench/` in a database
//! `pgbench_ledger`. `-N` at 16 clients is the reference of the report.

use std::path::{Path, PathBuf};

use mpe_ledger::startup::cluster::EmbeddedCluster;
use sqlx::{Connection, PgConnection};
use tokio::process::Command;

/// Clients of every pgbench run.
pub const CLIENTS: u32 = 16;
const THREADS: u32 = 2;
const LEDGER_CHANNELS: u32 = 1000;
const LEDGER_MAX_TRIES: u32 = 100;

/// One pgbench run in figures.
#[derive(Debug, Clone)]
pub struct Run {
    pub name: &'static str,
    pub clients: u32,
    pub tps: f64,
    pub latency_ms: Option<f64>,
    /// Serialization retries pgbench reported (`--max-tries` runs only).
    pub retries: Option<u64>,
    pub failed: Option<u64>,
}

/// The whole baseline: `[tpcb, simple_update, ledger]`.
pub struct Baseline {
    pub runs: Vec<Run>,
    /// The reference: `-N` tps.
    pub reference_tps: f64,
}

/// `pgbench` from PATH, else the newest `/usr/lib/postgresql/*/bin/pgbench`.
pub fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("pgbench"))
        .find(|candidate| candidate.is_file());
    on_path.or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("bin/pgbench"))
            .filter(|candidate| candidate.is_file())
            .collect();
        found.sort_by_key(|path| {
            path.components().nth(4).and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok()).unwrap_or(0)
        });
        found.pop()
    })
}

/// Initialises and runs the three scripts for `seconds` each.
pub async fn baseline(cluster: &EmbeddedCluster, scale: u32, seconds: u64) -> Baseline {
    let pgbench =
        binary().expect("pgbench is installed (it comes with the Debian package postgresql, as initdb does)");
    let connection = Pgbench::of(cluster);
    cluster.create_database_if_missing("pgbench").await.expect("database pgbench");
    cluster.create_database_if_missing("pgbench_ledger").await.expect("database pgbench_ledger");
    eprintln!("pgbench: init scale {scale}");
    let init = connection.run(&pgbench, &["-i", "-q", "-s", &scale.to_string(), "pgbench"]).await;
    assert!(init.0, "pgbench -i failed:\n{}", init.1);

    let schema =
        std::fs::read_to_string(script("ledger_schema.sql")).expect("benches/pgbench/ledger_schema.sql");
    let mut conn =
        PgConnection::connect(&cluster.url("pgbench_ledger")).await.expect("connect pgbench_ledger");
    // One statement at a time, as psql -f would: the script ends with VACUUM, which refuses to run
    // inside the implicit transaction of a multi-statement query.
    for statement in schema.split_inclusive(";\n") {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("the ledger bench schema loads: {e}\n{statement}"));
    }
    conn.close().await.ok();

    let duration = seconds.to_string();
    let clients = CLIENTS.to_string();
    let threads = THREADS.to_string();
    let common = ["-c", clients.as_str(), "-j", threads.as_str(), "-T", duration.as_str()];
    let mut runs = Vec::new();
    runs.push(connection.measure(&pgbench, "TPC-B (built-in)", &common, &["pgbench"]).await);
    runs.push(connection.measure(&pgbench, "simple update (-N)", &common, &["-N", "pgbench"]).await);

    let ledger_script = script("ledger_ser.sql").display().to_string();
    let nch = format!("nch={LEDGER_CHANNELS}");
    let tries = format!("--max-tries={LEDGER_MAX_TRIES}");
    let mut ledger_args = vec!["-n", "-f", ledger_script.as_str(), "-D", nch.as_str(), tries.as_str()];
    let prepared = [ledger_args.clone(), vec!["-M", "prepared", "pgbench_ledger"]].concat();
    ledger_args.push("pgbench_ledger");
    let ledger = match connection
        .try_measure(&pgbench, "ledger-shaped SERIALIZABLE (-M prepared)", &common, &prepared)
        .await
    {
        Ok(run) => run,
        Err(output) => {
            eprintln!("pgbench -M prepared failed, running the simple protocol:\n{output}");
            connection
                .measure(&pgbench, "ledger-shaped SERIALIZABLE (simple protocol)", &common, &ledger_args)
                .await
        }
    };
    runs.push(ledger);
    let reference_tps = runs[1].tps;
    clean_up(cluster).await;
    Baseline { runs, reference_tps }
}

/// Drops the baseline's databases and checkpoints, so that nothing of the baseline runs during the
/// ledger's phases: left alone, autovacuum reaches pgbench's dead rows about a minute later, in the
/// middle of the paid calls, and its CPU (counted as Postgres's in [`crate::cpu`]) and I/O halved
/// their throughput in one of two back-to-back runs of one build (2026-12-08).
async fn clean_up(cluster: &EmbeddedCluster) {
    let mut conn = PgConnection::connect(&cluster.url("postgres")).await.expect("connect postgres");
    for database in ["pgbench", "pgbench_ledger"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("drop database {database}: {e}"));
    }
    sqlx::raw_sql("CHECKPOINT").execute(&mut conn).await.expect("CHECKPOINT after the baseline");
    conn.close().await.ok();
}

/// `benches/pgbench/<name>` of this repository.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pgbench").join(name)
}

/// Where and as whom pgbench connects.
struct Pgbench {
    port: u16,
    password: String,
}

impl Pgbench {
    fn of(cluster: &EmbeddedCluster) -> Self {
        // url() is postgres://postgres:<password>@127.0.0.1:<port>/<db>; the password is alphanumeric.
        let url = cluster.url("postgres");
        let password = url
            .strip_prefix("postgres://postgres:")
            .and_then(|rest| rest.split_once('@'))
            .map(|(password, _)| password.to_owned())
            .expect("the cluster's URL carries the superuser password");
        Self { port: cluster.port(), password }
    }

    /// Runs pgbench; (success, stdout + stderr).
    async fn run(&self, pgbench: &Path, args: &[&str]) -> (bool, String) {
        let output = Command::new(pgbench)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
            .args(args)
            .env("PGPASSWORD", &self.password)
            .env_remove("PGDATABASE")
            .kill_on_drop(true)
            .output()
            .await
            .expect("pgbench runs");
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }

    async fn try_measure(
        &self,
        pgbench: &Path,
        name: &'static str,
        common: &[&str],
        args: &[&str],
    ) -> Result<Run, String> {
        eprintln!("pgbench: {name}");
        let all: Vec<&str> = common.iter().chain(args).copied().collect();
        let (ok, output) = self.run(pgbench, &all).await;
        let tps = parse_after(&output, "tps = ").filter(|_| ok);
        match tps {
            Some(tps) => Ok(Run {
                name,
                clients: CLIENTS,
                tps,
                latency_ms: parse_after(&output, "latency average = "),
                retries: parse_after(&output, "total number of retries: ").map(|n| n as u64),
                failed: parse_after(&output, "number of failed transactions: ").map(|n| n as u64),
            }),
            None => Err(output),
        }
    }

    async fn measure(&self, pgbench: &Path, name: &'static str, common: &[&str], args: &[&str]) -> Run {
        match self.try_measure(pgbench, name, common, args).await {
            Ok(run) => run,
            Err(output) => panic!("pgbench {name} failed:\n{output}"),
        }
    }
}

/// The number right after `prefix` on the first line containing it.
fn parse_after(output: &str, prefix: &str) -> Option<f64> {
    let line = output.lines().find(|line| line.contains(prefix))?;
    let rest = &line[line.find(prefix)? + prefix.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

//! CPU time spent per call, by process: `serve`, the Postgres cluster (every server process
//! `pg_stat_activity` shows, in two parts: the sessions of the ledger's database, which do the
//! calls' work, and everything else — autovacuum, checkpointer, WAL writer, other databases — which
//! a phase may only happen to share the machine with) and the bench itself (load generator and
//! upstream).
//!
//! Throughput on a shared 2-core machine moves with the neighbours; CPU time per call does much
//! less, since it counts what the work cost rather than how long it waited. Comparing two builds by
//! it (`MPE_LEDGER_BENCH_STEPS=paid`, A, B, A, B) shows where a change costs or saves, even when the
//! calls/s of two runs of one build differ by 2×.
//!
//! Read from `/proc/PID/stat` (utime + stime, in the kernel's `USER_HZ` ticks, 100 per second on
//! Linux whatever the kernel's own tick rate): 10 ms resolution, so a phase needs a few seconds of
//! work per process to be read to a few percent. Processes that started during the phase count in
//! whole; those that ended during it are lost (the pools keep their connections, so few do).
//! Elsewhere than on Linux every figure is `None`.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgPool;

/// Ticks per second of `/proc/PID/stat`'s times (Linux's fixed `USER_HZ`).
const USER_HZ: f64 = 100.0;

/// CPU time of one process so far (all its threads, live and ended), or `None` if unreadable.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // Fields 14 and 15 of the whole line (utime, stime) are 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / USER_HZ))
}

/// CPU time of every process of the three parts at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    serve: Option<Duration>,
    bench: Option<Duration>,
    /// Per server process: its CPU so far, and whether it is a session of the ledger's database.
    postgres: HashMap<i32, (Duration, bool)>,
}

impl Snapshot {
    pub async fn take(serve_pid: Option<u32>, pool: &PgPool) -> Self {
        let pids: Vec<(i32, bool)> = sqlx::query_as(
            "SELECT pid, coalesce(datname = current_database() AND backend_type = 'client backend', false)
             FROM pg_stat_activity",
        )
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        let postgres = pids
            .into_iter()
            .filter_map(|(pid, session)| Some((pid, (process_cpu(u32::try_from(pid).ok()?)?, session))))
            .collect();
        Self { serve: serve_pid.and_then(process_cpu), bench: process_cpu(std::process::id()), postgres }
    }
}

/// CPU per call between two snapshots.
#[derive(Debug, Clone, Copy)]
pub struct PerCall {
    pub serve_us: Option<f64>,
    /// The ledger database's sessions.
    pub postgres_us: f64,
    /// Every other server process (autovacuum, checkpointer, WAL writer, other databases).
    pub postgres_background_us: f64,
    pub bench_us: Option<f64>,
}

impl PerCall {
    pub fn between(before: &Snapshot, after: &Snapshot, calls: u64) -> Self {
        let calls = calls.max(1) as f64;
        let per_call = |a: Option<Duration>, b: Option<Duration>| {
            Some(b?.saturating_sub(a?).as_secs_f64() * 1e6 / calls)
        };
        let spent = |sessions: bool| -> Duration {
            after
                .postgres
                .iter()
                .filter(|(_, (_, session))| *session == sessions)
                .map(|(pid, (spent, _))| {
                    spent.saturating_sub(before.postgres.get(pid).map(|(b, _)| *b).unwrap_or_default())
                })
                .sum()
        };
        Self {
            serve_us: per_call(before.serve, after.serve),
            postgres_us: spent(true).as_secs_f64() * 1e6 / calls,
            postgres_background_us: spent(false).as_secs_f64() * 1e6 / calls,
            bench_us: per_call(before.bench, after.bench),
        }
    }

    /// `serve 1233 µs, postgres 652 µs (+ 12 µs background), bench (clients and upstream) 387 µs;
    /// 2284 µs in all`.
    pub fn text(&self) -> String {
        let shown = |value: Option<f64>| value.map_or("unavailable".to_owned(), |us| format!("{us:.0} µs"));
        let total = self.serve_us.unwrap_or(0.0)
            + self.postgres_us
            + self.postgres_background_us
            + self.bench_us.unwrap_or(0.0);
        format!(
            "serve {}, postgres {:.0} µs (+ {:.0} µs background), bench (clients and upstream) {}; {total:.0} µs in all",
            shown(self.serve_us),
            self.postgres_us,
            self.postgres_background_us,
            shown(self.bench_us)
        )
    }
}

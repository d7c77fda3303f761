//! Embedded clusters that tests start in temporary data roots, what stops them when a test fails
//! half-way (a postgres must never outlive its deleted tempdir), and what tests do to them: read the
//! postmaster's pid, kill it with SIGKILL, start it again, wait until it answers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mpe_ledger::startup::cluster::{EmbeddedCluster, stop_blocking_in};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::Connection;

/// Stops whatever cluster runs in the data root when dropped, whoever started it.
pub struct StopClusterOnDrop(pub PathBuf);

impl StopClusterOnDrop {
    pub fn root(&self) -> &Path {
        &self.0
    }
}

impl Drop for StopClusterOnDrop {
    fn drop(&mut self) {
        let _ = stop_blocking_in(&self.0);
    }
}

/// The pid in the cluster's `postmaster.pid` (the data root's `pgdata/`), if there is one.
pub fn postmaster_pid(data_root: &Path) -> Option<i32> {
    let content = std::fs::read_to_string(data_root.join("pgdata/postmaster.pid")).ok()?;
    content.lines().next()?.trim().parse().ok()
}

/// `kill -9` of the cluster's postmaster (its backends are left to notice on their own, as after
/// the OOM killer); the pid killed.
pub fn kill_postmaster(data_root: &Path) -> i32 {
    let pid = postmaster_pid(data_root).expect("the postmaster's pid");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL the postmaster");
    pid
}

/// How often [`wait_accepting`] tries.
const ACCEPTING_POLL: Duration = Duration::from_millis(50);

/// Waits until `url` accepts a connection that answers `SELECT 1`; the moment it did, or `None`
/// after `timeout`.
pub async fn wait_accepting(url: &str, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(mut conn) = sqlx::PgConnection::connect(url).await
            && sqlx::query("SELECT 1").execute(&mut conn).await.is_ok()
        {
            let answered = Instant::now();
            let _ = conn.close().await;
            return Some(answered);
        }
        tokio::time::sleep(ACCEPTING_POLL).await;
    }
    None
}

/// Starts the cluster in `data_root` again after its postmaster was killed, as an operator (or
/// systemd) would, retrying while the killed server's backends still hold its shared memory;
/// panics after `timeout`, or when it comes back on another port than `port`.
pub async fn start_again(data_root: &Path, port: u16, timeout: Duration) -> EmbeddedCluster {
    let deadline = Instant::now() + timeout;
    loop {
        match EmbeddedCluster::ensure_running(data_root).await {
            Ok(cluster) => {
                assert_eq!(cluster.port(), port, "Postgres is back on its port");
                return cluster;
            }
            Err(error) if Instant::now() < deadline => {
                println!("starting Postgres again: {error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => panic!("Postgres does not start again: {error}"),
        }
    }
}

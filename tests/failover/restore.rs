//! The restore drill of `docs/operations.md`, on the Patroni cluster: a base backup
//! (`pg_basebackup`) taken before any payment, the WAL every primary archived since (across the
//! failover's timeline switch), restored into a new data directory and recovered to the end of the
//! archive. [`RestoredServer`] is that server; it is stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mpe_ledger::store::postgres::hosts::{self, Target};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::{Connection, PgPool};

use crate::common::e2e::free_port;
use crate::patroni::{Patroni, REPLICATION_PASSWORD, REPLICATION_USER, SUPERUSER, SUPERUSER_PASSWORD};

/// Longest wait for the archiver to have copied the segment that holds the last payment.
const ARCHIVED_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a restored server may take to replay the archive and take connections.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the restored server may take to stop on SIGINT (fast shutdown) before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `pg_basebackup` of the node at `port` into a new directory (the WAL it needs included).
pub fn base_backup(patroni: &Patroni, port: u16) -> PathBuf {
    let target = patroni.server_user_dir("backup").join("data");
    let output = patroni
        .server_command("pg_basebackup")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            REPLICATION_USER,
            "-X",
            "stream",
            "-c",
            "fast",
            "-D",
        ])
        .arg(&target)
        .env("PGPASSWORD", REPLICATION_PASSWORD)
        .output()
        .expect("pg_basebackup runs");
    assert!(output.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&output.stderr));
    target
}

/// Ends the current WAL segment on the primary at `url` and waits until it is archived, as a drill
/// does to include the newest commit (in production `archive_timeout` bounds how old it may be).
pub async fn archive_current_wal(url: &str) {
    let mut conn = hosts::connect(url).await.expect("the primary");
    let segment: String = sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())")
        .fetch_one(&mut conn)
        .await
        .expect("pg_switch_wal");
    let deadline = Instant::now() + ARCHIVED_TIMEOUT;
    loop {
        let archived: Option<String> = sqlx::query_scalar("SELECT last_archived_wal FROM pg_stat_archiver")
            .fetch_one(&mut conn)
            .await
            .expect("pg_stat_archiver");
        // Segment names of one timeline sort in WAL order.
        if archived.as_deref().is_some_and(|a| a.len() == segment.len() && a >= segment.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "segment {segment} archived in time (last: {archived:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = conn.close().await;
}

/// A server recovered from a base backup and the archive.
pub struct RestoredServer {
    process: Child,
    pub port: u16,
}

impl RestoredServer {
    /// Starts Postgres on `backup` with `restore_command` reading `archive`, no target (recover
    /// everything, then promote), on a free port; returns once it takes read-write sessions.
    pub async fn start(patroni: &Patroni, backup: &Path, archive: &Path) -> Self {
        std::fs::write(backup.join("recovery.signal"), "").unwrap();
        let port = free_port();
        let socket_dir = backup.parent().unwrap();
        let log = std::fs::File::create(socket_dir.join("restored.log")).unwrap();
        let process = patroni
            .server_command("postgres")
            .arg("-D")
            .arg(backup)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "archive_mode=off"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", socket_dir.display()))
            .arg("-c")
            .arg(format!("restore_command=cp {}/%f %p", archive.display()))
            .args(["-c", "synchronous_standby_names=", "-c", "hot_standby=on"])
            // Patroni's postgresql.conf names the files of the node the backup was taken from.
            .arg("-c")
            .arg(format!("hba_file={}", backup.join("pg_hba.conf").display()))
            .arg("-c")
            .arg(format!("ident_file={}", backup.join("pg_ident.conf").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("postgres starts on the restored backup");
        let server = Self { process, port };
        let url = server.url();
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        while hosts::connect(&url).await.is_err() {
            let log = std::fs::read_to_string(socket_dir.join("restored.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "the restored server recovers in time:\n{log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// The superuser's URL of the restored ledger database, read-write only (recovery is over).
    pub fn url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}:{SUPERUSER_PASSWORD}@127.0.0.1:{}/{}?target_session_attrs=read-write",
            self.port,
            mpe_ledger::startup::cluster::DATABASE_NAME
        )
    }

    pub async fn pool(&self) -> PgPool {
        let url = self.url();
        let target: Target = url.parse().unwrap();
        PgPool::connect_with(target.hosts[0].options.clone()).await.expect("the restored server")
    }
}

impl Drop for RestoredServer {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.process.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline && matches!(self.process.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

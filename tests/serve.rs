//! `mpe-ledger serve` as a new user runs it: no configuration, its own Postgres cluster in a data
//! directory, `/healthz` and `/metrics`, graceful shutdown on SIGTERM that stops the cluster, and a
//! second start that reuses the data directory and loses nothing. One owner per data directory: a
//! second `serve` beside a live one is refused at once, and after a kill -9 of the owner the next
//! `serve` adopts the cluster left running and stops it when it stops.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::StopClusterOnDrop;
use common::ledger::http_get as get;
use mpe_ledger::startup::cluster::{DATABASE_NAME, EmbeddedCluster, is_running};
use mpe_ledger::store::AtomicStorage;
use mpe_ledger::store::postgres::{PgAtomicStorage, connect};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::Connection;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `serve` child process, killed if a failing test leaves it running (so it cannot outlive the
/// test and restart a cluster in a deleted directory).
struct Serve(Child);

impl Serve {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start_serve(data_dir: &Path, port: u16) -> Serve {
    Serve(
        Command::new(env!("CARGO_BIN_EXE_mpe-ledger"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("DATABASE_URL")
            .env_remove("MIGRATION_DATABASE_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .spawn()
            .expect("start mpe-ledger serve"),
    )
}

async fn wait_healthy(port: u16, child: &mut Serve) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok((200, body)) = get(port, "/healthz").await {
            assert_eq!(body, "ok\n");
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("serve exited early with {status}");
        }
        assert!(Instant::now() < deadline, "serve did not become healthy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn terminate(mut child: Serve) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "serve exited with {status} after SIGTERM");
            return;
        }
        assert!(Instant::now() < deadline, "serve did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn storage_of_running_cluster(data_dir: &Path) -> PgAtomicStorage {
    let cluster = EmbeddedCluster::ensure_running(data_dir).await.unwrap();
    assert!(!cluster.started_here(), "serve's cluster should already be running");
    let pool = connect(&cluster.url(DATABASE_NAME), 2).await.unwrap();
    PgAtomicStorage::new(pool, std::sync::Arc::new(mpe_ledger::store::retry::StoreMetrics::unregistered()))
}

#[tokio::test]
async fn serve_runs_its_own_cluster_stops_it_on_sigterm_and_keeps_the_data_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let guard = StopClusterOnDrop(dir.path().join("ledger"));
    let data_dir = guard.root().to_path_buf();

    let port = free_port();
    let mut first = start_serve(&data_dir, port);
    wait_healthy(port, &mut first).await;
    let (status, metrics) = get(port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("mpe_ledger_serialization_retries_total"), "{metrics}");
    let storage = storage_of_running_cluster(&data_dir).await;
    storage.put(b"survives", b"restart").await.unwrap();
    terminate(first);
    assert!(!is_running(&data_dir).await.unwrap(), "graceful shutdown stops the cluster it started");

    let port = free_port();
    let mut second = start_serve(&data_dir, port);
    wait_healthy(port, &mut second).await;
    let storage = storage_of_running_cluster(&data_dir).await;
    assert_eq!(storage.get(b"survives").await.unwrap(), Some(b"restart".to_vec()));
    terminate(second);
    assert!(!is_running(&data_dir).await.unwrap());
}

fn kill_9(mut child: Serve) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "serve was killed, yet exited with {status}");
}

#[tokio::test]
async fn a_second_serve_on_a_data_directory_a_live_serve_owns_is_refused_at_once_naming_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let guard = StopClusterOnDrop(dir.path().join("ledger"));
    let data_dir = guard.root().to_path_buf();
    let port = free_port();
    let mut owner = start_serve(&data_dir, port);
    wait_healthy(port, &mut owner).await;

    let second = Command::new(env!("CARGO_BIN_EXE_mpe-ledger"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("MIGRATION_DATABASE_URL")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("mpe-ledger serve` (pid {})", owner.id())), "{stderr}");
    assert!(stderr.contains("the same DATABASE_URL"), "{stderr}");

    // The owner never noticed.
    wait_healthy(port, &mut owner).await;
    terminate(owner);
    assert!(!is_running(&data_dir).await.unwrap());
    drop(guard);
}

#[tokio::test]
async fn after_a_kill_9_of_serve_the_next_serve_adopts_the_cluster_left_running_and_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let guard = StopClusterOnDrop(dir.path().join("ledger"));
    let data_dir = guard.root().to_path_buf();
    let port = free_port();
    let mut killed = start_serve(&data_dir, port);
    wait_healthy(port, &mut killed).await;
    storage_of_running_cluster(&data_dir).await.put(b"before", b"kill -9").await.unwrap();
    kill_9(killed);
    assert!(is_running(&data_dir).await.unwrap(), "a kill -9 of serve leaves its cluster running");

    let port = free_port();
    let mut adopter = start_serve(&data_dir, port);
    wait_healthy(port, &mut adopter).await;
    let storage = storage_of_running_cluster(&data_dir).await;
    assert_eq!(storage.get(b"before").await.unwrap(), Some(b"kill -9".to_vec()));
    terminate(adopter);
    assert!(!is_running(&data_dir).await.unwrap(), "the adopter stops the cluster it adopted");
    drop(guard);
}

/// The server binaries cannot be uninstalled here, so the same refusal is provoked by pointing
/// `MPE_LEDGER_PG_BIN` at a directory without them.
#[test]
fn missing_server_binaries_are_reported_in_one_line_naming_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mpe-ledger"))
        .arg("migrate")
        .arg("--data-dir")
        .arg(dir.path().join("ledger"))
        .env_remove("DATABASE_URL")
        .env("MPE_LEDGER_PG_BIN", dir.path().join("no-such-bin"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("\"postgresql\""), "{stderr}");
}

#[test]
fn an_invalid_setting_stops_start_up_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mpe-ledger"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("ledger"))
        .env_remove("DATABASE_URL")
        .env("MPE_LEDGER_PRICE", "10")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("invalid setting ethereum_rpc_url: missing"), "{stderr}");
}

/// `mpe-ledger ARGS --data-dir DATA_DIR`, which must succeed.
async fn read_only_commands_succeed(data_dir: &Path) {
    let data_dir = data_dir.display().to_string();
    for command in [&["verify"][..], &["leases", "list"], &["export", "events"], &["export", "payments"]] {
        common::ledger::run_command(&[command, &["--data-dir", &data_dir]].concat(), &[])
            .await
            .assert_success();
    }
}

#[tokio::test]
async fn read_only_commands_use_the_embedded_cluster_with_and_without_serve_and_never_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let guard = StopClusterOnDrop(dir.path().join("ledger"));
    let data_dir = guard.root().to_path_buf();
    let data_dir_text = data_dir.display().to_string();
    let ledger = |args: &'static [&'static str]| {
        let args: Vec<&str> = [args, &["--data-dir", &data_dir_text]].concat();
        async move { common::ledger::run_command(&args, &[]).await }
    };

    let refused = ledger(&["verify"]).await;
    assert!(!refused.success());
    assert!(refused.stderr.contains("there is no ledger in"), "{}", refused.stderr);
    assert!(!data_dir.exists(), "a read-only command created a data directory");

    ledger(&["migrate"]).await.assert_success();
    assert!(!is_running(&data_dir).await.unwrap());
    // Nobody runs it: each command starts it, and stops it after.
    read_only_commands_succeed(&data_dir).await;
    assert!(!is_running(&data_dir).await.unwrap(), "a read-only command left the cluster running");

    // Beside a running serve: they attach and leave it running.
    let port = free_port();
    let mut serve = start_serve(&data_dir, port);
    wait_healthy(port, &mut serve).await;
    read_only_commands_succeed(&data_dir).await;
    assert!(is_running(&data_dir).await.unwrap(), "a read-only command stopped serve's cluster");
    wait_healthy(port, &mut serve).await;
    terminate(serve);
    assert!(!is_running(&data_dir).await.unwrap());

    // A schema they do not know is refused, and the cluster they started for it stopped again.
    let cluster = EmbeddedCluster::ensure_running(&data_dir).await.unwrap();
    let mut owner = sqlx::PgConnection::connect(&cluster.url(DATABASE_NAME)).await.unwrap();
    sqlx::raw_sql("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'later', true, '\\x00', 0)")
        .execute(&mut owner)
        .await
        .unwrap();
    sqlx::Connection::close(owner).await.unwrap();
    cluster.stop().await.unwrap();
    let refused = ledger(&["verify"]).await;
    assert!(refused.stderr.contains("the database is at migration 9999"), "{}", refused.stderr);
    assert!(!is_running(&data_dir).await.unwrap(), "the refusing command left the cluster running");
    drop(guard);
}

//! A Patroni cluster on loopback, started by the test itself: one etcd member and [`NODES`]
//! Patroni nodes (a primary and a synchronous standby), each in a temporary directory on free
//! ports, all stopped when [`Patroni`] is dropped (SIGTERM to each Patroni, which stops its
//! Postgres; SIGKILL to whatever is left after [`STOP_TIMEOUT`]), also when the test fails.
//!
//! As root, Patroni runs as the `postgres` system user (Postgres refuses root), started with
//! `CommandExt::uid`/`gid` so that the pid held is Patroni's own. The Postgres binaries are the
//! ones the embedded cluster uses (`cluster::server_bin_dir`). Every primary archives its WAL into
//! one directory ([`Patroni::archive_dir`]), as production would to its backup store.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mpe_ledger::startup::cluster::server_bin_dir;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, geteuid};

use crate::common::e2e::free_port;
use crate::common::ledger::http_get;

/// A primary and one synchronous standby.
pub const NODES: usize = 2;
/// Patroni's leader key lives this long without renewal: the floor of a failover's duration.
/// Patroni wants `loop_wait + 2 * retry_timeout <= ttl`.
const TTL_SECONDS: u32 = 10;
const LOOP_WAIT_SECONDS: u32 = 1;
const RETRY_TIMEOUT_SECONDS: u32 = 4;
/// How long each Patroni may take to stop its Postgres on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the cluster's state is asked for while waiting on it.
const POLL: Duration = Duration::from_millis(200);
pub const SUPERUSER: &str = "postgres";
pub const SUPERUSER_PASSWORD: &str = "patroni-superuser-password";
pub const REPLICATION_USER: &str = "replicator";
pub const REPLICATION_PASSWORD: &str = "patroni-replication-password";
const SCOPE: &str = "mpe-ledger-failover";

struct Node {
    name: String,
    pg_port: u16,
    api_port: u16,
    dir: PathBuf,
    patroni: Option<Child>,
}

/// The running cluster (module doc).
pub struct Patroni {
    dir: tempfile::TempDir,
    etcd: Option<Child>,
    nodes: Vec<Node>,
    user: Option<User>,
}

/// One member as Patroni's REST API lists it.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub role: String,
    pub state: String,
}

impl Patroni {
    /// etcd, then the first node (it bootstraps and leads), then the second; returns once the
    /// second streams as the synchronous standby.
    pub async fn start(timeout: Duration) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let user = geteuid()
            .is_root()
            .then(|| User::from_name("postgres").ok().flatten().expect("the postgres user"));
        let mut cluster = Self { dir, etcd: None, nodes: Vec::new(), user };
        cluster.give_to_server_user(cluster.dir.path());
        std::fs::create_dir(cluster.archive_dir()).unwrap();
        cluster.give_to_server_user(&cluster.archive_dir());
        let etcd_client = free_port();
        cluster.start_etcd(etcd_client);
        let bin_dir = server_bin_dir().expect("the PostgreSQL server binaries");
        for index in 0..NODES {
            let node = cluster.configure_node(index, etcd_client, &bin_dir);
            cluster.nodes.push(node);
        }
        let deadline = Instant::now() + timeout;
        cluster.spawn_patroni(0);
        cluster
            .wait_until(deadline, "a leader", |m| {
                m.iter().any(|m| m.role == "leader" && m.state == "running")
            })
            .await;
        for index in 1..NODES {
            cluster.spawn_patroni(index);
        }
        cluster
            .wait_until(deadline, "a streaming synchronous standby", |m| {
                m.iter()
                    .any(|m| m.role == "sync_standby" && matches!(m.state.as_str(), "streaming" | "running"))
            })
            .await;
        cluster
    }

    /// Where every primary archives its WAL (`archive_command`), for the restore drill.
    pub fn archive_dir(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    /// A directory of the cluster's temporary directory that the server user owns.
    pub fn server_user_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        self.give_to_server_user(&dir);
        dir
    }

    /// `program` of the PostgreSQL server binaries, run as the server user.
    pub fn server_command(&self, program: &str) -> Command {
        let bin_dir = server_bin_dir().expect("the PostgreSQL server binaries");
        let mut command = Command::new(bin_dir.join(program));
        if let Some(user) = &self.user {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        command
    }

    fn give_to_server_user(&self, path: &Path) {
        if let Some(user) = &self.user {
            std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .expect("chown to the postgres user");
        }
    }

    fn start_etcd(&mut self, client_port: u16) {
        let peer_port = free_port();
        let data = self.dir.path().join("etcd");
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd's log file");
        let etcd = Command::new("etcd")
            .args(["--name", "etcd0", "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("etcd0={peer}"), "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd starts (Debian package etcd-server; scripts/install-deps.sh installs it)");
        self.etcd = Some(etcd);
    }

    fn configure_node(&self, index: usize, etcd_client: u16, bin_dir: &Path) -> Node {
        let name = format!("node{index}");
        let dir = self.dir.path().join(&name);
        std::fs::create_dir(&dir).unwrap();
        self.give_to_server_user(&dir);
        let (pg_port, api_port) = (free_port(), free_port());
        let dir_text = dir.display();
        let config = format!(
            "scope: {SCOPE}
name: {name}
restapi:
  listen: 127.0.0.1:{api_port}
  connect_address: 127.0.0.1:{api_port}
etcd3:
  hosts: 127.0.0.1:{etcd_client}
bootstrap:
  dcs:
    ttl: {TTL_SECONDS}
    loop_wait: {LOOP_WAIT_SECONDS}
    retry_timeout: {RETRY_TIMEOUT_SECONDS}
    synchronous_mode: true
    postgresql:
      parameters:
        archive_mode: 'on'
        archive_command: 'test ! -f {archive}/%f && cp %p {archive}/%f'
  pg_hba:
  - local all all trust
  - host replication {REPLICATION_USER} 127.0.0.1/32 scram-sha-256
  - host all all 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {dir_text}/data
  bin_dir: {bin_dir}
  pgpass: {dir_text}/pgpass
  authentication:
    superuser: {{username: {SUPERUSER}, password: {SUPERUSER_PASSWORD}}}
    replication: {{username: {REPLICATION_USER}, password: {REPLICATION_PASSWORD}}}
  parameters:
    unix_socket_directories: {dir_text}
",
            bin_dir = bin_dir.display(),
            archive = self.archive_dir().display(),
        );
        std::fs::write(dir.join("patroni.yml"), config).unwrap();
        Node { name, pg_port, api_port, dir, patroni: None }
    }

    fn spawn_patroni(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let log = std::fs::File::create(node.dir.join("patroni.log")).expect("Patroni's log file");
        let mut command = Command::new("patroni");
        command
            .arg(node.dir.join("patroni.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        command.current_dir(&node.dir);
        if let Some(user) = &self.user {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw()).env("HOME", &node.dir);
        }
        node.patroni = Some(command.spawn().expect("Patroni starts (Debian package patroni)"));
    }

    /// The members as a live node's REST API lists them (empty when none answers).
    pub async fn members(&self) -> Vec<Member> {
        for node in self.nodes.iter().filter(|node| node.patroni.is_some()) {
            let Ok((200, body)) = http_get(node.api_port, "/cluster").await else { continue };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else { continue };
            let field = |m: &serde_json::Value, key: &str| m[key].as_str().unwrap_or_default().to_owned();
            return json["members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| Member { name: field(m, "name"), role: field(m, "role"), state: field(m, "state") })
                .collect();
        }
        Vec::new()
    }

    /// Waits until `done` holds for the members; panics at `deadline` with the logs' tails.
    pub async fn wait_until(
        &self,
        deadline: Instant,
        what: &str,
        done: impl Fn(&[Member]) -> bool,
    ) -> Vec<Member> {
        loop {
            let members = self.members().await;
            if done(&members) {
                return members;
            }
            if Instant::now() >= deadline {
                panic!("Patroni: no {what} in time; members {members:?}\n{}", self.logs());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The index of the node that leads now.
    pub async fn leader(&self) -> Option<usize> {
        let members = self.members().await;
        let leader = members.iter().find(|m| m.role == "leader")?;
        self.nodes.iter().position(|node| node.name == leader.name)
    }

    pub fn name(&self, index: usize) -> &str {
        &self.nodes[index].name
    }

    pub fn pg_port(&self, index: usize) -> u16 {
        self.nodes[index].pg_port
    }

    /// A URL naming every node, in order, for `target_session_attrs=read-write`.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        let hosts: Vec<String> =
            self.nodes.iter().map(|node| format!("127.0.0.1:{}", node.pg_port)).collect();
        format!("postgres://{user}:{password}@{}/{database}?target_session_attrs=read-write", hosts.join(","))
    }

    /// SIGKILL of the node's Patroni and of its postmaster (killing the postmaster alone makes
    /// Patroni restart it in place; killing Patroni alone leaves Postgres serving).
    pub fn kill(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let postmaster = postmaster_pid(&node.dir.join("data")).expect("the postmaster's pid");
        if let Some(mut patroni) = node.patroni.take() {
            let _ = patroni.kill();
            let _ = patroni.wait();
        }
        let _ = kill(Pid::from_raw(postmaster), Signal::SIGKILL);
    }

    /// The tail of etcd's and every Patroni's log.
    pub fn logs(&self) -> String {
        let tail = |path: PathBuf| {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!("--- {}\n{}\n", path.display(), lines[lines.len().saturating_sub(20)..].join("\n"))
        };
        let mut logs = tail(self.dir.path().join("etcd.log"));
        for node in &self.nodes {
            logs.push_str(&tail(node.dir.join("patroni.log")));
        }
        logs
    }
}

fn postmaster_pid(data: &Path) -> Option<i32> {
    std::fs::read_to_string(data.join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
}

impl Drop for Patroni {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(patroni) = &node.patroni {
                let _ = kill(Pid::from_raw(patroni.id() as i32), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for node in &mut self.nodes {
            if let Some(mut patroni) = node.patroni.take() {
                while Instant::now() < deadline && matches!(patroni.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = patroni.kill();
                let _ = patroni.wait();
            }
            // Whatever Postgres is left (one Patroni did not stop in time), if the pid is still
            // a postmaster of this node's data directory.
            let data = node.dir.join("data");
            if let Some(pid) = postmaster_pid(&data) {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&*data.to_string_lossy()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        if let Some(mut etcd) = self.etcd.take() {
            let _ = etcd.kill();
            let _ = etcd.wait();
        }
    }
}

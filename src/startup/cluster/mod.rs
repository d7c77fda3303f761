//! A PostgreSQL cluster of our own, kept in a data root and run from the installed server binaries.
//!
//! What this module keeps true:
//! - One cluster per data root. Every decision to initialise or start it is taken while holding an
//!   exclusive `flock` on `cluster.lock`, so concurrent callers start it once and the rest attach.
//! - One owner per data root ([`ownership`]): `serve` owns it for its whole life (a second `serve`
//!   is refused at once, naming the owner's pid), stops it on its graceful stop, and adopts a
//!   cluster left running by an owner that was killed.
//! - The server never runs as root: under euid 0 every server command runs as an unprivileged user
//!   (`postgres`, else a created `mpe-ledger` system user, or whoever already owns `pgdata`), which
//!   owns the data root.
//! - The server listens on 127.0.0.1 only, without a unix socket, and authenticates with
//!   scram-sha-256. The superuser password exists only in `superuser-password` (mode 0600) and in
//!   memory; it is never logged and is redacted from errors.
//! - Two logins: the superuser, for migrations only ([`EmbeddedCluster::url`]), and the service's
//!   `mpe_ledger_writer`, neither superuser nor owner ([`EmbeddedCluster::writer_url`]), whose
//!   password lives in `writer-password`; a data root from before that login gets it on its next
//!   start ([`writer_login`]).
//! - Durability stays on (`fsync=on`).
//!
//! Layout of the data root: `pgdata/` (the cluster), `superuser-password`, `writer-password`,
//! `port` (last port used), `server.log` (`pg_ctl -l`), `cluster.lock`, `owner.lock` (pid and
//! command of the owner).

mod data_root;
mod error;
mod ownership;
mod server;
mod server_user;
pub mod supervisor;
mod writer_login;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::{User, geteuid};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Connection};

pub use error::ClusterError;

use crate::store::postgres::WRITER_ROLE;
pub use data_root::generate_password;
use data_root::{choose_port, lock_data_root, prepare_data_root, read_password, read_port, write_private};
use error::io_err;
use ownership::ClusterOwner;
use server::{Server, initdb, locate_binaries, start};
use server_user::{known_server_user, server_user};

/// The database the ledger keeps its tables in.
pub const DATABASE_NAME: &str = "mpe_ledger";

const SUPERUSER: &str = "postgres";
const PG_BIN_ENV: &str = "MPE_LEDGER_PG_BIN";

const PGDATA_DIR: &str = "pgdata";
const PASSWORD_FILE: &str = "superuser-password";
const PORT_FILE: &str = "port";

/// How long we keep trying to connect after the server reports ready (or when attaching).
const CONNECT_DEADLINE: Duration = Duration::from_secs(15);
const CONNECT_RETRY: Duration = Duration::from_millis(200);

/// Where `serve` keeps its cluster when no DATABASE_URL is given.
pub fn default_data_root() -> PathBuf {
    if geteuid().is_root() {
        return PathBuf::from("/var/lib/mpe-ledger");
    }
    // The XDG spec says relative values are to be ignored.
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return xdg.join("mpe-ledger");
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.dir))
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/mpe-ledger")
}

/// The server commands for `data_root`, creating it (and, under root, the server user) if needed.
async fn prepare(data_root: &Path) -> Result<Server, ClusterError> {
    let bin_dir = locate_binaries()?;
    let user = server_user(&data_root.join(PGDATA_DIR), true).await?;
    let root = prepare_data_root(data_root, user.as_ref())?;
    Ok(Server { bin_dir, user, data_root: root })
}

/// The directory of the PostgreSQL server binaries the embedded cluster uses (`MPE_LEDGER_PG_BIN`,
/// else Debian's newest `/usr/lib/postgresql/<major>/bin`, else `PATH`), for tools that run a
/// server of their own on the same binaries (Patroni's `bin_dir`).
pub fn server_bin_dir() -> Result<PathBuf, ClusterError> {
    server::locate_binaries()
}

/// Whether `data_root` holds an initialised cluster (running or not).
pub fn exists_in(data_root: &Path) -> bool {
    data_root.join(PGDATA_DIR).join("PG_VERSION").exists()
}

/// Whether the cluster in `data_root` is running (`pg_ctl status`). No cluster means not running.
pub async fn is_running(data_root: &Path) -> Result<bool, ClusterError> {
    let pgdata = data_root.join(PGDATA_DIR);
    if !pgdata.join("PG_VERSION").exists() {
        return Ok(false);
    }
    existing_server(data_root)?.status().await
}

/// Blocking `pg_ctl stop -m fast -w` of the cluster in `data_root`, for `Drop` guards and tests
/// that hold no [`EmbeddedCluster`] (its owner was killed). Not running is not an error.
pub fn stop_blocking_in(data_root: &Path) -> Result<(), ClusterError> {
    if !data_root.join(PGDATA_DIR).join("PG_VERSION").exists() {
        return Ok(());
    }
    existing_server(data_root)?.stop_blocking()
}

/// How to run the server commands of the cluster already in `data_root`.
fn existing_server(data_root: &Path) -> Result<Server, ClusterError> {
    Ok(Server {
        bin_dir: locate_binaries()?,
        user: known_server_user(&data_root.join(PGDATA_DIR))?,
        data_root: std::path::absolute(data_root).map_err(io_err("resolve", data_root))?,
    })
}

/// A running cluster in a data root, started by this process or attached to.
pub struct EmbeddedCluster {
    server: Server,
    port: u16,
    password: String,
    /// The service's login ([`WRITER_ROLE`]), see [`writer_login`].
    writer_password: String,
    started_here: bool,
    /// Held by the owner for as long as this value lives ([`ownership`]).
    owner: Option<ClusterOwner>,
}

impl fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedCluster")
            .field("data_root", &self.server.data_root)
            .field("port", &self.port)
            .field("started_here", &self.started_here)
            .finish_non_exhaustive()
    }
}

impl EmbeddedCluster {
    /// Initialises the cluster if the data root has none, starts it if it is not running, or
    /// attaches to the one already running there (started by another process). Safe to call
    /// concurrently from several processes on the same data root: the work happens under an
    /// exclusive flock on `cluster.lock`. Takes no ownership ([`ownership`]): the caller decides
    /// from [`Self::started_here`] whether to stop it.
    pub async fn ensure_running(data_root: &Path) -> Result<EmbeddedCluster, ClusterError> {
        Self::start_or_attach(prepare(data_root).await?, None).await
    }

    /// Takes ownership of the data root for `command` (refusing at once, naming the owner, when a
    /// live process owns it), then initialises, starts or adopts the cluster. The owner stops it
    /// on [`Self::stop_if_owner`], whoever started it.
    pub async fn own(data_root: &Path, command: &str) -> Result<EmbeddedCluster, ClusterError> {
        let server = prepare(data_root).await?;
        let owner = ClusterOwner::claim(&server, command)?;
        Self::start_or_attach(server, Some(owner)).await
    }

    /// [`Self::own`] when nobody owns the data root, else attaches as a guest that never stops
    /// the cluster (one-shot commands beside a running `serve`).
    pub async fn own_or_attach(data_root: &Path, command: &str) -> Result<EmbeddedCluster, ClusterError> {
        let server = prepare(data_root).await?;
        let owner = match ClusterOwner::claim(&server, command) {
            Ok(owner) => Some(owner),
            Err(ClusterError::Owned { pid, command: owner, .. }) => {
                tracing::info!(
                    pid,
                    owner,
                    "the embedded cluster is owned by another process: attaching to it"
                );
                None
            }
            Err(error) => return Err(error),
        };
        Self::start_or_attach(server, owner).await
    }

    async fn start_or_attach(
        server: Server,
        owner: Option<ClusterOwner>,
    ) -> Result<EmbeddedCluster, ClusterError> {
        let _lock = lock_data_root(&server).await?;

        let pgdata = server.pgdata();
        let password_path = server.data_root.join(PASSWORD_FILE);
        let initialised = pgdata.join("PG_VERSION").exists();
        let password = match read_password(&password_path)? {
            Some(pw) => pw,
            // Without the file nobody can log in to an existing cluster: refuse rather than guess.
            None if initialised => {
                return Err(io_err("read", &password_path)(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the superuser password file of an existing cluster is missing",
                )));
            }
            None => {
                let pw = generate_password();
                write_private(&server, &password_path, &pw)?;
                pw
            }
        };
        if !initialised {
            initdb(&server, &password).await?;
        }

        let port_path = server.data_root.join(PORT_FILE);
        let (port, started_here) = if server.status().await? {
            let port = read_port(&port_path)?.ok_or_else(|| {
                io_err("read", &port_path)(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the server is running but its port file is missing",
                ))
            })?;
            tracing::info!(data_root = %server.data_root.display(), port, "attaching to running PostgreSQL");
            (port, false)
        } else {
            let port = choose_port(read_port(&port_path)?).await?;
            write_private(&server, &port_path, &format!("{port}\n"))?;
            start(&server, port).await?;
            (port, true)
        };

        if owner.is_some() && !started_here {
            tracing::info!(
                port,
                "adopting the running PostgreSQL left by a previous owner: it stops when this process stops"
            );
        }
        let mut cluster =
            EmbeddedCluster { server, port, password, writer_password: String::new(), started_here, owner };
        cluster.wait_until_reachable().await?;
        cluster.writer_password = writer_login::ensure_writer_login(&cluster).await?;
        tracing::info!(port, started_here, owner = cluster.is_owner(), "PostgreSQL is accepting connections");
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_root(&self) -> &Path {
        &self.server.data_root
    }

    /// True when this call started the server (rather than attaching to a running one).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// True when this process owns the cluster ([`Self::own`]) and so stops it on shutdown.
    pub fn is_owner(&self) -> bool {
        self.owner.is_some()
    }

    /// Stops the cluster if this process owns it; a guest leaves it running.
    pub async fn stop_if_owner(&self) -> Result<(), ClusterError> {
        if self.is_owner() { self.stop().await } else { Ok(()) }
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/<database>`: the superuser URL. It
    /// contains the password; do not log it (see [`Self::redacted_url`]).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}", self.password, self.port)
    }

    /// `postgres://mpe_ledger_writer:<password>@127.0.0.1:<port>/<database>`: the service's login,
    /// neither superuser nor owner. It contains the password; do not log it.
    pub fn writer_url(&self, database: &str) -> String {
        format!("postgres://{WRITER_ROLE}:{}@127.0.0.1:{}/{database}", self.writer_password, self.port)
    }

    /// [`Self::url`] with the password masked, for logs and errors.
    pub fn redacted_url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}:***@127.0.0.1:{}/{database}", self.port)
    }

    fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.port)
            .username(SUPERUSER)
            .password(&self.password)
            .database(database)
    }

    async fn connect(&self, database: &str) -> Result<PgConnection, ClusterError> {
        PgConnection::connect_with(&self.connect_options(database))
            .await
            .map_err(|source| ClusterError::Connect { url: self.redacted_url(database), source })
    }

    async fn wait_until_reachable(&self) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
        loop {
            match self.connect("postgres").await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(CONNECT_RETRY).await,
            }
        }
    }

    /// Whether the database `name` exists (read only: nothing is created).
    pub async fn has_database(&self, name: &str) -> Result<bool, ClusterError> {
        let mut conn = self.connect("postgres").await?;
        let sql = "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)";
        let exists = sqlx::query_scalar(sql).bind(name).fetch_one(&mut conn).await.map_err(|source| {
            ClusterError::Sql { url: self.redacted_url("postgres"), statement: sql.to_string(), source }
        });
        let _ = conn.close().await;
        exists
    }

    /// `CREATE DATABASE <name>` unless it exists. A concurrent creator is not an error.
    pub async fn create_database_if_missing(&self, name: &str) -> Result<(), ClusterError> {
        let mut conn = self.connect("postgres").await?;
        let url = self.redacted_url("postgres");
        let exists_sql = "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)";
        let exists: bool =
            sqlx::query_scalar(exists_sql).bind(name).fetch_one(&mut conn).await.map_err(|source| {
                ClusterError::Sql { url: url.clone(), statement: exists_sql.to_string(), source }
            })?;
        if !exists {
            let statement = format!("CREATE DATABASE {}", quote_ident(name));
            match sqlx::raw_sql(AssertSqlSafe(statement.clone())).execute(&mut conn).await {
                Ok(_) => tracing::info!(database = name, "created database"),
                // 42P04 duplicate_database; 23505 when the race is lost inside the catalog insert.
                Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
                Err(source) => {
                    return Err(ClusterError::Sql { url, statement, source });
                }
            }
        }
        let _ = conn.close().await;
        Ok(())
    }

    /// `pg_ctl stop -m fast -w`. Stopping a cluster that is not running is not an error.
    pub async fn stop(&self) -> Result<(), ClusterError> {
        tracing::info!(data_root = %self.server.data_root.display(), "stopping PostgreSQL");
        match self.server.run_ok("pg_ctl", &self.server.stop_args()).await {
            Ok(_) => Ok(()),
            Err(e) => match self.server.status().await {
                Ok(false) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Blocking `pg_ctl stop -m fast -w`, for `Drop` guards and panics where no runtime can be
    /// awaited. Not running is not an error.
    pub fn stop_blocking(&self) -> Result<(), ClusterError> {
        self.server.stop_blocking()
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

//! A PostgreSQL cluster of our own, kept in a data root and run from the installed server binaries.
//!
//! What this module keeps true:
//! - One cluster per data root. Every decision to initialise or start it is taken while holding an
//!   exclusive `flock` on `cluster.lock`, so concurrent callers start it once and the rest attach.
//! - The server never runs as root: under euid 0 every server command runs as an unprivileged user
//!   (`postgres`, else a created `mpe-ledger` system user, or whoever already owns `pgdata`), which
//!   owns the data root.
//! - The server listens on 127.0.0.1 only, without a unix socket, and authenticates with
//!   scram-sha-256. The superuser password exists only in `superuser-password` (mode 0600) and in
//!   memory; it is never logged and is redacted from errors.
//! - Durability stays on (`fsync=on`).
//!
//! Layout of the data root: `pgdata/` (the cluster), `superuser-password`, `port` (last port used),
//! `server.log` (`pg_ctl -l`), `cluster.lock`.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use nix::unistd::{Uid, User, geteuid};
use rand::Rng;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Connection};

/// The database the ledger keeps its tables in.
pub const DATABASE_NAME: &str = "mpe_ledger";

const SUPERUSER: &str = "postgres";
/// The user created for the server when we run as root and the Debian `postgres` user is absent.
const FALLBACK_SYSTEM_USER: &str = "mpe-ledger";
const PG_BIN_ENV: &str = "MPE_LEDGER_PG_BIN";
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

const PGDATA_DIR: &str = "pgdata";
const PASSWORD_FILE: &str = "superuser-password";
const PORT_FILE: &str = "port";
const LOG_FILE: &str = "server.log";
const LOCK_FILE: &str = "cluster.lock";
const INITDB_PWFILE: &str = ".initdb-pwfile";
const PASSWORD_LEN: usize = 32;

/// `pg_ctl start -t`, in seconds.
const START_TIMEOUT_SECS: u32 = 60;
/// How long we keep trying to connect after the server reports ready (or when attaching).
const CONNECT_DEADLINE: Duration = Duration::from_secs(15);
const CONNECT_RETRY: Duration = Duration::from_millis(200);
const LOG_TAIL_BYTES: u64 = 8192;
const LOG_TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package \"postgresql\" (apt-get install postgresql) or set DATABASE_URL"
    )]
    ServerBinariesMissing,

    #[error(
        "{PG_BIN_ENV}={} does not contain executable initdb and pg_ctl: point it at the server binaries of the Debian package \"postgresql\" (/usr/lib/postgresql/<major>/bin)",
        dir.display()
    )]
    BadBinDir { dir: PathBuf },

    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("`{command}` failed ({status}): {output}")]
    CommandFailed { command: String, status: String, output: String },

    #[error(
        "`{command}` failed ({status}): {output}\nlast lines of {}:\n{log_tail}",
        log.display()
    )]
    StartFailed { command: String, status: String, output: String, log: PathBuf, log_tail: String },

    #[error("cannot look up system user {user}: {source}")]
    UserLookup {
        user: String,
        #[source]
        source: nix::Error,
    },

    #[error("{} is owned by uid {uid}, which has no passwd entry (or is root); cannot run the server as it", path.display())]
    UnusableOwner { path: PathBuf, uid: u32 },

    #[error(
        "the server user {user} cannot reach the data root {}: {} is not traversable by it (needs o+x); choose a data root outside {}",
        data_root.display(), dir.display(), dir.display()
    )]
    NotTraversable { user: String, data_root: PathBuf, dir: PathBuf },

    #[error(
        "{} is neither empty nor an initialised cluster (no PG_VERSION): probably an interrupted initdb; remove it to re-initialise",
        path.display()
    )]
    IncompleteCluster { path: PathBuf },

    #[error("{} does not hold a usable password (expected alphanumeric text, found {len} characters of other content)", path.display())]
    BadPasswordFile { path: PathBuf, len: usize },

    #[error("{} holds {content:?}, expected a TCP port number", path.display())]
    BadPortFile { path: PathBuf, content: String },

    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("`{statement}` on {url} failed: {source}")]
    Sql {
        url: String,
        statement: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("background task for {what} failed: {source}")]
    Join {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ClusterError + 'a {
    move |source| ClusterError::Io { action, path: path.to_path_buf(), source }
}

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

/// The unprivileged account the server runs as when we are root.
#[derive(Debug, Clone)]
struct ServerUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl From<User> for ServerUser {
    fn from(u: User) -> Self {
        ServerUser { name: u.name, uid: u.uid.as_raw(), gid: u.gid.as_raw(), home: u.dir }
    }
}

/// How to run the server binaries against one data root.
#[derive(Debug, Clone)]
struct Server {
    bin_dir: PathBuf,
    /// `None`: run as ourselves (we are not root).
    user: Option<ServerUser>,
    data_root: PathBuf,
}

impl Server {
    fn pgdata(&self) -> PathBuf {
        self.data_root.join(PGDATA_DIR)
    }

    fn command(&self, program: &str, args: &[OsString]) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.bin_dir.join(program));
        cmd.args(args)
            // initdb fails when it cannot read its working directory.
            .current_dir(&self.data_root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(user) = &self.user {
            // std drops supplementary groups when a uid is set from root.
            cmd.uid(user.uid)
                .gid(user.gid)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name)
                .env("HOME", &user.home);
        }
        cmd
    }

    async fn run(&self, program: &str, args: &[OsString]) -> Result<Output, ClusterError> {
        let described = self.describe(program, args);
        tokio::process::Command::from(self.command(program, args))
            .output()
            .await
            .map_err(|source| ClusterError::Spawn { command: described, source })
    }

    async fn run_ok(&self, program: &str, args: &[OsString]) -> Result<Output, ClusterError> {
        let out = self.run(program, args).await?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(ClusterError::CommandFailed {
                command: self.describe(program, args),
                status: out.status.to_string(),
                output: combined_output(&out),
            })
        }
    }

    fn describe(&self, program: &str, args: &[OsString]) -> String {
        let mut s = String::new();
        if let Some(user) = &self.user {
            s.push_str(&format!("(as {}) ", user.name));
        }
        s.push_str(&self.bin_dir.join(program).display().to_string());
        for a in args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Hands a path we created to the server user, so the data root is wholly theirs.
    fn give(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some(user) = &self.user {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io_err("chown", path))?;
        }
        Ok(())
    }

    fn pg_ctl_status_args(&self) -> Vec<OsString> {
        vec!["status".into(), "-D".into(), self.pgdata().into()]
    }

    async fn status(&self) -> Result<bool, ClusterError> {
        if !self.pgdata().join("PG_VERSION").exists() {
            return Ok(false);
        }
        let args = self.pg_ctl_status_args();
        let out = self.run("pg_ctl", &args).await?;
        // pg_ctl status: 0 running, 3 not running; anything else (4: no data dir) is a fault.
        match out.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(ClusterError::CommandFailed {
                command: self.describe("pg_ctl", &args),
                status: out.status.to_string(),
                output: combined_output(&out),
            }),
        }
    }

    fn stop_args(&self) -> Vec<OsString> {
        vec!["stop".into(), "-D".into(), self.pgdata().into(), "-m".into(), "fast".into(), "-w".into()]
    }
}

fn combined_output(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stdout = stdout.trim();
    if !stdout.is_empty() {
        if !s.is_empty() {
            s.push_str(" | ");
        }
        s.push_str(stdout);
    }
    if s.is_empty() {
        s.push_str("(no output)");
    }
    s
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn has_server_binaries(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl"))
}

/// Debian installs the server outside PATH, one directory per major version.
fn locate_binaries() -> Result<PathBuf, ClusterError> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_server_binaries(&dir) { Ok(dir) } else { Err(ClusterError::BadBinDir { dir }) };
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(DEBIAN_PG_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version =
                name.split('.').map(|part| part.parse::<u32>().ok()).collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_server_binaries(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_server_binaries(dir))
        .ok_or(ClusterError::ServerBinariesMissing)
}

fn lookup_user(name: &str) -> Result<Option<User>, ClusterError> {
    User::from_name(name).map_err(|source| ClusterError::UserLookup { user: name.to_string(), source })
}

/// The account to run the server as; `None` when we are not root and simply run as ourselves.
async fn server_user(pgdata: &Path, may_create: bool) -> Result<Option<ServerUser>, ClusterError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    // An existing cluster must keep running as whoever initialised it.
    if let Ok(meta) = fs::metadata(pgdata) {
        let uid = meta.uid();
        let user = (uid != 0).then(|| User::from_uid(Uid::from_raw(uid)).ok().flatten()).flatten();
        return match user {
            Some(u) => Ok(Some(u.into())),
            None => Err(ClusterError::UnusableOwner { path: pgdata.to_path_buf(), uid }),
        };
    }
    for name in [SUPERUSER, FALLBACK_SYSTEM_USER] {
        if let Some(u) = lookup_user(name)? {
            return Ok(Some(u.into()));
        }
    }
    if !may_create {
        return Ok(None);
    }
    tracing::info!(user = FALLBACK_SYSTEM_USER, "creating system user for the PostgreSQL server");
    let args = ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_SYSTEM_USER];
    let command = format!("useradd {}", args.join(" "));
    let out = tokio::process::Command::new("useradd")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| ClusterError::Spawn { command: command.clone(), source })?;
    // A concurrent creator makes useradd fail; the lookup below is what counts.
    match lookup_user(FALLBACK_SYSTEM_USER)? {
        Some(u) => Ok(Some(u.into())),
        None => Err(ClusterError::CommandFailed {
            command,
            status: out.status.to_string(),
            output: combined_output(&out),
        }),
    }
}

/// Creates the data root for the server user and checks that user can reach it.
fn prepare_data_root(data_root: &Path, user: Option<&ServerUser>) -> Result<PathBuf, ClusterError> {
    let absolute = std::path::absolute(data_root).map_err(io_err("resolve", data_root))?;
    let mut missing = Vec::new();
    let mut probe = absolute.as_path();
    while fs::symlink_metadata(probe).is_err() {
        missing.push(probe.to_path_buf());
        match probe.parent() {
            Some(parent) => probe = parent,
            None => break,
        }
    }
    if let Some(user) = user {
        // Checked before creating anything, so a refused data root leaves no debris. What we create
        // is the user's; what exists already must let the user through.
        let existing = fs::canonicalize(probe).map_err(io_err("resolve", probe))?;
        let first_foreign = if missing.is_empty() { existing.parent() } else { Some(existing.as_path()) };
        for dir in first_foreign.into_iter().flat_map(Path::ancestors) {
            let meta = fs::metadata(dir).map_err(io_err("stat", dir))?;
            let mode = meta.mode();
            let traversable = mode & 0o001 != 0
                || (meta.uid() == user.uid && mode & 0o100 != 0)
                || (meta.gid() == user.gid && mode & 0o010 != 0);
            if !traversable {
                return Err(ClusterError::NotTraversable {
                    user: user.name.clone(),
                    data_root: absolute,
                    dir: dir.to_path_buf(),
                });
            }
        }
    }
    fs::create_dir_all(&absolute).map_err(io_err("create directory", &absolute))?;
    let root = fs::canonicalize(&absolute).map_err(io_err("resolve", &absolute))?;
    if let Some(user) = user {
        for dir in missing.iter().rev() {
            std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)).map_err(io_err("chown", dir))?;
        }
        let meta = fs::metadata(&root).map_err(io_err("stat", &root))?;
        if meta.uid() != user.uid || meta.gid() != user.gid {
            std::os::unix::fs::chown(&root, Some(user.uid), Some(user.gid))
                .map_err(io_err("chown", &root))?;
        }
    }
    let meta = fs::metadata(&root).map_err(io_err("stat", &root))?;
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).map_err(io_err("chmod 0700", &root))?;
    }
    Ok(root)
}

async fn lock_data_root(server: &Server) -> Result<File, ClusterError> {
    let path = server.data_root.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("open lock file", &path))?;
    server.give(&path)?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(TryLockError::WouldBlock) => {
            tracing::info!(lock = %path.display(), "waiting for another process to finish starting the cluster");
        }
        Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
    }
    let what = path.display().to_string();
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|source| ClusterError::Join { what, source })?
        .map_err(io_err("lock", &path))
}

fn generate_password() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(PASSWORD_LEN).map(char::from).collect()
}

/// Writes `content` to a fresh file with mode 0600, owned by the server user.
fn write_private(server: &Server, path: &Path, content: &str) -> Result<(), ClusterError> {
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create", path))?;
    file.write_all(content.as_bytes()).and_then(|()| file.sync_all()).map_err(io_err("write", path))?;
    server.give(path)
}

fn read_password(path: &Path) -> Result<Option<String>, ClusterError> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let pw = s.trim();
            if pw.is_empty() || !pw.chars().all(|c| c.is_ascii_alphanumeric()) {
                // The content is a secret: report only its length.
                return Err(ClusterError::BadPasswordFile { path: path.to_path_buf(), len: pw.len() });
            }
            Ok(Some(pw.to_string()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

fn read_port(path: &Path) -> Result<Option<u16>, ClusterError> {
    match fs::read_to_string(path) {
        Ok(s) => s.trim().parse::<u16>().ok().filter(|p| *p != 0).map(Some).ok_or_else(|| {
            ClusterError::BadPortFile {
                path: path.to_path_buf(),
                content: s.trim().chars().take(40).collect(),
            }
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

async fn port_is_free(port: u16) -> bool {
    tokio::net::TcpListener::bind(("127.0.0.1", port)).await.is_ok()
}

async fn choose_port(recorded: Option<u16>) -> Result<u16, ClusterError> {
    if let Some(port) = recorded
        && port_is_free(port).await
    {
        return Ok(port);
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(io_err("bind", Path::new("127.0.0.1:0")))?;
    let port = listener.local_addr().map_err(io_err("read the address of", Path::new("127.0.0.1:0")))?.port();
    Ok(port)
}

fn log_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(LOG_TAIL_BYTES);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        // The first line is partial when we started mid-file.
        let lines: Vec<&str> = text.lines().skip(usize::from(start > 0)).collect();
        Ok(lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n"))
    };
    match read() {
        Ok(t) if t.trim().is_empty() => "(empty)".to_string(),
        Ok(t) => t.trim_end().to_string(),
        Err(e) => format!("(cannot read: {e})"),
    }
}

async fn initdb(server: &Server, password: &str) -> Result<(), ClusterError> {
    let pgdata = server.pgdata();
    // initdb refuses a non-empty directory; an empty one (e.g. made by hand) is fine.
    if fs::read_dir(&pgdata).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ClusterError::IncompleteCluster { path: pgdata });
    }
    tracing::info!(pgdata = %pgdata.display(), "initialising PostgreSQL cluster");
    let pwfile = server.data_root.join(INITDB_PWFILE);
    write_private(server, &pwfile, password)?;
    let mut pwfile_arg = OsString::from("--pwfile=");
    pwfile_arg.push(&pwfile);
    let args: Vec<OsString> = vec![
        "-D".into(),
        pgdata.into(),
        "-U".into(),
        SUPERUSER.into(),
        "--auth-host=scram-sha-256".into(),
        "--auth-local=peer".into(),
        pwfile_arg,
        "-E".into(),
        "UTF8".into(),
        "--locale=C".into(),
    ];
    let result = server.run_ok("initdb", &args).await;
    let removed = fs::remove_file(&pwfile);
    result?;
    removed.map_err(io_err("remove", &pwfile))?;
    Ok(())
}

async fn start(server: &Server, port: u16) -> Result<(), ClusterError> {
    let log = server.data_root.join(LOG_FILE);
    // pg_ctl hands this string to /bin/sh, hence the shell quoting of the empty socket list.
    let options = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' \
         -c max_connections=200 -c fsync=on"
    );
    let args: Vec<OsString> = vec![
        "start".into(),
        "-D".into(),
        server.pgdata().into(),
        "-w".into(),
        "-t".into(),
        START_TIMEOUT_SECS.to_string().into(),
        "-l".into(),
        log.clone().into(),
        "-o".into(),
        options.into(),
    ];
    tracing::info!(pgdata = %server.pgdata().display(), port, "starting PostgreSQL");
    let out = server.run("pg_ctl", &args).await?;
    if out.status.success() {
        return Ok(());
    }
    Err(ClusterError::StartFailed {
        command: server.describe("pg_ctl", &args),
        status: out.status.to_string(),
        output: combined_output(&out),
        log_tail: log_tail(&log),
        log,
    })
}

/// Whether the cluster in `data_root` is running (`pg_ctl status`). No cluster means not running.
pub async fn is_running(data_root: &Path) -> Result<bool, ClusterError> {
    let pgdata = data_root.join(PGDATA_DIR);
    if !pgdata.join("PG_VERSION").exists() {
        return Ok(false);
    }
    let server = Server {
        bin_dir: locate_binaries()?,
        user: server_user(&pgdata, false).await?,
        data_root: std::path::absolute(data_root).map_err(io_err("resolve", data_root))?,
    };
    server.status().await
}

/// A running cluster in a data root, started by this process or attached to.
pub struct EmbeddedCluster {
    server: Server,
    port: u16,
    password: String,
    started_here: bool,
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
    /// exclusive flock on `cluster.lock`.
    pub async fn ensure_running(data_root: &Path) -> Result<EmbeddedCluster, ClusterError> {
        let bin_dir = locate_binaries()?;
        let user = server_user(&data_root.join(PGDATA_DIR), true).await?;
        let root = prepare_data_root(data_root, user.as_ref())?;
        let server = Server { bin_dir, user, data_root: root };
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

        let cluster = EmbeddedCluster { server, port, password, started_here };
        cluster.wait_until_reachable().await?;
        tracing::info!(port, started_here, "PostgreSQL is accepting connections");
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_root(&self) -> &Path {
        &self.server.data_root
    }

    /// True when this call started the server, so the caller should stop it on shutdown.
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/<database>`: the superuser URL. It
    /// contains the password; do not log it (see [`Self::redacted_url`]).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}", self.password, self.port)
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
        let args = self.server.stop_args();
        let out = self.server.command("pg_ctl", &args).output().map_err(|source| ClusterError::Spawn {
            command: self.server.describe("pg_ctl", &args),
            source,
        })?;
        if out.status.success() || !self.server.pgdata().join("postmaster.pid").exists() {
            Ok(())
        } else {
            Err(ClusterError::CommandFailed {
                command: self.server.describe("pg_ctl", &args),
                status: out.status.to_string(),
                output: combined_output(&out),
            })
        }
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

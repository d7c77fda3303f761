//! The installed server binaries and what we run with them: initdb, start, status, stop.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use super::data_root::write_private;
use super::error::{ClusterError, io_err};
use super::server_user::ServerUser;
use super::{PG_BIN_ENV, PGDATA_DIR, SUPERUSER};

const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
const LOG_FILE: &str = "server.log";
const INITDB_PWFILE: &str = ".initdb-pwfile";
/// `pg_ctl start -t`, in seconds.
const START_TIMEOUT_SECS: u32 = 60;
const LOG_TAIL_BYTES: u64 = 8192;
const LOG_TAIL_LINES: usize = 20;

/// How to run the server binaries against one data root.
#[derive(Debug, Clone)]
pub(super) struct Server {
    pub(super) bin_dir: PathBuf,
    /// `None`: run as ourselves (we are not root).
    pub(super) user: Option<ServerUser>,
    pub(super) data_root: PathBuf,
}

impl Server {
    pub(super) fn pgdata(&self) -> PathBuf {
        self.data_root.join(PGDATA_DIR)
    }

    pub(super) fn command(&self, program: &str, args: &[OsString]) -> std::process::Command {
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

    pub(super) async fn run(&self, program: &str, args: &[OsString]) -> Result<Output, ClusterError> {
        let described = self.describe(program, args);
        tokio::process::Command::from(self.command(program, args))
            .output()
            .await
            .map_err(|source| ClusterError::Spawn { command: described, source })
    }

    pub(super) async fn run_ok(&self, program: &str, args: &[OsString]) -> Result<Output, ClusterError> {
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

    pub(super) fn describe(&self, program: &str, args: &[OsString]) -> String {
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
    pub(super) fn give(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some(user) = &self.user {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io_err("chown", path))?;
        }
        Ok(())
    }

    pub(super) fn pg_ctl_status_args(&self) -> Vec<OsString> {
        vec!["status".into(), "-D".into(), self.pgdata().into()]
    }

    pub(super) async fn status(&self) -> Result<bool, ClusterError> {
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

    pub(super) fn stop_args(&self) -> Vec<OsString> {
        vec!["stop".into(), "-D".into(), self.pgdata().into(), "-m".into(), "fast".into(), "-w".into()]
    }

    /// Blocking `pg_ctl stop -m fast -w`. Not running is not an error.
    pub(super) fn stop_blocking(&self) -> Result<(), ClusterError> {
        let args = self.stop_args();
        let out = self
            .command("pg_ctl", &args)
            .output()
            .map_err(|source| ClusterError::Spawn { command: self.describe("pg_ctl", &args), source })?;
        if out.status.success() || !self.pgdata().join("postmaster.pid").exists() {
            Ok(())
        } else {
            Err(ClusterError::CommandFailed {
                command: self.describe("pg_ctl", &args),
                status: out.status.to_string(),
                output: combined_output(&out),
            })
        }
    }
}

pub(super) fn combined_output(out: &Output) -> String {
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
pub(super) fn locate_binaries() -> Result<PathBuf, ClusterError> {
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

pub(super) async fn initdb(server: &Server, password: &str) -> Result<(), ClusterError> {
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

pub(super) async fn start(server: &Server, port: u16) -> Result<(), ClusterError> {
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

impl Server {
    /// Whether the postmaster named in `postmaster.pid` is alive. No pid file, a pid with no
    /// process, or a zombie (dead, not yet reaped) is not alive.
    pub(super) fn postmaster_alive(&self) -> bool {
        let Ok(content) = fs::read_to_string(self.pgdata().join("postmaster.pid")) else {
            return false;
        };
        let Some(pid) = content.lines().next().and_then(|line| line.trim().parse::<i32>().ok()) else {
            return false;
        };
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state is the first field after the command name, which ends with the last ')'.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            // No /proc: ask the kernel whether the pid exists (EPERM: it does, as another user).
            Err(_) => !matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Err(nix::errno::Errno::ESRCH)
            ),
        }
    }
}

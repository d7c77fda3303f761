//! What can go wrong with the embedded cluster. Secrets (passwords, URLs with passwords) never
//! appear in these messages: URLs are redacted before they get here.

use std::io;
use std::path::{Path, PathBuf};

use super::PG_BIN_ENV;

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
        "the embedded cluster in {} is in use by `mpe-ledger {command}` (pid {pid}): one process owns a data directory; wait for it to stop, or, to run several replicas, run one Postgres and give every replica the same DATABASE_URL (README, \"Your own Postgres\")",
        data_root.display()
    )]
    Owned { data_root: PathBuf, pid: String, command: String },

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

pub(super) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ClusterError + 'a {
    move |source| ClusterError::Io { action, path: path.to_path_buf(), source }
}

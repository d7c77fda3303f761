//! The unprivileged account the server runs as when we are root: the server never runs as root.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::unistd::{Uid, User, geteuid};

use super::SUPERUSER;
use super::error::ClusterError;
use super::server::combined_output;

/// The user created for the server when we run as root and the Debian `postgres` user is absent.
const FALLBACK_SYSTEM_USER: &str = "mpe-ledger";

/// The unprivileged account the server runs as when we are root.
#[derive(Debug, Clone)]
pub(super) struct ServerUser {
    pub(super) name: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) home: PathBuf,
}

impl From<User> for ServerUser {
    fn from(u: User) -> Self {
        ServerUser { name: u.name, uid: u.uid.as_raw(), gid: u.gid.as_raw(), home: u.dir }
    }
}

fn lookup_user(name: &str) -> Result<Option<User>, ClusterError> {
    User::from_name(name).map_err(|source| ClusterError::UserLookup { user: name.to_string(), source })
}

/// The account an existing cluster runs as, or the one a new cluster would run as if it exists
/// already; `None` when we are not root (we run as ourselves) or no such account exists yet.
pub(super) fn known_server_user(pgdata: &Path) -> Result<Option<ServerUser>, ClusterError> {
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
    Ok(None)
}

/// The account to run the server as; `None` when we are not root and simply run as ourselves.
/// Under root with no usable account, creates one when `may_create`.
pub(super) async fn server_user(pgdata: &Path, may_create: bool) -> Result<Option<ServerUser>, ClusterError> {
    if let Some(user) = known_server_user(pgdata)? {
        return Ok(Some(user));
    }
    if !geteuid().is_root() || !may_create {
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

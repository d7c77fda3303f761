//! The data root's layout: its creation for the server user, the start-up lock, the password and
//! port files.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;

use super::error::{ClusterError, io_err};
use super::server::Server;
use super::server_user::ServerUser;

const LOCK_FILE: &str = "cluster.lock";
const PASSWORD_LEN: usize = 32;

/// Creates the data root for the server user and checks that user can reach it.
pub(super) fn prepare_data_root(
    data_root: &Path,
    user: Option<&ServerUser>,
) -> Result<PathBuf, ClusterError> {
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

pub(super) async fn lock_data_root(server: &Server) -> Result<File, ClusterError> {
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

/// A fresh random password: letters and digits only, so that it needs no quoting in a URL.
pub fn generate_password() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(PASSWORD_LEN).map(char::from).collect()
}

/// Writes `content` to a fresh file with mode 0600, owned by the server user.
pub(super) fn write_private(server: &Server, path: &Path, content: &str) -> Result<(), ClusterError> {
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

pub(super) fn read_password(path: &Path) -> Result<Option<String>, ClusterError> {
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

pub(super) fn read_port(path: &Path) -> Result<Option<u16>, ClusterError> {
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

pub(super) async fn choose_port(recorded: Option<u16>) -> Result<u16, ClusterError> {
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

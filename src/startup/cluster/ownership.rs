//! Who owns an embedded cluster: one process at a time, recorded by an exclusive `flock` on
//! `owner.lock` held for the owner's whole life.
//!
//! The decision (issue 12): a second `serve` on a data directory that a live `serve` owns is
//! **refused at once**, in one line naming the owner's pid and how to run replicas (one Postgres,
//! the same `DATABASE_URL` for every replica). Sharing the embedded cluster between processes
//! would need a count of users that survives kill -9; one owner needs only the kernel's lock,
//! which is released when its holder dies however it dies. So:
//! - The owner stops the cluster on its graceful stop, whether it started it or adopted it.
//! - A kill -9 of the owner frees the lock and leaves the cluster running; the next owner
//!   **adopts** it (attaches, and stops it when it stops itself), so it is never orphaned.
//! - One-shot commands (`migrate`, `verify`, `rebuild`, `leases`, `export`) take ownership when it is free
//!   and otherwise attach as guests, which never stop the cluster: an operator can list leases
//!   beside a running `serve`.
//! - The lock file is opened close-on-exec, so the postmaster never inherits it: the lock dies
//!   with its owner, not with the server.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;

use super::error::{ClusterError, io_err};
use super::server::Server;

const OWNER_LOCK_FILE: &str = "owner.lock";

/// Held for as long as this process owns the cluster; dropping it (or dying) gives ownership up.
#[derive(Debug)]
pub(super) struct ClusterOwner {
    _file: File,
}

impl ClusterOwner {
    /// Takes ownership of the data root, or refuses naming the live owner.
    pub(super) fn claim(server: &Server, command: &str) -> Result<ClusterOwner, ClusterError> {
        let path = server.data_root.join(OWNER_LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        server.give(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut recorded = String::new();
                let _ = file.read_to_string(&mut recorded);
                let (pid, command) = parse_owner(&recorded);
                return Err(ClusterError::Owned { data_root: server.data_root.clone(), pid, command });
            }
            Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
        let record = format!("{} {command}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(record.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(io_err("write", &path))?;
        Ok(ClusterOwner { _file: file })
    }
}

/// `"<pid> <command>"` as [`ClusterOwner::claim`] writes it; unknown parts say so.
fn parse_owner(recorded: &str) -> (String, String) {
    let mut parts = recorded.split_whitespace();
    let pid = parts.next().filter(|p| p.chars().all(|c| c.is_ascii_digit())).unwrap_or("unknown");
    let command = parts.next().unwrap_or("serve");
    (pid.to_string(), command.to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_owner;

    #[test]
    fn the_owner_record_names_pid_and_command() {
        assert_eq!(parse_owner("4242 serve\n"), ("4242".into(), "serve".into()));
        assert_eq!(parse_owner("17 verify"), ("17".into(), "verify".into()));
        assert_eq!(parse_owner(""), ("unknown".into(), "serve".into()));
        assert_eq!(parse_owner("garbage"), ("unknown".into(), "serve".into()));
    }
}
